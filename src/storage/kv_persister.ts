/**
 * A durable persister on Deno.Kv: the embedded default, one SQLite file on a local path.
 *
 * Layout, under the key prefix `["raft"]`:
 * - `["raft", "state"]`: `{ term, votedFor, lastIndex, staged }`, the commit point of every save;
 * - `["raft", "log", index, part]`: a log entry, as the UTF-8 JSON of `{ term, command }` split
 *   into parts of at most 65,535 bytes, each prefixed by one byte holding the part count;
 * - `["raft", "staged", index, part]`: the same, for a save too large for one atomic commit.
 *
 * Keys past `lastIndex` are stale (left by a truncation) and are deleted lazily, a bounded batch
 * after each save, so a save never costs more because the log is long.
 *
 * @module
 */

import { GroupCommit } from "./_group_commit.ts";
import {
  checkChange,
  commandJson,
  type EncodedChange,
  isTerm,
  isVotedFor,
  lastIndexAfter,
  mergeChanges,
} from "./_persist_change.ts";
import { PersisterCorruptError } from "./errors.ts";
import { StoreLock } from "./_store_lock.ts";
import type { LogEntry, PersistChange, PersistentState, Persister } from "../types.ts";

const STATE_KEY = ["raft", "state"] as const;
const LOG_PREFIX = ["raft", "log"] as const;
const STAGED_PREFIX = ["raft", "staged"] as const;

/** Deno.Kv's limits for one value and one atomic commit (checked against Deno 2.9). */
const VALUE_BYTES = 65_536;
const COMMIT_BYTES = 819_200;
const COMMIT_MUTATIONS = 1_000;
/** What one mutation's key costs in a commit's size budget, rounded up generously. */
const KEY_COST = 128;
/** Room for the state key in every commit. */
const STATE_RESERVE = 1_024;
const PART_PAYLOAD = VALUE_BYTES - 1;
const MAX_PARTS = Math.ceil(COMMIT_BYTES / PART_PAYLOAD);
/** Largest encoded entry that fits, with the state key, in one atomic commit. */
const MAX_ENTRY_BYTES = COMMIT_BYTES - STATE_RESERVE - MAX_PARTS * (KEY_COST + 1);
/** Bytes of `{"term":<up to 16 digits>,"command":}` around a command, rounded up. */
const ENTRY_WRAPPER_BYTES = 64;
/** Stale keys deleted after one save: bounds what cleanup adds to a save's latency. */
const SWEEP_BATCH = 500;

interface StoredState {
  term: number;
  votedFor: number | null;
  lastIndex: number;
  /** While a large save is moved into place: entries in from..to are read from staged keys. */
  staged: { from: number; to: number } | null;
}

/** An entry's parts, each already prefixed with the part count. */
type EntryParts = Uint8Array[];

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Keeps a peer's persistent state in a Deno.Kv database on a local path. Every save is one
 * atomic commit of the state key (and of the entries, unless they are too many for one commit:
 * then they are first staged under keys no reader looks at, and the state key's commit publishes
 * them). Saves that overlap are applied in call order, several in one commit.
 *
 * Needs `--unstable-kv` (or `"unstable": ["kv"]` in deno.json).
 *
 * @example
 * ```ts ignore
 * import { KvPersister } from "./kv_persister.ts";
 * const persister = await KvPersister.open("/var/lib/raft/peer-0.kv");
 * const { term, log } = await persister.load();
 * await persister.save({ term: term + 1, votedFor: 0, log: { from: log.length + 1, entries: [] } });
 * await persister.close();
 * ```
 */
export class KvPersister implements Persister {
  /**
   * The largest command (bytes of its JSON text) whose entry fits in one atomic commit with the
   * state key: about 800 KB. `start()` refuses larger ones.
   */
  readonly maxCommandBytes: number = MAX_ENTRY_BYTES - ENTRY_WRAPPER_BYTES;

  readonly #kv: Deno.Kv;
  /** Keeps other persisters off the database; `null` for `":memory:"`. */
  readonly #lock: StoreLock | null;
  readonly #path: string;
  readonly #commit: GroupCommit<EncodedChange<EntryParts>>;
  /** What the last acknowledged commit holds. */
  #durable: StoredState;
  /** The log's last index once every queued save is applied: checks new saves for gaps. */
  #queuedLastIndex: number;
  #sweepLog = true;
  #sweepStaged = true;
  /** What `close()` returns, once called. */
  #closed: Promise<void> | null = null;

