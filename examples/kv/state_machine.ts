/**
 * The replicated key/value store: the state every peer builds by applying committed commands in
 * log order. Pure and deterministic, so every peer that applies the same log holds the same data.
 *
 * @module
 */

import type { StateMachine } from "../../mod.ts";

/** A command as it travels through the Raft log. */
export interface KvCommand {
  /**
   * What to do. Reads are served without the log (`RaftNode.read()`); a `get` in the log is
   * still applied, for clients of older versions.
   */
  op: "get" | "put" | "delete";
  /** The key. */
  key: string;
  /** The new value, for `put`. */
  value?: string;
  /**
   * The client that sent it, for duplicate detection; empty when the client gave none, and then
   * the command is never taken for a duplicate.
   */
  clientId: string;
  /**
   * The client's request number: increases with each new request, repeats on a retry. Ignored
   * when `clientId` is empty (the server puts 0 there).
   */
  seq: number;
  /**
   * The proposing peer's clock (ms since the epoch) when it proposed the command. Sessions
   * expire by this time, which every peer reads from the log, so every peer expires the same
   * sessions at the same index (thesis §6.3). Absent in commands of older versions.
   */
  time?: number;
}

/** Why a command was not applied. */
export interface KvRefusal {
  /** The client's session expired: its retries can no longer be told from new requests. */
  error: "session expired";
}

/** What applying a command gives back to the client that proposed it. */
export interface KvResult {
  /** The value read (for `get`) or replaced (`put`, `delete`); `null` if the key was absent. */
  value: string | null;
}

/** Longest key accepted, in characters. */
export const MAX_KEY_LENGTH = 256;

/** Longest `X-Client-Id` accepted, in characters. */
export const MAX_CLIENT_ID_LENGTH = 256;

/** Checks a command taken from the log; it is `unknown` because the log is. */
export function parseCommand(value: unknown): KvCommand | undefined {
  if (typeof value !== "object" || value === null) return undefined;
  const { op, key, value: newValue, clientId, seq, time } = value as Record<string, unknown>;
  if (op !== "get" && op !== "put" && op !== "delete") return undefined;
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_KEY_LENGTH) return undefined;
  if (typeof clientId !== "string" || !Number.isSafeInteger(seq)) return undefined;
  if (time !== undefined && !Number.isSafeInteger(time)) return undefined;
  const stamp = time === undefined ? {} : { time: time as number };
  if (op === "put") {
    if (typeof newValue !== "string") return undefined;
    return { op, key, value: newValue, clientId, seq: seq as number, ...stamp };
  }
  return { op, key, clientId, seq: seq as number, ...stamp };
}

/**
 * How long a client's session lives without a request, in ms of the log's time: a retry after
 * this is refused, not applied twice. Default 10 minutes: far longer than any client retries.
 */
export const SESSION_TTL_MS = 10 * 60 * 1000;

/** Most sessions kept; past it, the least recently used goes (as every peer decides alike). */
export const MAX_SESSIONS = 10_000;

/** What a snapshot of the state machine holds, as JSON. */
interface KvSnapshot {
  data: [string, string][];
  sessions: [string, Session][];
  now: number;
}

/** A client's session: its last applied request, that request's result, and when it was used. */
interface Session {
  seq: number;
  result: KvResult;
  usedAt: number;
}

/**
 * The key/value data plus, per client, its last applied request and that request's result. A
 * `StateMachine` for `RaftNode`: commands come in checked by {@linkcode parseCommand}, and the
 * whole state snapshots to JSON.
 */
export class KvStateMachine implements StateMachine<unknown, KvResult | KvRefusal | undefined> {
  #data = new Map<string, string>();
  /** Sessions, least recently used first (a Map keeps insertion order; use re-inserts). */
  #sessions = new Map<string, Session>();
  /** The latest proposer time seen in the log: the clock sessions expire by. */
  #now = 0;
  #appliedIndex = 0;
  readonly #sessionTtlMs: number;
  readonly #maxSessions: number;

  /** A state machine whose sessions expire after `sessionTtlMs` and number at most `maxSessions`. */
  constructor(options: { sessionTtlMs?: number; maxSessions?: number } = {}) {
    this.#sessionTtlMs = options.sessionTtlMs ?? SESSION_TTL_MS;
    this.#maxSessions = options.maxSessions ?? MAX_SESSIONS;
  }

  /**
   * Applies the command committed at `index`; a malformed one (from a buggy or hostile client of
   * the log) changes nothing and gives `undefined`. A request a client already had applied (same
   * client, same or older seq) changes nothing and gives the first application's result.
   */
  apply(value: unknown, index: number): KvResult | KvRefusal | undefined {
    this.#appliedIndex = index;
    const command = parseCommand(value);
    if (command === undefined) return undefined;
    if (command.time !== undefined && command.time > this.#now) this.#now = command.time;
    this.#expireSessions();
    const session = command.clientId === "" ? undefined : this.#sessions.get(command.clientId);
    if (session !== undefined && command.seq <= session.seq) return session.result;
    // A client numbers its requests from 1: a later one without a session is a retry whose
    // session expired, which could have been applied already (thesis §6.3).
    if (command.clientId !== "" && session === undefined && command.seq > 1) {
      return { error: "session expired" };
    }
    const result: KvResult = { value: this.#data.get(command.key) ?? null };
    if (command.op === "put") this.#data.set(command.key, command.value!);
    if (command.op === "delete") this.#data.delete(command.key);
    if (command.clientId !== "") {
      this.#sessions.delete(command.clientId);
      this.#sessions.set(command.clientId, { seq: command.seq, result, usedAt: this.#now });
      if (this.#sessions.size > this.#maxSessions) {
        this.#sessions.delete(this.#sessions.keys().next().value!);
      }
    }
    return result;
  }

  /** Drops the sessions idle for longer than the TTL, oldest first. */
  #expireSessions(): void {
    for (const [clientId, session] of this.#sessions) {
      if (session.usedAt >= this.#now - this.#sessionTtlMs) break;
      this.#sessions.delete(clientId);
    }
  }

  /** The value of `key` in this peer's state, or null. */
  get(key: string): string | null {
    return this.#data.get(key) ?? null;
  }

  /** How many client sessions are kept. */
  get sessionCount(): number {
    return this.#sessions.size;
  }

  /** The whole state, as JSON bytes. */
  snapshot(): Uint8Array {
    const snapshot: KvSnapshot = {
      data: [...this.#data],
      sessions: [...this.#sessions],
      now: this.#now,
    };
    return new TextEncoder().encode(JSON.stringify(snapshot));
  }

  /** Replaces the whole state with a snapshot's, taken through `index`. */
  restore(bytes: Uint8Array, index: number): void {
    const snapshot = JSON.parse(new TextDecoder().decode(bytes)) as KvSnapshot;
    this.#data = new Map(snapshot.data);
    this.#sessions = new Map(snapshot.sessions);
    this.#now = snapshot.now;
    this.#appliedIndex = index;
  }

  /** Index of the last entry applied. */
  get appliedIndex(): number {
    return this.#appliedIndex;
  }

  /** All data, sorted by key: for comparing peers. */
  entries(): [string, string][] {
    return [...this.#data].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
  }
}
