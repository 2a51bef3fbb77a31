/**
 * The replicated log, indexed from 1 as in the paper, with the few queries Figure 2 needs.
 *
 * @module
 */

import type { LogEntry } from "./types.ts";

/** What an entry adds to a message around its command's JSON: `{"term":123,"command":},`. */
const ENTRY_OVERHEAD_BYTES = 24;

/** A log whose first entry has index 1; index 0 is the empty prefix, with term 0. */
export class RaftLog {
  #entries: LogEntry[];
  /**
   * Each entry's size on the wire, estimated as the length of its JSON text, or -1 until someone
   * asks ({@linkcode RaftLog.bytesAt}): a follower never needs them, a leader sizes its messages.
   */
  #bytes: number[];

  /** Wraps `entries` (entries[0] is index 1); the log takes ownership of the array. */
  constructor(entries: LogEntry[] = []) {
    this.#entries = entries;
    this.#bytes = new Array(entries.length).fill(-1);
  }

  /** Index of the last entry, 0 when empty. */
  get lastIndex(): number {
    return this.#entries.length;
  }

  /** Term of the last entry, 0 when empty. */
  get lastTerm(): number {
    return this.#entries.at(-1)?.term ?? 0;
  }

  /** Term of the entry at `index`; 0 for index 0; `undefined` past the end. */
  termAt(index: number): number | undefined {
    if (index === 0) return 0;
    return this.#entries[index - 1]?.term;
  }

  /** The entry at `index` (1-based), or `undefined`. */
  entryAt(index: number): LogEntry | undefined {
    return this.#entries[index - 1];
  }

  /** Entries with index in [from, to), `to` clamped to the end. */
  slice(from: number, to: number = this.#entries.length + 1): LogEntry[] {
    return this.#entries.slice(from - 1, to - 1);
  }

  /**
   * Appends one entry; returns its index. `commandBytes`, the length of the command's JSON text,
   * saves computing it later when the entry is sent.
   */
  append(entry: LogEntry, commandBytes = -1): number {
    this.#entries.push(entry);
    this.#bytes.push(commandBytes < 0 ? -1 : commandBytes + ENTRY_OVERHEAD_BYTES);
    return this.#entries.length;
  }

  /** Drops every entry at index >= `from`. */
  truncateFrom(from: number): void {
    if (from <= this.#entries.length) {
      this.#entries.length = from - 1;
      this.#bytes.length = from - 1;
    }
  }

  /** The size of the entry at `index` in an AppendEntries, estimated by its JSON text's length. */
  bytesAt(index: number): number {
    let bytes = this.#bytes[index - 1]!;
    if (bytes < 0) {
      const command = JSON.stringify(this.#entries[index - 1]!.command) ?? "";
      bytes = command.length + ENTRY_OVERHEAD_BYTES;
      this.#bytes[index - 1] = bytes;
    }
    return bytes;
  }

  /** The estimated bytes of the entries with index in [from, to) (see {@linkcode RaftLog.bytesAt}). */
  bytesBetween(from: number, to: number): number {
    let bytes = 0;
    for (let index = Math.max(from, 1); index < Math.min(to, this.lastIndex + 1); index++) {
      bytes += this.bytesAt(index);
    }
    return bytes;
  }

  /** The first index whose entry has a term >= `term` (lastIndex + 1 if none): terms never decrease. */
  #firstIndexWithTermAtLeast(term: number): number {
    let low = 0;
    let high = this.#entries.length;
    while (low < high) {
      const middle = (low + high) >>> 1;
      if (this.#entries[middle]!.term < term) low = middle + 1;
      else high = middle;
    }
    return low + 1;
  }

  /** The first index holding `term`, or 0 when the log holds no entry of that term. */
  firstIndexOfTerm(term: number): number {
    const index = this.#firstIndexWithTermAtLeast(term);
    return this.termAt(index) === term ? index : 0;
  }

  /** The last index holding `term`, or 0 when the log holds no entry of that term. */
  lastIndexOfTerm(term: number): number {
    const index = this.#firstIndexWithTermAtLeast(term + 1) - 1;
    return index >= 1 && this.termAt(index) === term ? index : 0;
  }

  /** §5.4.1: is a log ending at (lastTerm, lastIndex) at least as up-to-date as this one? */
  isUpToDate(lastTerm: number, lastIndex: number): boolean {
    const myLastTerm = this.lastTerm;
    return lastTerm > myLastTerm || (lastTerm === myLastTerm && lastIndex >= this.lastIndex);
  }
}