  private constructor(kv: Deno.Kv, lock: StoreLock | null, path: string, durable: StoredState) {
    this.#kv = kv;
    this.#lock = lock;
    this.#path = path;
    this.#durable = durable;
    this.#queuedLastIndex = durable.lastIndex;
    // A write that finds the database damaged says so, as a read would.
    const damage = (what: string) => (error: unknown) => {
      throw asDamage(path, what, error, false);
    };
    this.#commit = new GroupCommit(
      (changes) => this.#flush(changes).catch(damage("a save cannot be written")),
      () => this.#sweep().catch(damage("stale keys cannot be deleted")),
    );
  }

  /**
   * Opens (or creates) the database at `path`, finishing any large save that a crash
   * interrupted after it was acknowledged. Locks the database by its identity, not its name
   * (not for `":memory:"`): a flock on `<real path>.lock`, symbolic links resolved, and on Linux
   * one on the database file itself, which hard links share. Rejects with a
   * `PersisterLockedError` if another process or persister holds it, through any name; rejects
   * with a {@linkcode PersisterCorruptError} if the stored state is not one this persister
   * wrote.
   */
  static async open(path: string): Promise<KvPersister> {
    if (typeof path !== "string" || path === "") {
      throw new TypeError(`Path must be a non-empty string, got ${JSON.stringify(path)}`);
    }
    if (typeof Deno.openKv !== "function") {
      throw new TypeError("Deno.openKv is missing: run with --unstable-kv");
    }
    // Deno.Kv lets two processes open one database; two peers sharing a log must not.
    const locked = path === ":memory:" ? null : await StoreLock.takeDatabase(path, path);
    const lock = locked?.lock ?? null;
    let kv: Deno.Kv | null = null;
    try {
      const opening = Deno.openKv(locked?.realPath ?? path);
      kv = await opening.catch((error) => {
        throw asDamage(path, "the database cannot be opened", error, true);
      });
      const durable = await readState(kv, path);
      const persister = new KvPersister(kv, lock, path, durable);
      if (durable.staged !== null) await persister.#finishStaged();
      return persister;
    } catch (error) {
      kv?.close();
      lock?.release();
      throw error;
    }
  }

  /** Reads the state as of the last acknowledged save. */
  load(): Promise<PersistentState> {
    // Exclusive: a list over many keys is not a snapshot, so no save may run under it.
    return this.#commit.exclusive(async () => {
      const { term, votedFor, lastIndex } = this.#durable;
      const log = await readEntries(this.#kv, this.#path, LOG_PREFIX, 1, lastIndex);
      return { term, votedFor, snapshot: null, log };
    });
  }

  /**
   * Applies `change` after every earlier save; resolves once it is committed. Rejects with a
   * `RangeError` (and changes nothing) if the log change leaves a gap or an entry is too large.
   */
  save(change: PersistChange): Promise<void> {
    const refusal = this.#commit.failure;
    if (refusal !== null) return Promise.reject(refusal);
    let encoded: EncodedChange<EntryParts>;
    try {
      if (change?.snapshot !== undefined) {
        throw new TypeError("KvPersister cannot store snapshots yet");
      }
      checkChange(change, { lastIndex: this.#queuedLastIndex, snapshotIndex: 0 });
      encoded = { term: change.term, votedFor: change.votedFor };
      if (change.log !== undefined) {
        encoded.log = { from: change.log.from, entries: change.log.entries.map(encodeEntry) };
      }
    } catch (error) {
      return Promise.reject(error);
    }
    this.#queuedLastIndex = lastIndexAfter(encoded, this.#queuedLastIndex);
    return this.#commit.submit(encoded);
  }

  /**
   * Waits for queued saves and loads, then closes the database and releases the lock. Later
   * saves and loads reject; every call returns the same promise.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    await this.#commit.close("close() was called");
    try {
      this.#kv.close();
    } finally {
      this.#lock?.release();
    }
  }

  async #flush(changes: EncodedChange<EntryParts>[]): Promise<void> {
    const change = changes.reduce((first, second) => mergeChanges(first, second));
    const before = this.#durable;
    const lastIndex = lastIndexAfter(change, before.lastIndex);
    const next: StoredState = {
      term: change.term,
      votedFor: change.votedFor,
      lastIndex,
      staged: null,
    };
    const entries = change.log?.entries ?? [];
    const from = change.log?.from ?? lastIndex + 1;
    if (fitsOneCommit(entries)) {
      const commit = this.#kv.atomic();
      setEntries(commit, LOG_PREFIX, from, entries);
      commit.set(STATE_KEY, next);
      await commitOrThrow(commit);
      this.#durable = next;
    } else {
      await this.#saveStaged(next, from, entries);
    }
    if (lastIndex < before.lastIndex) this.#sweepLog = true;
  }

  /**
   * A save too large for one commit: stage its entries where no reader looks, publish them with
   * one commit of the state key, then move them into place, a commit at a time.
   */
  async #saveStaged(next: StoredState, from: number, entries: EntryParts[]): Promise<void> {
    let index = from;
    for (const batch of batches(entries)) {
      const commit = this.#kv.atomic();
      setEntries(commit, STAGED_PREFIX, index, batch);
      await commitOrThrow(commit);
      index += batch.length;
    }
    const staged: StoredState = { ...next, staged: { from, to: next.lastIndex } };
    await commitOrThrow(this.#kv.atomic().set(STATE_KEY, staged));
    this.#durable = staged;
    await this.#moveStaged(from, entries);
  }

  /** After a crash: moves the entries of an acknowledged large save into place. */
  async #finishStaged(): Promise<void> {
    const staged = this.#durable.staged;
    if (staged === null) return;
    const entries = await readEntryParts(
      this.#kv,
      this.#path,
      STAGED_PREFIX,
      staged.from,
      staged.to,
    );
    await this.#moveStaged(staged.from, entries);
  }

  async #moveStaged(from: number, entries: EntryParts[]): Promise<void> {
    let index = from;
    for (const batch of batches(entries)) {
      const commit = this.#kv.atomic();
      setEntries(commit, LOG_PREFIX, index, batch);
      index += batch.length;
      const to = this.#durable.lastIndex;
      const moved: StoredState = {
        ...this.#durable,
        staged: index > to ? null : { from: index, to },
      };
      commit.set(STATE_KEY, moved);
      await commitOrThrow(commit);
      this.#durable = moved;
    }
    this.#sweepStaged = true;
  }

  /** Deletes one bounded batch of stale keys: log keys past the last index, staged keys. */
  async #sweep(): Promise<void> {
    if (this.#sweepLog) {
      const start = [...LOG_PREFIX, this.#durable.lastIndex + 1];
      this.#sweepLog = await deleteBatch(this.#kv, { prefix: [...LOG_PREFIX], start });
    } else if (this.#sweepStaged) {
      this.#sweepStaged = await deleteBatch(this.#kv, { prefix: [...STAGED_PREFIX] });
    }
  }
}

