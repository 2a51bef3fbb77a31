/**
 * A Jepsen-style test of the key/value example across real processes: it starts 3 or 5 peers
 * (`examples/kv/server.ts`, each a `deno run` with narrow permissions, their Raft links through
 * TCP proxies), runs concurrent clients that read, write and delete a few keys, while a nemesis
 * kills, pauses, partitions and deafens peers; then heals everything, waits for the peers to
 * converge, and checks that the history the clients recorded, with every peer's final data, is
 * linearizable.
 *
 *   deno task jepsen                                 # 60 s, 3 peers, 8 clients, a random seed
 *   deno task jepsen --duration 10m --peers 5 --clients 10 --seed 7
 *   deno task jepsen --mutant leader-read-local      # a bug the run must catch (exit code 1)
 *
 * Options: `--short` (the run CI makes: {@linkcode SHORT_RUN}; other flags override it),
 * `--duration` (`90s`, `10m`, `500ms`; default 60s), `--peers` (3 or 5), `--clients`
 * (default 8), `--keys` (default 5), `--seed`, `--faults kill,pause,isolate,split,deafen` (default
 * all), `--lease-reads` (peers serve `?consistent=lease`, clients send some), `--mutant NAME`
 * (see `bench/jepsen/mutants.ts`), `--check-timeout` (default 120s), `--keep-data`, `--quiet`,
 * `--json` (the report as JSON), `--trace FILE` (every client attempt, as JSON lines). Exit code 0: linearizable and converged; 1: not.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { checkLinearizable, HistoryRecorder } from "../../src/linearizability/mod.ts";
import { seededRandom } from "../../src/sim/seeded_random.ts";
import { type AttemptEvent, JepsenClient, OperationStats } from "./client.ts";
import { JepsenCluster, sleep } from "./cluster.ts";
import { checkFinalState } from "./final_state.ts";
import { findMutant, prepareMutant } from "./mutants.ts";
import { abortableSleep, FAULT_KINDS, type FaultKind, Nemesis } from "./nemesis.ts";
import { formatReport, type JepsenReport, summarize } from "./report.ts";

/** The clients' shares of reads, by client number modulo 4. */
const READ_FRACTIONS = [0.5, 0.9, 1, 1];

/** Options for {@linkcode runJepsen}. */
export interface JepsenOptions {
  /** How long the clients run, in ms, the healed tail included. Default 60000. */
  durationMs?: number;
  /** Peers: 3 or 5. Default 3. */
  peers?: number;
  /** Concurrent clients. Default 8: enough that operations on 5 keys collide. */
  clients?: number;
  /** Keys the clients share. Default 5: few, so that operations collide. */
  keys?: number;
  /** Fixes the nemesis's schedule and the clients' choices. Default: drawn at random. */
  seed?: number;
  /** Fault kinds the nemesis draws from. Default: all. */
  faults?: readonly FaultKind[];
  /** Shortest and longest time a fault is held, in ms. Default 1000 to 5000. */
  holdMs?: readonly [number, number];
  /** Shortest and longest quiet spell before each fault, in ms. Default 500 to 3000. */
  quietMs?: readonly [number, number];
  /**
   * How long the clients keep running after the last fault is healed, in ms, so the run shows
   * the cluster recovers. Default: a quarter of the duration, at most 5000.
   */
  healedTailMs?: number;
  /** Run the peers with `--lease-reads`, and have clients send lease reads. Default false. */
  leaseReads?: boolean;
  /** A mutant from `bench/jepsen/mutants.ts` to run instead of this checkout. Default none. */
  mutant?: string;
  /** How long the linearizability checker may search, in ms. Default 120000. */
  checkTimeoutMs?: number;
  /**
   * Keep the peers' data directories and logs (their path goes to `log`). Default: only when the
   * run fails.
   */
  keepData?: boolean;
  /** Where progress lines go. Default: nothing. */
  log?: (line: string) => void;
  /** Called after each client's HTTP attempt, for a trace. Default: nothing. */
  onAttempt?: (event: AttemptEvent) => void;
  /** Aborting it ends the run early: everything started is stopped, and the run rejects. */
  signal?: AbortSignal;
}

