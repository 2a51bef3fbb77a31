/**
 * A persister that keeps its state in memory: for tests, and for the simulator.
 *
 * @module
 */

import type { LogEntry, PersistChange, PersistentState, Persister } from "../types.ts";

/**
 * Keeps a peer's persistent state in memory. Saves apply at once and in call order.
 *
 * Crash tests use {@linkcode MemoryPersister.copy}: a crashed peer may still be writing to its old
 * persister, so its restart gets a copy of what was saved at the crash.
 *
 * @example
 * ```ts
 * import { MemoryPersister } from "./memory_persister.ts";
 * const persister = new MemoryPersister();
 * await persister.save({ term: 2, votedFor: 1, log: { from: 1, entries: [{ term: 2, command: "x" }] } });
 * const afterCrash = persister.copy();
 * console.log((await afterCrash.load()).log.length); // 1
 * ```
 */
export class MemoryPersister implements Persister {
  #term = 0;
  #votedFor: number | null = null;
  /** Each entry as a disk would hold it (see `StoredEntry` below). */
  #log: StoredEntry[] = [];
  #saves = 0;

  /** Creates an empty persister, or one holding `state`. */
  constructor(state?: PersistentState) {
    if (state !== undefined) {
      this.#term = state.term;
      this.#votedFor = state.votedFor;
      this.#log = state.log.map(storeEntry);
    }
  }

  /** Reads the saved state; the caller gets its own copy. */
  load(): Promise<PersistentState> {
    return Promise.resolve(this.snapshot());
  }

  /**
   * Applies `change` at once. Rejects with a `RangeError` if the log change leaves a gap, or a
   * `TypeError` if a command is not JSON; either way nothing changes.
   */
  save(change: PersistChange): Promise<void> {
    let stored: StoredEntry[] | null = null;
    if (change.log !== undefined) {
      const { from, entries } = change.log;
      if (!Number.isInteger(from) || from < 1 || from > this.#log.length + 1) {
        return Promise.reject(
          new RangeError(
            `Log change must start within 1..${this.#log.length + 1}, got from=${from}`,
          ),
        );
      }
      try {
        stored = entries.map(storeEntry); // before any change, so that a bad entry changes nothing
      } catch (error) {
        return Promise.reject(error);
      }
      this.#log.length = from - 1;
      for (const entry of stored) this.#log.push(entry);
    }
    this.#term = change.term;
    this.#votedFor = change.votedFor;
    this.#saves++;
    return Promise.resolve();
  }

  /** The saved state right now, as a fresh copy. */
  snapshot(): PersistentState {
    return { term: this.#term, votedFor: this.#votedFor, log: this.#log.map(loadEntry) };
  }

  /** A new, independent persister holding what this one holds now. */
  copy(): MemoryPersister {
    const copy = new MemoryPersister();
    copy.#term = this.#term;
    copy.#votedFor = this.#votedFor;
    copy.#log = this.#log.slice(); // stored entries are immutable, so they can be shared
    return copy;
  }

  /** How many saves this persister has applied. */
  get saveCount(): number {
    return this.#saves;
  }

  /** Rough size of the saved state in bytes (its JSON length), like the lab's `RaftStateSize`. */
  stateSize(): number {
    return JSON.stringify(this.snapshot()).length;
  }
}

/**
 * A command as a disk would hold it, so that later changes to the objects given to `save()` or
 * returned by `load()` cannot reach the saved state: its JSON text, or, for a string, which no
 * one can change, the string itself (saving the JSON round trip that dominated saves of short
 * string commands).
 */
interface StoredEntry {
  readonly term: number;
  readonly command: string;
  readonly isJson: boolean;
  readonly noop: boolean;
}

function storeEntry(entry: LogEntry): StoredEntry {
  const noop = entry.type === "noop";
  if (typeof entry.command === "string") {
    return { term: entry.term, command: entry.command, isJson: false, noop };
  }
  const command = JSON.stringify(entry.command);
  if (command === undefined) {
    throw new TypeError(`Log entry command must be a JSON value, got ${String(entry.command)}`);
  }
  return { term: entry.term, command, isJson: true, noop };
}

function loadEntry(entry: StoredEntry): LogEntry {
  const command = entry.isJson ? JSON.parse(entry.command) : entry.command;
  return entry.noop ? { term: entry.term, command, type: "noop" } : { term: entry.term, command };
}
