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
 * linearizable). `--only raft` or `--only kv` runs one of them.
 *
 * @module
 */

import { type ExploreOptions, type ExploreResult, exploreSeed } from "./explorer.ts";
import { exploreKvSeed } from "./kv_explorer.ts";

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

/** Runs the key/value explorer over `seeds` seeds from `from`; prints violations and a summary. */
async function exploreKv(from: number, seeds: number, verbose: boolean): Promise<number> {
  const started = performance.now();
  const failed: number[] = [];
  const operations = { ok: 0, failed: 0, unknown: 0 };
  for (let seed = from; seed < from + seeds; seed++) {
    const result = await exploreKvSeed(
      seed,
      verbose ? { onTrace: (line) => console.log(line) } : {},
    );
    operations.ok += result.operations.ok;
    operations.failed += result.operations.failed;
    operations.unknown += result.operations.unknown;
    if (result.violation !== null) {
      failed.push(seed);
      if (!verbose) { for (const line of result.trace) console.log(line); }
      console.log(`VIOLATION kv seed ${seed} (${result.peers} peers): ${result.violation}`);
      console.log(`replay: deno task sim --only kv --seed ${seed} --verbose`);
    }
    const done = seed - from + 1;
    if (done % 100 === 0 || done === seeds) {
      const wall = ((performance.now() - started) / 1000).toFixed(1);
      console.log(
        `kv: ${done} seeds (${from}..${seed}): ${failed.length} with violations; ${wall} s wall`,
      );
    }
  }
  const wall = (performance.now() - started) / 1000;
  console.log(
    `Explored kv seeds ${from}..${
      from + seeds - 1
    }: ${seeds} seeds, ${operations.ok} operations ok, ${operations.failed} refused, ${operations.unknown} of unknown outcome, every history checked for linearizability, in ${
      wall.toFixed(1)
    } s of wall time. Violations: ${failed.length === 0 ? "none" : failed.join(", ")}.`,
  );
  return failed.length === 0 ? 0 : 1;
}

async function main(argv: string[]): Promise<number> {
  const args = parseArgs(argv);
  const only = args.get("only");
  if (only !== undefined && only !== "raft" && only !== "kv") {
    throw new RangeError(`--only must be raft or kv, got ${JSON.stringify(only)}`);
  }
  if (only === "kv") {
    const single = args.has("seed");
    const from = integer(args, single ? "seed" : "from", 1);
    return await exploreKv(from, single ? 1 : integer(args, "seeds", 100), args.has("verbose"));
  }
  const options: ExploreOptions = {};
  if (args.has("faulty-ms")) options.faultyMs = integer(args, "faulty-ms", 60_000);
  if (args.has("peers")) options.peerCounts = args.get("peers")!.split(",").map(Number);
  if (args.has("seed")) {
    const seed = integer(args, "seed", 1);
    if (args.has("verbose")) options.onTrace = (line) => console.log(line);
    const result = await exploreSeed(seed, options);
    printViolation(result, console.log);
    console.log(summary(result));
    return result.violation === null ? 0 : 1;
  }
  const from = integer(args, "from", 1);
  const seeds = integer(args, "seeds", 100);
  const started = performance.now();
  let virtualMs = 0;
  let events = 0;
  let commits = 0;
  let snapshotsApplied = 0;
  let membershipChanges = 0;
  const failed: number[] = [];
  for (let seed = from; seed < from + seeds; seed++) {
    const result = await exploreSeed(seed, options);
    virtualMs += result.virtualMs;
    events += result.events;
    commits += result.commits;
    snapshotsApplied += result.snapshots.applied;
    membershipChanges += result.membershipChanges;
    if (result.violation !== null) {
      failed.push(seed);
      printViolation(result, console.log);
    }
    const done = seed - from + 1;
    if (done % 100 === 0 || done === seeds) {
      const wall = (performance.now() - started) / 1000;
      console.log(
        `${done} seeds (${from}..${seed}): ${failed.length} with violations; ${
          (virtualMs / 3_600_000).toFixed(2)
        } virtual hours, ${events} events, ${commits} commits; ${wall.toFixed(1)} s wall`,
      );
    }
  }
  const wall = (performance.now() - started) / 1000;
  console.log(
    `Explored seeds ${from}..${from + seeds - 1}: ${seeds} seeds, ${
      (virtualMs / 3_600_000).toFixed(2)
    } hours of virtual time (${
      Math.round(virtualMs / 1000)
    } s), ${events} events, ${commits} commits, ${snapshotsApplied} snapshots handed to services, ${membershipChanges} membership changes, in ${
      wall.toFixed(1)
    } s of wall time. Violations: ${failed.length === 0 ? "none" : failed.join(", ")}.`,
  );
  if (only === "raft") return failed.length === 0 ? 0 : 1;
  const kv = await exploreKv(from, seeds, false);
  return failed.length === 0 && kv === 0 ? 0 : 1;
}

if (import.meta.main) Deno.exit(await main(Deno.args));
