/**
 * The replicated key/value store: the state every peer builds by applying committed commands in
 * log order. Pure and deterministic, so every peer that applies the same log holds the same data.
 *
 * @module
 */

import type { StateMachine } from "../../mod.ts";

/** A command as it travels through the Raft log. */
export interface KvCommand {
  /** What to do. A `get` goes through the log too, which makes reads linearizable. */
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
  const { op, key, value: newValue, clientId, seq } = value as Record<string, unknown>;
  if (op !== "get" && op !== "put" && op !== "delete") return undefined;
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_KEY_LENGTH) return undefined;
  if (typeof clientId !== "string" || !Number.isSafeInteger(seq)) return undefined;
  if (op === "put") {
    if (typeof newValue !== "string") return undefined;
    return { op, key, value: newValue, clientId, seq: seq as number };
  }
  return { op, key, clientId, seq: seq as number };
}

/** What a snapshot of the state machine holds, as JSON. */
interface KvSnapshot {
  data: [string, string][];
  sessions: [string, { seq: number; result: KvResult }][];
}

/**
 * The key/value data plus, per client, its last applied request and that request's result. A
 * `StateMachine` for `RaftNode`: commands come in checked by {@linkcode parseCommand}, and the
 * whole state snapshots to JSON.
 */
export class KvStateMachine implements StateMachine<unknown, KvResult | undefined> {
  #data = new Map<string, string>();
  #lastApplied = new Map<string, { seq: number; result: KvResult }>();
  #appliedIndex = 0;

  /**
   * Applies the command committed at `index`; a malformed one (from a buggy or hostile client of
   * the log) changes nothing and gives `undefined`. A request a client already had applied (same
   * client, same or older seq) changes nothing and gives the first application's result.
   */
  apply(value: unknown, index: number): KvResult | undefined {
    this.#appliedIndex = index;
    const command = parseCommand(value);
    if (command === undefined) return undefined;
    const previous = command.clientId === "" ? undefined : this.#lastApplied.get(command.clientId);
    if (previous !== undefined && command.seq <= previous.seq) return previous.result;
    const result: KvResult = { value: this.#data.get(command.key) ?? null };
    if (command.op === "put") this.#data.set(command.key, command.value!);
    if (command.op === "delete") this.#data.delete(command.key);
    if (command.clientId !== "") {
      this.#lastApplied.set(command.clientId, { seq: command.seq, result });
    }
    return result;
  }

  /** The whole state, as JSON bytes. */
  snapshot(): Uint8Array {
    const snapshot: KvSnapshot = { data: [...this.#data], sessions: [...this.#lastApplied] };
    return new TextEncoder().encode(JSON.stringify(snapshot));
  }

  /** Replaces the whole state with a snapshot's, taken through `index`. */
  restore(bytes: Uint8Array, index: number): void {
    const snapshot = JSON.parse(new TextDecoder().decode(bytes)) as KvSnapshot;
    this.#data = new Map(snapshot.data);
    this.#lastApplied = new Map(snapshot.sessions);
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