function encodeEntry(entry: LogEntry): EntryParts {
  const json = `{"term":${entry.term},"command":${commandJson(entry.command)}}`;
  const bytes = encoder.encode(json);
  if (bytes.length > MAX_ENTRY_BYTES) {
    throw new RangeError(
      `Entry must encode to at most ${MAX_ENTRY_BYTES} bytes to fit one Deno.Kv commit, ` +
        `got ${bytes.length}`,
    );
  }
  const count = Math.max(1, Math.ceil(bytes.length / PART_PAYLOAD));
  const parts: EntryParts = [];
  for (let k = 0; k < count; k++) {
    const chunk = bytes.subarray(k * PART_PAYLOAD, (k + 1) * PART_PAYLOAD);
    const part = new Uint8Array(chunk.length + 1);
    part[0] = count;
    part.set(chunk, 1);
    parts.push(part);
  }
  return parts;
}

function entryCost(parts: EntryParts): { bytes: number; mutations: number } {
  let bytes = 0;
  for (const part of parts) bytes += KEY_COST + part.length;
  return { bytes, mutations: parts.length };
}

function fitsOneCommit(entries: EntryParts[]): boolean {
  let bytes = STATE_RESERVE;
  let mutations = 1;
  for (const parts of entries) {
    const cost = entryCost(parts);
    bytes += cost.bytes;
    mutations += cost.mutations;
    if (bytes > COMMIT_BYTES || mutations > COMMIT_MUTATIONS) return false;
  }
  return true;
}

