/**
 * The two RPCs of Figure 2, their replies, and the checks that turn `unknown` wire data into them.
 * Everything a transport delivers is untrusted until it passes these checks.
 *
 * @module
 */

import { decodeBase64 } from "./_base64.ts";
import type { Configuration, LogEntry } from "./types.ts";
import { parseConfiguration } from "./membership.ts";
import {
  checkCommand,
  type CommandLimits,
  highestAcceptableTerm,
  isAcceptableTerm,
} from "./limits.ts";

/** RPC method names, as transports carry them. */
export const RequestVote = "RequestVote";
/** RPC method names, as transports carry them. */
export const AppendEntries = "AppendEntries";
/** RPC method names, as transports carry them. */
export const InstallSnapshot = "InstallSnapshot";
/** RPC method names, as transports carry them. */
export const TimeoutNow = "TimeoutNow";
/**
 * RPC method names, as transports carry them: a follower asks the leader for a read index
 * (thesis §6.4, follower reads). Served by the driver, not the core.
 */
export const ReadIndex = "ReadIndex";

/** Figure 2: RequestVote RPC arguments. */
export interface RequestVoteArgs {
  term: number;
  candidateId: number;
  lastLogIndex: number;
  lastLogTerm: number;
  /**
   * Pre-vote (Ongaro's thesis §9.6): asks whether the receiver would vote for the candidate in
   * `term`, without the receiver changing its term or vote. Absent means a real vote.
   */
  preVote?: boolean;
  /**
   * The candidate was handed leadership by the leader (TimeoutNow, thesis §3.10): voters that
   * hear from that leader grant the vote anyway. Absent otherwise.
   */
  transfer?: boolean;
}

/** Figure 2: RequestVote RPC results. */
export interface RequestVoteReply {
  term: number;
  voteGranted: boolean;
}

/** Figure 2: AppendEntries RPC arguments. */
export interface AppendEntriesArgs {
  term: number;
  leaderId: number;
  prevLogIndex: number;
  prevLogTerm: number;
  entries: LogEntry[];
  leaderCommit: number;
  /**
   * The leader's heartbeat round when it sent the request (not Figure 2's): the leader reads it
   * back from its own request when the reply comes, to learn which round a follower answered
   * (ReadIndex and leases, thesis §6.4). Followers ignore it.
   */
  round?: number;
}

/**
 * Figure 2: AppendEntries RPC results, plus the hint for the accelerated backtracking that §5.3
 * sketches: on a mismatch, the term of the conflicting entry and the first index the follower
 * holds for that term; when the follower's log is too short, `conflictTerm` is 0 and
 * `conflictIndex` is the index just past its last entry.
 */
export interface AppendEntriesReply {
  term: number;
  success: boolean;
  conflictTerm: number;
  conflictIndex: number;
}

/** An incoming RequestVote, as the core steps it. */
export interface RequestVoteMessage {
  type: typeof RequestVote;
  args: RequestVoteArgs;
}

/** An incoming AppendEntries, as the core steps it. */
export interface AppendEntriesMessage {
  type: typeof AppendEntries;
  args: AppendEntriesArgs;
}

/** The reply to a RequestVote this peer sent to `from`; `reply` is null when none came. */
export interface RequestVoteReplyMessage {
  type: "RequestVoteReply";
  from: number;
  args: RequestVoteArgs;
  reply: RequestVoteReply | null;
}

/** The reply to an AppendEntries this peer sent to `from`; `reply` is null when none came. */
export interface AppendEntriesReplyMessage {
  type: "AppendEntriesReply";
  from: number;
  args: AppendEntriesArgs;
  reply: AppendEntriesReply | null;
}

/** A request this peer answers. */
export type RequestMessage =
  | RequestVoteMessage
  | AppendEntriesMessage
  | InstallSnapshotMessage
  | TimeoutNowMessage;
/** A reply (or the lack of one) to a request this peer sent. */
export type ReplyMessage =
  | RequestVoteReplyMessage
  | AppendEntriesReplyMessage
  | InstallSnapshotReplyMessage
  | TimeoutNowReplyMessage;
