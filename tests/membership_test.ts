/**
 * Membership changes (thesis chapter 4) below the service API: checking configurations, the
 * history of a log's configurations, the core's rules for voters and learners, and the trust
 * boundary for configurations from the wire and the disk. The transitions themselves are
 * transcripts: tests/testdata/membership_*.txt.
 */

import assert from "node:assert/strict";
import { type CoreConfig, RaftCore } from "../src/raft/core.ts";
import {
  ConfigurationHistory,
  parseConfiguration,
  singleServerChange,
} from "../src/raft/membership.ts";
import { parseAppendEntriesArgs, parseInstallSnapshotArgs } from "../src/raft/messages.ts";
import { make } from "../src/driver.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import type { Configuration, PersistentState } from "../src/types.ts";
import { fixedRandom, ManualClock } from "./helpers/manual_clock.ts";
import { stepVoteReply } from "./helpers/core_steps.ts";
import { sanitized } from "./helpers/sanitized.ts";

const member = (id: number, address = `ws://127.0.0.1:${7000 + id}`) => ({ id, address });

function configuration(voters: number[], learners: number[] = []): Configuration {
  return { voters: voters.map((id) => member(id)), learners: learners.map((id) => member(id)) };
}

Deno.test("parseConfiguration: a plain copy, members sorted by id", () => {
  const input = { voters: [member(2), member(0)], learners: [member(5)], extra: true };
  const parsed = parseConfiguration(input);
  assert.deepEqual(parsed, configuration([0, 2], [5]));
  assert.notEqual((parsed as Configuration).voters[0], input.voters[1], "a copy, not the input");
});

Deno.test("parseConfiguration: what is wrong, in a sentence", () => {
  const cases: [unknown, RegExp][] = [
    [null, /must be an object/],
    [{ voters: [], learners: [] }, /at least one voter/],
    [{ voters: [member(1)] }, /must be arrays/],
    [{ voters: [member(1), member(1)], learners: [] }, /member 1 appears twice/],
    [{ voters: [member(1)], learners: [member(1)] }, /member 1 appears twice/],
    [{ voters: [{ id: -1, address: "" }], learners: [] }, /id must be a non-negative integer/],
    [{ voters: [{ id: 1.5, address: "" }], learners: [] }, /id must be a non-negative integer/],
    [{ voters: [{ id: 1 }], learners: [] }, /address must be a string/],
    [{ voters: [{ id: 1, address: "x".repeat(2000) }], learners: [] }, /at most 1024/],
    [
      { voters: Array.from({ length: 1001 }, (_, id) => member(id)), learners: [] },
      /at most 1000 members/,
    ],
  ];
  for (const [input, message] of cases) {
    const result = parseConfiguration(input);
    assert.equal(
      typeof result,
      "string",
      `expected ${JSON.stringify(input)?.slice(0, 80)} refused`,
    );
    assert.match(result as string, message);
  }
});

Deno.test("singleServerChange: one voter in or out at a time; learners come and go freely", () => {
  const current = configuration([0, 1, 2], [3]);
  assert.equal(singleServerChange(current, configuration([0, 1, 2, 3])), null);
  assert.equal(singleServerChange(current, configuration([0, 1])), null);
  assert.equal(singleServerChange(current, configuration([0, 1, 2], [4, 5])), null);
  assert.match(singleServerChange(current, configuration([0, 1, 3]))!, /by 2 servers/);
  assert.match(singleServerChange(current, configuration([0]))!, /by 2 servers/);
});

Deno.test("ConfigurationHistory: the latest entry is in effect; truncation and compaction", () => {
  const base = configuration([0, 1, 2]);
  const withLearner = configuration([0, 1, 2], [3]);
  const promoted = configuration([0, 1, 2, 3]);
  const history = new ConfigurationHistory(base);
  history.append(4, withLearner);
  history.append(9, promoted);
  assert.deepEqual(history.current, promoted);
  assert.equal(history.currentIndex, 9);
  assert.deepEqual(history.at(3), base);
  assert.deepEqual(history.at(4), withLearner);
  assert.deepEqual(history.at(8), withLearner);
  assert.throws(() => history.append(9, base), /not after the last one/);

  assert.equal(history.truncateFrom(10), false, "nothing after 9 to drop");
  assert.equal(history.truncateFrom(9), true);
  assert.deepEqual(history.current, withLearner);

  history.append(12, promoted);
  history.compact(6);
  assert.deepEqual(history.at(6), withLearner, "the configuration at 6 is the new base");
  assert.equal(history.truncateFrom(7), true);
  assert.deepEqual(history.current, withLearner, "a truncation never drops the base");
  assert.equal(history.currentIndex, 6);
});

