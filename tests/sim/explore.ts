/**
 * The explorer's command line.
 *
 * - `deno task sim --seed N [--verbose]`: replays seed N exactly; prints what it did and, on a
 *   violation, the property, the message and the trace leading to it. `--verbose` prints every
 *   event as it happens, messages included.
 * - `deno task explore --seeds 10000 [--from 1]`: runs seeds from..from+seeds-1, prints each
 *   violation with the command that replays it, and a summary (seeds, virtual time, wall time).
 *
 * Both take `--faulty-ms MS` (default 60000) and `--peers 3,5,7`, and run two explorers: the Raft
 * explorer (`explorer.ts`: Raft's safety properties and liveness) and the key/value explorer
 * (`kv_explorer.ts`: the key/value example on `RaftNode`, whose clients' histories must be
 * linearizable). `--only raft` or `--only kv` runs one of them. `explore` runs seeds on one worker
 * per core (`explore_worker.ts`; `--jobs N` for another count) when it may read this repository,
 * else one after another; output is in seed order either way.
 *
 * @module
 */

import { type ExploreOptions, type ExploreResult, exploreSeed } from "./explorer.ts";
import { exploreKvSeed, type KvExploreResult } from "./kv_explorer.ts";

/** Parses `--name value` pairs and `--flag`s. */
function parseArgs(args: string[]): Map<string, string> {
  const parsed = new Map<string, string>();
  for (let i = 0; i < args.length; i++) {
    const arg = args[i]!;
    if (!arg.startsWith("--")) throw new TypeError(`Unexpected argument ${JSON.stringify(arg)}`);
    const next = args[i + 1];
    if (next === undefined || next.startsWith("--")) parsed.set(arg.slice(2), "true");
    else {
      parsed.set(arg.slice(2), next);
      i++;
    }
  }
  return parsed;
}

function integer(args: Map<string, string>, name: string, fallback: number): number {
  const text = args.get(name);
  if (text === undefined) return fallback;
  const value = Number(text);
  if (!Number.isSafeInteger(value)) {
    throw new RangeError(`--${name} must be an integer, got ${JSON.stringify(text)}`);
  }
  return value;
}

/** Prints a violation: what broke, the trace, and how to replay it. */
export function printViolation(result: ExploreResult, log: (line: string) => void): void {
  const violation = result.violation;
  if (violation === null) return;
  log(
    `--- trace of seed ${result.seed} up to the violation (last ${violation.trace.length} lines) ---`,
  );
  for (const line of violation.trace) log(line);
  log(`--- end of trace ---`);
  log(
    `VIOLATION seed ${result.seed} (${result.peers} peers) at ${
      (violation.atMs / 1000).toFixed(3)
    } s: ${violation.property}: ${violation.message}`,
  );
  log(`replay: deno task sim --seed ${result.seed}`);
}

function summary(result: ExploreResult): string {
  return `seed ${result.seed}: ${result.peers} peers, ${result.profile} faults, core ${
    result.core.join(",")
  }, ${
    (result.virtualMs / 1000).toFixed(1)
  } virtual s, ${result.events} events, ${result.commits} commits, ${result.leaderTerms} leader terms, ${result.crashes} crashes, ${result.snapshots.taken} snapshots taken and ${result.snapshots.applied} handed over, ${result.membershipChanges} membership changes, digest ${result.digest}: ${
    result.violation === null ? "ok" : "VIOLATION"
  }`;
}

/** Where the seeds run when they run on workers. */
const WORKER_URL = new URL("./explore_worker.ts", import.meta.url);

/** A seed to run, on the Raft explorer or the key/value explorer. */
export type SeedRequest =
  | { kind: "raft"; seed: number; options: Pick<ExploreOptions, "faultyMs" | "peerCounts"> }
  | { kind: "kv"; seed: number };

/** What a seed's run found. */
export type SeedReply =
  | { kind: "raft"; seed: number; result: ExploreResult }
  | { kind: "kv"; seed: number; result: KvExploreResult };

/**
 * Runs one seed, in this thread or on a worker (`--verbose` passes `onTrace` for the key/value
 * explorer, which a worker could not take).
 */
export async function runSeed(
  request: SeedRequest,
  onTrace?: (line: string) => void,
): Promise<SeedReply> {
  return request.kind === "raft"
    ? { kind: "raft", seed: request.seed, result: await exploreSeed(request.seed, request.options) }
    : {
      kind: "kv",
      seed: request.seed,
      result: await exploreKvSeed(request.seed, onTrace === undefined ? {} : { onTrace }),
    };
}

