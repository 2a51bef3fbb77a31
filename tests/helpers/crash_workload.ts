/**
 * The saves a crash-test writer makes. Save number `step` depends only on `step` and the log's
 * last index before it, and sets the term to `step`: so a reopened store's term says how many
 * saves it holds, and replaying saves 1..term on a MemoryPersister gives the only state the
 * writer could have reached with them.
 */

import type { PersistChange } from "../../src/types.ts";
import { randomChange } from "./persister_contract.ts";
import { randomInt } from "../../src/clock.ts";
import { seededRandom } from "../../src/sim/seeded_random.ts";

/** How many saves the writer keeps in flight at most. */
export const WRITER_WINDOW = 8;

/** Save number `step`, for a log ending at `lastIndex`. */
export function crashChange(step: number, lastIndex: number): PersistChange {
  const random = seededRandom(step * 7919 + 17);
  if (step % 97 === 0) {
    // Now and then a save too large for one Deno.Kv commit.
    const entries = Array.from({ length: 3 }, (_, k) => ({
      term: step,
      command: `${step}:${k}:`.padEnd(300_000, "x"),
    }));
    return { term: step, votedFor: null, log: { from: lastIndex + 1, entries } };
  }
  if (lastIndex > 200) {
    // Keep the log short, so that every check stays cheap.
    const from = randomInt(random, 1, 50);
    return { term: step, votedFor: 0, log: { from, entries: [{ term: step, command: step }] } };
  }
  return randomChange(random, step, { lastIndex, snapshotIndex: 0 });
}

/** The log's last index after `change`. */
export function lastIndexAfterChange(change: PersistChange, lastIndex: number): number {
  return change.log === undefined ? lastIndex : change.log.from - 1 + change.log.entries.length;
}
