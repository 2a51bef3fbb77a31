/**
 * The replicated key/value store: the state every peer builds by applying committed commands in
 * log order. Pure and deterministic, so every peer that applies the same log holds the same data.
 *
 * @module
 */

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
  /**
   * Set by the peer that proposed the command, unique per proposal: tells that peer whether the
   * entry committed at the index it was given is its own or another leader's.
   */
  proposal?: string;
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
  const { op, key, value: newValue, clientId, seq, proposal } = value as Record<string, unknown>;
  if (op !== "get" && op !== "put" && op !== "delete") return undefined;
  if (typeof key !== "string" || key.length === 0 || key.length > MAX_KEY_LENGTH) return undefined;
  if (typeof clientId !== "string" || !Number.isSafeInteger(seq)) return undefined;
  if (proposal !== undefined && typeof proposal !== "string") return undefined;
  const tag = proposal === undefined ? {} : { proposal };
  if (op === "put") {
    if (typeof newValue !== "string") return undefined;
    return { op, key, value: newValue, clientId, seq: seq as number, ...tag };
  }
  return { op, key, clientId, seq: seq as number, ...tag };
}

/** The key/value data plus, per client, its last applied request and that request's result. */
export class KvStateMachine {
  readonly #data = new Map<string, string>();
  readonly #lastApplied = new Map<string, { seq: number; result: KvResult }>();
  #appliedIndex = 0;

  /**
   * Applies the command committed at `index`. A request a client already had applied (same
   * client, same or older seq) changes nothing and gives the first application's result.
   */
  apply(index: number, command: KvCommand): KvResult {
    this.#appliedIndex = index;
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

  /** Records that `index` held something that is not a command (e.g. a leader's no-op). */
  skip(index: number): void {
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
