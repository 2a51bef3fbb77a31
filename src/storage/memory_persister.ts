/**
 * A persister that keeps its state in memory: for tests, and for the simulator.
 *
 * @module
 */

import type { LogEntry, PersistChange, PersistentState, Persister, Snapshot } from "../types.ts";
import { checkChange, copySnapshot, storedConfiguration } from "./_persist_change.ts";

/**
 * Keeps a peer's persistent state in memory. Saves apply at once and in call order, and are
 * checked as the durable persisters check them: a malformed change is refused and changes
 * nothing.
 *
 * Crash tests use {@linkcode MemoryPersister.copy}: a crashed peer may still be writing to its old
 * persister, so its restart gets a copy of what was saved at the crash.
 *
 * @example
 * ```ts
 * import { MemoryPersister } from "@denoraft/raft";
 * const persister = new MemoryPersister();
 * await persister.save({ term: 2, votedFor: 1, log: { from: 1, entries: [{ term: 2, command: "x" }] } });
 * const afterCrash = persister.copy();
 * console.log((await afterCrash.load()).log.length); // 1
 * ```
 */
export class MemoryPersister implements Persister {
  #term = 0;
  #votedFor: number | null = null;
  /** A copy of the latest snapshot saved, never handed out (load returns copies). */
  #snapshot: Snapshot | null = null;
  /** The entries after the snapshot, each as a disk would hold it (see `StoredEntry` below). */
  #log: StoredEntry[] = [];
  #saves = 0;

  /** Creates an empty persister, or one holding a copy of `state`. */
  constructor(state?: PersistentState) {
    if (state !== undefined) {
      this.#term = state.term;
      this.#votedFor = state.votedFor;
      this.#snapshot = state.snapshot ? copySnapshot(state.snapshot) : null;
      this.#log = state.log.map(storeEntry);
    }
  }

  /** Reads the saved state; the caller gets its own copy. */
  load(): Promise<PersistentState> {
    return Promise.resolve(this.state());
  }

  /**
   * Applies `change` at once: first its snapshot, which discards every entry up to its index,
   * then its log change. Rejects with a `RangeError` or `TypeError` if the change is malformed
   * (a gap in the log, a log change at or before the snapshot's index, a snapshot older than the
   * stored one, snapshot data that is not a `Uint8Array`, a command that is not JSON, an entry
   * type other than `"noop"` and `"config"`, a configuration entry or a snapshot configuration
   * that is not a valid configuration); either way nothing changes. Configurations are stored as
   * the durable persisters store them: plain copies, members sorted by id.
   */
  save(change: PersistChange): Promise<void> {
    const snapshotIndex = this.#snapshot?.index ?? 0;
    let stored: StoredEntry[] | null = null;
    try {
      checkChange(change, { lastIndex: snapshotIndex + this.#log.length, snapshotIndex });
      // Before any change, so that a bad entry changes nothing.
      if (change.log !== undefined) stored = change.log.entries.map(storeEntry);
    } catch (error) {
      return Promise.reject(error);
    }
    if (change.snapshot !== undefined) {
      const { index } = change.snapshot;
      // Entries after the snapshot stay; a snapshot past the end of the log empties it.
      this.#log = this.#log.slice(Math.min(index - snapshotIndex, this.#log.length));
      this.#snapshot = copySnapshot(change.snapshot);
    }
    if (change.log !== undefined && stored !== null) {
      this.#log.length = change.log.from - 1 - (this.#snapshot?.index ?? 0);
      for (const entry of stored) this.#log.push(entry);
    }
    this.#term = change.term;
    this.#votedFor = change.votedFor;
    this.#saves++;
    return Promise.resolve();
  }

  /** The saved state right now, as a fresh copy. */
  state(): PersistentState {
    return {
      term: this.#term,
      votedFor: this.#votedFor,
      snapshot: this.#snapshot === null ? null : copySnapshot(this.#snapshot),
      log: this.#log.map(loadEntry),
    };
  }

  /**
   * The saved state right now, as a fresh copy: the same as {@linkcode MemoryPersister.state}.
   *
   * @deprecated Use {@linkcode MemoryPersister.state}: "snapshot" now names Raft's snapshots
   * (`PersistentState.snapshot`), and this method returns the whole state, not a snapshot.
   */
  snapshot(): PersistentState {
    return this.state();
  }

  /** A new, independent persister holding what this one holds now. */
  copy(): MemoryPersister {
    const copy = new MemoryPersister();
    copy.#term = this.#term;
    copy.#votedFor = this.#votedFor;
    copy.#snapshot = this.#snapshot; // never changed in place, so it can be shared
    copy.#log = this.#log.slice(); // stored entries are immutable, so they can be shared
    return copy;
  }

  /** How many saves this persister has applied. */
  get saveCount(): number {
    return this.#saves;
  }

  /**
   * Rough size of the saved Raft state in bytes, like the lab's `RaftStateSize`: the JSON length
   * of `{ term, votedFor, log }`, without the snapshot (see
   * {@linkcode MemoryPersister.snapshotSize}). A peer that compacts its log keeps it small.
   */
  stateSize(): number {
    const log = this.#log.map(loadEntry);
    return JSON.stringify({ term: this.#term, votedFor: this.#votedFor, log }).length;
  }

  /** Bytes of the saved snapshot's data, like the lab's `SnapshotSize`; 0 without a snapshot. */
  snapshotSize(): number {
    return this.#snapshot?.data.length ?? 0;
  }
}

/**
 * A command as a disk would hold it, so that later changes to the objects given to `save()` or
 * returned by `load()` cannot reach the saved state: its JSON text, or, for a string, which no
 * one can change, the string itself (saving the JSON round trip that dominated saves of short
 * string commands). A configuration entry's command is stored as the durable persisters store
 * it, members sorted by id.
 */
interface StoredEntry {
  readonly term: number;
  readonly command: string;
  readonly isJson: boolean;
  readonly type: LogEntry["type"];
}

function storeEntry(entry: LogEntry): StoredEntry {
  const { term, type } = entry;
  if (type === "config") {
    const configuration = storedConfiguration(entry.command, `an entry of term ${term}`);
    return { term, command: JSON.stringify(configuration), isJson: true, type };
  }
  if (typeof entry.command === "string") {
    return { term, command: entry.command, isJson: false, type };
  }
  const command = JSON.stringify(entry.command);
  if (command === undefined) {
    throw new TypeError(`Log entry command must be a JSON value, got ${String(entry.command)}`);
  }
  return { term, command, isJson: true, type };
}

function loadEntry(entry: StoredEntry): LogEntry {
  const command = entry.isJson ? JSON.parse(entry.command) : entry.command;
  return entry.type === undefined
    ? { term: entry.term, command }
    : { term: entry.term, command, type: entry.type };
}