/** Everything the core steps: requests to answer and replies to its own requests. */
export type Message = RequestMessage | ReplyMessage;

/** What the core answers to a request: the RPC's reply. */
export type ResponseTo<M extends Message> = M extends RequestVoteMessage ? RequestVoteReply
  : M extends AppendEntriesMessage ? AppendEntriesReply
  : M extends InstallSnapshotMessage ? InstallSnapshotReply
  : M extends TimeoutNowMessage ? TimeoutNowReply
  : null;

/**
 * Figure 13: InstallSnapshot RPC arguments, one chunk of the snapshot at a time. `data` is the
 * chunk's bytes in standard base64, since RPC arguments are JSON.
 */
export interface InstallSnapshotArgs {
  term: number;
  leaderId: number;
  /** The snapshot replaces all entries up through and including this index. */
  lastIncludedIndex: number;
  /** The term of `lastIncludedIndex`. */
  lastIncludedTerm: number;
  /** Byte offset where this chunk is positioned in the snapshot. */
  offset: number;
  /** The chunk's bytes, in base64. */
  data: string;
  /** True if this is the last chunk. */
  done: boolean;
  /**
   * The cluster's configuration as of `lastIncludedIndex` (thesis §4.4), on the first chunk
   * (offset 0). Absent from leaders that predate membership changes.
   */
  configuration?: Configuration;
}

/**
 * Figure 13: InstallSnapshot RPC results, plus what lets the leader resume a transfer: `offset`,
 * how many bytes of this snapshot the follower holds (where the next chunk starts), and
 * `installed`, whether the follower now holds the log through `lastIncludedIndex` (the snapshot
 * is installed, or it had those entries committed already).
 */
export interface InstallSnapshotReply {
  term: number;
  offset: number;
  installed: boolean;
}

/**
 * Thesis §3.10: TimeoutNow, from a leader handing its leadership over: the receiver starts an
 * election at once, without a pre-vote.
 */
export interface TimeoutNowArgs {
  term: number;
  leaderId: number;
}

/** The reply to TimeoutNow: the receiver's term. */
export interface TimeoutNowReply {
  term: number;
}

/** An incoming TimeoutNow, as the core steps it. */
export interface TimeoutNowMessage {
  type: typeof TimeoutNow;
  args: TimeoutNowArgs;
}

/** The reply to a TimeoutNow this peer sent to `from`; `reply` is null when none came. */
export interface TimeoutNowReplyMessage {
  type: "TimeoutNowReply";
  from: number;
  args: TimeoutNowArgs;
  reply: TimeoutNowReply | null;
}

/** An incoming InstallSnapshot chunk, its data decoded, as the core steps it. */
export interface InstallSnapshotMessage {
  type: typeof InstallSnapshot;
  args: InstallSnapshotArgs;
  /** `args.data`, decoded. */
  data: Uint8Array;
}

/** The reply to an InstallSnapshot this peer sent to `from`; `reply` is null when none came. */
export interface InstallSnapshotReplyMessage {
  type: "InstallSnapshotReply";
  from: number;
  args: InstallSnapshotArgs;
  reply: InstallSnapshotReply | null;
}

/** The reply a peer gives to a request it cannot parse. */
export interface RpcErrorReply {
  error: string;
}

/** What a receiver checks incoming requests against. */
export interface WireLimits extends CommandLimits {
  /** Peers in the cluster: peer numbers are 0..peerCount-1. */
  peerCount: number;
  /** The receiver's current term, which bounds the terms it accepts (see `isAcceptableTerm`). */
  currentTerm: number;
}

/** A parse result: the value, or a sentence saying what is wrong with the input. */
export type Parsed<T> = { ok: true; value: T } | { ok: false; error: string };

type Fields = Record<string, unknown>;

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.length > 60 ? text.slice(0, 57) + "..." : text;
  } catch {
    return String(value);
  }
}

function isObject(value: unknown): value is Fields {
  return typeof value === "object" && value !== null && !Array.isArray(value);
}

function badField(rpc: string, field: string, expected: string, value: unknown): string {
  return `${rpc}: '${field}' must be ${expected}, got ${describe(value)}`;
}

