/**
 * The saves a crash-test writer makes. Save number `step` depends only on `step` and the log's
 * bounds before it, and sets the term to `step`: so a reopened store's term says how many saves
 * it holds, and replaying saves 1..term on a MemoryPersister gives the only state the writer
 * could have reached with them. Configuration entries come with {@linkcode randomChange}'s
 * entries, and every other snapshot carries a configuration.
 */

import type { PersistChange, Snapshot } from "../../src/types.ts";
import {
  type Bounds,
  boundsAfterChange,
  randomChange,
  snapshotData,
  stepConfiguration,
} from "./persister_contract.ts";
import { randomInt } from "../../src/clock.ts";
import { seededRandom } from "../../src/sim/seeded_random.ts";

export type { Bounds };
export { boundsAfterChange };

/** How many saves the writer keeps in flight at most. */
export const WRITER_WINDOW = 8;

/** Whether save number `step` holds a snapshot. */
export function isSnapshotStep(step: number): boolean {
  return step % 11 === 0;
}

/** Save number `step`, for a log with `bounds`. */
export function crashChange(step: number, bounds: Bounds): PersistChange {
  const random = seededRandom(step * 7919 + 17);
  const { lastIndex, snapshotIndex } = bounds;
  if (step % 97 === 0) {
    // Now and then a save too large for one Deno.Kv commit.
    const entries = Array.from({ length: 3 }, (_, k) => ({
      term: step,
      command: `${step}:${k}:`.padEnd(300_000, "x"),
    }));
    return { term: step, votedFor: null, log: { from: lastIndex + 1, entries } };
  }
  if (isSnapshotStep(step)) {
    // A snapshot, mostly within the log, now and then past its end; its data mostly small,
    // often larger than one Deno.Kv value, and now and then larger than one Deno.Kv commit.
    const index = random() < 0.8
      ? randomInt(random, snapshotIndex, lastIndex)
      : lastIndex + randomInt(random, 1, 3);
    const size = step % 5 === 0
      ? 900_000 + step
      : random() < 0.4
      ? randomInt(random, 65_537, 200_000)
      : randomInt(random, 0, 2_000);
    const snapshot: Snapshot = { index, term: step, data: snapshotData(step, size) };
    // Decided by the step, not drawn, so that the workload's random draws stay as they were.
    if (step % 2 === 0) snapshot.configuration = stepConfiguration(step);
    const change: PersistChange = {
      term: step,
      votedFor: random() < 0.5 ? null : 1,
      snapshot,
    };
    if (random() < 0.5) {
      // A log change in the same save, after the snapshot.
      const after = Math.max(lastIndex, index);
      const from = randomInt(random, Math.max(index + 1, after - 2), after + 1);
      const entries = Array.from({ length: randomInt(random, 0, 3) }, (_, k) => ({
        term: step,
        command: { step, k },
      }));
      change.log = { from, entries };
    }
    return change;
  }
  if (lastIndex - snapshotIndex > 200) {
    // Keep the log short, so that every check stays cheap.
    const from = randomInt(random, snapshotIndex + 1, snapshotIndex + 50);
    return { term: step, votedFor: 0, log: { from, entries: [{ term: step, command: step }] } };
  }
  return randomChange(random, step, bounds);
}