/**
 * Runs one Jepsen-style test; resolves to its report. Every process and proxy it started is
 * stopped before it resolves or rejects.
 *
 * @throws {RangeError} For a bad option or an unknown mutant.
 * @throws {Error} If the cluster cannot start or a killed peer cannot be restarted.
 */
export async function runJepsen(options: JepsenOptions = {}): Promise<JepsenReport> {
  const durationMs = options.durationMs ?? 60_000;
  const peers = options.peers ?? 3;
  const clientCount = options.clients ?? 8;
  const keyCount = options.keys ?? 5;
  const seed = options.seed ?? Math.floor(Math.random() * 2 ** 31);
  const healedTailMs = options.healedTailMs ?? Math.min(5000, durationMs / 4);
  const log = options.log ?? (() => {});
  if (!(durationMs > 0) || healedTailMs < 0 || healedTailMs > durationMs) {
    throw new RangeError(
      `The duration must be positive and the healed tail within it, got ${durationMs} and ${healedTailMs} ms`,
    );
  }
  if (peers !== 3 && peers !== 5) throw new RangeError(`Peers must be 3 or 5, got ${peers}`);
  if (!Number.isInteger(clientCount) || clientCount < 1) {
    throw new RangeError(`Clients must be a positive integer, got ${clientCount}`);
  }
  if (!Number.isInteger(keyCount) || keyCount < 1) {
    throw new RangeError(`Keys must be a positive integer, got ${keyCount}`);
  }
  const mutant = options.mutant === undefined ? undefined : findMutant(options.mutant);
  const leaseReads = mutant?.leaseReads === true || (options.leaseReads ?? false);
  const keys = Array.from({ length: keyCount }, (_, i) => `k${i}`);
  const settings = {
    duration: `${durationMs / 1000}s`,
    peers,
    clients: clientCount,
    keys: keyCount,
    seed,
    faults: (options.faults ?? FAULT_KINDS).join(","),
    leaseReads,
    ...(mutant === undefined ? {} : { mutant: mutant.name }),
  };

  const cancel = options.signal ?? new AbortController().signal;
  cancel.throwIfAborted();
  const root = mutant === undefined ? undefined : await prepareMutant(mutant);
  let cluster: JepsenCluster | undefined;
  const stopClients = new AbortController();
  const stopFaults = new AbortController();
  let running: Promise<unknown>[] = [];
  let passed = false;
  try {
    cluster = await JepsenCluster.start({
      peers,
      leaseReads,
      ...(root === undefined ? {} : { root }),
    });
    log(`peers started; data and logs under ${cluster.dataDir}`);
    await waitForLeader(cluster, 20_000);
    cancel.throwIfAborted();

    // Times in ms since the clients started, so that explanations can be read against the log.
    const origin = performance.now();
    const now = () => performance.now() - origin;
    const recorder = new HistoryRecorder({ now });
    const stats = new OperationStats();
    // Patient clients see answers from a peer that was paused mid-request; hasty ones find a
    // new leader sooner. Both exist in the wild.
    const attemptTimeouts = [1000, 2500, 5000];
    const clients = Array.from({ length: clientCount }, (_, id) =>
      new JepsenClient({
        id,
        httpUrls: cluster!.httpUrls,
        recorder,
        stats,
        now,
        random: seededRandom(seed, 1 + id),
        keys,
        // Half the clients only read, and a quarter mostly read: they stay with a leader as long
        // as it answers reads, as a read-heavy application does, even after it lost its
        // leadership without knowing. (A client that writes soon gets stuck on a write to a
        // cut-off leader, and moves on.)
        readFraction: READ_FRACTIONS[id % READ_FRACTIONS.length]!,
        followerReadFraction: 0.3,
        // With lease reads on, half the read-only clients read on lease.
        leaderReads: leaseReads && id % 4 === 3 ? "lease" : "leader",
        attemptTimeoutMs: attemptTimeouts[id % attemptTimeouts.length]!,
        operationTimeoutMs: 8000,
        sessionPrefix: `jepsen-${seed}`,
        ...(options.onAttempt === undefined ? {} : { onAttempt: options.onAttempt }),
      }));
    const nemesis = new Nemesis({
      cluster,
      random: seededRandom(seed, 0),
      now,
      ...(options.faults === undefined ? {} : { faults: options.faults }),
      ...(options.holdMs === undefined ? {} : { holdMs: options.holdMs }),
      ...(options.quietMs === undefined ? {} : { quietMs: options.quietMs }),
      log,
    });

    const start = now();
    const clientRuns = clients.map((client) => client.run(stopClients.signal));
    let nemesisError: unknown = undefined;
    const nemesisRun = nemesis.run(stopFaults.signal).catch((error) => {
      nemesisError = error;
    });
    running = [...clientRuns, nemesisRun];
    await abortableSleep(durationMs - healedTailMs, cancel);
    cancel.throwIfAborted();
    stopFaults.abort();
    await nemesisRun;
    if (nemesisError !== undefined) throw nemesisError;
    const healed = now();
    log(`${((healed - start) / 1000).toFixed(1)} s: every fault healed`);
    await abortableSleep(Math.max(0, start + durationMs - now()), cancel);
    cancel.throwIfAborted();
    stopClients.abort();
    await Promise.all(clientRuns);
    const end = now();
    log(
      `${((end - start) / 1000).toFixed(1)} s: clients stopped; waiting for the peers to converge`,
    );

    const final = await checkFinalState(cluster, recorder, keys, 30_000);
    cancel.throwIfAborted();
    const history = recorder.history();
    log(`checking ${history.length} operations`);
    const checkStarted = performance.now();
    const result = checkLinearizable(history, { timeoutMs: options.checkTimeoutMs ?? 120_000 });
    const checkMs = performance.now() - checkStarted;
    const report = summarize({
      settings,
      stats,
      faults: nemesis.faults,
      times: { start, end, healed },
      history,
      check: { result, ms: checkMs },
      final,
    });
    passed = report.ok;
    return report;
  } finally {
    stopFaults.abort();
    stopClients.abort();
    await Promise.allSettled(running);
    const keepData = options.keepData ?? !passed;
    await cluster?.close({ keepData });
    if (cluster !== undefined && keepData) log(`data and logs kept under ${cluster.dataDir}`);
    if (root !== undefined) await Deno.remove(root, { recursive: true });
  }
}