/** Splits `entries` into runs that each fit one commit next to the state key. */
function* batches(entries: EntryParts[]): Generator<EntryParts[]> {
  let batch: EntryParts[] = [];
  let bytes = STATE_RESERVE;
  let mutations = 1;
  for (const parts of entries) {
    const cost = entryCost(parts);
    if (
      batch.length > 0 &&
      (bytes + cost.bytes > COMMIT_BYTES || mutations + cost.mutations > COMMIT_MUTATIONS)
    ) {
      yield batch;
      batch = [];
      bytes = STATE_RESERVE;
      mutations = 1;
    }
    batch.push(parts);
    bytes += cost.bytes;
    mutations += cost.mutations;
  }
  if (batch.length > 0) yield batch;
}

function setEntries(
  commit: Deno.AtomicOperation,
  prefix: readonly string[],
  from: number,
  entries: EntryParts[],
): void {
  entries.forEach((parts, offset) => {
    parts.forEach((part, k) => commit.set([...prefix, from + offset, k], part));
  });
}

async function commitOrThrow(commit: Deno.AtomicOperation): Promise<void> {
  const result = await commit.commit();
  // Without checks a commit cannot fail this way; an error here means Deno.Kv changed.
  if (!result.ok) throw new Error("Deno.Kv refused an atomic commit that had no checks");
}

/** Deletes up to one batch of keys in `selector`; whether more may remain. */
async function deleteBatch(kv: Deno.Kv, selector: Deno.KvListSelector): Promise<boolean> {
  const commit = kv.atomic();
  let count = 0;
  for await (const row of kv.list(selector, { limit: SWEEP_BATCH, batchSize: SWEEP_BATCH })) {
    commit.delete(row.key);
    count++;
  }
  if (count > 0) await commitOrThrow(commit);
  return count === SWEEP_BATCH;
}

async function readState(kv: Deno.Kv, path: string): Promise<StoredState> {
  const row = await undecodable(path, `key ["raft","state"]`, () => kv.get<unknown>(STATE_KEY));
  if (row.versionstamp === null) {
    // No state key: a fresh store, unless a log is there without it.
    const any = await undecodable(path, `a key under ["raft"]`, async () => {
      for await (const _ of kv.list({ prefix: ["raft"] }, { limit: 1 })) return true;
      return false;
    });
    if (any) throw new PersisterCorruptError(path, -1, `key ["raft","state"] is missing`);
    return { term: 0, votedFor: null, lastIndex: 0, staged: null };
  }
  const value = row.value;
  if (
    typeof value !== "object" || value === null || !("term" in value) || !isTerm(value.term) ||
    !("votedFor" in value) || !isVotedFor(value.votedFor) ||
    !("lastIndex" in value) || !isTerm(value.lastIndex) || !("staged" in value)
  ) {
    throw new PersisterCorruptError(path, -1, `key ["raft","state"] holds no valid state`);
  }
  const { term, votedFor, lastIndex, staged } = value;
  if (staged === null) return { term, votedFor, lastIndex, staged };
  if (
    typeof staged !== "object" || !("from" in staged) || !("to" in staged) ||
    !isTerm(staged.from) || !isTerm(staged.to) || staged.from < 1 || staged.from > staged.to ||
    staged.to !== lastIndex
  ) {
    throw new PersisterCorruptError(path, -1, `key ["raft","state"] holds an invalid staged range`);
  }
  return { term, votedFor, lastIndex, staged: { from: staged.from, to: staged.to } };
}

