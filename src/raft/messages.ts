/**
 * The two RPCs of Figure 2, their replies, and the checks that turn `unknown` wire data into them.
 * Everything a transport delivers is untrusted until it passes these checks.
 *
 * @module
 */

import type { LogEntry } from "./types.ts";
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
  const value: RequestVoteArgs = {
    term: args.term as number,
    candidateId: args.candidateId as number,
    lastLogIndex: args.lastLogIndex as number,
    lastLogTerm: args.lastLogTerm as number,
  };
  if (args.preVote === true) value.preVote = true;
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
      entry.term < previousTerm || !("command" in entry) || entry.command === undefined
    ) {
      return {
        ok: false,
        error: badField(
          AppendEntries,
          `entries[${i}]`,
          `{ term, command } with term in ${previousTerm || 1}..${term}`,
          entry,
        ),
      };
    }
    const refused = checkCommand(entry.command, limits);
    if (refused !== null) {
      return {
        ok: false,
        error: `${AppendEntries}: 'entries[${i}].command' is refused: ${refused}`,
      };
    }
    previousTerm = entry.term;
    entries.push({ term: entry.term, command: entry.command });
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