/** A term or an index: a non-negative safe integer. */
function isCount(value: unknown): value is number {
  return Number.isSafeInteger(value) && (value as number) >= 0;
}

function checkCounts(rpc: string, object: Fields, fields: readonly string[]): string | null {
  for (const field of fields) {
    if (!isCount(object[field])) {
      return badField(rpc, field, "a non-negative integer", object[field]);
    }
  }
  return null;
}

function checkTerm(rpc: string, object: Fields, currentTerm: number): string | null {
  if (!isAcceptableTerm(object.term, currentTerm)) {
    const highest = highestAcceptableTerm(currentTerm);
    return badField(
      rpc,
      "term",
      `an integer in 0..${highest} (this peer's term is ${currentTerm})`,
      object.term,
    );
  }
  return null;
}

function checkPeer(rpc: string, object: Fields, field: string, peerCount: number): string | null {
  const value = object[field];
  if (!Number.isSafeInteger(value) || (value as number) < 0 || (value as number) >= peerCount) {
    return badField(rpc, field, `a peer number in 0..${peerCount - 1}`, value);
  }
  return null;
}

/** Checks incoming RequestVote arguments against the receiver's `limits`. */
export function parseRequestVoteArgs(
  args: unknown,
  limits: Pick<WireLimits, "peerCount" | "currentTerm">,
): Parsed<RequestVoteArgs> {
  if (!isObject(args)) {
    return { ok: false, error: badField(RequestVote, "args", "an object", args) };
  }
  const error = checkTerm(RequestVote, args, limits.currentTerm) ??
    checkCounts(RequestVote, args, ["lastLogIndex", "lastLogTerm"]) ??
    checkPeer(RequestVote, args, "candidateId", limits.peerCount);
  if (error !== null) return { ok: false, error };
  // A candidate's log holds no term above its own (§5.3), nor does a pre-candidate's.
  if ((args.lastLogTerm as number) > (args.term as number)) {
    return {
      ok: false,
      error: badField(RequestVote, "lastLogTerm", `at most term ${args.term}`, args.lastLogTerm),
    };
  }
  if (args.preVote !== undefined && typeof args.preVote !== "boolean") {
    return { ok: false, error: badField(RequestVote, "preVote", "a boolean", args.preVote) };
  }
  if (args.transfer !== undefined && typeof args.transfer !== "boolean") {
    return { ok: false, error: badField(RequestVote, "transfer", "a boolean", args.transfer) };
  }
  const value: RequestVoteArgs = {
    term: args.term as number,
    candidateId: args.candidateId as number,
    lastLogIndex: args.lastLogIndex as number,
    lastLogTerm: args.lastLogTerm as number,
  };
  if (args.preVote === true) value.preVote = true;
  if (args.transfer === true) value.transfer = true;
  return { ok: true, value };
}

/**
 * Checks incoming AppendEntries arguments against the receiver's `limits`, commands included: a
 * command too deep or too large for this peer is refused here, before it reaches the log.
 */
