/**
 * Round-trip latency of lone requests between two `deno run` processes on 127.0.0.1.
 *
 *   deno task bench:websocket   (deno run --allow-net=127.0.0.1 --allow-run=deno ...)
 *
 * Three scenarios, each a request of the given size answered by a reply of the same size:
 * - "client writes": a plain `new WebSocket()` client sends, a `Deno.serve` server echoes. This
 *   is the naive design, and shows the Nagle/delayed-ACK stall for frames over about 1 KB.
 * - "server writes": the client sends a 4-byte ask, the server answers with the given size.
 * - "transport": `WebSocketTransport` in each process; a `call()` with a string argument of the
 *   given size, echoed by the other peer's handler.
 *
 * Requests are sent one at a time with a 1 ms pause between them, so each is a lone frame.
 */

import { WebSocketTransport } from "../src/transport/websocket_transport.ts";
import { freePorts } from "../examples/cluster.ts";
import { denoCommand } from "../examples/_permissions.ts";

const SIZES = [100, 1000, 2000, 8192, 65536];
const SECRET = "bench-secret-0123456789abcdef";

if (Deno.args[0] === "--echo-server") await echoServer(Number(Deno.args[1]));
else if (Deno.args[0] === "--peer") await peer(JSON.parse(Deno.args[1]!));
else await main();

async function main(): Promise<void> {
  const rows: string[][] = [["scenario", "bytes", "median ms", "p90 ms", "max ms", "samples"]];
  const [serverPort, peer0, peer1] = freePorts(3);
  const echo = await spawn(["--echo-server", String(serverPort)]);
  try {
    for (const [scenario, ask] of [["client writes", false], ["server writes", true]] as const) {
      const socket = new WebSocket(`ws://127.0.0.1:${serverPort}`);
      await new Promise((resolve) => socket.addEventListener("open", resolve));
      for (const size of SIZES) {
        const samples = await measure(ask ? 200 : 20, () => {
          const reply = new Promise((resolve) =>
            socket.addEventListener("message", resolve, { once: true })
          );
          socket.send(ask ? String(size) : "x".repeat(size));
          return reply;
        });
        rows.push(row(scenario, size, samples));
      }
      socket.close();
      await new Promise((resolve) => socket.addEventListener("close", resolve));
    }
  } finally {
    await stop(echo);
  }

  const urls = [`ws://127.0.0.1:${peer0}`, `ws://127.0.0.1:${peer1}`];
  const other = await spawn(["--peer", JSON.stringify(urls)]);
  const transport = await WebSocketTransport.create({ me: 0, peers: urls, secret: SECRET });
  try {
    while (transport.connectedPeers().length === 0) await pause(10);
    const end = transport.clientEnds()[1]!;
    for (const size of SIZES) {
      const payload = "x".repeat(size);
      const samples = await measure(200, async () => {
        if (await end.call("Echo", payload) === undefined) throw new Error("Call failed");
      });
      rows.push(row("transport", size, samples));
    }
  } finally {
    await transport.close();
    await stop(other);
  }
  const widths = rows[0]!.map((_, column) => Math.max(...rows.map((r) => r[column]!.length)));
  for (const r of rows) {
    console.log(r.map((cell, column) => cell.padEnd(widths[column]!)).join("  "));
  }
}

async function measure(count: number, roundTrip: () => Promise<unknown>): Promise<number[]> {
  for (let i = 0; i < 5; i++) await roundTrip(); // warm up
  const samples: number[] = [];
  for (let i = 0; i < count; i++) {
    await pause(1);
    const started = performance.now();
    await roundTrip();
    samples.push(performance.now() - started);
  }
  return samples.sort((a, b) => a - b);
}

function row(scenario: string, size: number, sorted: number[]): string[] {
  const at = (fraction: number) =>
    sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!;
  return [
    scenario,
    String(size),
    at(0.5).toFixed(3),
    at(0.9).toFixed(3),
    at(1).toFixed(3),
    String(sorted.length),
  ];
}

async function echoServer(port: number): Promise<void> {
  const server = Deno.serve(
    { hostname: "127.0.0.1", port, onListen: () => console.log("ready") },
    (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request);
      socket.onmessage = (event) => {
        const text = String(event.data);
        socket.send(text.length <= 6 ? "x".repeat(Number(text)) : text);
      };
      return response;
    },
  );
  await server.finished;
}

async function peer(urls: string[]): Promise<void> {
  const transport = await WebSocketTransport.create({ me: 1, peers: urls, secret: SECRET });
  transport.setHandler({ handleRpc: (_method, args) => Promise.resolve(args) });
  console.log("ready");
  await new Promise(() => {}); // runs until the parent kills it
}

async function spawn(args: string[]): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(denoCommand(), {
    args: ["run", "--allow-net=127.0.0.1", import.meta.filename!, ...args],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  if (!value?.includes("ready")) throw new Error(`Child ${args[0]} did not start`);
  reader.cancel();
  return child;
}

async function stop(child: Deno.ChildProcess): Promise<void> {
  child.kill("SIGKILL");
  await child.status;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}
