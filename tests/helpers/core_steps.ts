/**
 * Shorthands for stepping a {@linkcode RaftCore} with one kind of message, for exact tests and
 * benchmarks of the core.
 *
 * @module
 */

import type { RaftCore } from "../../src/raft/core.ts";
import type {
  AppendEntriesArgs,
  AppendEntriesReply,
  RequestVoteArgs,
  RequestVoteReply,
} from "../../src/raft/messages.ts";

/** Steps an incoming RequestVote; returns the reply. */
export function stepRequestVote(
  core: RaftCore,
  args: RequestVoteArgs,
  now: number,
): RequestVoteReply {
  return core.step({ type: "RequestVote", args }, now);
}

/** Steps an incoming AppendEntries; returns the reply. */
export function stepAppendEntries(
  core: RaftCore,
  args: AppendEntriesArgs,
  now: number,
): AppendEntriesReply {
  return core.step({ type: "AppendEntries", args }, now);
}

/** Steps the reply (null: none came) to a RequestVote that `core` sent to `from`. */
export function stepVoteReply(
  core: RaftCore,
  from: number,
  args: RequestVoteArgs,
  reply: RequestVoteReply | null,
  now: number,
): void {
  core.step({ type: "RequestVoteReply", from, args, reply }, now);
}

/** Steps the reply (null: none came) to an AppendEntries that `core` sent to `from`. */
export function stepAppendReply(
  core: RaftCore,
  from: number,
  args: AppendEntriesArgs,
  reply: AppendEntriesReply | null,
  now: number,
): void {
  core.step({ type: "AppendEntriesReply", from, args, reply }, now);
}