/**
 * How many workers to run seeds on: `--jobs N`, else one per core. One (this thread) when the
 * process may not read this repository, which a worker needs to load its modules
 * (`deno task explore` grants it).
 */
function jobsFor(args: Map<string, string>): number {
  const jobs = integer(args, "jobs", navigator.hardwareConcurrency);
  if (jobs < 1) throw new RangeError(`--jobs must be at least 1, got ${jobs}`);
  const root = new URL("../../", import.meta.url);
  return Deno.permissions.querySync({ name: "read", path: root }).state === "granted" ? jobs : 1;
}

/**
 * Runs `requests` on `jobs` workers (in this thread when `jobs` is 1), each worker one seed at a
 * time, and hands each reply to `onReply` in the order of `requests`, so that what is printed
 * does not depend on which worker finished first.
 */
export async function runSeeds(
  requests: SeedRequest[],
  jobs: number,
  onReply: (reply: SeedReply) => void,
): Promise<void> {
  if (jobs <= 1 || requests.length <= 1) {
    for (const request of requests) onReply(await runSeed(request));
    return;
  }
  const workers = Array.from(
    { length: Math.min(jobs, requests.length) },
    () => new Worker(WORKER_URL, { type: "module" }),
  );
  const running = new Map<Worker, number>(); // the index of the request each worker runs
  const waiting = new Map<number, SeedReply>(); // replies that came before an earlier one
  let sent = 0;
  let delivered = 0;
  try {
    await new Promise<void>((resolve, reject) => {
      const feed = (worker: Worker) => {
        if (sent === requests.length) return;
        running.set(worker, sent);
        worker.postMessage(requests[sent++]);
      };
      for (const worker of workers) {
        worker.onmessage = (event: MessageEvent<SeedReply>) => {
          waiting.set(running.get(worker)!, event.data);
          feed(worker);
          try {
            for (let reply; (reply = waiting.get(delivered)) !== undefined; delivered++) {
              waiting.delete(delivered);
              onReply(reply);
            }
          } catch (error) {
            reject(error);
          }
          if (delivered === requests.length) resolve();
        };
        worker.onerror = (event) => {
          event.preventDefault();
          reject(new Error(`A worker running seeds failed: ${event.message}`));
        };
        feed(worker);
      }
    });
  } finally {
    for (const worker of workers) worker.terminate();
  }
}

/** What both explorers' tallies keep alike: the seeds' range, those done, those that failed. */
class SeedCount {
  readonly from: number;
  readonly seeds: number;
  readonly #started: number;
  readonly failed: number[] = [];
  done = 0;

  constructor(from: number, seeds: number, started: number) {
    this.from = from;
    this.seeds = seeds;
    this.#started = started;
  }

  /** Counts the next seed; true if a progress line is due (every 100 seeds, and the last). */
  count(seed: number, violated: boolean): boolean {
    if (violated) this.failed.push(seed);
    this.done++;
    return this.done % 100 === 0 || this.done === this.seeds;
  }

  /** Whether every seed has been counted. */
  get complete(): boolean {
    return this.done === this.seeds;
  }

