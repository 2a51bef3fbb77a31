/**
 * The core's hot paths, so that regressions show: a leader proposing, replicating and applying a
 * batch, a follower accepting one, and the checks an AppendEntries passes at the boundary.
 *
 *   deno bench bench/core_bench.ts     (or: deno task bench)
 *
 * Every batch is 256 commands of 100 bytes, what one AppendEntries carries under load.
 *
 * @module
 */

import { type CoreConfig, RaftCore } from "../src/raft/core.ts";
import {
  AppendEntries,
  type AppendEntriesArgs,
  parseAppendEntriesArgs,
  type RequestVoteArgs,
} from "../src/raft/messages.ts";
import { DEFAULT_MAX_COMMAND_BYTES, DEFAULT_MAX_COMMAND_DEPTH } from "../src/raft/limits.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import { stepAppendEntries, stepAppendReply, stepVoteReply } from "../tests/helpers/core_steps.ts";
import type { LogEntry } from "../src/types.ts";
import { command } from "./cluster_load.ts";

const BATCH = 256;

function config(me: number): CoreConfig {
  return {
    me,
    peerCount: 3,
    heartbeatIntervalMs: 250,
    commitNotifyDelayMs: 25,
    electionTimeoutMinMs: 700,
    electionTimeoutMaxMs: 1100,
    maxEntriesPerAppend: BATCH,
    maxAppendBytes: 64 * 1024,
    maxInflightAppends: 16,
    random: () => 0.5,
    trace: null,
  };
}

/** A leader of term 1 whose followers have answered its first heartbeat. */
function newLeader(): { core: RaftCore; now: number } {
  const core = new RaftCore(config(0), { term: 0, votedFor: null, snapshot: null, log: [] }, 0);
  let now = core.nextDeadline();
  core.tick(now);
  const election = core.takeReady(now);
  core.onSaved(election.saveMark!, now);
  const vote = election.sendAfterSave[0]!;
  stepVoteReply(core, vote.to, vote.args as RequestVoteArgs, {
    term: 1,
    voteGranted: true,
  }, now);
  const initial = core.takeReady(now);
  for (const request of initial.send) {
    stepAppendReply(core, request.to, request.args as AppendEntriesArgs, {
      term: 1,
      success: true,
      conflictTerm: 0,
      conflictIndex: 0,
    }, now);
  }
  now += 1;
  return { core, now };
}

const commands = Array.from({ length: BATCH }, (_, i) => command(i));

const leader = newLeader();
Deno.bench(`leader: propose ${BATCH}, replicate to 2, save, commit, apply`, () => {
  const { core } = leader;
  const now = ++leader.now;
  for (const text of commands) core.propose(text, text.length + 2);
  const sent = core.takeReady(now);
  core.onSaved(sent.saveMark!, now);
  for (const request of sent.send) {
    if (request.method !== AppendEntries) continue;
    stepAppendReply(core, request.to, request.args, {
      term: 1,
      success: true,
      conflictTerm: 0,
      conflictIndex: 0,
    }, now);
  }
  if (core.takeReady(now).apply.length !== BATCH) throw new Error("Expected a batch to apply");
});

const follower = new RaftCore(config(1), { term: 1, votedFor: 0, snapshot: null, log: [] }, 0);
let followerNow = 0;
Deno.bench(`follower: accept ${BATCH} entries, save, apply`, () => {
  const prevLogIndex = follower.lastIndex;
  const args: AppendEntriesArgs = {
    term: 1,
    leaderId: 0,
    prevLogIndex,
    prevLogTerm: prevLogIndex === 0 ? 0 : 1,
    entries: commands.map((text) => ({ term: 1, command: text })),
    leaderCommit: prevLogIndex,
  };
  const reply = stepAppendEntries(follower, args, ++followerNow);
  if (!reply.success) throw new Error("Expected the follower to accept");
  const ready = follower.takeReady(followerNow);
  follower.onSaved(ready.saveMark!, followerNow);
});

const wireArgs: unknown = JSON.parse(JSON.stringify({
  term: 1,
  leaderId: 0,
  prevLogIndex: 10,
  prevLogTerm: 1,
  entries: commands.map((text) => ({ term: 1, command: text })),
  leaderCommit: 10,
}));
const wireLimits = {
  peerCount: 3,
  currentTerm: 1,
  maxCommandDepth: DEFAULT_MAX_COMMAND_DEPTH,
  maxCommandBytes: DEFAULT_MAX_COMMAND_BYTES,
};
Deno.bench(`parseAppendEntriesArgs: ${BATCH} entries from the wire`, () => {
  if (!parseAppendEntriesArgs(wireArgs, wireLimits).ok) throw new Error("Expected valid arguments");
});

Deno.bench(
  `JSON round trip of an AppendEntries with ${BATCH} entries (MemoryNetwork's copy)`,
  () => {
    JSON.parse(JSON.stringify(wireArgs));
  },
);

const persister = new MemoryPersister();
let persisted = 0;
const entries: LogEntry[] = commands.map((text) => ({ term: 1, command: text }));
Deno.bench(`MemoryPersister: save ${BATCH} entries`, async () => {
  await persister.save({ term: 1, votedFor: 0, log: { from: persisted + 1, entries } });
  persisted += BATCH;
});
