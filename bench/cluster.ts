/**
 * Throughput, commit latency and failover of a 3-peer cluster with 100-byte commands, next to the
 * limits of this machine that bound them. Prints a table; see docs/performance.md.
 *
 *   deno task bench:cluster            (the task names the permissions it needs)
 *   deno task bench:cluster --quick    (shorter runs, fewer failover trials)
 *   deno task bench:cluster --only=b,c --raft='{"maxInflightAppends":1}'
 *                                      (some parts only; extra RaftOptions for every peer)
 *   deno task bench:cluster --only=b --file-persister='{"preallocate":false}'
 *                                      (options for every FilePersister)
 *   deno task bench:cluster --only=a --link-delay-ms=1 --in-flight=256,1024
 *                                      ((a) over a link with a 2 ms round trip; other loads)
 *   deno task bench:cluster --only=kv --peer-v8-flags=
 *                                      ((d) with these V8 flags for its peers; empty: V8's
 *                                      defaults; default: `PEER_V8_FLAGS` of examples/cluster.ts)
 *
 * Shapes:
 * - (a) one process, `MemoryNetwork`, `MemoryPersister`;
 * - (b) three `deno run` processes (`bench/cluster_peer.ts`) over `WebSocketTransport` on
 *   127.0.0.1, each with a `FilePersister`;
 * - (c) the same with `KvPersister`;
 * - (d) the key/value example (`examples/kv/server.ts`, on `RaftNode`) over HTTP: writes/s next to
 *   reads/s (ReadIndex, lease, follower), and the time until a new leader serves after the old one
 *   is stopped with SIGKILL (failover) or SIGTERM (handover): see `cluster_kv.ts`.
 *
 * For each: commands committed and applied by the leader per second with 1, 16 and 256
 * proposals in flight (closed-loop callers in the leader's process), and the p50/p99 commit
 * latency with one proposal at a time. For (b), the failover time: from SIGKILL of the leader
 * until a new leader has committed and applied a new command, at the default timing and at a
 * fast one (heartbeat 50 ms, election timeout 150-300 ms).
 *
 * Limits, measured in the same run: WebSocket round trips per second and pipelined messages per
 * second between two Deno processes on 127.0.0.1 with 100-byte payloads, append+fdatasync per
 * second on the disk holding the temporary directory, and a lone 8 KB AppendEntries round trip
 * between two processes, through the transport and through a naive `new WebSocket()` client.
 *
 * @module
 */

import { denoCommand } from "../examples/_permissions.ts";
import {
  type ClientEnd,
  make,
  MemoryNetwork,
  MemoryPersister,
  type Raft,
  WebSocketTransport,
} from "../mod.ts";
import { AppendEntries } from "../src/raft/messages.ts";
import { freePorts } from "../examples/cluster.ts";
import {
  ApplyWaiters,
  COMMAND_BYTES,
  type LoadResult,
  percentile,
  runLoad,
} from "./cluster_load.ts";
import type { PeerConfig } from "./cluster_peer.ts";
import { kvShape, peerV8Flags, summary } from "./cluster_kv.ts";

const QUICK = Deno.args.includes("--quick");
const WARMUP_MS = QUICK ? 300 : 1000;
const DURATION_MS = QUICK ? 1000 : 3000;
const IN_FLIGHT = flag("in-flight")?.split(",").map(Number) ?? [1, 16, 256];
/** (a) only: each call waits this long before delivery and again before its reply. */
const LINK_DELAY_MS = Number(flag("link-delay-ms") ?? 0);
const FAILOVER_TRIALS = QUICK ? 4 : 12;
/**
 * (a) is one process on a shared machine: other work preempts it and one run's throughput swings
 * by 2x, so each of its throughput figures is the median of this many runs.
 */