  /** Seconds since the exploration started, to one decimal. */
  get wall(): string {
    return ((performance.now() - this.#started) / 1000).toFixed(1);
  }

  /** The seeds that failed, or "none". */
  get violations(): string {
    return this.failed.length === 0 ? "none" : this.failed.join(", ");
  }

  /** 0 if every seed was clean, else 1. */
  get exitCode(): number {
    return this.failed.length === 0 ? 0 : 1;
  }
}

/** Tallies the key/value explorer's seeds; prints violations, progress and a summary. */
class KvTally {
  readonly count: SeedCount;
  readonly #verbose: boolean;
  readonly #operations = { ok: 0, failed: 0, unknown: 0 };

  constructor(from: number, seeds: number, started: number, verbose: boolean) {
    this.count = new SeedCount(from, seeds, started);
    this.#verbose = verbose;
  }

  /** Takes the next seed's result, in seed order. */
  add(result: KvExploreResult): void {
    const { seed } = result;
    const count = this.count;
    this.#operations.ok += result.operations.ok;
    this.#operations.failed += result.operations.failed;
    this.#operations.unknown += result.operations.unknown;
    if (result.violation !== null) {
      if (!this.#verbose) { for (const line of result.trace) console.log(line); }
      console.log(`VIOLATION kv seed ${seed} (${result.peers} peers): ${result.violation}`);
      console.log(`replay: deno task sim --only kv --seed ${seed} --verbose`);
    }
    if (count.count(seed, result.violation !== null)) {
      console.log(
        `kv: ${count.done} seeds (${count.from}..${seed}): ${count.failed.length} with violations; ${count.wall} s wall`,
      );
    }
    if (!count.complete) return;
    const { ok, failed, unknown } = this.#operations;
    console.log(
      `Explored kv seeds ${count.from}..${
        count.from + count.seeds - 1
      }: ${count.seeds} seeds, ${ok} operations ok, ${failed} refused, ${unknown} of unknown outcome, every history checked for linearizability, in ${count.wall} s of wall time. Violations: ${count.violations}.`,
    );
  }
}

/** Tallies the Raft explorer's seeds; prints violations, progress and a summary. */
class RaftTally {
  readonly count: SeedCount;
  #virtualMs = 0;
  #events = 0;
  #commits = 0;
  #snapshotsApplied = 0;
  #membershipChanges = 0;

  constructor(from: number, seeds: number, started: number) {
    this.count = new SeedCount(from, seeds, started);
  }

  /** Takes the next seed's result, in seed order. */
  add(result: ExploreResult): void {
    const count = this.count;
    this.#virtualMs += result.virtualMs;
    this.#events += result.events;
    this.#commits += result.commits;
    this.#snapshotsApplied += result.snapshots.applied;
    this.#membershipChanges += result.membershipChanges;
    printViolation(result, console.log);
    if (count.count(result.seed, result.violation !== null)) {
      console.log(
        `${count.done} seeds (${count.from}..${result.seed}): ${count.failed.length} with violations; ${
          (this.#virtualMs / 3_600_000).toFixed(2)
        } virtual hours, ${this.#events} events, ${this.#commits} commits; ${count.wall} s wall`,
      );
    }
    if (!count.complete) return;
    console.log(
      `Explored seeds ${count.from}..${count.from + count.seeds - 1}: ${count.seeds} seeds, ${
        (this.#virtualMs / 3_600_000).toFixed(2)
      } hours of virtual time (${
        Math.round(this.#virtualMs / 1000)
      } s), ${this.#events} events, ${this.#commits} commits, ${this.#snapshotsApplied} snapshots handed to services, ${this.#membershipChanges} membership changes, in ${count.wall} s of wall time. Violations: ${count.violations}.`,
    );
  }
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const only = args.get("only");
  if (only !== undefined && only !== "raft" && only !== "kv") {
    throw new RangeError(`--only must be raft or kv, got ${JSON.stringify(only)}`);
  }
  const options: Pick<ExploreOptions, "faultyMs" | "peerCounts"> = {};
  if (args.has("faulty-ms")) options.faultyMs = integer(args, "faulty-ms", 60_000);
  if (args.has("peers")) options.peerCounts = args.get("peers")!.split(",").map(Number);
  if (args.has("seed")) {
    const seed = integer(args, "seed", 1);
    const onTrace = args.has("verbose") ? (line: string) => console.log(line) : undefined;
    if (only === "kv") {
      const tally = new KvTally(seed, 1, performance.now(), onTrace !== undefined);
      const reply = await runSeed({ kind: "kv", seed }, onTrace);
      if (reply.kind === "kv") tally.add(reply.result);
      return tally.count.exitCode;
    }
    const result = await exploreSeed(seed, {
      ...options,
      ...(onTrace === undefined ? {} : { onTrace }),
    });
    printViolation(result, console.log);
    console.log(summary(result));
    return result.violation === null ? 0 : 1;
  }
  const from = integer(args, "from", 1);
  const seeds = integer(args, "seeds", 100);
  const started = performance.now();
  const seedNumbers = Array.from({ length: seeds }, (_, i) => from + i);
  const raft = new RaftTally(from, seeds, started);
  const kv = new KvTally(from, seeds, started, false);
  // One queue for both explorers, the Raft explorer's seeds first: its summary prints first, and
  // the workers go on with the key/value seeds without waiting for its last ones.
  const requests: SeedRequest[] = [
    ...(only === "kv" ? [] : seedNumbers.map((seed) => ({ kind: "raft" as const, seed, options }))),
    ...(only === "raft" ? [] : seedNumbers.map((seed) => ({ kind: "kv" as const, seed }))),
  ];
  await runSeeds(requests, jobsFor(args), (reply) => {
    if (reply.kind === "raft") raft.add(reply.result);
    else kv.add(reply.result);
  });
  return only === "kv"
    ? kv.count.exitCode
    : only === "raft"
    ? raft.count.exitCode
    : raft.count.exitCode | kv.count.exitCode;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
