/**
 * The key/value example's part of `bench:cluster` (`--only=kv`): three `examples/kv/server.ts`
 * processes (`RaftNode`, `KvPersister`, WebSocket transport) measured over HTTP, as a client sees
 * them.
 *
 * - Reads per second next to writes per second: closed-loop HTTP clients, each with its own
 *   keep-alive connection, doing PUTs (through the log), linearizable GETs on the leader
 *   (ReadIndex: one heartbeat round shared by concurrent reads, no log write), lease GETs on the
 *   leader (no round while the lease holds), and follower GETs (a follower asks the leader for a
 *   read index, then serves from its own state).
 * - Failover against handover: the leader stopped with SIGKILL (the others wait out an election
 *   timeout) or with SIGTERM (it hands its leadership to an up-to-date follower first), until a
 *   surviving peer leads a later term and has committed its first entry of that term: from then on
 *   it serves reads and writes.
 *
 * @module
 */

import { LocalCluster, type PeerStatus } from "../examples/cluster.ts";
import { percentile } from "./cluster_load.ts";

/** What {@linkcode kvShape} measured. */
export interface KvResult {
  /**
   * Operations per second, by kind, and how many were refused (a peer that lost or had not
   * found its leader meanwhile answers 421 or 503; the client pauses 50 ms and goes on).
   */
  perSecond: { kind: string; value: number; refused: number }[];
  /** Milliseconds until a new leader serves, after SIGKILL and after SIGTERM of the old one. */
  stopped: { signal: "SIGKILL" | "SIGTERM"; times: number[] }[];
}

/**
 * The peers' V8 flags a benchmark was given with `--peer-v8-flags=a,b` (`--peer-v8-flags=` for
 * V8's defaults); `undefined`, for {@linkcode LocalCluster}'s default, without the option.
 */
export function peerV8Flags(): string[] | undefined {
  const prefix = "--peer-v8-flags=";
  const value = Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
  return value === undefined ? undefined : value.split(",").filter((flag) => flag !== "");
}

/**
 * Measures the KV example: `clients` closed-loop HTTP clients per kind, `trials` stops per signal,
 * the peers run with `v8Flags` (default: {@linkcode LocalCluster}'s).
 */
export async function kvShape(
  clients: number,
  durationMs: number,
  trials: number,
  v8Flags?: string[],
): Promise<KvResult> {
  const cluster = await LocalCluster.start({
    peers: 3,
    serverArgs: ["--lease-reads"],
    ...(v8Flags === undefined ? {} : { v8Flags }),
  });
  try {
    const leader = await cluster.waitForLeader();
    const follower = [0, 1, 2].find((peer) => peer !== leader)!;
    const leaderUrl = cluster.httpUrls[leader]!;
    const followerUrl = cluster.httpUrls[follower]!;
    // A few keys, written once, so that reads find values.
    for (let key = 0; key < 16; key++) {
      await request(leaderUrl, `/kv/k${key}`, { method: "PUT", body: "v" });
    }
    const perSecond = [];
    let sequence = 0;
    for (
      const [kind, url, init] of [
        ["writes (PUT, through the log)", leaderUrl, "PUT"],
        ["reads (GET on the leader, ReadIndex)", leaderUrl, ""],
        ["reads (GET on the leader, lease)", leaderUrl, "?consistent=lease"],
        [
          "reads (GET on a follower, read index from the leader)",
          followerUrl,
          "?consistent=follower",
        ],
      ] as const
    ) {
      const { done, refused } = await closedLoop(clients, durationMs, (http, client) => {
        const key = `k${(client + sequence++) % 16}`;
        return init === "PUT"
          ? attempt(url, `/kv/${key}`, { method: "PUT", body: "v", client: http })
          : attempt(url, `/kv/${key}${init}`, { client: http });
      });
      perSecond.push({ kind, value: done / (durationMs / 1000), refused });
    }
    const stopped: KvResult["stopped"] = [];
    for (const signal of ["SIGKILL", "SIGTERM"] as const) {
      const times: number[] = [];
      for (let trial = 0; trial < trials; trial++) {
        times.push(await stopLeader(cluster, signal));
      }
      stopped.push({ signal, times });
    }
    return { perSecond, stopped };
  } finally {
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true }).catch(() => {});
  }
}

/**
 * Runs `clients` loops of `operation` for `durationMs`; resolves to the operations completed and
 * those refused. After a refusal the client pauses 50 ms, so a peer between leaders is not
 * flooded.
 */
async function closedLoop(
  clients: number,
  durationMs: number,
  operation: (http: Deno.HttpClient, client: number) => Promise<boolean>,
): Promise<{ done: number; refused: number }> {
  const deadline = performance.now() + durationMs;
  let done = 0;
  let refused = 0;
  await Promise.all(Array.from({ length: clients }, async (_, client) => {
    const http = Deno.createHttpClient({});
    try {
      while (performance.now() < deadline) {
        if (await operation(http, client)) {
          done++;
        } else {
          refused++;
          await new Promise((resolve) => setTimeout(resolve, 50));
        }
      }
    } finally {
      http.close();
    }
  }));
  return { done, refused };
}

/** One HTTP request of the measured load: whether it succeeded; a refusal (421, 503) is false. */
async function attempt(
  base: string,
  path: string,
  init: RequestInit & { client?: Deno.HttpClient },
): Promise<boolean> {
  const response = await fetch(`${base}${path}`, init);
  await response.body?.cancel();
  if (response.ok) return true;
  if (response.status === 421 || response.status === 503) return false;
  throw new Error(`${init.method ?? "GET"} ${path}: ${response.status}`);
}

/** One HTTP request; throws unless it succeeds. */
async function request(
  base: string,
  path: string,
  init: RequestInit & { client?: Deno.HttpClient } = {},
): Promise<void> {
  const response = await fetch(`${base}${path}`, init);
  await response.body?.cancel();
  if (!response.ok) throw new Error(`${init.method ?? "GET"} ${path}: ${response.status}`);
}

/**
 * Stops the leader with `signal` and measures until a survivor leads a later term and has
 * committed its first entry of that term; restarts the stopped peer and lets it catch up.
 */
async function stopLeader(cluster: LocalCluster, signal: "SIGKILL" | "SIGTERM"): Promise<number> {
  const leader = await cluster.waitForLeader(15_000);
  const before = (await cluster.status(leader))!;
  // Let heartbeats flow and every follower catch up, so that a transfer has a target.
  await new Promise((resolve) => setTimeout(resolve, 300));
  const survivors = [0, 1, 2].filter((peer) => peer !== leader);
  const stoppedAt = performance.now();
  cluster.signal(leader, signal);
  let servedAt = NaN;
  while (Number.isNaN(servedAt)) {
    const statuses = await Promise.all(survivors.map((peer) => cluster.status(peer)));
    if (statuses.some((status) => serves(status, before.term))) servedAt = performance.now();
    else if (performance.now() - stoppedAt > 15_000) throw new Error("no new leader in 15 s");
  }
  await cluster.kill(leader, "SIGKILL"); // reaps the process (a SIGTERMed one exits by itself)
  await cluster.startPeer(leader);
  return servedAt - stoppedAt;
}

/** Whether `status` is of a leader of a term after `term` that has committed in its term. */
function serves(status: PeerStatus | undefined, term: number): boolean {
  return status !== undefined && status.role === "leader" && status.term > term &&
    status.commitIndex === status.lastLogIndex;
}

/** p50 and max of `times`, in ms, for the table. */
export function summary(times: number[]): string {
  return `${percentile(times, 50).toFixed(0)} / ${Math.max(...times).toFixed(0)} ms`;
}
