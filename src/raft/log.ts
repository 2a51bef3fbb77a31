/**
 * The replicated log, indexed from 1 as in the paper, with the few queries Figure 2 needs. Its
 * prefix up to a snapshot is compacted away (§7): the log then starts after the snapshot's last
 * included index, whose term it still knows.
 *
 * @module
 */

import { invariant } from "./invariants.ts";
import type { LogEntry } from "./types.ts";

/** What an entry adds to a message around its command's JSON: `{"term":123,"command":},`. */
const ENTRY_OVERHEAD_BYTES = 24;

/**
 * A log whose entries after `snapshotIndex` are held; the snapshot stands for the entries up to
 * it. Index 0 (with no snapshot) is the empty prefix, with term 0.
 */
export class RaftLog {
  /** Entries held, from `#start` on: `#entries[#start]` has index `snapshotIndex + 1`. */
  #entries: LogEntry[];
  /**
   * Each entry's size on the wire, estimated as the length of its JSON text, or -1 until someone
   * asks ({@linkcode RaftLog.bytesAt}): a follower never needs them, a leader sizes its messages.
   */
  #bytes: number[];
  /** Where the held entries start in the arrays; compaction moves it, and rebases now and then. */
  #start = 0;
  #snapshotIndex: number;
  #snapshotTerm: number;

  /**
   * Wraps `entries` (entries[0] is index `snapshotIndex + 1`); the log takes ownership of the
   * array.
   */
  constructor(entries: LogEntry[] = [], snapshotIndex = 0, snapshotTerm = 0) {
    this.#entries = entries;
    this.#bytes = new Array(entries.length).fill(-1);
    this.#snapshotIndex = snapshotIndex;
    this.#snapshotTerm = snapshotTerm;
  }

  /** The last index the snapshot covers (0 without one). */
  get snapshotIndex(): number {
    return this.#snapshotIndex;
  }

  /** The term of the entry at {@linkcode RaftLog.snapshotIndex} (0 without a snapshot). */
  get snapshotTerm(): number {
    return this.#snapshotTerm;
  }

  /** The index of the first entry held: entries before it are compacted into the snapshot. */
  get firstIndex(): number {
    return this.#snapshotIndex + 1;
  }

  /** Index of the last entry (the snapshot's, when no entry follows it); 0 when empty. */
  get lastIndex(): number {
    return this.#snapshotIndex + this.#entries.length - this.#start;
  }

  /** Term of the last entry, 0 when empty. */
  get lastTerm(): number {
    return this.#entries.length > this.#start ? this.#entries.at(-1)!.term : this.#snapshotTerm;
  }