export function parseAppendEntriesArgs(
  args: unknown,
  limits: WireLimits,
): Parsed<AppendEntriesArgs> {
  if (!isObject(args)) {
    return { ok: false, error: badField(AppendEntries, "args", "an object", args) };
  }
  const error = checkTerm(AppendEntries, args, limits.currentTerm) ??
    checkCounts(AppendEntries, args, ["prevLogIndex", "prevLogTerm", "leaderCommit"]) ??
    checkPeer(AppendEntries, args, "leaderId", limits.peerCount);
  if (error !== null) return { ok: false, error };
  const term = args.term as number;
  if ((args.prevLogTerm as number) > term) {
    return {
      ok: false,
      error: badField(AppendEntries, "prevLogTerm", `at most term ${term}`, args.prevLogTerm),
    };
  }
  if (!Array.isArray(args.entries)) {
    return { ok: false, error: badField(AppendEntries, "entries", "an array", args.entries) };
  }
  const entries: LogEntry[] = [];
  let previousTerm = args.prevLogTerm as number;
  for (const [i, entry] of args.entries.entries()) {
    // A leader's log never has terms above its own or decreasing terms (§5.3, Log Matching).
    if (
      !isObject(entry) || !isCount(entry.term) || entry.term < 1 || entry.term > term ||
      entry.term < previousTerm || !("command" in entry) || entry.command === undefined ||
      (entry.type !== undefined && entry.type !== "config" &&
        (entry.type !== "noop" || entry.command !== null))
    ) {
      return {
        ok: false,
        error: badField(
          AppendEntries,
          `entries[${i}]`,
          `{ term, command }, { term, command: null, type: "noop" } or { term, command, type: "config" } with term in ${
            previousTerm || 1
          }..${term}`,
          entry,
        ),
      };
    }
    if (entry.type === "config") {
      const configuration = parseConfiguration(entry.command);
      if (typeof configuration === "string") {
        return {
          ok: false,
          error:
            `${AppendEntries}: 'entries[${i}].command' is not a configuration: ${configuration}`,
        };
      }
      previousTerm = entry.term;
      entries.push({ term: entry.term, command: configuration, type: "config" });
      continue;
    }
    const refused = checkCommand(entry.command, limits);
    if (refused !== null) {
      return {
        ok: false,
        error: `${AppendEntries}: 'entries[${i}].command' is refused: ${refused}`,
      };
    }
    previousTerm = entry.term;
    entries.push(
      entry.type === "noop"
        ? { term: entry.term, command: null, type: "noop" }
        : { term: entry.term, command: entry.command },
    );
  }
  return {
    ok: true,
    value: {
      term,
      leaderId: args.leaderId as number,
      prevLogIndex: args.prevLogIndex as number,
      prevLogTerm: args.prevLogTerm as number,
      entries,
      leaderCommit: args.leaderCommit as number,
    },
  };
}

/**
 * Checks a RequestVote reply received by a peer at `currentTerm`; `null` when it is not one (a
 * lost or garbled reply, or a term this peer does not accept).
 */
export function parseRequestVoteReply(
  reply: unknown,
  currentTerm: number,
): RequestVoteReply | null {
  if (
    !isObject(reply) || !isAcceptableTerm(reply.term, currentTerm) ||
    typeof reply.voteGranted !== "boolean"
  ) {
    return null;
  }
  return { term: reply.term, voteGranted: reply.voteGranted };
}

/**
 * Checks an AppendEntries reply received by a peer at `currentTerm`; `null` when it is not one
 * (a lost or garbled reply, or a term this peer does not accept).
 */
export function parseAppendEntriesReply(
  reply: unknown,
  currentTerm: number,
): AppendEntriesReply | null {
  if (
    !isObject(reply) || !isAcceptableTerm(reply.term, currentTerm) ||
    typeof reply.success !== "boolean" || !isCount(reply.conflictTerm) ||
    // The conflicting entry is in the follower's log, whose terms are at most its own.
    reply.conflictTerm > reply.term || !isCount(reply.conflictIndex)
  ) {
    return null;
  }
  return {
    term: reply.term,
    success: reply.success,
    conflictTerm: reply.conflictTerm,
    conflictIndex: reply.conflictIndex,
  };
}

/**
 * Checks incoming InstallSnapshot arguments against the receiver's `limits`, and decodes the
 * chunk, which may hold at most `maxChunkBytes` bytes.
 */
