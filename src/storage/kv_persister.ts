/**
 * A durable persister on Deno.Kv: the embedded default, one SQLite file on a local path.
 *
 * Layout, under the key prefix `["raft"]` (format 3; see docs/persisters.md for formats 1 and 2,
 * which still load):
 * - `["raft", "state"]`: the CRC-32 of a JSON text, then that text, of
 *   `{ version, term, votedFor, lastIndex, staged, snapshot }`: the commit point of every save.
 *   `snapshot` names the current snapshot's index, term, generation, the byte lengths of its
 *   configuration and its data, and its chunk count;
 * - `["raft", "log", index, part]`: a log entry after the snapshot, as the UTF-8 JSON of
 *   `{ term, command }` (with `type` for a no-op or configuration entry) split into parts of at
 *   most 65,530 bytes, each prefixed by the byte 0xC1, the part count and the CRC-32 of the index
 *   and the whole JSON text;
 * - `["raft", "staged", index, part]`: the same, for a save too large for one atomic commit;
 * - `["raft", "snapshot", generation, chunk]`: the snapshot's configuration (UTF-8 JSON, none when
 *   it has none) followed by its data, in chunks of at most 65,532 bytes, each prefixed by the
 *   CRC-32 of its generation, chunk number and bytes.
 *
 * Keys that the state key does not reach (log keys past `lastIndex` or at or before the
 * snapshot's index, staged keys, chunks of other generations) are stale and are deleted lazily,
 * a bounded batch after each save, so a save never costs more because the log is long.
 *
 * @module
 */

import { crc32 } from "./_crc32.ts";
import { float64s } from "./_bytes.ts";
import { GroupCommit } from "./_group_commit.ts";
import {
  boundsAfter,
  checkChange,
  commandJson,
  configurationOf,
  decodeConfiguration,
  type EncodedChange,
  isTerm,
  isVotedFor,
  type LogBounds,
  mergeChanges,
  snapshotOf,
  storedConfiguration,
} from "./_persist_change.ts";
import { PersisterCorruptError } from "./errors.ts";
import { StoreLock } from "./_store_lock.ts";
import type { LogEntry, PersistChange, PersistentState, Persister, Snapshot } from "../types.ts";

const STATE_KEY = ["raft", "state"] as const;
const LOG_PREFIX = ["raft", "log"] as const;
const STAGED_PREFIX = ["raft", "staged"] as const;
const SNAPSHOT_PREFIX = ["raft", "snapshot"] as const;

/**
 * The format of the state key and entries this persister writes. Format 3 added snapshot
 * configurations (and configuration entries): a reader of format 2 would drop them.
 */
const FORMAT = 3;
/** Deno.Kv's limits for one value and one atomic commit (checked against Deno 2.9). */
const VALUE_BYTES = 65_536;
const COMMIT_BYTES = 819_200;
const COMMIT_MUTATIONS = 1_000;
/** What one mutation's key costs in a commit's size budget, rounded up generously. */
const KEY_COST = 128;
/** Room for the state key in every commit. */
const STATE_RESERVE = 1_024;
/**
 * First byte of an entry part with a checksum. A part of format 1 starts with its part count,
 * 1 to {@linkcode MAX_PARTS_FORMAT_1}, which no single flipped bit turns into this byte.
 */
const PART_TAG = 0xc1;
/** Tag, part count, CRC-32 of the index and the entry's JSON. */
const PART_HEADER = 6;
const PART_PAYLOAD = VALUE_BYTES - PART_HEADER;
const MAX_PARTS = Math.ceil(COMMIT_BYTES / PART_PAYLOAD);
/** Format 1 parts held 65,535 bytes of JSON after one byte of part count. */
const MAX_PARTS_FORMAT_1 = Math.ceil(COMMIT_BYTES / (VALUE_BYTES - 1));
/** Largest encoded entry that fits, with the state key, in one atomic commit. */
const MAX_ENTRY_BYTES = COMMIT_BYTES - STATE_RESERVE - MAX_PARTS * (KEY_COST + PART_HEADER);
/** Bytes of `{"term":<up to 16 digits>,"command":}` around a command, rounded up. */
const ENTRY_WRAPPER_BYTES = 64;
/** A snapshot chunk: the CRC-32 of its generation, number and data, then the data. */
const CHUNK_HEADER = 4;
const CHUNK_PAYLOAD = VALUE_BYTES - CHUNK_HEADER;
/** Stale keys deleted after one save: bounds what cleanup adds to a save's latency. */
const SWEEP_BATCH = 500;

