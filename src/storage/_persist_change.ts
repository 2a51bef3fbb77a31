/**
 * Helpers shared by the persisters: checking a {@linkcode PersistChange} before it is queued,
 * merging queued changes for a group commit, and checking values read back from disk.
 *
 * @module
 */

import { parseConfiguration } from "../raft/membership.ts";
import type { Configuration, LogEntry, PersistChange, Snapshot } from "../types.ts";

const decoder = new TextDecoder("utf-8", { fatal: true });

/** Where a log stands: the index of its last entry and that of its snapshot (0 without one). */
export interface LogBounds {
  /** The log's last index: the snapshot's index when no entry follows the snapshot. */
  lastIndex: number;
  /** The snapshot's index, 0 when there is none. */
  snapshotIndex: number;
}

/**
 * Throws a `TypeError` or `RangeError` unless `change` is well formed and fits a log with
 * `bounds`: a snapshot index at least the stored one, and a log change that starts after the
 * snapshot and leaves no gap (within S+1..L+1, S the snapshot's index after the change and L
 * the larger of the log's last index and S).
 */
export function checkChange(change: PersistChange, bounds: LogBounds): void {
  if (typeof change !== "object" || change === null) {
    throw new TypeError(`Change must be an object, got ${describe(change)}`);
  }
  if (!isTerm(change.term)) {
    throw new RangeError(`Term must be a non-negative integer, got ${describe(change.term)}`);
  }
  if (!isVotedFor(change.votedFor)) {
    throw new RangeError(
      `Vote must be a non-negative integer or null, got ${describe(change.votedFor)}`,
    );
  }
  if (change.snapshot !== undefined) checkSnapshot(change.snapshot, bounds.snapshotIndex);
  if (change.log === undefined) return;
  if (typeof change.log !== "object" || change.log === null) {
    throw new TypeError(`Log change must be an object, got ${describe(change.log)}`);
  }
  const { from, entries } = change.log;
  const snapshotIndex = change.snapshot?.index ?? bounds.snapshotIndex;
  const first = snapshotIndex + 1;
  const last = Math.max(bounds.lastIndex, snapshotIndex) + 1;
  if (!Number.isInteger(from) || from < first || from > last) {
    throw new RangeError(`Log change must start within ${first}..${last}, got from=${from}`);
  }
  if (!Array.isArray(entries)) {
    throw new TypeError(`Log entries must be an array, got ${describe(entries)}`);
  }
  entries.forEach((entry, k) => {
    if (!isTerm(entry?.term)) {
      throw new RangeError(
        `Entry term must be a non-negative integer, got ${describe(entry?.term)}`,
      );
    }
    const { type } = entry;
    if (type !== undefined && type !== "noop" && type !== "config") {
      throw new TypeError(`Entry type must be "noop", "config" or absent, got ${describe(type)}`);
    }
    if (type === "config") storedConfiguration(entry.command, `the entry at ${from + k}`);
  });
}

/**
 * Throws a `TypeError` or `RangeError` unless `snapshot` is well formed and its index is at least
 * `storedIndex`, the index of the snapshot it replaces.
 */
