/**
 * The load the cluster benchmark puts on a leader: closed-loop callers that each propose a
 * 100-byte command and wait until the leader has applied it. Shared by the in-process shape and
 * the peer processes of the multi-process shapes.
 *
 * @module
 */

import type { ApplyMsg, Raft } from "../mod.ts";

/** Every command is a JSON string of this many bytes (quotes included). */
export const COMMAND_BYTES = 100;

/** A 100-byte command, unique per `n` so no two entries are alike. */
export function command(n: number): string {
  const prefix = `${n}:`;
  return prefix + "x".repeat(COMMAND_BYTES - 2 - prefix.length);
}

/** Commands the load cycles through, made once so that making them is not what is measured. */
const COMMANDS = Array.from({ length: 4096 }, (_, n) => command(n));

/** Resolves proposals once the leader applies their index. */
export class ApplyWaiters {
  readonly #waiting = new Map<number, () => void>();
  /** Highest index applied so far. */
  lastApplied = 0;

  /** The `applyCh` to give the leader (it may be called on followers too: harmless). */
  readonly applyCh = (msg: ApplyMsg): void => {
    this.lastApplied = msg.commandIndex;
    const resolve = this.#waiting.get(msg.commandIndex);
    if (resolve !== undefined) {
      this.#waiting.delete(msg.commandIndex);
      resolve();
    }
  };

  /** Resolves once `index` is applied. */
  until(index: number): Promise<void> {
    if (index <= this.lastApplied) return Promise.resolve();
    return new Promise((resolve) => this.#waiting.set(index, resolve));
  }
}

/** What one load run measured. */
export interface LoadResult {
  /** Proposals committed and applied. */
  commits: number;
  /** Commits per second over the measured window. */
  perSecond: number;
  /** Latency of each proposal, ms (only kept when asked for). */
  latenciesMs: number[];
  /** Proposals refused because the leader lost leadership. */
  refused: number;
}

/**
 * Runs `inFlight` closed-loop callers against `leader` for `warmupMs` (not counted) and then
 * `durationMs`, and reports commits per second and, with `keepLatencies`, each latency.
 */
export async function runLoad(
  leader: Raft,
  waiters: ApplyWaiters,
  inFlight: number,
  warmupMs: number,
  durationMs: number,
  keepLatencies: boolean,
): Promise<LoadResult> {
  const startedAt = performance.now();
  const measureFrom = startedAt + warmupMs;
  const stopAt = measureFrom + durationMs;
  let commits = 0;
  let refused = 0;
  let sequence = 0;
  const latenciesMs: number[] = [];
  // Without latencies, read the clock on every 64th proposal only: at hundreds of thousands of
  // commands a second, performance.now() itself was 5% of the CPU time.
  let coarseNow = startedAt;
  const now = keepLatencies
    ? () => performance.now()
    : () => (sequence & 63) === 0 ? (coarseNow = performance.now()) : coarseNow;
  const caller = async () => {
    while (true) {
      const before = now();
      if (before >= stopAt) return;
      const { index, isLeader } = leader.start(COMMANDS[sequence++ & 4095]!);
      if (!isLeader) {
        refused++;
        return;
      }
      await waiters.until(index);
      const after = now();
      if (before >= measureFrom && after <= stopAt) {
        commits++;
        if (keepLatencies) latenciesMs.push(after - before);
      }
    }
  };
  await Promise.all(Array.from({ length: inFlight }, caller));
  return { commits, perSecond: commits / (durationMs / 1000), latenciesMs, refused };
}

/** The `p`-th percentile (0-100) of `values`, by nearest rank. */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank]!;
}