/** Waits until some peer leads; throws after `timeoutMs`. */
async function waitForLeader(cluster: JepsenCluster, timeoutMs: number): Promise<number> {
  const deadline = performance.now() + timeoutMs;
  while (performance.now() < deadline) {
    const leader = await cluster.leader();
    if (leader !== null) return leader;
    await sleep(100);
  }
  throw new Error(`No peer became leader within ${timeoutMs} ms`);
}

/**
 * Parses a duration such as `90s`, `10m`, `500ms` or `60` (seconds) into ms.
 *
 * @throws {RangeError} If it is not one.
 */
export function parseDuration(text: string): number {
  const match = /^(\d+(?:\.\d+)?)(ms|s|m)?$/.exec(text.trim());
  if (match === null) {
    throw new RangeError(
      `A duration must look like 90s, 10m or 500ms, got ${JSON.stringify(text)}`,
    );
  }
  const value = Number(match[1]);
  const unit = match[2] ?? "s";
  return unit === "ms" ? value : unit === "s" ? value * 1000 : value * 60_000;
}

/**
 * The short run CI makes (`tests/jepsen_test.ts`, `deno task jepsen --short`): 3 peers, 8
 * clients, every kind of read (lease reads on), 25 s with the faults healed for the last 4, and
 * shorter faults than the default so that 21 s see every kind.
 */