  /**
   * Term of the entry at `index`: the snapshot's term at its last index, `undefined` past the
   * end and before the snapshot's last index (compacted: ask {@linkcode RaftLog.firstIndex}).
   */
  termAt(index: number): number | undefined {
    if (index === this.#snapshotIndex) return this.#snapshotTerm;
    if (index < this.#snapshotIndex) return undefined;
    return this.#entries[this.#position(index)]?.term;
  }

  #position(index: number): number {
    return this.#start + index - this.#snapshotIndex - 1;
  }

  /** The entry at `index`, or `undefined` if it is compacted or past the end. */
  entryAt(index: number): LogEntry | undefined {
    if (index <= this.#snapshotIndex) return undefined;
    return this.#entries[this.#position(index)];
  }

  /** Entries with index in [from, to), `to` clamped to the end; `from` must not be compacted. */
  slice(from: number, to: number = this.lastIndex + 1): LogEntry[] {
    invariant(
      from > this.#snapshotIndex,
      () => `entries from ${from} were asked for, but the log starts at ${this.firstIndex}`,
    );
    return this.#entries.slice(this.#position(from), this.#position(Math.max(from, to)));
  }

  /**
   * Appends one entry; returns its index. `commandBytes`, the length of the command's JSON text,
   * saves computing it later when the entry is sent.
   */
  append(entry: LogEntry, commandBytes = -1): number {
    this.#entries.push(entry);
    this.#bytes.push(commandBytes < 0 ? -1 : commandBytes + ENTRY_OVERHEAD_BYTES);
    return this.lastIndex;
  }

  /** Drops every entry at index >= `from` (which must be after the snapshot). */
  truncateFrom(from: number): void {
    invariant(
      from > this.#snapshotIndex,
      () => `a truncation from ${from} would cut into the snapshot through ${this.#snapshotIndex}`,
    );
    if (from <= this.lastIndex) {
      this.#entries.length = this.#position(from);
      this.#bytes.length = this.#entries.length;
    }
  }

  /**
   * Compacts the log up to `index`, whose entry has `term`, into a snapshot (§7). Entries after
   * it stay; past the end, the log is emptied and continues after `index`.
   */
  compact(index: number, term: number): void {
    invariant(
      index > this.#snapshotIndex,
      () => `a snapshot through ${index} is not past the current one (${this.#snapshotIndex})`,
    );
    if (index >= this.lastIndex) {
      this.#entries = [];
      this.#bytes = [];
      this.#start = 0;
    } else {
      invariant(
        this.termAt(index) === term,
        () => `a snapshot through ${index} in term ${term} disagrees with the log's term there`,
      );
      this.#start = this.#position(index + 1);
      // Rebase once the dropped prefix dominates, so that memory follows the live entries.
      if (this.#start > 1024 && this.#start * 2 > this.#entries.length) {
        this.#entries = this.#entries.slice(this.#start);
        this.#bytes = this.#bytes.slice(this.#start);
        this.#start = 0;
      }
    }
    this.#snapshotIndex = index;
    this.#snapshotTerm = term;
  }

  /** The size of the entry at `index` in an AppendEntries, estimated by its JSON text's length. */
  bytesAt(index: number): number {
    const position = this.#position(index);
    let bytes = this.#bytes[position]!;
    if (bytes < 0) {
      const command = JSON.stringify(this.#entries[position]!.command) ?? "";
      bytes = command.length + ENTRY_OVERHEAD_BYTES;
      this.#bytes[position] = bytes;
    }
    return bytes;
  }

  /** The estimated bytes of the held entries with index in [from, to) (see `bytesAt`). */
  bytesBetween(from: number, to: number): number {
    let bytes = 0;
    for (
      let index = Math.max(from, this.firstIndex);
      index < Math.min(to, this.lastIndex + 1);
      index++
    ) {
      bytes += this.bytesAt(index);
    }
    return bytes;
  }

  /** The first index held whose entry has a term >= `term` (lastIndex + 1 if none). */
  #firstIndexWithTermAtLeast(term: number): number {
    let low = this.#start;
    let high = this.#entries.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.#entries[middle]!.term < term) low = middle + 1;
      else high = middle;
    }
    return this.#snapshotIndex + 1 + low - this.#start;
  }

  /**
   * The first index held with `term`, or 0 when no entry held has that term. (The snapshot's
   * own entries are not held: a term that starts inside it starts at `firstIndex` here.)
   */
  firstIndexOfTerm(term: number): number {
    const index = this.#firstIndexWithTermAtLeast(term);
    return this.termAt(index) === term ? index : 0;
  }

  /**
   * The last index with `term` (the snapshot's last index counts), or 0 when the log has no such
   * entry it knows of.
   */
  lastIndexOfTerm(term: number): number {
    const index = this.#firstIndexWithTermAtLeast(term + 1) - 1;
    return index >= this.#snapshotIndex && index >= 1 && this.termAt(index) === term ? index : 0;
  }

  /** §5.4.1: is a log ending at (lastTerm, lastIndex) at least as up-to-date as this one? */
  isUpToDate(lastTerm: number, lastIndex: number): boolean {
    const myLastTerm = this.lastTerm;
    return lastTerm > myLastTerm || (lastTerm === myLastTerm && lastIndex >= this.lastIndex);
  }
}