const MEMORY_REPEATS = QUICK ? 1 : 5;
const ONLY = flag("only")?.split(",") ?? ["limits", "a", "b", "c", "failover", "kv"];
/** Extra options for every peer, e.g. to compare a setting's effect within one run. */
const EXTRA_OPTIONS = JSON.parse(flag("raft") ?? "{}") as PeerConfig["raftOptions"];
/** Options for every peer's `FilePersister`, e.g. `--file-persister='{"preallocate":false}'`. */
const FILE_OPTIONS = JSON.parse(flag("file-persister") ?? "{}") as PeerConfig["fileOptions"];

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

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

  console.log(
    `# extra options: ${JSON.stringify(EXTRA_OPTIONS)}, file persister: ${
      JSON.stringify(FILE_OPTIONS)
    }, (a) link delay: ${LINK_DELAY_MS} ms`,
  );
  let socket: WebSocketLimits = {
    roundTripsPerSecond: NaN,
    roundTripP50Ms: NaN,
    pipelinedPerSecond: NaN,
    naiveLone8kP50Ms: NaN,
  };
  // A commit needs at least one round trip to a follower and its fdatasync.
  let sequentialFloorMs = NaN;
  if (ONLY.includes("limits")) {
    const disk = await fdatasyncPerSecond();
    socket = await webSocketLimits();
    sequentialFloorMs = socket.roundTripP50Ms + 1000 / disk;
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
      {
        shape: "limit",
        measure: "lone 8 KB round trip, naive new WebSocket() client",
        value: `${socket.naiveLone8kP50Ms.toFixed(3)} ms`,
        bound: "p50: Nagle + delayed ACK",
      },
    );
    const lone = await loneAppendEntries();
    rows.push({
      shape: "limit",
      measure: "lone 8 KB AppendEntries round trip, transport",
      value: `${lone.toFixed(3)} ms`,
      bound: "p50 over 200 calls, 1 ms apart",
    });
  }

  if (ONLY.includes("a")) {
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
  }

  for (const [shape, persister] of [["(b) ws+file", "file"], ["(c) ws+kv", "kv"]] as const) {
    if (!ONLY.includes(shape[1]!)) continue;
    const result = await processShape(persister);
    for (const [inFlight, perSecond] of result.throughput) {
      rows.push({
        shape,
        measure: `commands/s, ${inFlight} in flight`,
        value: fmt(perSecond),
        bound: inFlight === 1
          ? `${(perSecond * sequentialFloorMs / 1000).toFixed(2)} x 1/(WS round trip + fsync)`
          : `${(perSecond / socket.pipelinedPerSecond).toFixed(2)} x WS pipelined msgs/s`,
      });
    }
    rows.push({
      shape,
      measure: "commit latency p50 / p99, 1 in flight",
      value: `${result.p50Ms.toFixed(3)} / ${result.p99Ms.toFixed(3)} ms`,
      bound: `p50 = ${(result.p50Ms / sequentialFloorMs).toFixed(1)} x (WS round trip + fsync)`,
    });
  }

  for (const [timing, options] of [["default", DEFAULT_TIMING], ["fast", FAST_TIMING]] as const) {
    if (!ONLY.includes("failover")) continue;
    const times = await failover({ ...EXTRA_OPTIONS, ...options }, FAILOVER_TRIALS);
    rows.push({
      shape: "(b) ws+file",
      measure: `failover p50 / max, ${timing} timing (${times.length} trials)`,
      value: `${percentile(times, 50).toFixed(0)} / ${Math.max(...times).toFixed(0)} ms`,
      bound: timing === "fast" ? "election timeout 150-300 ms" : "election timeout 700-1100 ms",
    });
  }

  if (ONLY.includes("kv")) {
    const kv = await kvShape(16, DURATION_MS, QUICK ? 3 : 8, peerV8Flags());
    for (const { kind, value, refused } of kv.perSecond) {
      rows.push({
        shape: "(d) kv example",
        measure: `${kind} /s, 16 clients`,
        value: fmt(value),
        bound: refused === 0 ? "HTTP, keep-alive" : `HTTP, keep-alive; ${refused} refused`,
      });
    }
    for (const { signal, times } of kv.stopped) {
      rows.push({
        shape: "(d) kv example",
        measure: `${
          signal === "SIGKILL" ? "failover after SIGKILL" : "handover on SIGTERM"
        } p50 / max (${times.length} trials)`,
        value: summary(times),
        bound: signal === "SIGKILL" ? "election timeout 700-1100 ms" : "TimeoutNow: one round trip",
      });
    }
  }

  printTable(rows);
  console.log(`# load average at the end: ${loadAverage()}`);
}

