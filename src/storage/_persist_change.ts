/**
 * Helpers shared by the durable persisters: checking a {@linkcode PersistChange} before it is
 * queued, merging queued changes for a group commit, and checking values read back from disk.
 *
 * @module
 */

import type { LogEntry, PersistChange } from "../types.ts";

/**
 * Throws a `TypeError` or `RangeError` unless `change` is well formed and its log change starts
 * within `1..lastIndex + 1` (a log may not have gaps).
 */
export function checkChange(change: PersistChange, lastIndex: number): void {
  if (typeof change !== "object" || change === null) {
    throw new TypeError(`Change must be an object, got ${String(change)}`);
  }
  if (!isTerm(change.term)) {
    throw new RangeError(`Term must be a non-negative integer, got ${String(change.term)}`);
  }
  if (!isVotedFor(change.votedFor)) {
    throw new RangeError(
      `Vote must be a non-negative integer or null, got ${String(change.votedFor)}`,
    );
  }
  if (change.log === undefined) return;
  const { from, entries } = change.log;
  if (!Number.isInteger(from) || from < 1 || from > lastIndex + 1) {
    throw new RangeError(`Log change must start within 1..${lastIndex + 1}, got from=${from}`);
  }
  if (!Array.isArray(entries)) {
    throw new TypeError(`Log entries must be an array, got ${String(entries)}`);
  }
  for (const entry of entries) {
    if (!isTerm(entry?.term)) {
      throw new RangeError(`Entry term must be a non-negative integer, got ${String(entry?.term)}`);
    }
  }
}

/** The JSON text of `command`; a `TypeError` if it has none (`undefined`, a function, ...). */
export function commandJson(command: unknown): string {
  const text = JSON.stringify(command);
  if (text === undefined) {
    throw new TypeError(`Command must be a JSON value, got ${String(command)}`);
  }
  return text;
}

/** A {@linkcode PersistChange} whose entries are already encoded as `E`. */
export interface EncodedChange<E> {
  /** The current term after the change. */
  term: number;
  /** The vote after the change. */
  votedFor: number | null;
  /** Drop every entry at index >= from, then append `entries`, the first at `from`. */
  log?: { from: number; entries: E[] };
}

/**
 * One change with the effect of applying `first` and then `second`: what a group commit writes
 * when several saves are waiting.
 */
export function mergeChanges<E>(
  first: EncodedChange<E>,
  second: EncodedChange<E>,
): EncodedChange<E> {
  const merged: EncodedChange<E> = { term: second.term, votedFor: second.votedFor };
  if (first.log === undefined) {
    if (second.log !== undefined) merged.log = second.log;
  } else if (second.log === undefined) {
    merged.log = first.log;
  } else if (second.log.from <= first.log.from) {
    // The second change drops everything the first one wrote.
    merged.log = second.log;
  } else {
    const kept = first.log.entries.slice(0, second.log.from - first.log.from);
    merged.log = { from: first.log.from, entries: [...kept, ...second.log.entries] };
  }
  return merged;
}

/** The log's last index after `change` is applied to a log ending at `lastIndex`. */
export function lastIndexAfter<E>(change: EncodedChange<E>, lastIndex: number): number {
  return change.log === undefined ? lastIndex : change.log.from - 1 + change.log.entries.length;
}

/** Whether `value` can be a term or a log index: a non-negative safe integer. */
export function isTerm(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Whether `value` can be a vote: a peer number or `null`. */
export function isVotedFor(value: unknown): value is number | null {
  return value === null || isTerm(value);
}

/** A fresh copy of `entry` (the caller may change its own afterwards). */
export function copyEntry(entry: LogEntry): LogEntry {
  return { term: entry.term, command: entry.command };
}