export const SHORT_RUN: Readonly<JepsenOptions> = {
  durationMs: 25_000,
  healedTailMs: 4000,
  holdMs: [1000, 3500],
  quietMs: [500, 1500],
  peers: 3,
  clients: 8,
  leaseReads: true,
  checkTimeoutMs: 10_000,
};

/**
 * Parses the command line of `deno task jepsen` (see the module documentation) into options;
 * `--short` starts from {@linkcode SHORT_RUN}, and the other flags override it.
 *
 * @throws {RangeError} For a bad value.
 */
export function parseJepsenArgs(args: string[]): JepsenOptions & { json: boolean; trace?: string } {
  const { values } = parseArgs({
    args,
    options: {
      short: { type: "boolean", default: false },
      duration: { type: "string" },
      peers: { type: "string" },
      clients: { type: "string" },
      keys: { type: "string" },
      seed: { type: "string" },
      faults: { type: "string" },
      "lease-reads": { type: "boolean", default: false },
      mutant: { type: "string" },
      "check-timeout": { type: "string" },
      "keep-data": { type: "boolean", default: false },
      quiet: { type: "boolean", default: false },
      json: { type: "boolean", default: false },
      trace: { type: "string" },
    },
  });
  const faults = values.faults?.split(",") as FaultKind[] | undefined;
  for (const kind of faults ?? []) {
    if (!FAULT_KINDS.includes(kind)) {
      throw new RangeError(
        `Unknown fault ${JSON.stringify(kind)}; known: ${FAULT_KINDS.join(", ")}`,
      );
    }
  }
  const number = (text: string | undefined) => (text === undefined ? undefined : Number(text));
  const flags: { [Name in keyof JepsenOptions]: JepsenOptions[Name] | undefined } = {
    durationMs: values.duration === undefined ? undefined : parseDuration(values.duration),
    peers: number(values.peers),
    clients: number(values.clients),
    keys: number(values.keys),
    seed: number(values.seed),
    faults,
    leaseReads: values["lease-reads"] ? true : undefined,
    mutant: values.mutant,
    checkTimeoutMs: values["check-timeout"] === undefined
      ? undefined
      : parseDuration(values["check-timeout"]),
    keepData: values["keep-data"] ? true : undefined,
    ...(values.quiet ? {} : { log: (line: string) => console.error(line) }),
  };
  // Flags given override the preset; flags not given leave it alone.
  const given = Object.fromEntries(
    Object.entries(flags).filter(([, value]) => value !== undefined),
  );
  return {
    ...(values.short ? SHORT_RUN : {}),
    ...given,
    json: values.json,
    ...(values.trace === undefined ? {} : { trace: values.trace }),
  };
}

if (import.meta.main) {
  const { json, trace: tracePath, ...options } = parseJepsenArgs(Deno.args);
  // Ctrl-C or SIGTERM ends the run early, and it stops every process it started on the way out.
  const interrupted = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => interrupted.abort(new Error(`Interrupted by ${signal}`)));
  }
  const started = performance.now();
  const trace: string[] = [];
  const running = runJepsen({
    ...options,
    signal: interrupted.signal,
    ...(tracePath === undefined ? {} : { onAttempt: (event) => trace.push(JSON.stringify(event)) }),
  });
  const report = await running.catch((error) => {
    if (!interrupted.signal.aborted) throw error;
    console.error(`${interrupted.signal.reason.message}: every process started was stopped`);
    Deno.exit(130);
  });
  if (tracePath !== undefined) await Deno.writeTextFile(tracePath, trace.join("\n") + "\n");
  console.log(json ? JSON.stringify(report, null, 2) : formatReport(report));
  console.error(`wall time ${((performance.now() - started) / 1000).toFixed(1)} s`);
  Deno.exit(report.ok ? 0 : 1);
}