function fmt(perSecond: number): string {
  return Math.round(perSecond).toLocaleString("en-US");
}

function loadAverage(): string {
  try {
    return Deno.loadavg().map((load) => load.toFixed(2)).join(" ");
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

/**
 * Runs each measurement on a fresh cluster: the log is never compacted, and a log of millions of
 * entries left by the previous measurement made the next one pay for the garbage collector.
 */
async function shapeResult(
  load: (inFlight: number, latencies: boolean) => Promise<LoadResult>,
  repeats: number,
): Promise<ShapeResult> {
  const throughput: [number, number][] = [];
  for (const inFlight of IN_FLIGHT) {
    const runs: number[] = [];
    for (let run = 0; run < repeats; run++) runs.push((await load(inFlight, false)).perSecond);
    throughput.push([inFlight, percentile(runs, 50)]);
  }
  const sequential = await load(1, true);
  return {
    throughput,
    p50Ms: percentile(sequential.latenciesMs, 50),
    p99Ms: percentile(sequential.latenciesMs, 99),
  };
}

function memoryShape(): Promise<ShapeResult> {
  return shapeResult(async (inFlight, latencies) => {
    const network = new MemoryNetwork();
    const waiters = [0, 1, 2].map(() => new ApplyWaiters());
    const rafts: Raft[] = [];
    for (let i = 0; i < 3; i++) {
      const ends = [0, 1, 2].map((j): ClientEnd => {
        const end = network.makeEnd(`${i}->${j}`);
        network.connect(`${i}->${j}`, `peer-${j}`);
        network.enable(`${i}->${j}`, true);
        if (LINK_DELAY_MS === 0) return end;
        const delay = <T>(value: T) =>
          new Promise<T>((resolve) => setTimeout(() => resolve(value), LINK_DELAY_MS));
        return { call: async (method, args) => delay(await end.call(method, await delay(args))) };
      });
      rafts.push(
        await make(ends, i, new MemoryPersister(), waiters[i]!.applyCh, {
          ...EXTRA_OPTIONS,
          trace: null,
        }),
      );
      network.addServer(`peer-${i}`, rafts[i]!);
    }
    try {
      const leader = await leaderOf(rafts);
      const leaderWaiters = waiters[rafts.indexOf(leader)]!;
      return await runLoad(leader, leaderWaiters, inFlight, WARMUP_MS, DURATION_MS, latencies);
    } finally {
      for (const raft of rafts) raft.kill();
      network.close();
    }
  }, MEMORY_REPEATS);
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
  /** p50 of lone 8 KB frames sent by a `new WebSocket()` client and echoed. */
  naiveLone8kP50Ms: number;
}

/** Lone round trips and pipelined messages between this process and an echo server process. */
async function webSocketLimits(): Promise<WebSocketLimits> {
  const child = new Deno.Command(denoCommand(), {
    args: ["run", "--allow-net=127.0.0.1", import.meta.filename!, "--echo-server"],
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
    // Lone 8 KB frames from the client side: each waits for a delayed ACK.
    const naive: number[] = [];
    const big = "x".repeat(8192);
    for (let i = 0; i < 10; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      const before = performance.now();
      await new Promise<void>((resolve) => {
        onReply = resolve;
        socket.send(big);
      });
      naive.push(performance.now() - before);
    }
    return {
      naiveLone8kP50Ms: percentile(naive, 50),
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

// ---- (b) and (c): three processes over WebSockets -------------------------------------------

/** A peer process of `cluster_peer.ts`, answering JSON requests through its stdin and stdout. */
class PeerProcess {
  readonly #child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #waiting = new Map<number, (answer: Record<string, unknown>) => void>();
  #nextId = 1;
  readonly exited: Promise<Deno.CommandStatus>;

  constructor(config: PeerConfig) {
    this.#child = new Deno.Command(denoCommand(), {
      args: [
        "run",
        "--unstable-kv",
        "--allow-net=127.0.0.1",
        `--allow-read=${config.dataDir}`,
        `--allow-write=${config.dataDir}`,
        new URL("./cluster_peer.ts", import.meta.url).pathname,
        JSON.stringify(config),
      ],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.#child.stdin.getWriter();
    this.exited = this.#child.status;
    this.#readAnswers();
  }

  async #readAnswers(): Promise<void> {
    let buffered = "";
    for await (const chunk of this.#child.stdout.pipeThrough(new TextDecoderStream())) {
      buffered += chunk;
      let newline: number;
      while ((newline = buffered.indexOf("\n")) >= 0) {
        const answer = JSON.parse(buffered.slice(0, newline));
        buffered = buffered.slice(newline + 1);
        this.#waiting.get(answer.id)?.(answer);
        this.#waiting.delete(answer.id);
      }
    }
  }

  /** Sends `request`; resolves with its answer (never, if the process dies first). */
  request(request: Record<string, unknown>): Promise<Record<string, unknown>> {
    const id = this.#nextId++;
    const { promise, resolve } = Promise.withResolvers<Record<string, unknown>>();
    this.#waiting.set(id, resolve);
    this.#writer.write(new TextEncoder().encode(JSON.stringify({ id, ...request }) + "\n"))
      .catch(() => {});
    return promise;
  }

  /** SIGKILL: no chance to flush or close anything. */
  async kill(): Promise<void> {
    try {
      this.#child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await this.exited;
    await this.#writer.close().catch(() => {});
  }
}

/** Three peer processes sharing a data directory root and a secret. */
class ProcessCluster {
  readonly #configs: PeerConfig[];
  readonly peers: (PeerProcess | undefined)[];
  readonly #dataDir: string;

  constructor(dataDir: string, persister: "file" | "kv", raftOptions: PeerConfig["raftOptions"]) {
    this.#dataDir = dataDir;
    const urls = freePorts(3).map((port) => `ws://127.0.0.1:${port}`);
    const secret = crypto.randomUUID();
    this.#configs = urls.map((_, me) => ({
      me,
      peers: urls,
      secret,
      dataDir: `${dataDir}/peer-${me}`,
      persister,
      fileOptions: FILE_OPTIONS,
      raftOptions,
    }));
    this.peers = this.#configs.map((config) => new PeerProcess(config));
  }

  /** Starts peer `me` again, on its old address and data directory. */
  restart(me: number): void {
    this.peers[me] = new PeerProcess(this.#configs[me]!);
  }

  /** Waits until every running peer is connected to the others and one of them leads. */
  async leader(): Promise<{ me: number; term: number }> {
    for (let waited = 0; waited < 20_000; waited += 20) {
      const statuses = await Promise.all(
        this.peers.map((peer) => peer?.request({ op: "status" })),
      );
      const running = statuses.filter((status) => status !== undefined);
      const leaders = statuses.flatMap((status, me) => status?.isLeader ? [me] : []);
      const connected = running.every((status) => status.connected === running.length - 1);
      if (leaders.length === 1 && connected) {
        const me = leaders[0]!;
        return { me, term: statuses[me]!.term as number };
      }
      await new Promise((resolve) => setTimeout(resolve, 20));
    }
    throw new Error("No single leader with all peers connected within 20 s");
  }

  async stop(): Promise<void> {
    await Promise.all(this.peers.map((peer) => peer?.kill()));
    await Deno.remove(this.#dataDir, { recursive: true });
  }
}

const DEFAULT_TIMING = {};
const FAST_TIMING = {
  heartbeatIntervalMs: 50,
  electionTimeoutMinMs: 150,
  electionTimeoutMaxMs: 300,
};

function processShape(persister: "file" | "kv"): Promise<ShapeResult> {
  return shapeResult(async (inFlight, latencies) => {
    const cluster = new ProcessCluster(
      await Deno.makeTempDir({ prefix: "raft-bench-" }),
      persister,
      { ...EXTRA_OPTIONS, ...DEFAULT_TIMING },
    );
    try {
      const { me } = await cluster.leader();
      return (await cluster.peers[me]!.request({
        op: "load",
        inFlight,
        warmupMs: WARMUP_MS,
        durationMs: DURATION_MS,
        latencies,
      })) as unknown as LoadResult;
    } finally {
      await cluster.stop();
    }
  }, 1);
}

/**
 * Kills the leader of a 3-process cluster `trials` times and measures, each time, how long until a
 * surviving peer has become leader and committed a command; restarts the killed peer in between.
 */
async function failover(raftOptions: PeerConfig["raftOptions"], trials: number): Promise<number[]> {
  const cluster = new ProcessCluster(
    await Deno.makeTempDir({ prefix: "raft-bench-" }),
    "file",
    raftOptions,
  );
  const times: number[] = [];
  try {
    for (let trial = 0; trial < trials; trial++) {
      const { me, term } = await cluster.leader();
      // Let the cluster settle: the restarted peer catches up, heartbeats flow.
      await new Promise((resolve) => setTimeout(resolve, 300));
      const survivors = [0, 1, 2].filter((peer) => peer !== me).map((peer) => cluster.peers[peer]!);
      const committed = survivors.map((peer) => peer.request({ op: "commitAfterTerm", term }));
      const killedAt = performance.now();
      await cluster.peers[me]!.kill();
      await Promise.race(committed);
      times.push(performance.now() - killedAt);
      await Promise.all(survivors.map((peer) => peer.request({ op: "cancelWaits" })));
      cluster.restart(me);
    }
    return times;
  } finally {
    await cluster.stop();
  }
}

const TRANSPORT_SECRET = "bench-cluster-secret-0123456789";

/**
 * p50 of lone AppendEntries round trips, each carrying one 8 KB entry, between this process and a
 * `--transport-peer` child, through `WebSocketTransport`.
 */
async function loneAppendEntries(): Promise<number> {
  const urls = freePorts(2).map((port) => `ws://127.0.0.1:${port}`);
  const child = new Deno.Command(denoCommand(), {
    args: [
      "run",
      "--allow-net=127.0.0.1",
      import.meta.filename!,
      "--transport-peer",
      JSON.stringify(urls),
    ],
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: urls,
    secret: TRANSPORT_SECRET,
    log: () => {},
  });
  try {
    while (transport.connectedPeers().length === 0) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    const end = transport.clientEnds()[1]!;
    const args = {
      term: 1,
      leaderId: 0,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [{ term: 1, command: "x".repeat(8192) }],
      leaderCommit: 0,
    };
    const latencies: number[] = [];
    for (let i = 0; i < 220; i++) {
      await new Promise((resolve) => setTimeout(resolve, 1));
      const before = performance.now();
      if (await end.call(AppendEntries, args) === undefined) throw new Error("Call failed");
      if (i >= 20) latencies.push(performance.now() - before);
    }
    return percentile(latencies, 50);
  } finally {
    await transport.close();
    child.kill("SIGTERM");
    await child.status;
  }
}

/** The child of {@linkcode loneAppendEntries}: answers every AppendEntries with a success. */
async function transportPeer(urls: string[]): Promise<void> {
  const transport = await WebSocketTransport.create({
    me: 1,
    peers: urls,
    secret: TRANSPORT_SECRET,
    log: () => {},
  });
  transport.setHandler({
    handleRpc: () => Promise.resolve({ term: 1, success: true, conflictTerm: 0, conflictIndex: 0 }),
  });
  await new Promise(() => {});
}

// Last, so that every class above is initialized.
if (Deno.args[0] === "--echo-server") await echoServer();
else if (Deno.args[0] === "--transport-peer") await transportPeer(JSON.parse(Deno.args[1]!));
else await main();
