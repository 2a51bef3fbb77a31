/**
 * Throughput, commit latency and failover of a 3-peer cluster with 100-byte commands, next to the
 * limits of this machine that bound them. Prints a table; see docs/performance.md.
 *
 *   deno task bench:cluster            (or: deno run -A --unstable-kv bench/cluster.ts)
 *   deno task bench:cluster --quick    (shorter runs, fewer failover trials)
 *
 * Shapes:
 * - (a) one process, `MemoryNetwork`, `MemoryPersister`.
 *
 * For each: commands committed and applied by the leader per second with 1, 16 and 256
 * proposals in flight (closed-loop callers in the leader's process), and the p50/p99 commit
 * latency with one proposal at a time.
 *
 * Limits, measured in the same run: WebSocket round trips per second and pipelined messages per
 * second between two Deno processes on 127.0.0.1 with 100-byte payloads, and append+fdatasync
 * per second on the disk holding the temporary directory.
 *
 * @module
 */

import { make, MemoryNetwork, MemoryPersister, type Raft } from "../mod.ts";
import { ApplyWaiters, COMMAND_BYTES, percentile, runLoad } from "./cluster_load.ts";

const QUICK = Deno.args.includes("--quick");
const WARMUP_MS = QUICK ? 300 : 1000;
const DURATION_MS = QUICK ? 1000 : 3000;
const IN_FLIGHT = [1, 16, 256];

if (Deno.args[0] === "--echo-server") await echoServer();
else await main();

/** One line of the result table. */
interface Row {
  shape: string;
  measure: string;
  value: string;
  bound: string;
}

async function main(): Promise<void> {
  console.log(`# ${new Date().toISOString()}  load average: ${loadAverage()}`);
  const rows: Row[] = [];

  const disk = await fdatasyncPerSecond();
  const socket = await webSocketLimits();
  rows.push(
    { shape: "limit", measure: "append+fdatasync /s", value: fmt(disk), bound: "" },
    {
      shape: "limit",
      measure: "WebSocket round trips /s (100 B)",
      value: fmt(socket.roundTripsPerSecond),
      bound: `p50 ${socket.roundTripP50Ms.toFixed(3)} ms`,
    },
    {
      shape: "limit",
      measure: "WebSocket pipelined msgs /s (100 B)",
      value: fmt(socket.pipelinedPerSecond),
      bound: "",
    },
  );

  const memory = await memoryShape();
  for (const [inFlight, perSecond] of memory.throughput) {
    rows.push({
      shape: "(a) memory",
      measure: `commands/s, ${inFlight} in flight`,
      value: fmt(perSecond),
      bound: "",
    });
  }
  rows.push({
    shape: "(a) memory",
    measure: "commit latency p50 / p99, 1 in flight",
    value: `${memory.p50Ms.toFixed(3)} / ${memory.p99Ms.toFixed(3)} ms`,
    bound: "",
  });

  printTable(rows);
  console.log(`# load average at the end: ${loadAverage()}`);
}

function fmt(perSecond: number): string {
  return Math.round(perSecond).toLocaleString("en-US");
}

function loadAverage(): string {
  try {
    return Deno.readTextFileSync("/proc/loadavg").split(" ").slice(0, 3).join(" ");
  } catch {
    return "unknown";
  }
}

function printTable(rows: Row[]): void {
  const header: Row = { shape: "shape", measure: "measure", value: "value", bound: "ratio/bound" };
  const all = [header, ...rows];
  const width = (key: keyof Row) => Math.max(...all.map((row) => row[key].length));
  const line = (row: Row) =>
    `| ${row.shape.padEnd(width("shape"))} | ${row.measure.padEnd(width("measure"))} | ${
      row.value.padStart(width("value"))
    } | ${row.bound.padEnd(width("bound"))} |`;
  console.log(line(header));
  console.log(
    `| ${"-".repeat(width("shape"))} | ${"-".repeat(width("measure"))} | ${
      "-".repeat(width("value") - 1)
    }: | ${"-".repeat(width("bound"))} |`,
  );
  for (const row of rows) console.log(line(row));
}

// ---- (a) one process ---------------------------------------------------------------------------

interface ShapeResult {
  throughput: [number, number][];
  p50Ms: number;
  p99Ms: number;
}