export function parseInstallSnapshotArgs(
  args: unknown,
  limits: Pick<WireLimits, "peerCount" | "currentTerm">,
  maxChunkBytes: number,
): Parsed<{ args: InstallSnapshotArgs; data: Uint8Array }> {
  if (!isObject(args)) {
    return { ok: false, error: badField(InstallSnapshot, "args", "an object", args) };
  }
  const error = checkTerm(InstallSnapshot, args, limits.currentTerm) ??
    checkCounts(InstallSnapshot, args, ["lastIncludedIndex", "lastIncludedTerm", "offset"]) ??
    checkPeer(InstallSnapshot, args, "leaderId", limits.peerCount);
  if (error !== null) return { ok: false, error };
  const term = args.term as number;
  const lastIncludedTerm = args.lastIncludedTerm as number;
  if (lastIncludedTerm > term || lastIncludedTerm < 1 || (args.lastIncludedIndex as number) < 1) {
    return {
      ok: false,
      error: badField(
        InstallSnapshot,
        "lastIncludedIndex/lastIncludedTerm",
        `an index >= 1 and a term in 1..${term}`,
        [args.lastIncludedIndex, lastIncludedTerm],
      ),
    };
  }
  if (typeof args.done !== "boolean") {
    return { ok: false, error: badField(InstallSnapshot, "done", "a boolean", args.done) };
  }
  // Base64 takes 4 characters for 3 bytes: refuse a long string before decoding it.
  if (typeof args.data !== "string" || args.data.length > Math.ceil(maxChunkBytes / 3) * 4) {
    return {
      ok: false,
      error: badField(
        InstallSnapshot,
        "data",
        `base64 of at most ${maxChunkBytes} bytes`,
        typeof args.data === "string" ? `${args.data.length} characters` : args.data,
      ),
    };
  }
  const data = decodeBase64(args.data);
  if (data === undefined) {
    return { ok: false, error: badField(InstallSnapshot, "data", "valid base64", args.data) };
  }
  const value: InstallSnapshotArgs = {
    term,
    leaderId: args.leaderId as number,
    lastIncludedIndex: args.lastIncludedIndex as number,
    lastIncludedTerm,
    offset: args.offset as number,
    data: args.data,
    done: args.done,
  };
  if (args.configuration !== undefined) {
    const configuration = parseConfiguration(args.configuration);
    if (typeof configuration === "string") {
      return {
        ok: false,
        error: `${InstallSnapshot}: 'configuration' is malformed: ${configuration}`,
      };
    }
    value.configuration = configuration;
  }
  return { ok: true, value: { args: value, data } };
}

/**
 * Checks an InstallSnapshot reply received by a peer at `currentTerm`; `null` when it is not one
 * (a lost or garbled reply, or a term this peer does not accept).
 */
export function parseInstallSnapshotReply(
  reply: unknown,
  currentTerm: number,
): InstallSnapshotReply | null {
  if (
    !isObject(reply) || !isAcceptableTerm(reply.term, currentTerm) || !isCount(reply.offset) ||
    typeof reply.installed !== "boolean"
  ) {
    return null;
  }
  return { term: reply.term, offset: reply.offset, installed: reply.installed };
}

/** Checks incoming TimeoutNow arguments against the receiver's `limits`. */
export function parseTimeoutNowArgs(
  args: unknown,
  limits: Pick<WireLimits, "peerCount" | "currentTerm">,
): Parsed<TimeoutNowArgs> {
  if (!isObject(args)) return { ok: false, error: badField(TimeoutNow, "args", "an object", args) };
  const error = checkTerm(TimeoutNow, args, limits.currentTerm) ??
    checkPeer(TimeoutNow, args, "leaderId", limits.peerCount);
  if (error !== null) return { ok: false, error };
  return { ok: true, value: { term: args.term as number, leaderId: args.leaderId as number } };
}

/**
 * Checks a TimeoutNow reply received by a peer at `currentTerm`; `null` when it is not one.
 */
export function parseTimeoutNowReply(reply: unknown, currentTerm: number): TimeoutNowReply | null {
  if (!isObject(reply) || !isAcceptableTerm(reply.term, currentTerm)) return null;
  return { term: reply.term };
}

/** A follower's request for a read index: `{}`, or anything else, which is refused. */
export function parseReadIndexArgs(args: unknown): Parsed<Record<never, never>> {
  if (!isObject(args) || Object.keys(args).length !== 0) {
    return { ok: false, error: badField(ReadIndex, "args", "an empty object", args) };
  }
  return { ok: true, value: {} };
}

/** The leader's answer to ReadIndex: its term, and the read index or null if it does not lead. */
export interface ReadIndexReply {
  term: number;
  index: number | null;
}

/** Checks a ReadIndex reply; `null` when it is not one. */
export function parseReadIndexReply(reply: unknown, currentTerm: number): ReadIndexReply | null {
  if (
    !isObject(reply) || !isAcceptableTerm(reply.term, currentTerm) ||
    (reply.index !== null && !isCount(reply.index))
  ) {
    return null;
  }
  return { term: reply.term, index: reply.index as number | null };
}
