/**
 * The helpers behind group commit: merging queued changes must have the effect of applying them
 * one by one, snapshots included, and the bounds they compute must match.
 */

import assert from "node:assert/strict";
import {
  boundsAfter,
  checkChange,
  type EncodedChange,
  mergeChanges,
} from "../src/storage/_persist_change.ts";
import type { LogEntry, PersistChange } from "../src/types.ts";
import { seededRandom } from "../src/sim/seeded_random.ts";
import { randomInt } from "../src/clock.ts";
import {
  type Bounds,
  boundsAfterChange,
  randomChange,
  ReferenceModel,
} from "./helpers/persister_contract.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "mergeChanges: a merged run of changes, snapshots among them, equals applying them in turn",
  sanitized,
  () => {
    const random = seededRandom(42);
    for (let trial = 0; trial < 500; trial++) {
      // A stored state to start from, reached by a few changes.
      const stored = new ReferenceModel();
      let bounds: Bounds = { lastIndex: 0, snapshotIndex: 0 };
      let step = 1;
      for (let k = randomInt(random, 0, 4); k > 0; k--, step++) {
        const change = randomChange(random, step, bounds, 0.3);
        stored.apply(change);
        bounds = boundsAfterChange(change, bounds);
      }
      const storedBounds = bounds;
      // Then a batch of queued changes, each valid after the ones before it.
      const batch: PersistChange[] = [];
      for (let k = randomInt(random, 1, 5); k > 0; k--, step++) {
        const change = randomChange(random, step, bounds, 0.4);
        checkChange(change, bounds);
        batch.push(change);
        bounds = boundsAfterChange(change, bounds);
      }
      const start = stored.state();
      const replay = (model: ReferenceModel) => {
        model.apply({
          term: start.term,
          votedFor: start.votedFor,
          ...(start.snapshot === null ? {} : { snapshot: start.snapshot }),
          log: { from: (start.snapshot?.index ?? 0) + 1, entries: start.log },
        });
      };
      // Two copies of the stored state: one takes the batch change by change, one merged.
      const oneByOne = new ReferenceModel();
      const merged = new ReferenceModel();
      replay(oneByOne);
      replay(merged);
      for (const change of batch) oneByOne.apply(change);
      const one = (batch as EncodedChange<LogEntry>[]).reduce((a, b) => mergeChanges(a, b));
      const context = `trial ${trial}: ${JSON.stringify(batch)} merged to ${JSON.stringify(one)}`;
      checkChange(one as PersistChange, storedBounds); // the merged change is valid on its own
      merged.apply(one as PersistChange);
      assert.deepEqual(merged.state(), oneByOne.state(), context);
      assert.deepEqual(boundsAfter(one, storedBounds), bounds, context);
    }
  },
);