/** Reads the entries from..to under `prefix`, checked, as their parts. */
async function readEntryParts(
  kv: Deno.Kv,
  path: string,
  prefix: readonly string[],
  from: number,
  to: number,
): Promise<EntryParts[]> {
  const entries: EntryParts[] = [];
  if (to < from) return entries;
  const missing = (index: number, detail: string) =>
    new PersisterCorruptError(
      path,
      -1,
      `log entry ${index} under ${JSON.stringify(prefix)} ${detail}`,
    );
  let current: EntryParts | null = null;
  let count = 0;
  const finish = () => {
    if (current === null) return;
    if (current.length !== count) throw missing(from + entries.length, `lacks parts`);
    entries.push(current);
  };
  const selector = { start: [...prefix, from], end: [...prefix, to + 1] };
  const rows = kv.list<unknown>(selector, { batchSize: 1000 });
  const what = `a log entry under ${JSON.stringify(prefix)}`;
  while (true) {
    const next = await undecodable(path, what, () => rows.next());
    if (next.done) break;
    const row = next.value;
    const index = row.key[prefix.length];
    const k = row.key[prefix.length + 1];
    const part = row.value;
    if (typeof index !== "number" || typeof k !== "number" || !(part instanceof Uint8Array)) {
      throw new PersisterCorruptError(path, -1, `unexpected key ${JSON.stringify(row.key)}`);
    }
    if (k === 0) {
      finish();
      if (index !== from + entries.length) throw missing(from + entries.length, `is missing`);
      count = part[0] ?? 0;
      if (count < 1) throw missing(index, `has an empty first part`);
      current = [part];
    } else if (current !== null && index === from + entries.length && k === current.length) {
      // Parts past `count` are stale leftovers of an overwritten entry, and are skipped.
      if (k >= count) continue;
      if (part[0] !== count) throw missing(index, `has parts of different writes`);
      current.push(part);
    }
  }
  finish();
  if (entries.length !== to - from + 1) throw missing(from + entries.length, `is missing`);
  return entries;
}

/**
 * What Deno.Kv and SQLite say when the database file is damaged: SQLite's SQLITE_NOTADB and
 * SQLITE_CORRUPT ("database disk image is malformed", "malformed database schema"), and Deno.Kv's
 * own error for a value with an encoding byte it does not know.
 */
const DAMAGE_MESSAGE = /file is not a database|malformed|value encoding \S+ is unknown/i;

/**
 * `error` as a {@linkcode PersisterCorruptError} about `what` in the database at `path` if it
 * reports damage, else `error` itself. While reading, a `RangeError` is damage too: V8 throws it
 * for a value it cannot deserialize.
 */
function asDamage(path: string, what: string, error: unknown, reading: boolean): unknown {
  if (!(error instanceof Error) || error instanceof PersisterCorruptError) return error;
  if (!(reading && error instanceof RangeError) && !DAMAGE_MESSAGE.test(error.message)) {
    return error;
  }
  return new PersisterCorruptError(path, -1, `${what} (Deno.Kv: ${error.message})`, {
    cause: error,
  });
}

/**
 * Runs `read`, reporting damage (a value Deno.Kv cannot decode, a malformed database) as a
 * {@linkcode PersisterCorruptError} about `what`; other errors pass through.
 */
async function undecodable<T>(path: string, what: string, read: () => Promise<T>): Promise<T> {
  try {
    return await read();
  } catch (error) {
    throw asDamage(path, `${what} cannot be decoded`, error, true);
  }
}

async function readEntries(
  kv: Deno.Kv,
  path: string,
  prefix: readonly string[],
  from: number,
  to: number,
): Promise<LogEntry[]> {
  const parts = await readEntryParts(kv, path, prefix, from, to);
  return parts.map((entryParts, offset) => decodeEntry(path, from + offset, entryParts));
}

function decodeEntry(path: string, index: number, parts: EntryParts): LogEntry {
  let length = 0;
  for (const part of parts) length += part.length - 1;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    bytes.set(part.subarray(1), at);
    at += part.length - 1;
  }
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    throw new PersisterCorruptError(path, -1, `log entry ${index} is not valid JSON`);
  }
  if (
    typeof value !== "object" || value === null || !("term" in value) || !isTerm(value.term) ||
    !("command" in value)
  ) {
    throw new PersisterCorruptError(path, -1, `log entry ${index} is not a { term, command }`);
  }
  return { term: value.term, command: value.command };
}