function checkSnapshot(snapshot: Snapshot, storedIndex: number): void {
  if (typeof snapshot !== "object" || snapshot === null) {
    throw new TypeError(`Snapshot must be an object, got ${describe(snapshot)}`);
  }
  if (!isTerm(snapshot.index)) {
    throw new RangeError(
      `Snapshot index must be a non-negative integer, got ${describe(snapshot.index)}`,
    );
  }
  if (!isTerm(snapshot.term)) {
    throw new RangeError(
      `Snapshot term must be a non-negative integer, got ${describe(snapshot.term)}`,
    );
  }
  if (!(snapshot.data instanceof Uint8Array)) {
    throw new TypeError(`Snapshot data must be a Uint8Array, got ${describe(snapshot.data)}`);
  }
  if (snapshot.configuration !== undefined) {
    storedConfiguration(snapshot.configuration, `the snapshot through ${snapshot.index}`);
  }
  if (snapshot.index < storedIndex) {
    throw new RangeError(
      `Snapshot index must be at least the stored snapshot's index ${storedIndex}, ` +
        `got ${snapshot.index}`,
    );
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
  /** The new snapshot (a copy the caller cannot change): entries up to its index are dropped. */
  snapshot?: Snapshot;
  /** Applied after `snapshot`: drop every entry at index >= from, then append `entries`. */
  log?: { from: number; entries: E[] };
}

/**
 * One change with the effect of applying `first` and then `second`: what a group commit writes
 * when several saves are waiting. The later snapshot wins; of `first`'s entries, those after it
 * and before `second`'s log change stay.
 */
export function mergeChanges<E>(
  first: EncodedChange<E>,
  second: EncodedChange<E>,
): EncodedChange<E> {
  const merged: EncodedChange<E> = { term: second.term, votedFor: second.votedFor };
  const snapshot = second.snapshot ?? first.snapshot;
  if (snapshot !== undefined) merged.snapshot = snapshot;
  if (first.log === undefined) {
    if (second.log !== undefined) merged.log = second.log;
    return merged;
  }
  // first's entries that second's snapshot did not discard start here.
  const start = second.snapshot === undefined
    ? first.log.from
    : Math.max(first.log.from, second.snapshot.index + 1);
  if (second.log !== undefined && second.log.from <= start) {
    // The second change drops everything the first one wrote that its snapshot left.
    merged.log = second.log;
    return merged;
  }
  const end = second.log?.from ?? Infinity;
  const kept = first.log.entries.slice(start - first.log.from, end - first.log.from);
  // With no entry of first's left, `start` may lie past the log's end; then the second's
  // snapshot ended the log there (it lies past the end of first's entries).
  merged.log = {
    from: start,
    entries: second.log === undefined ? kept : [...kept, ...second.log.entries],
  };
  return merged;
}

/** The log's bounds after `change` is applied to a log with `bounds`. */
export function boundsAfter<E>(change: EncodedChange<E>, bounds: LogBounds): LogBounds {
  const snapshotIndex = change.snapshot?.index ?? bounds.snapshotIndex;
  return { lastIndex: lastIndexAfter(change, bounds.lastIndex), snapshotIndex };
}

/**
 * The log's last index after `change` is applied to a log ending at `lastIndex`: the end of its
 * log change, else the later of `lastIndex` and its snapshot's index (a snapshot past the end of
 * the log empties it, and the log goes on after the snapshot).
 */
export function lastIndexAfter<E>(change: EncodedChange<E>, lastIndex: number): number {
  if (change.log !== undefined) return change.log.from - 1 + change.log.entries.length;
  return Math.max(lastIndex, change.snapshot?.index ?? 0);
}

/**
 * `value`, a configuration entry's command or a snapshot's configuration, as persisters store
 * it: a plain copy, members sorted by id (see `parseConfiguration`). Throws a `TypeError` naming
 * `owner` if it is not a valid configuration: a persister refuses to store what it would refuse
 * to load.
 */
export function storedConfiguration(value: unknown, owner: string): Configuration {
  const configuration = parseConfiguration(value);
  if (typeof configuration === "string") {
    throw new TypeError(`The configuration of ${owner} is not valid: ${configuration}`);
  }
  return configuration;
}

/**
 * A copy of `entry` that shares nothing with it, as a disk would hold it (`index` names it in
 * errors): a `TypeError` if its command is not JSON, or, in a configuration entry, not a valid
 * configuration (see {@linkcode storedConfiguration}).
 */
export function copyEntry(entry: LogEntry, index: number): LogEntry {
  const { term, type } = entry;
  if (type === "config") {
    return { term, command: storedConfiguration(entry.command, `the entry at ${index}`), type };
  }
  // A string cannot be changed, so it needs no copy.
  const command = typeof entry.command === "string"
    ? entry.command
    : JSON.parse(commandJson(entry.command));
  return type === undefined ? { term, command } : { term, command, type };
}

/**
 * A copy of `snapshot`, with data and configuration of its own (the caller may change theirs
 * afterwards); the configuration as {@linkcode storedConfiguration} stores it.
 */
export function copySnapshot(snapshot: Snapshot): Snapshot {
  const { index, term, data, configuration } = snapshot;
  const copy: Snapshot = { index, term, data: data.slice() };
  if (configuration !== undefined) {
    copy.configuration = storedConfiguration(configuration, `the snapshot through ${index}`);
  }
  return copy;
}

/** `{ snapshot }` holding a copy of `change`'s snapshot, or `{}` when it has none. */
export function snapshotOf(change: PersistChange): { snapshot?: Snapshot } {
  return change.snapshot === undefined ? {} : { snapshot: copySnapshot(change.snapshot) };
}

/**
 * The configuration whose UTF-8 JSON a persister read back, or why it is not one: a phrase to
 * follow the thing's name in a corruption report ("is not valid JSON").
 */
export function decodeConfiguration(json: Uint8Array): Configuration | string {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(json));
  } catch {
    return "is not valid JSON";
  }
  return configurationOf(value);
}

/** `value`, read back by a persister, as a configuration; or why not, a phrase as above. */
export function configurationOf(value: unknown): Configuration | string {
  const configuration = parseConfiguration(value);
  return typeof configuration === "string"
    ? `is not a valid configuration: ${configuration}`
    : configuration;
}

/** Whether `value` can be a term or a log index: a non-negative safe integer. */
export function isTerm(value: unknown): value is number {
  return typeof value === "number" && Number.isSafeInteger(value) && value >= 0;
}

/** Whether `value` can be a vote: a peer number or `null`. */
export function isVotedFor(value: unknown): value is number | null {
  return value === null || isTerm(value);
}

/** `value` as an error message quotes it: strings quoted, objects by their kind. */
export function describe(value: unknown): string {
  if (typeof value === "string") return JSON.stringify(value);
  if (typeof value === "bigint") return `${value}n`;
  if (typeof value !== "object" || value === null) return String(value);
  if (Array.isArray(value)) return `an array of length ${value.length}`;
  const kind = Object.getPrototypeOf(value)?.constructor?.name;
  if (typeof kind !== "string" || kind === "Object" || kind === "") return "an object";
  return `${/^[AEIOU]/.test(kind) ? "an" : "a"} ${kind}`;
}
