/**
 * The leader's bookkeeping on its own: quorums (commit index and election results from a
 * configuration), a follower's progress and its transitions, and the in-flight window.
 */

import assert from "node:assert/strict";
import { Inflights } from "../src/raft/inflights.ts";
import { InvariantError } from "../src/raft/invariants.ts";
import { Progress } from "../src/raft/progress.ts";
import { MajorityQuorum } from "../src/raft/quorum.ts";

Deno.test("majority: the committed index is the highest one a majority acknowledged", () => {
  const cases: [number[], number][] = [
    [[5], 5],
    [[5, 3], 3],
    [[5, 3, 1], 3],
    [[1, 5, 3], 3],
    [[7, 7, 2, 2], 2],
    [[9, 8, 7, 1, 1], 7],
    [[0, 0, 4, 4, 4], 4],
  ];
  for (const [acknowledged, expected] of cases) {
    const quorum = new MajorityQuorum(acknowledged.map((_, i) => i));
    assert.equal(
      quorum.committedIndex((voter) => acknowledged[voter]!),
      expected,
      `acknowledged ${acknowledged}`,
    );
  }
  assert.equal(new MajorityQuorum([]).committedIndex(() => 0), Infinity, "no voters: no limit");
});

Deno.test("majority: an election is won by a majority of grants and lost by a majority of refusals", () => {
  const quorum = new MajorityQuorum([0, 1, 2, 3, 4]);
  const result = (answers: (boolean | undefined)[]) => quorum.voteResult((voter) => answers[voter]);
  assert.equal(result([true, true, undefined, undefined, undefined]), "pending");
  assert.equal(result([true, true, true, undefined, undefined]), "won");
  assert.equal(result([true, false, false, undefined, undefined]), "pending");
  assert.equal(result([true, false, false, false, undefined]), "lost");
  assert.equal(result([true, true, false, false, undefined]), "pending");
  assert.equal(new MajorityQuorum([3]).voteResult((voter) => voter === 3), "won");
  assert.deepEqual(new MajorityQuorum([2, 0, 2, 1]).voters, [0, 1, 2], "ids sorted, once each");
});

Deno.test("inflights: a window keyed by last index, freed by acknowledgements and losses", () => {
  const window = new Inflights(3);
  window.add(5);
  window.add(8);
  window.add(9);
  assert.equal(window.full, true);
  assert.throws(() => window.add(12), InvariantError, "no send past a full window");
  window.freeThrough(8);
  assert.equal(window.count, 1, "an acknowledgement up to 8 frees the requests ending at 5 and 8");
  assert.throws(() => window.add(9), InvariantError, "keys increase");
  window.add(11);
  window.free(9);
  assert.equal(window.count, 1, "a lost request frees its own slot");
  window.free(42);
  assert.equal(window.count, 1, "freeing an unknown request changes nothing");
  window.reset();
  assert.equal(window.count, 0);
  assert.throws(() => new Inflights(0), InvariantError);
});

Deno.test("progress: probe sends one at a time, replicate pipelines, and rejections are judged stale by state", () => {
  const progress = new Progress(10, 2, 0);
  assert.deepEqual([progress.state, progress.nextIndex, progress.matchIndex], ["probe", 11, 0]);
  progress.sentEntries(12, 2);
  assert.equal(progress.paused, true, "a probe is out");
  assert.equal(progress.nextIndex, 11, "a probe does not move nextIndex");
  assert.equal(progress.isStaleRejection(10), false, "the probe's own position");
  assert.equal(progress.isStaleRejection(7), true, "another position");

  assert.equal(progress.maybeUpdate(12), true);
  progress.becomeReplicate();
  assert.deepEqual([progress.state, progress.nextIndex, progress.paused], ["replicate", 13, false]);
  progress.sentEntries(14, 2);
  progress.sentEntries(16, 2);
  assert.equal(progress.nextIndex, 17, "pipelining moves nextIndex as it sends");
  assert.equal(progress.paused, true, "the window of 2 is full");
  assert.equal(progress.isStaleRejection(12), true, "at the match: stale");
  assert.equal(progress.isStaleRejection(13), false, "past the match: current");
  assert.equal(progress.maybeUpdate(14), true);
  assert.equal(progress.paused, false, "the acknowledgement freed a slot");
  assert.equal(progress.maybeUpdate(13), false, "an older acknowledgement changes nothing");

  progress.becomeProbe(3);
  assert.deepEqual(
    [progress.state, progress.nextIndex, progress.inflights.count],
    ["probe", 15, 0],
    "a probe never starts at or below the match",
  );
});