/** Where the current snapshot's configuration and data are, and what they must hold. */
interface SnapshotMeta {
  index: number;
  term: number;
  /** Its chunks are the keys `["raft", "snapshot", generation, 0..chunks-1]`. */
  generation: number;
  /** Bytes of the configuration's JSON at the start of the chunks; 0 when it has none. */
  configurationBytes: number;
  /** Bytes of data, after the configuration. */
  bytes: number;
  chunks: number;
}

interface StoredState {
  term: number;
  votedFor: number | null;
  /** The log's last index: the snapshot's when no entry follows it. */
  lastIndex: number;
  /** While a large save is moved into place: entries in from..to are read from staged keys. */
  staged: { from: number; to: number } | null;
  snapshot: SnapshotMeta | null;
}

/** An entry's parts, each already prefixed with its header. */
type EntryParts = Uint8Array[];

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Keeps a peer's persistent state in a Deno.Kv database on a local path. Every save is one
 * atomic commit of the state key (and of the entries and snapshot chunks, unless they are too
 * many for one commit: then chunks are first written under a generation no reader looks at and
 * entries under keys no reader looks at, and the state key's commit publishes them). Saves that
 * overlap are applied in call order, several in one commit. Entries, snapshot chunks and the
 * state key carry CRC-32 checksums: damage reads as a {@linkcode PersisterCorruptError}, never
 * as other data.
 *
 * Needs `--unstable-kv` (or `"unstable": ["kv"]` in deno.json).
 *
 * @example
 * ```ts ignore
 * import { KvPersister } from "@denoraft/raft";
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
  /** The log's bounds once every queued save is applied: checks new saves. */
  #queued: LogBounds;
  // Which stale keys may remain; all may after a crash, so each starts true.
  #sweepLogTail = true;
  #sweepLogHead = true;
  #sweepStaged = true;
  #sweepSnapshots = true;
  /** What `close()` returns, once called. */
  #closed: Promise<void> | null = null;

  private constructor(kv: Deno.Kv, lock: StoreLock | null, path: string, durable: StoredState) {
    this.#kv = kv;
    this.#lock = lock;
    this.#path = path;
    this.#durable = durable;
    this.#queued = boundsOf(durable);
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
   * wrote, or SQLite finds the file damaged. Databases of format 1 (written before snapshots
   * and checksums) load; the first save writes the state key in format 2.
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

  /** Reads the state as of the last acknowledged save, checking every checksum on the way. */
  load(): Promise<PersistentState> {
    // Exclusive: a list over many keys is not a snapshot, so no save may run under it.
    return this.#commit.exclusive(async () => {
      const { term, votedFor, lastIndex, snapshot: meta } = this.#durable;
      const first = (meta?.index ?? 0) + 1;
      const log = await readEntries(this.#kv, this.#path, LOG_PREFIX, first, lastIndex);
      const snapshot = meta === null ? null : await readSnapshot(this.#kv, this.#path, meta);
      return { term, votedFor, snapshot, log };
    });
  }

  /**
   * Applies `change` after every earlier save; resolves once it is committed. Rejects with a
   * `RangeError` or `TypeError` (and changes nothing) if the change is malformed: a gap in the
   * log, a log change at or before the snapshot's index, a snapshot older than the stored one,
   * snapshot data that is not a `Uint8Array`, an entry too large.
   */
  save(change: PersistChange): Promise<void> {
    const refusal = this.#commit.failure;
    if (refusal !== null) return Promise.reject(refusal);
    let encoded: EncodedChange<EntryParts>;
    try {
      checkChange(change, this.#queued);
      encoded = { term: change.term, votedFor: change.votedFor, ...snapshotOf(change) };
      if (change.log !== undefined) {
        const { from, entries } = change.log;
        encoded.log = { from, entries: entries.map((entry, k) => encodeEntry(entry, from + k)) };
      }
    } catch (error) {
      return Promise.reject(error);
    }
    this.#queued = boundsAfter(encoded, this.#queued);
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
    const { lastIndex } = boundsAfter(change, boundsOf(before));
    let snapshot = before.snapshot;
    let chunks: Uint8Array[] = [];
    if (change.snapshot !== undefined) {
      // A generation of its own, so that the current snapshot's chunks stay whole until the
      // state key names the new ones. Chunks a crash left under this generation are overwritten,
      // or lie past the chunk count and are never read.
      const generation = (before.snapshot?.generation ?? 0) + 1;
      const { index, term, data, configuration } = change.snapshot;
      const json = configuration === undefined
        ? new Uint8Array(0)
        : encoder.encode(JSON.stringify(configuration));
      chunks = encodeChunks([json, data], generation);
      snapshot = {
        index,
        term,
        generation,
        configurationBytes: json.length,
        bytes: data.length,
        chunks: chunks.length,
      };
    }
    const next: StoredState = {
      term: change.term,
      votedFor: change.votedFor,
      lastIndex,
      staged: null,
      snapshot,
    };
    const entries = change.log?.entries ?? [];
    const from = change.log?.from ?? lastIndex + 1;
    const generation = snapshot?.generation ?? 0;
    if (fitsOneCommit(entries, chunks)) {
      const commit = this.#kv.atomic();
      setChunks(commit, generation, 0, chunks);
      setEntries(commit, LOG_PREFIX, from, entries);
      commit.set(STATE_KEY, encodeState(next));
      await commitOrThrow(commit);
      this.#durable = next;
    } else {
      let chunk = 0;
      for (const batch of chunkBatches(chunks)) {
        const commit = this.#kv.atomic();
        setChunks(commit, generation, chunk, batch);
        await commitOrThrow(commit);
        chunk += batch.length;
      }
      if (fitsOneCommit(entries, [])) {
        const commit = this.#kv.atomic();
        setEntries(commit, LOG_PREFIX, from, entries);
        commit.set(STATE_KEY, encodeState(next));
        await commitOrThrow(commit);
        this.#durable = next;
      } else {
        await this.#saveStaged(next, from, entries);
      }
    }
    if (lastIndex < before.lastIndex) this.#sweepLogTail = true;
    if (change.snapshot !== undefined) {
      this.#sweepLogHead = true;
      this.#sweepSnapshots = true;
    }
  }

  /**
   * A save too large for one commit: stage its entries where no reader looks, publish them with
   * one commit of the state key, then move them into place, a commit at a time.
   */
  async #saveStaged(next: StoredState, from: number, entries: EntryParts[]): Promise<void> {
    let index = from;
    for (const batch of entryBatches(entries)) {
      const commit = this.#kv.atomic();
      setEntries(commit, STAGED_PREFIX, index, batch);
      await commitOrThrow(commit);
      index += batch.length;
    }
    const staged: StoredState = { ...next, staged: { from, to: next.lastIndex } };
    await commitOrThrow(this.#kv.atomic().set(STATE_KEY, encodeState(staged)));
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
    for (const batch of entryBatches(entries)) {
      const commit = this.#kv.atomic();
      setEntries(commit, LOG_PREFIX, index, batch);
      index += batch.length;
      const to = this.#durable.lastIndex;
      const moved: StoredState = {
        ...this.#durable,
        staged: index > to ? null : { from: index, to },
      };
      commit.set(STATE_KEY, encodeState(moved));
      await commitOrThrow(commit);
      this.#durable = moved;
    }
    this.#sweepStaged = true;
  }

  /**
   * Deletes one bounded batch of stale keys: log keys past the last index or at or before the
   * snapshot's, staged keys, chunks of other snapshots.
   */
  async #sweep(): Promise<void> {
    const kv = this.#kv;
    const { lastIndex, snapshot } = this.#durable;
    const log = [...LOG_PREFIX];
    const chunks = [...SNAPSHOT_PREFIX];
    if (this.#sweepLogTail) {
      this.#sweepLogTail = await deleteBatch(kv, { prefix: log, start: [...log, lastIndex + 1] });
    } else if (this.#sweepLogHead) {
      const end = [...log, (snapshot?.index ?? 0) + 1];
      this.#sweepLogHead = await deleteBatch(kv, { prefix: log, end });
    } else if (this.#sweepStaged) {
      this.#sweepStaged = await deleteBatch(kv, { prefix: [...STAGED_PREFIX] });
    } else if (this.#sweepSnapshots) {
      if (snapshot === null) {
        this.#sweepSnapshots = await deleteBatch(kv, { prefix: chunks });
      } else {
        // Older generations, then anything past the current one's last chunk.
        const { generation, chunks: count } = snapshot;
        this.#sweepSnapshots =
          await deleteBatch(kv, { prefix: chunks, end: [...chunks, generation] }) ||
          await deleteBatch(kv, { prefix: chunks, start: [...chunks, generation, count] });
      }
    }
  }
}

function boundsOf(state: StoredState): LogBounds {
  return { lastIndex: state.lastIndex, snapshotIndex: state.snapshot?.index ?? 0 };
}

function encodeState(state: StoredState): Uint8Array {
  const json = encoder.encode(JSON.stringify({ version: FORMAT, ...state }));
  const bytes = new Uint8Array(4 + json.length);
  new DataView(bytes.buffer).setUint32(0, crc32(json), true);
  bytes.set(json, 4);
  return bytes;
}

function encodeEntry(entry: LogEntry, index: number): EntryParts {
  const json = entry.type === "noop"
    ? `{"term":${entry.term},"type":"noop","command":null}`
    : entry.type === "config"
    ? `{"term":${entry.term},"type":"config","command":${
      JSON.stringify(storedConfiguration(entry.command, `the entry at ${index}`))
    }}`
    : `{"term":${entry.term},"command":${commandJson(entry.command)}}`;
  const bytes = encoder.encode(json);
  if (bytes.length > MAX_ENTRY_BYTES) {
    throw new RangeError(
      `Entry must encode to at most ${MAX_ENTRY_BYTES} bytes to fit one Deno.Kv commit, ` +
        `got ${bytes.length}`,
    );
  }
  const check = crc32(bytes, crc32(float64s(index)));
  const count = Math.max(1, Math.ceil(bytes.length / PART_PAYLOAD));
  const parts: EntryParts = [];
  for (let k = 0; k < count; k++) {
    const chunk = bytes.subarray(k * PART_PAYLOAD, (k + 1) * PART_PAYLOAD);
    const part = new Uint8Array(PART_HEADER + chunk.length);
    part[0] = PART_TAG;
    part[1] = count;
    new DataView(part.buffer).setUint32(2, check, true);
    part.set(chunk, PART_HEADER);
    parts.push(part);
  }
  return parts;
}

/** The seed of chunk `k`'s checksum: a chunk read under another key fails its check. */
function chunkSeed(generation: number, k: number): number {
  return crc32(float64s(generation, k));
}

/** The chunks of generation `generation` holding the bytes of `parts`, one after another. */
function encodeChunks(parts: Uint8Array[], generation: number): Uint8Array[] {
  let total = 0;
  for (const part of parts) total += part.length;
  const chunks: Uint8Array[] = [];
  // The next byte to copy is parts[part][at].
  let part = 0;
  let at = 0;
  for (let k = 0; k * CHUNK_PAYLOAD < total; k++) {
    const chunk = new Uint8Array(CHUNK_HEADER + Math.min(CHUNK_PAYLOAD, total - k * CHUNK_PAYLOAD));
    const bytes = chunk.subarray(CHUNK_HEADER);
    let filled = 0;
    while (filled < bytes.length) {
      const source = parts[part]!;
      const count = Math.min(bytes.length - filled, source.length - at);
      bytes.set(source.subarray(at, at + count), filled);
      filled += count;
      at += count;
      if (at === source.length) {
        part++;
        at = 0;
      }
    }
    new DataView(chunk.buffer).setUint32(0, crc32(bytes, chunkSeed(generation, k)), true);
    chunks.push(chunk);
  }
  return chunks;
}

/** What a commit's values cost, keys included, in Deno.Kv's budget. */
function valuesCost(values: Uint8Array[]): { bytes: number; mutations: number } {
  let bytes = 0;
  for (const value of values) bytes += KEY_COST + value.length;
  return { bytes, mutations: values.length };
}

function fitsOneCommit(entries: EntryParts[], chunks: Uint8Array[]): boolean {
  const cost = valuesCost(chunks);
  let bytes = STATE_RESERVE + cost.bytes;
  let mutations = 1 + cost.mutations;
  if (bytes > COMMIT_BYTES || mutations > COMMIT_MUTATIONS) return false;
  for (const parts of entries) {
    const cost = valuesCost(parts);
    bytes += cost.bytes;
    mutations += cost.mutations;
    if (bytes > COMMIT_BYTES || mutations > COMMIT_MUTATIONS) return false;
  }
  return true;
}

/**
 * Splits `groups` into runs that each fit one commit next to the state key; a group is never
 * split (an entry's parts go in one commit).
 */
function* batches<T>(groups: T[], valuesOf: (group: T) => Uint8Array[]): Generator<T[]> {
  let batch: T[] = [];
  let bytes = STATE_RESERVE;
  let mutations = 1;
  for (const group of groups) {
    const cost = valuesCost(valuesOf(group));
    if (
      batch.length > 0 &&
      (bytes + cost.bytes > COMMIT_BYTES || mutations + cost.mutations > COMMIT_MUTATIONS)
    ) {
      yield batch;
      batch = [];
      bytes = STATE_RESERVE;
      mutations = 1;
    }
    batch.push(group);
    bytes += cost.bytes;
    mutations += cost.mutations;
  }
  if (batch.length > 0) yield batch;
}

function entryBatches(entries: EntryParts[]): Generator<EntryParts[]> {
  return batches(entries, (parts) => parts);
}

function chunkBatches(chunks: Uint8Array[]): Generator<Uint8Array[]> {
  return batches(chunks, (chunk) => [chunk]);
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

function setChunks(
  commit: Deno.AtomicOperation,
  generation: number,
  first: number,
  chunks: Uint8Array[],
): void {
  chunks.forEach((chunk, k) => commit.set([...SNAPSHOT_PREFIX, generation, first + k], chunk));
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
    return { term: 0, votedFor: null, lastIndex: 0, staged: null, snapshot: null };
  }
  const invalid = (detail: string) =>
    new PersisterCorruptError(path, -1, `key ["raft","state"] ${detail}`);
  let value: unknown = row.value;
  if (value instanceof Uint8Array) {
    // Format 2: a checksum, then JSON.
    if (value.length < 4) throw invalid(`is too short (${value.length} bytes)`);
    const json = value.subarray(4);
    const check = new DataView(value.buffer, value.byteOffset, 4).getUint32(0, true);
    if (crc32(json) !== check) throw invalid("fails its checksum");
    try {
      value = JSON.parse(decoder.decode(json));
    } catch {
      throw invalid("holds no valid JSON");
    }
    if (typeof value !== "object" || value === null || !("version" in value)) {
      throw invalid("holds no valid state");
    }
    if (value.version !== 2 && value.version !== FORMAT) {
      throw invalid(
        `has format ${JSON.stringify(value.version)}, which this version of the library does ` +
          `not know (it reads formats 1 to ${FORMAT}): open it with the version that wrote it`,
      );
    }
  } else if (typeof value === "object" && value !== null && "snapshot" in value) {
    throw invalid("holds no valid state"); // format 1 had no snapshots
  }
  // Format 1, an object without version or snapshot, holds the same fields but those two.
  if (
    typeof value !== "object" || value === null || !("term" in value) || !isTerm(value.term) ||
    !("votedFor" in value) || !isVotedFor(value.votedFor) ||
    !("lastIndex" in value) || !isTerm(value.lastIndex) || !("staged" in value)
  ) {
    throw invalid("holds no valid state");
  }
  const { term, votedFor, lastIndex, staged } = value;
  // Format 1 had no snapshots; format 2's had no configuration.
  const version = "version" in value ? value.version : 1;
  const snapshot = "snapshot" in value ? snapshotMetaOf(value.snapshot, version === FORMAT) : null;
  if (snapshot === undefined || lastIndex < (snapshot?.index ?? 0)) {
    throw invalid("holds an invalid snapshot");
  }
  if (staged === null) return { term, votedFor, lastIndex, staged, snapshot };
  if (
    typeof staged !== "object" || !("from" in staged) || !("to" in staged) ||
    !isTerm(staged.from) || !isTerm(staged.to) || staged.from <= (snapshot?.index ?? 0) ||
    staged.from > staged.to || staged.to !== lastIndex
  ) {
    throw invalid("holds an invalid staged range");
  }
  return { term, votedFor, lastIndex, staged: { from: staged.from, to: staged.to }, snapshot };
}

/**
 * `value` as a snapshot's metadata: `null` for none, `undefined` if it is not valid. Metadata
 * of format 3 (`withConfiguration`) says how many bytes of configuration the chunks start with;
 * that of format 2 has no such field, and its chunks hold data only.
 */
function snapshotMetaOf(
  value: unknown,
  withConfiguration: boolean,
): SnapshotMeta | null | undefined {
  if (value === null) return null;
  if (typeof value !== "object") return undefined;
  const { index, term, generation, bytes, chunks, ...rest } = value as Record<string, unknown>;
  const configurationBytes = withConfiguration ? rest.configurationBytes : 0;
  if (withConfiguration !== ("configurationBytes" in rest)) return undefined;
  if (
    !isTerm(index) || !isTerm(term) || !isTerm(generation) || generation < 1 || !isTerm(bytes) ||
    !isTerm(configurationBytes) ||
    chunks !== Math.ceil((configurationBytes + bytes) / CHUNK_PAYLOAD)
  ) {
    return undefined;
  }
  return { index, term, generation, configurationBytes, bytes, chunks };
}

/** A part's header: format 2 (with the entry's checksum) or 1 (without); `null` if neither. */
function partHeader(part: Uint8Array): { count: number; check: number | null } | null {
  if (part[0] === PART_TAG && part.length > PART_HEADER) {
    const count = part[1]!;
    if (count < 1) return null;
    return { count, check: new DataView(part.buffer, part.byteOffset, 6).getUint32(2, true) };
  }
  const count = part[0] ?? 0;
  if (count < 1 || count > MAX_PARTS_FORMAT_1 || part.length < 2) return null;
  return { count, check: null };
}

/** Reads the entries from..to under `prefix`, their parts checked to belong together. */
async function readEntryParts(
  kv: Deno.Kv,
  path: string,
  prefix: readonly string[],
  from: number,
  to: number,
): Promise<EntryParts[]> {
  const entries: EntryParts[] = [];
  if (to < from) return entries;
  const damaged = (index: number, detail: string) =>
    new PersisterCorruptError(
      path,
      -1,
      `log entry ${index} under ${JSON.stringify(prefix)} ${detail}`,
    );
  let current: EntryParts | null = null;
  let header: { count: number; check: number | null } = { count: 0, check: null };
  const finish = () => {
    if (current === null) return;
    if (current.length !== header.count) throw damaged(from + entries.length, `lacks parts`);
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
      if (index !== from + entries.length) throw damaged(from + entries.length, `is missing`);
      const first = partHeader(part);
      if (first === null) throw damaged(index, `has a first part of unknown format`);
      header = first;
      current = [part];
    } else if (current !== null && index === from + entries.length && k === current.length) {
      // Parts past the count are stale leftovers of an overwritten entry, and are skipped.
      if (k >= header.count) continue;
      const later = partHeader(part);
      if (later === null || later.count !== header.count || later.check !== header.check) {
        throw damaged(index, `has parts of different writes`);
      }
      current.push(part);
    }
  }
  finish();
  if (entries.length !== to - from + 1) throw damaged(from + entries.length, `is missing`);
  return entries;
}

/**
 * Reads and checks the chunks of the snapshot that `meta` describes; resolves to the snapshot,
 * its configuration checked as a configuration entry's is.
 */
async function readSnapshot(kv: Deno.Kv, path: string, meta: SnapshotMeta): Promise<Snapshot> {
  const { index, term, generation, configurationBytes, bytes, chunks } = meta;
  const json = new Uint8Array(configurationBytes);
  const data = new Uint8Array(bytes);
  const total = configurationBytes + bytes;
  const damaged = (k: number, detail: string) =>
    new PersisterCorruptError(
      path,
      -1,
      `chunk ${k} of ${chunks} of the snapshot through index ${index} ` +
        `(key ${JSON.stringify([...SNAPSHOT_PREFIX, generation, k])}) ${detail}`,
    );
  const prefix = [...SNAPSHOT_PREFIX, generation];
  const rows = kv.list<unknown>({ start: [...prefix, 0], end: [...prefix, chunks] }, {
    batchSize: 12,
  });
  let k = 0;
  while (true) {
    const next = await undecodable(path, "a snapshot chunk", () => rows.next());
    if (next.done) break;
    const { key, value } = next.value;
    if (key[prefix.length] !== k) throw damaged(k, "is missing");
    const start = k * CHUNK_PAYLOAD;
    const length = Math.min(CHUNK_PAYLOAD, total - start);
    if (!(value instanceof Uint8Array) || value.length !== CHUNK_HEADER + length) {
      throw damaged(k, `does not hold ${length} bytes`);
    }
    const chunk = value.subarray(CHUNK_HEADER);
    const check = new DataView(value.buffer, value.byteOffset, 4).getUint32(0, true);
    if (crc32(chunk, chunkSeed(generation, k)) !== check) {
      throw damaged(k, "fails its checksum");
    }
    // The configuration's bytes come first, then the data's.
    const split = Math.min(Math.max(configurationBytes - start, 0), chunk.length);
    if (split > 0) json.set(chunk.subarray(0, split), start);
    data.set(chunk.subarray(split), Math.max(start - configurationBytes, 0));
    k++;
  }
  if (k !== chunks) throw damaged(k, "is missing");
  const snapshot: Snapshot = { index, term, data };
  if (configurationBytes > 0) {
    const configuration = decodeConfiguration(json);
    if (typeof configuration === "string") {
      throw new PersisterCorruptError(
        path,
        -1,
        `the configuration of the snapshot through index ${index} (generation ${generation}) ` +
          configuration,
      );
    }
    snapshot.configuration = configuration;
  }
  return snapshot;
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
  const header = partHeader(parts[0]!)!;
  const skip = header.check === null ? 1 : PART_HEADER;
  let length = 0;
  for (const part of parts) length += part.length - skip;
  const bytes = new Uint8Array(length);
  let at = 0;
  for (const part of parts) {
    bytes.set(part.subarray(skip), at);
    at += part.length - skip;
  }
  if (header.check !== null && crc32(bytes, crc32(float64s(index))) !== header.check) {
    throw new PersisterCorruptError(path, -1, `log entry ${index} fails its checksum`);
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
  if (!("type" in value)) return { term: value.term, command: value.command };
  if (value.type === "noop" && value.command === null) {
    return { term: value.term, command: null, type: "noop" };
  }
  if (value.type === "config") {
    const configuration = configurationOf(value.command);
    if (typeof configuration === "string") {
      throw new PersisterCorruptError(
        path,
        -1,
        `the configuration of log entry ${index} ${configuration}`,
      );
    }
    return { term: value.term, command: configuration, type: "config" };
  }
  throw new PersisterCorruptError(path, -1, `log entry ${index} has an unknown type`);
}