function newCore(me: number, start: Configuration, state?: Partial<PersistentState>): RaftCore {
  const config: CoreConfig = {
    me,
    peerCount: 5,
    configuration: start,
    heartbeatIntervalMs: 100,
    commitNotifyDelayMs: 10,
    electionTimeoutMinMs: 300,
    electionTimeoutMaxMs: 500,
    maxEntriesPerAppend: 64,
    maxAppendBytes: 64 * 1024,
    maxInflightAppends: 4,
    random: fixedRandom(0),
    trace: null,
  };
  return new RaftCore(config, { term: 0, votedFor: null, snapshot: null, log: [], ...state }, 0);
}

Deno.test("core: a candidate asks only voters, and a learner's vote does not count", () => {
  const core = newCore(0, configuration([0, 1, 2], [3, 4]));
  core.tick(300);
  assert.equal(core.role, "candidate");
  const ready = core.takeReady(300);
  core.onSaved(ready.saveMark!, 300);
  const asked = ready.sendAfterSave.map((request) => request.to).sort();
  assert.deepEqual(asked, [1, 2], "learners are not asked");
  const args = ready.sendAfterSave[0]!.args as Parameters<typeof stepVoteReply>[2];
  // Two learners granting (a confused transport, or a vote asked in an older configuration)
  // make no majority of voters 0, 1, 2.
  stepVoteReply(core, 3, args, { term: 1, voteGranted: true }, 301);
  stepVoteReply(core, 4, args, { term: 1, voteGranted: true }, 301);
  assert.equal(core.role, "candidate");
  stepVoteReply(core, 1, args, { term: 1, voteGranted: true }, 302);
  assert.equal(core.role, "leader");
});

Deno.test("core: a learner and a server outside the configuration never campaign", () => {
  for (const me of [3, 4]) {
    const core = newCore(me, configuration([0, 1, 2], [3]));
    for (let now = 300; now <= 3000; now += 300) core.tick(now);
    assert.equal(core.role, "follower", `peer ${me}`);
    assert.equal(core.currentTerm, 0, `peer ${me}`);
    assert.equal(core.counters.electionsStarted + core.counters.preVotesStarted, 0);
  }
});

Deno.test("core: a single voter leads alone; adding a learner does not change its quorum", () => {
  const core = newCore(0, configuration([0]));
  core.tick(300);
  core.onSaved(core.takeReady(300).saveMark!, 300);
  assert.equal(core.role, "leader");
  const { index } = core.propose("a");
  core.onSaved(core.takeReady(301).saveMark!, 301);
  assert.equal(core.commitIndex, index);
  const change = core.proposeConfiguration(configuration([0], [1]), 302);
  assert.ok(change.ok);
  const ready = core.takeReady(302);
  assert.deepEqual(ready.send.map((request) => request.to), [1], "the learner is probed at once");
  core.onSaved(ready.saveMark!, 303);
  assert.equal(core.commitIndex, change.index, "committed by the only voter's own disk");
});