async function memoryShape(): Promise<ShapeResult> {
  const network = new MemoryNetwork();
  const waiters = [0, 1, 2].map(() => new ApplyWaiters());
  const rafts: Raft[] = [];
  for (let i = 0; i < 3; i++) {
    const ends = [0, 1, 2].map((j) => {
      const end = network.makeEnd(`${i}->${j}`);
      network.connect(`${i}->${j}`, `peer-${j}`);
      network.enable(`${i}->${j}`, true);
      return end;
    });
    rafts.push(await make(ends, i, new MemoryPersister(), waiters[i]!.applyCh, { trace: null }));
    network.addServer(`peer-${i}`, rafts[i]!);
  }
  try {
    const leader = await leaderOf(rafts);
    const leaderWaiters = waiters[rafts.indexOf(leader)]!;
    const throughput: [number, number][] = [];
    for (const inFlight of IN_FLIGHT) {
      const result = await runLoad(leader, leaderWaiters, inFlight, WARMUP_MS, DURATION_MS, false);
      throughput.push([inFlight, result.perSecond]);
    }
    const sequential = await runLoad(leader, leaderWaiters, 1, WARMUP_MS, DURATION_MS, true);
    return {
      throughput,
      p50Ms: percentile(sequential.latenciesMs, 50),
      p99Ms: percentile(sequential.latenciesMs, 99),
    };
  } finally {
    for (const raft of rafts) raft.kill();
    network.close();
  }
}

async function leaderOf(rafts: Raft[]): Promise<Raft> {
  for (let waited = 0; waited < 10_000; waited += 50) {
    const leader = rafts.find((raft) => raft.getState().isLeader);
    if (leader !== undefined) return leader;
    await new Promise((resolve) => setTimeout(resolve, 50));
  }
  throw new Error("No leader elected within 10 s");
}

// ---- limits ------------------------------------------------------------------------------------

/** Appends of one entry-sized record followed by fdatasync, per second. */
async function fdatasyncPerSecond(): Promise<number> {
  const directory = await Deno.makeTempDir({ prefix: "raft-bench-" });
  const file = await Deno.open(`${directory}/raw.log`, { write: true, create: true, append: true });
  try {
    const record = new Uint8Array(COMMAND_BYTES + 30);
    let count = 0;
    const stopAt = performance.now() + DURATION_MS;
    while (performance.now() < stopAt) {
      let written = 0;
      while (written < record.length) written += await file.write(record.subarray(written));
      await file.syncData();
      count++;
    }
    return count / (DURATION_MS / 1000);
  } finally {
    file.close();
    await Deno.remove(directory, { recursive: true });
  }
}

interface WebSocketLimits {
  roundTripsPerSecond: number;
  roundTripP50Ms: number;
  pipelinedPerSecond: number;
}

/** Lone round trips and pipelined messages between this process and an echo server process. */
async function webSocketLimits(): Promise<WebSocketLimits> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", import.meta.filename!, "--echo-server"],
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  while (!text.includes("\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error("Echo server exited before printing its port");
    text += value;
  }
  const port = Number(text.trim());
  const socket = new WebSocket(`ws://127.0.0.1:${port}`);
  await new Promise((resolve, reject) => {
    socket.addEventListener("open", resolve, { once: true });
    socket.addEventListener("error", reject, { once: true });
  });
  let onReply: () => void = () => {};
  socket.addEventListener("message", () => onReply());
  const payload = "x".repeat(COMMAND_BYTES);
  try {
    // Lone round trips: one message, wait for its echo, repeat.
    const latencies: number[] = [];
    const stopLone = performance.now() + DURATION_MS;
    while (performance.now() < stopLone) {
      const before = performance.now();
      await new Promise<void>((resolve) => {
        onReply = resolve;
        socket.send(payload);
      });
      latencies.push(performance.now() - before);
    }
    // Pipelined: keep 256 messages outstanding.
    let received = 0;
    const window = 256;
    const stopPipelined = performance.now() + DURATION_MS;
    await new Promise<void>((resolve) => {
      let outstanding = 0;
      const fill = () => {
        while (outstanding < window && performance.now() < stopPipelined) {
          socket.send(payload);
          outstanding++;
        }
        if (outstanding === 0) resolve();
      };
      onReply = () => {
        outstanding--;
        if (performance.now() < stopPipelined) received++;
        fill();
      };
      fill();
    });
    return {
      roundTripsPerSecond: latencies.length / (DURATION_MS / 1000),
      roundTripP50Ms: percentile(latencies, 50),
      pipelinedPerSecond: received / (DURATION_MS / 1000),
    };
  } finally {
    socket.close();
    await reader.cancel();
    child.kill("SIGTERM");
    await child.status;
  }
}

/** The child of {@linkcode webSocketLimits}: echoes every message; prints its port. */
async function echoServer(): Promise<void> {
  const server = Deno.serve({
    hostname: "127.0.0.1",
    port: 0,
    onListen: ({ port }) => console.log(port),
  }, (request) => {
    const { socket, response } = Deno.upgradeWebSocket(request);
    socket.addEventListener("message", (event) => socket.send(event.data));
    return response;
  });
  await server.finished;
}