Deno.test("core: refused changes change nothing", () => {
  const core = newCore(0, configuration([0]));
  const notLeader = core.proposeConfiguration(configuration([0, 1]), 0);
  assert.deepEqual(notLeader.ok ? null : notLeader.reason, "not leader");
  core.tick(300);
  core.onSaved(core.takeReady(300).saveMark!, 300);
  // Elected, but nothing of its term committed yet.
  const early = core.proposeConfiguration(configuration([0, 1]), 301);
  assert.equal(early.ok ? null : early.reason, "in progress");
  core.propose("a");
  core.onSaved(core.takeReady(302).saveMark!, 302);
  const lastIndex = core.lastIndex;
  for (
    const bad of [
      { voters: [], learners: [] },
      { voters: [member(0), member(0)], learners: [] },
      configuration([1, 2]),
    ] as Configuration[]
  ) {
    const result = core.proposeConfiguration(bad, 303);
    assert.equal(result.ok ? null : result.reason, "invalid");
    assert.equal(core.lastIndex, lastIndex);
    assert.deepEqual(core.configuration, configuration([0]));
  }
});

Deno.test("wire: configuration entries and snapshot configurations are checked", () => {
  const limits = { peerCount: 10, currentTerm: 2, maxCommandDepth: 64, maxCommandBytes: 1 << 20 };
  const append = (command: unknown) =>
    parseAppendEntriesArgs({
      term: 2,
      leaderId: 0,
      prevLogIndex: 0,
      prevLogTerm: 0,
      leaderCommit: 0,
      entries: [{ term: 2, command, type: "config" }],
    }, limits);
  const ok = append(configuration([1, 0]));
  assert.ok(ok.ok);
  assert.deepEqual(ok.value.entries[0], {
    term: 2,
    command: configuration([0, 1]),
    type: "config",
  });
  const duplicate = append({ voters: [member(1), member(1)], learners: [] });
  assert.ok(!duplicate.ok);
  assert.match(
    duplicate.error,
    /entries\[0\]\.command' is not a configuration: member 1 appears twice/,
  );
  const empty = append({ voters: [], learners: [] });
  assert.ok(!empty.ok);
  assert.match(empty.error, /at least one voter/);
  const unknownType = parseAppendEntriesArgs({
    term: 2,
    leaderId: 0,
    prevLogIndex: 0,
    prevLogTerm: 0,
    leaderCommit: 0,
    entries: [{ term: 2, command: "x", type: "membership" }],
  }, limits);
  assert.ok(!unknownType.ok);

  const chunk = (configuration: unknown) =>
    parseInstallSnapshotArgs(
      {
        term: 2,
        leaderId: 0,
        lastIncludedIndex: 5,
        lastIncludedTerm: 1,
        offset: 0,
        data: "YWI=",
        done: true,
        configuration,
      },
      limits,
      1024,
    );
  const good = chunk(configuration([0, 1, 2], [3]));
  assert.ok(good.ok);
  assert.deepEqual(good.value.args.configuration, configuration([0, 1, 2], [3]));
  const bad = chunk({ voters: [member(0)], learners: [member(0)] });
  assert.ok(!bad.ok);
  assert.match(bad.error, /'configuration' is malformed: member 0 appears twice/);
});

Deno.test(
  "make(): the configuration option and configurations on disk are checked",
  sanitized,
  async () => {
    const silent = { call: () => Promise.resolve(undefined) };
    const options = { clock: new ManualClock(), trace: null };
    await assert.rejects(
      make([silent, silent], 0, new MemoryPersister(), () => {}, {
        ...options,
        configuration: configuration([0, 2]),
      }),
      /member 2 is not an index into peers \(0\.\.1\)/,
    );
    await assert.rejects(
      make([silent, silent], 0, new MemoryPersister(), () => {}, {
        ...options,
        configuration: { voters: [], learners: [member(1)] },
      }),
      /Option configuration: a configuration must have at least one voter/,
    );
    const corrupt = {
      load: () =>
        Promise.resolve({
          term: 1,
          votedFor: null,
          snapshot: null,
          log: [{
            term: 1,
            command: { voters: [member(0), member(0)], learners: [] },
            type: "config",
          }],
        }),
      save: () => Promise.resolve(),
    };
    await assert.rejects(
      make([silent, silent], 0, corrupt as never, () => {}, options),
      /malformed state: entry at index 1: member 0 appears twice/,
    );
    const raft = await make([silent, silent, silent], 2, new MemoryPersister(), () => {}, {
      ...options,
      configuration: configuration([0, 1], [2]),
    });
    raft.kill();
  },
);
