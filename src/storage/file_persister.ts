/**
 * A durable persister on an append-only file in a directory of its own.
 *
 * `raft.log` starts with the 8 bytes `RAFTLOG1`, then holds records:
 *
 * | bytes | field                                                      |
 * | ----- | ---------------------------------------------------------- |
 * | 4     | length of type + body, unsigned little-endian              |
 * | 4     | CRC-32 of type + body                                      |
 * | 4     | CRC-32 of the 8 bytes above, so a damaged length is caught |
 * | 1     | type, 1 to 6 (below)                                       |
 * | n     | body                                                       |
 *
 * Bodies, by type: 1 hard state = term (float64), votedFor (float64, -1 for null) and the byte
 * 0xFF; 2 entry = index and term (float64 each) and the command's UTF-8 JSON; 3 truncation = the
 * log's new last index (float64) and the byte 0xFF; 4 snapshot = index, term, generation and data
 * length (float64 each), the data's CRC-32 and the byte 0xFF; 5 no-op entry (the empty entry a
 * new leader appends) = index and term (float64 each) and the byte 0xFF; 6 configuration entry =
 * index and term (float64 each) and the configuration's UTF-8 JSON. Every complete record ends with
 * a non-zero byte (JSON text never ends with a NUL). A save writes its snapshot, truncation and
 * entry records, then a hard-state record, which is its commit point: records after the last
 * hard-state record belong to a save that was never acknowledged, and loading ignores them.
 *
 * A snapshot's configuration and data live in `snapshot.<generation>`: the 8 bytes `RAFTSNP2`,
 * index, term and data length (float64 each), the data's CRC-32, the byte length of the
 * configuration's UTF-8 JSON (4 bytes, 0 for none), that JSON, the CRC-32 of every byte before
 * it, then the data. Files of the previous format start with `RAFTSNP1` and have neither the
 * configuration's length nor its JSON; they still load, without a configuration. A save writes
 * the file as `snapshot.<generation>.tmp`, syncs it, renames it and syncs the directory before it
 * appends the record that names it; once that record is durable, the previous file is deleted
 * and the log is rewritten (as in compaction) without the entries the snapshot covers.
 *
 * While a persister is open, the file is kept longer than its records by a tail of zeros (it is
 * preallocated): overwriting blocks that already exist lets `fdatasync` skip the journal commit
 * that a growing file needs, about 40 us of each sync on the machine of docs/performance.md.
 * `close()` cuts the tail off. Zeros therefore end the log, and a write cut short by a crash
 * leaves a record followed by zeros only; such a record's last byte is zero, since a complete
 * record ends with a non-zero byte, which tells it apart from damage. A save grows the file
 * before its records would reach the end of the zeros, so zeros always follow a record written
 * into preallocated space: a record that fails its checksum at the very end of the file (a
 * cleanly closed one, say) is damage, since a write cut short there leaves a record shorter
 * than its header says.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { crc32 } from "./_crc32.ts";
import { float64s } from "./_bytes.ts";
import { GroupCommit } from "./_group_commit.ts";
import {
  boundsAfter,
  checkChange,
  commandJson,
  decodeConfiguration,
  isTerm,
  isVotedFor,
  type LogBounds,
  storedConfiguration,
} from "./_persist_change.ts";
import { PersisterCorruptError } from "./errors.ts";
import { StoreLock } from "./_store_lock.ts";
import type {
  Configuration,
  LogEntry,
  PersistChange,
  PersistentState,
  Persister,
  Snapshot,
} from "../types.ts";

const LOG_FILE = "raft.log";
const COMPACTING_FILE = "raft.log.compacting";
const LOCK_FILE = "LOCK";
const MAGIC = new TextEncoder().encode("RAFTLOG1");
const HEADER_BYTES = 12;
const RECORD_STATE = 1;
const RECORD_ENTRY = 2;
const RECORD_TRUNCATE = 3;
const RECORD_SNAPSHOT = 4;
/** An entry of type "noop": stored apart, since any JSON command could look like a marker. */
const RECORD_NOOP = 5;
/** An entry of type "config", whose command is a configuration: stored apart, as no-ops are. */
const RECORD_CONFIG = 6;
/** A snapshot record's body: index, term, generation, length (float64s), data CRC-32, 0xFF. */
const SNAPSHOT_BODY_BYTES = 4 * 8 + 4 + 1;
/** Snapshot files are `snapshot.<generation>`, written as `snapshot.<generation>.tmp` first. */
const SNAPSHOT_FILE = /^snapshot\.([1-9][0-9]*)(\.tmp)?$/;
const SNAPSHOT_MAGIC = new TextEncoder().encode("RAFTSNP2");
/**
 * Magic, index, term, length (float64s), data CRC-32, configuration length; then the
 * configuration's JSON and the CRC-32 of all the bytes before it.
 */
const SNAPSHOT_HEADER_BYTES = 8 + 3 * 8 + 4 + 4 + 4;
/** The previous format: magic, index, term, length, data CRC-32, CRC-32 of the 36 bytes before. */
const SNAPSHOT_MAGIC_1 = new TextEncoder().encode("RAFTSNP1");
const SNAPSHOT_HEADER_BYTES_1 = 8 + 3 * 8 + 4 + 4;
/** Largest type + body; anything larger in a header with a valid checksum is damage. */
const MAX_RECORD_BYTES = 64 * 1024 * 1024;
/** Bytes of an entry record around its command. */
const ENTRY_OVERHEAD = HEADER_BYTES + 1 + 16;
const READ_CHUNK = 1024 * 1024;
/** Ends hard-state and truncation bodies, so that every complete record ends with a non-zero byte. */
const BODY_END = 0xff;
/** The file grows by its own size, at least this much and at most {@linkcode MAX_GROWTH}. */
const MIN_GROWTH = 256 * 1024;
const MAX_GROWTH = 8 * 1024 * 1024;
/** Zeros written to extend the file, shared by every persister. */
let zeroChunk: Uint8Array | null = null;

/** Options for {@linkcode FilePersister.open}. */
export interface FilePersisterOptions {
  /**
   * Compact only once dead records (overwritten state, truncated entries) take more than this
   * many bytes, and more than the live ones. Default 4 MiB: small enough that a lab-sized log
   * stays small, large enough that compaction (a rewrite of the live records) stays rare.
   */
  compactMinBytes?: number;
  /**
   * Keep a tail of zeros after the records while open, so that a save overwrites blocks that
   * exist rather than growing the file (its sync then skips a journal commit). The file grows by
   * its own size at a time, from 256 KiB to 8 MiB; `close()` cuts the tail off. Default `true`.
   */
  preallocate?: boolean;
}

/** Where one live record sits in the file. */
interface Span {
  offset: number;
  length: number;
}

/** What a snapshot record says of its snapshot file. */
interface SnapshotReference {
  index: number;
  term: number;
  /** The file is `snapshot.<generation>`. */
  generation: number;
  /** Bytes of data. */
  length: number;
  /** CRC-32 of the data. */
  check: number;
}

/** A save's records, already encoded, with what each one is. */
interface EncodedRecord {
  bytes: Uint8Array;
  /** For an entry record, its index; for a truncation, the new last index; else -1. */
  index: number;
  type: number;
  /** For a hard-state record, the state it holds. */
  state?: { term: number; votedFor: number | null };
  /** For a snapshot record, the snapshot and its file's bytes, written before the record. */
  snapshot?: { reference: SnapshotReference; file: Uint8Array };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder("utf-8", { fatal: true });

/**
 * Keeps a peer's persistent state in an append-only, checksummed file. A save resolves after
 * `fdatasync`; saves that arrive while a sync runs go out together in the next one, in call
 * order. When dead records dominate, the live ones are written to a fresh file that is renamed
 * over the old one. A lock file keeps a second process (or persister) out of the directory.
 *
 * At open, a torn record at the very end (a write cut by a crash, never acknowledged) is
 * dropped; damage anywhere else rejects with a {@linkcode PersisterCorruptError} naming the file
 * and offset, so acknowledged data is never lost silently.
 *
 * @example
 * ```ts ignore
 * import { FilePersister } from "@denoraft/raft";
 * const persister = await FilePersister.open("/var/lib/raft/peer-0");
 * const { term, log } = await persister.load();
 * await persister.save({ term: term + 1, votedFor: 0, log: { from: log.length + 1, entries: [] } });
 * await persister.close();
 * ```
 */
export class FilePersister implements Persister {
  /** The largest command (bytes of its JSON text) one record can hold: 64 MiB less a little. */
  readonly maxCommandBytes: number = MAX_RECORD_BYTES - ENTRY_OVERHEAD;

  readonly #directory: string;
  readonly #path: string;
  readonly #lock: StoreLock;
  readonly #compactMinBytes: number;
  readonly #preallocate: boolean;
  readonly #commit: GroupCommit<EncodedRecord[]>;
  #file: Deno.FsFile;
  /** End of the last record written: where the next save goes. */
  #fileSize: number;
  /** The file's length on disk, `#fileSize` plus the tail of zeros. */
  #allocated: number;
  /** `#entries[i]` is where the entry at index snapshot index + i + 1 sits. */
  #entries: Span[];
  #stateRecord: Span | null;
  #snapshotRecord: Span | null;
  /** The snapshot the last durable save left, or `null`. */
  #snapshot: SnapshotReference | null;
  #liveBytes: number;
  #term: number;
  #votedFor: number | null;
  /** The log's bounds once every queued save is applied: checks new saves. */
  #queued: LogBounds;
  /** The generation of the last snapshot file named: the next one takes the one after it. */
  #lastGeneration: number;
  /** Generations whose files no durable record names any more: deleted after the flush. */
  #obsoleteGenerations: number[] = [];
  /** A snapshot was saved (or found at open) with dead records before it: compact at once. */
  #compactPending: boolean;
  /** The state read at open, handed out by the first load() unless a save came first. */
  #opened: PersistentState | null;
  /** What `close()` returns, once called. */
  #closed: Promise<void> | null = null;

  private constructor(
    directory: string,
    lock: StoreLock,
    file: Deno.FsFile,
    scan: ScanResult,
    openedSnapshot: Snapshot | null,
    lastGeneration: number,
    allocated: number,
    options: Required<FilePersisterOptions>,
  ) {
    this.#directory = directory;
    this.#path = join(directory, LOG_FILE);
    this.#lock = lock;
    this.#file = file;
    this.#fileSize = scan.end;
    this.#allocated = allocated;
    this.#entries = scan.entries;
    this.#stateRecord = scan.stateRecord;
    this.#snapshotRecord = scan.snapshotRecord;
    this.#snapshot = scan.snapshot;
    this.#liveBytes = liveBytesOf(scan.entries, scan.stateRecord, scan.snapshotRecord);
    this.#term = scan.state.term;
    this.#votedFor = scan.state.votedFor;
    const snapshotIndex = scan.snapshot?.index ?? 0;
    this.#queued = { lastIndex: snapshotIndex + scan.entries.length, snapshotIndex };
    this.#lastGeneration = lastGeneration;
    this.#compactPending = scan.deadBeforeSnapshot;
    this.#opened = { ...scan.state, snapshot: openedSnapshot };
    this.#compactMinBytes = options.compactMinBytes;
    this.#preallocate = options.preallocate;
    this.#commit = new GroupCommit((batch) => this.#flush(batch), () => this.#maybeCompact());
  }

  /**
   * Opens (or creates) the persister in `directory`, taking its lock. Rejects with a
   * {@linkcode PersisterLockedError} if someone else holds it, and with a
   * {@linkcode PersisterCorruptError} if the log is damaged anywhere but a torn end, or the
   * snapshot file it names is missing or damaged. Removes snapshot files that no acknowledged
   * save names (left by a crash during a snapshot save, or before the old one was deleted).
   */
  static async open(directory: string, options: FilePersisterOptions = {}): Promise<FilePersister> {
    if (typeof directory !== "string" || directory === "") {
      throw new TypeError(`Directory must be a non-empty string, got ${JSON.stringify(directory)}`);
    }
    const compactMinBytes = options.compactMinBytes ?? 4 * 1024 * 1024;
    if (!Number.isSafeInteger(compactMinBytes) || compactMinBytes < 0) {
      throw new RangeError(
        `Option compactMinBytes must be a non-negative integer, got ${compactMinBytes}`,
      );
    }
    const preallocate = options.preallocate ?? true;
    if (typeof preallocate !== "boolean") {
      throw new TypeError(`Option preallocate must be a boolean, got ${String(preallocate)}`);
    }
    const absolute = resolve(directory);
    await Deno.mkdir(absolute, { recursive: true });
    const lock = await StoreLock.take(join(absolute, LOCK_FILE), absolute);
    let file: Deno.FsFile | null = null;
    try {
      await Deno.remove(join(absolute, COMPACTING_FILE)).catch(ignoreNotFound);
      const path = join(absolute, LOG_FILE);
      if (!(await exists(path))) await writeFreshFile(absolute, [MAGIC]);
      file = await Deno.open(path, { read: true, write: true });
      const scan = await scanFile(file, path);
      const reference = scan.snapshot;
      const snapshot = reference === null ? null : await readSnapshotFile(absolute, reference);
      const lastGeneration = await removeUnnamedSnapshots(absolute, scan.snapshot);
      let allocated = (await file.stat()).size;
      if (!scan.zeroTail || !preallocate) {
        // Drop the torn or unacknowledged tail, so that new records follow the last good one and
        // nothing stale lies after them. A tail of zeros is kept as preallocated space, unless
        // this persister does not preallocate: its saves then end the file, as a torn write in
        // them must (see scanFile).
        await file.truncate(scan.end);
        await file.syncData();
        allocated = scan.end;
      }
      const settings = { compactMinBytes, preallocate };
      return new FilePersister(
        absolute,
        lock,
        file,
        scan,
        snapshot,
        lastGeneration,
        allocated,
        settings,
      );
    } catch (error) {
      file?.close();
      lock.release();
      throw error;
    }
  }

  /** Reads the state as of the last acknowledged save. */
  load(): Promise<PersistentState> {
    // Exclusive: no write or compaction may change the file under the scan.
    return this.#commit.exclusive(async () => {
      const opened = this.#opened;
      if (opened !== null) {
        this.#opened = null;
        return opened;
      }
      const file = await Deno.open(this.#path, { read: true });
      let scan: ScanResult;
      try {
        scan = await scanFile(file, this.#path, this.#fileSize);
      } finally {
        file.close();
      }
      const reference = scan.snapshot;
      const snapshot = reference === null
        ? null
        : await readSnapshotFile(this.#directory, reference);
      return { ...scan.state, snapshot };
    });
  }

  /**
   * Applies `change` after every earlier save; resolves once it is on disk (`fdatasync`; for a
   * snapshot, once its file is synced and renamed into place, and the directory synced, before
   * the log's records). Rejects with a `RangeError` or `TypeError` (and changes nothing) if the
   * change is malformed: a gap in the log, a log change at or before the snapshot's index, a
   * snapshot older than the stored one, snapshot data that is not a `Uint8Array`.
   */
  save(change: PersistChange): Promise<void> {
    const refusal = this.#commit.failure;
    if (refusal !== null) return Promise.reject(refusal);
    let records: EncodedRecord[];
    try {
      checkChange(change, this.#queued);
      const generation = this.#lastGeneration + 1;
      records = encodeChange(change, this.#queued, generation, this.maxCommandBytes);
      if (change.snapshot !== undefined) this.#lastGeneration = generation;
    } catch (error) {
      return Promise.reject(error);
    }
    this.#queued = boundsAfter(change, this.#queued);
    this.#opened = null;
    return this.#commit.submit(records);
  }

  /**
   * Waits for queued saves and loads, cuts off the preallocated tail, then closes the file and
   * releases the lock. Later saves and loads reject; every call returns the same promise.
   */
  close(): Promise<void> {
    this.#closed ??= this.#close();
    return this.#closed;
  }

  async #close(): Promise<void> {
    await this.#commit.close("close() was called");
    try {
      // Cuts the preallocated tail off, and after a failed save whatever part of it reached the
      // file. Not synced: should a crash undo the cut, zeros after the records read as the end,
      // and a failed save's records as a save that was never acknowledged.
      await this.#file.truncate(this.#fileSize).catch(() => undefined);
      this.#file.close();
    } finally {
      this.#lock.release();
    }
  }

  async #flush(batch: EncodedRecord[][]): Promise<void> {
    const records = batch.flat();
    // Every snapshot file first, each synced and renamed into place, then the directory synced:
    // a record may name a file only once the file is durable. All of them, not only the last:
    // should the batch's write be cut short, a prefix of its saves may load, and the last
    // snapshot in that prefix must be there.
    let snapshots = 0;
    for (const { snapshot } of records) {
      if (snapshot === undefined) continue;
      await writeSnapshotFile(this.#directory, snapshot.reference.generation, snapshot.file);
      snapshots++;
    }
    if (snapshots > 0) await syncDirectory(this.#directory);
    let length = 0;
    for (const record of records) length += record.bytes.length;
    const bytes = new Uint8Array(length);
    let at = 0;
    for (const record of records) {
      bytes.set(record.bytes, at);
      at += record.bytes.length;
    }
    // Seek and write block only briefly (the page cache takes the bytes); an async op costs two
    // thread hops, which on a busy machine took 100-250 us per save. The sync stays async.
    this.#file.seekSync(this.#fileSize, Deno.SeekMode.Start);
    writeAllSync(this.#file, bytes);
    const end = this.#fileSize + bytes.length;
    if (this.#preallocate && end >= this.#allocated) {
      // Zeros after the records, synced with them: the next saves overwrite existing blocks.
      // Records always end before the zeros do (hence >=): a write cut short inside the
      // preallocated space is then followed by zeros, which a damaged complete record is not.
      const growth = Math.min(Math.max(end, MIN_GROWTH), MAX_GROWTH);
      const allocated = end + growth;
      zeroChunk ??= new Uint8Array(READ_CHUNK);
      for (let at = end; at < allocated; at += zeroChunk.length) {
        writeAllSync(this.#file, zeroChunk.subarray(0, Math.min(zeroChunk.length, allocated - at)));
      }
      this.#allocated = allocated;
    }
    await this.#file.syncData();
    this.#allocated = Math.max(this.#allocated, end);
    let offset = this.#fileSize;
    for (const record of records) {
      this.#account(record, { offset, length: record.bytes.length });
      offset += record.bytes.length;
    }
    this.#fileSize = offset;
  }

  /** Updates where live records are after `record` was written at `span`. */
  #account(record: EncodedRecord, span: Span): void {
    const base = this.#snapshot?.index ?? 0;
    if (record.type === RECORD_SNAPSHOT && record.snapshot !== undefined) {
      // Entries up to the snapshot's index are dead from here on.
      const dropped = Math.min(record.index - base, this.#entries.length);
      for (let i = 0; i < dropped; i++) this.#liveBytes -= this.#entries[i]!.length;
      this.#entries.splice(0, dropped);
      if (this.#snapshotRecord !== null) this.#liveBytes -= this.#snapshotRecord.length;
      this.#snapshotRecord = span;
      this.#liveBytes += span.length;
      if (this.#snapshot !== null) this.#obsoleteGenerations.push(this.#snapshot.generation);
      this.#snapshot = record.snapshot.reference;
      this.#compactPending = true;
      return;
    }
    if (record.type === RECORD_STATE) {
      if (this.#stateRecord !== null) this.#liveBytes -= this.#stateRecord.length;
      this.#stateRecord = span;
      this.#liveBytes += span.length;
      if (record.state !== undefined) {
        this.#term = record.state.term;
        this.#votedFor = record.state.votedFor;
      }
      return;
    }
    const keep = (record.type === RECORD_ENTRY ? record.index - 1 : record.index) - base;
    for (let i = keep; i < this.#entries.length; i++) this.#liveBytes -= this.#entries[i]!.length;
    this.#entries.length = Math.min(keep, this.#entries.length);
    if (record.type === RECORD_ENTRY) {
      this.#entries.push(span);
      this.#liveBytes += span.length;
    }
  }

  /**
   * After a flush: deletes snapshot files no durable record names any more, then rewrites the
   * live records into a fresh file when dead ones dominate, or when a snapshot made records
   * dead (so that the disk holds no entry up to the snapshot's index).
   */
  async #maybeCompact(): Promise<void> {
    for (const generation of this.#obsoleteGenerations.splice(0)) {
      await Deno.remove(join(this.#directory, snapshotFileName(generation))).catch(ignoreNotFound);
    }
    const deadBytes = this.#fileSize - MAGIC.length - this.#liveBytes;
    const due = (this.#compactPending && deadBytes > 0) ||
      (deadBytes > this.#compactMinBytes && deadBytes > this.#liveBytes);
    this.#compactPending = false;
    if (!due) return;
    const entries: Span[] = [];
    const snapshot = this.#snapshot === null ? null : encodeSnapshotRecord(this.#snapshot);
    const snapshotRecord = snapshot === null
      ? null
      : { offset: MAGIC.length, length: snapshot.length };
    let offset = MAGIC.length + (snapshot?.length ?? 0);
    const state = encodeRecord(RECORD_STATE, encodeStateBody(this.#term, this.#votedFor));
    const live = this.#entries;
    const file = this.#file;
    async function* records(): AsyncGenerator<Uint8Array> {
      yield MAGIC;
      if (snapshot !== null) yield snapshot;
      for await (const record of readSpans(file, live)) {
        entries.push({ offset, length: record.length });
        offset += record.length;
        yield record;
      }
      yield state;
    }
    await writeFreshFile(this.#directory, records());
    const stateRecord = { offset, length: state.length };
    // The rename is done: from here on, only the new file holds the state. Opened before the old
    // handle closes, so that a failed open leaves this persister a handle to close.
    const compacted = await Deno.open(this.#path, { read: true, write: true });
    this.#file.close();
    this.#file = compacted;
    this.#fileSize = offset + state.length;
    this.#allocated = this.#fileSize;
    this.#entries = entries;
    this.#stateRecord = stateRecord;
    this.#snapshotRecord = snapshotRecord;
    this.#liveBytes = liveBytesOf(entries, stateRecord, snapshotRecord);
  }
}

function liveBytesOf(
  entries: Span[],
  stateRecord: Span | null,
  snapshotRecord: Span | null,
): number {
  let bytes = (stateRecord?.length ?? 0) + (snapshotRecord?.length ?? 0);
  for (const span of entries) bytes += span.length;
  return bytes;
}

/**
 * The records of `change` for a log with `bounds`: its snapshot record (naming the file of
 * `generation`), its truncation or entry records, then its hard-state record, the commit point.
 */
function encodeChange(
  change: PersistChange,
  bounds: LogBounds,
  generation: number,
  maxCommandBytes: number,
): EncodedRecord[] {
  const records: EncodedRecord[] = [];
  let lastIndex = bounds.lastIndex;
  if (change.snapshot !== undefined) {
    const { index, term, data, configuration } = change.snapshot;
    const reference = { index, term, generation, length: data.length, check: crc32(data) };
    const stored = configuration === undefined
      ? undefined
      : storedConfiguration(configuration, `the snapshot through ${index}`);
    records.push({
      bytes: encodeSnapshotRecord(reference),
      index,
      type: RECORD_SNAPSHOT,
      snapshot: { reference, file: encodeSnapshotFile(reference, data, stored) },
    });
    lastIndex = Math.max(lastIndex, index);
  }
  if (change.log !== undefined) {
    const { from, entries } = change.log;
    if (entries.length === 0 && from <= lastIndex) {
      records.push({
        bytes: encodeRecord(RECORD_TRUNCATE, withBodyEnd(float64s(from - 1))),
        index: from - 1,
        type: RECORD_TRUNCATE,
      });
    }
    entries.forEach((entry, offset) => {
      if (entry.type === "noop") {
        records.push({
          bytes: encodeRecord(RECORD_NOOP, withBodyEnd(float64s(from + offset, entry.term))),
          index: from + offset,
          type: RECORD_ENTRY,
        });
        return;
      }
      const index = from + offset;
      const isConfiguration = entry.type === "config";
      const command = encoder.encode(
        isConfiguration
          ? JSON.stringify(storedConfiguration(entry.command, `the entry at ${index}`))
          : commandJson(entry.command),
      );
      if (command.length > maxCommandBytes) {
        throw new RangeError(
          `Command must be at most ${maxCommandBytes} bytes of JSON, got ${command.length}`,
        );
      }
      const body = new Uint8Array(16 + command.length);
      body.set(float64s(index, entry.term));
      body.set(command, 16);
      records.push({
        bytes: encodeRecord(isConfiguration ? RECORD_CONFIG : RECORD_ENTRY, body),
        index,
        type: RECORD_ENTRY,
      });
    });
  }
  records.push({
    bytes: encodeRecord(RECORD_STATE, encodeStateBody(change.term, change.votedFor)),
    index: -1,
    type: RECORD_STATE,
    state: { term: change.term, votedFor: change.votedFor },
  });
  return records;
}

function encodeSnapshotRecord(reference: SnapshotReference): Uint8Array {
  const body = new Uint8Array(SNAPSHOT_BODY_BYTES);
  const { index, term, generation, length, check } = reference;
  body.set(float64s(index, term, generation, length));
  new DataView(body.buffer).setUint32(32, check, true);
  body[SNAPSHOT_BODY_BYTES - 1] = BODY_END;
  return encodeRecord(RECORD_SNAPSHOT, body);
}

function decodeSnapshotRecord(body: Uint8Array): SnapshotReference | null {
  if (body.length !== SNAPSHOT_BODY_BYTES || body[SNAPSHOT_BODY_BYTES - 1] !== BODY_END) {
    return null;
  }
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const [index, term, generation, length] = [0, 8, 16, 24].map((at) => view.getFloat64(at, true));
  const check = view.getUint32(32, true);
  if (!isTerm(index) || !isTerm(term) || !isTerm(generation) || !isTerm(length)) return null;
  if (generation < 1) return null;
  return { index, term, generation, length, check };
}

/**
 * A snapshot file: a header that repeats the record's fields, holds the configuration and checks
 * itself, then the data.
 */
function encodeSnapshotFile(
  reference: SnapshotReference,
  data: Uint8Array,
  configuration: Configuration | undefined,
): Uint8Array {
  const json = configuration === undefined
    ? new Uint8Array(0)
    : encoder.encode(JSON.stringify(configuration));
  const headerBytes = SNAPSHOT_HEADER_BYTES + json.length;
  const file = new Uint8Array(headerBytes + data.length);
  file.set(SNAPSHOT_MAGIC);
  file.set(float64s(reference.index, reference.term, reference.length), 8);
  const view = new DataView(file.buffer);
  view.setUint32(32, reference.check, true);
  view.setUint32(36, json.length, true);
  file.set(json, 40);
  view.setUint32(headerBytes - 4, crc32(file.subarray(0, headerBytes - 4)), true);
  file.set(data, headerBytes);
  return file;
}

function snapshotFileName(generation: number): string {
  return `snapshot.${generation}`;
}

/**
 * Writes the snapshot file of `generation` to a temporary file, syncs it and renames it into
 * place. The caller syncs the directory before any record names the file.
 */
async function writeSnapshotFile(
  directory: string,
  generation: number,
  bytes: Uint8Array,
): Promise<void> {
  const name = snapshotFileName(generation);
  const temporaryPath = join(directory, `${name}.tmp`);
  const file = await Deno.open(temporaryPath, { write: true, create: true, truncate: true });
  try {
    await writeAll(file, bytes);
    await file.syncData();
  } finally {
    file.close();
  }
  await Deno.rename(temporaryPath, join(directory, name));
}

/**
 * Reads the snapshot file that `reference` names and checks it against the record; resolves to
 * the snapshot, or rejects with a {@linkcode PersisterCorruptError} naming the file.
 */
async function readSnapshotFile(
  directory: string,
  reference: SnapshotReference,
): Promise<Snapshot> {
  const path = join(directory, snapshotFileName(reference.generation));
  const corrupt = (offset: number, detail: string) =>
    new PersisterCorruptError(path, offset, detail);
  let bytes: Uint8Array;
  try {
    bytes = await Deno.readFile(path);
  } catch (error) {
    if (!(error instanceof Deno.errors.NotFound)) throw error;
    throw corrupt(
      -1,
      `the snapshot file is missing, though ${LOG_FILE} names it for the snapshot through ` +
        `index ${reference.index}`,
    );
  }
  const header = readSnapshotHeader(bytes);
  if (header === null) throw corrupt(0, `the snapshot file's header is damaged`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const [index, term, length] = [8, 16, 24].map((at) => view.getFloat64(at, true));
  if (
    index !== reference.index || term !== reference.term || length !== reference.length ||
    view.getUint32(32, true) !== reference.check
  ) {
    throw corrupt(0, `the snapshot file is not the one ${LOG_FILE} names`);
  }
  const data = bytes.subarray(header.dataOffset);
  if (data.length !== reference.length) {
    throw corrupt(
      header.dataOffset,
      `the snapshot file holds ${data.length} bytes of data, not ${reference.length}`,
    );
  }
  if (crc32(data) !== reference.check) {
    throw corrupt(header.dataOffset, `the snapshot's data fails its checksum`);
  }
  const snapshot: Snapshot = { index, term, data };
  if (header.configuration !== null) {
    const configuration = decodeConfiguration(header.configuration);
    if (typeof configuration === "string") {
      throw corrupt(40, `the snapshot's configuration ${configuration}`);
    }
    snapshot.configuration = configuration;
  }
  return snapshot;
}

/**
 * The header of a snapshot file, either format, if it is whole and passes its checksum: where
 * the data starts, and the configuration's JSON (`null` for none, and in files of format 1).
 */
function readSnapshotHeader(
  bytes: Uint8Array,
): { dataOffset: number; configuration: Uint8Array | null } | null {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const hasMagic = (magic: Uint8Array) =>
    bytes.length >= magic.length && magic.every((byte, i) => byte === bytes[i]);
  if (hasMagic(SNAPSHOT_MAGIC_1)) {
    if (bytes.length < SNAPSHOT_HEADER_BYTES_1) return null;
    const checked = SNAPSHOT_HEADER_BYTES_1 - 4;
    if (crc32(bytes.subarray(0, checked)) !== view.getUint32(checked, true)) return null;
    return { dataOffset: SNAPSHOT_HEADER_BYTES_1, configuration: null };
  }
  if (!hasMagic(SNAPSHOT_MAGIC) || bytes.length < SNAPSHOT_HEADER_BYTES) return null;
  const configurationBytes = view.getUint32(36, true);
  const dataOffset = SNAPSHOT_HEADER_BYTES + configurationBytes;
  if (dataOffset > bytes.length) return null;
  const checked = dataOffset - 4;
  if (crc32(bytes.subarray(0, checked)) !== view.getUint32(checked, true)) return null;
  const configuration = configurationBytes === 0 ? null : bytes.subarray(40, checked);
  return { dataOffset, configuration };
}

/**
 * Removes snapshot files (and temporary ones) other than the one `named` names: a crash left
 * them, during a snapshot save or before the old file was deleted. Resolves to the highest
 * generation seen, so that a new file never takes the name of one still on disk.
 */
async function removeUnnamedSnapshots(
  directory: string,
  named: SnapshotReference | null,
): Promise<number> {
  let highest = named?.generation ?? 0;
  for await (const { name } of Deno.readDir(directory)) {
    const match = SNAPSHOT_FILE.exec(name);
    if (match === null) continue;
    const generation = Number(match[1]);
    highest = Math.max(highest, generation);
    if (match[2] !== undefined || generation !== named?.generation) {
      await Deno.remove(join(directory, name)).catch(ignoreNotFound);
    }
  }
  return highest;
}

/** `body` and then {@linkcode BODY_END}. */
function withBodyEnd(body: Uint8Array): Uint8Array {
  const ended = new Uint8Array(body.length + 1);
  ended.set(body);
  ended[body.length] = BODY_END;
  return ended;
}

/**
 * Whether a hard-state or truncation body holds `length` bytes of fields: followed by
 * {@linkcode BODY_END}, or not (files written before the end byte was added).
 */
function hasFields(body: Uint8Array, length: number): boolean {
  return body.length === length || (body.length === length + 1 && body[length] === BODY_END);
}

function encodeStateBody(term: number, votedFor: number | null): Uint8Array {
  return withBodyEnd(float64s(term, votedFor ?? -1));
}

function decodeState(body: Uint8Array): { term: number; votedFor: number | null } | null {
  if (!hasFields(body, 16)) return null;
  const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
  const term = view.getFloat64(0, true);
  const vote = view.getFloat64(8, true);
  const votedFor = vote === -1 ? null : vote;
  if (!isTerm(term) || !isVotedFor(votedFor)) return null;
  return { term, votedFor };
}

function encodeRecord(type: number, body: Uint8Array): Uint8Array {
  const record = new Uint8Array(HEADER_BYTES + 1 + body.length);
  record[HEADER_BYTES] = type;
  record.set(body, HEADER_BYTES + 1);
  const view = new DataView(record.buffer);
  view.setUint32(0, 1 + body.length, true);
  view.setUint32(4, crc32(record.subarray(HEADER_BYTES)), true);
  view.setUint32(8, crc32(record.subarray(0, 8)), true);
  return record;
}

interface ScanResult {
  /** Term, vote and the log after the snapshot (the snapshot's data is in its own file). */
  state: Omit<PersistentState, "snapshot">;
  /** The snapshot the last acknowledged save left, as its record names it, or `null`. */
  snapshot: SnapshotReference | null;
  entries: Span[];
  stateRecord: Span | null;
  snapshotRecord: Span | null;
  /** Whether a snapshot made records dead that the file still holds. */
  deadBeforeSnapshot: boolean;
  /** End of the last hard-state record: everything after it was never acknowledged. */
  end: number;
  /** Whether every byte after `end` is zero (a preallocated tail, nothing to drop). */
  zeroTail: boolean;
}

/**
 * Reads and checks every record up to `size` (default: the file's size). A torn write ends the
 * scan: a header or record cut short by the end of the file, a header that fails its checksum
 * with only zeros from its record's type byte on, or a record that fails its checksum with only
 * zeros from its last byte on (a complete record ends with a non-zero byte), in both cases with
 * at least one byte after the header or record (zeros of the preallocated tail: see
 * {@linkcode ChunkReader.tornAt}). Any other damage throws a {@linkcode PersisterCorruptError}.
 */
async function scanFile(file: Deno.FsFile, path: string, size?: number): Promise<ScanResult> {
  const fileSize = size ?? (await file.stat()).size;
  const reader = new ChunkReader(file, fileSize);
  const corrupt = (offset: number, detail: string) =>
    new PersisterCorruptError(path, offset, detail);
  const magic = await reader.read(0, MAGIC.length);
  if (magic === null || !magic.every((byte, i) => byte === MAGIC[i])) {
    throw corrupt(0, `the file does not start with "RAFTLOG1"`);
  }
  // What the acknowledged saves so far left: `log[i]` is the entry at index base + i + 1.
  const log: LogEntry[] = [];
  const entries: Span[] = [];
  let base = 0;
  let term = 0;
  let votedFor: number | null = null;
  let snapshot: SnapshotReference | null = null;
  let stateRecord: Span | null = null;
  let snapshotRecord: Span | null = null;
  let deadBeforeSnapshot = false;
  let end = MAGIC.length;
  // A save whose hard-state record has not been read yet: its snapshot (if any) moves the base
  // to `pendingBase`; it keeps the acknowledged entries in pendingBase+1..keepTo and appends
  // `pendingLog` after them. A torn save changes nothing.
  let pendingBase = 0;
  let keepTo = 0;
  let pendingLog: LogEntry[] = [];
  let pendingEntries: Span[] = [];
  let pendingSnapshot: { reference: SnapshotReference; span: Span } | null = null;
  let offset = MAGIC.length;
  while (offset < fileSize) {
    const header = await reader.read(offset, HEADER_BYTES);
    if (header === null) break;
    const view = new DataView(header.buffer, header.byteOffset, header.byteLength);
    const length = view.getUint32(0, true);
    if (crc32(header.subarray(0, 8)) !== view.getUint32(8, true)) {
      // A complete header is followed by its record's type byte, which is never zero.
      if (await reader.tornAt(offset + HEADER_BYTES, offset + HEADER_BYTES)) break;
      throw corrupt(offset, "a record header fails its checksum");
    }
    if (length < 1 || length > MAX_RECORD_BYTES) {
      throw corrupt(offset, `a record claims ${length} bytes`);
    }
    const record = await reader.read(offset + HEADER_BYTES, length);
    if (record === null) break;
    if (crc32(record) !== view.getUint32(4, true)) {
      const recordEnd = offset + HEADER_BYTES + length;
      if (await reader.tornAt(recordEnd - 1, recordEnd)) break;
      throw corrupt(offset, "a record fails its checksum");
    }
    const span = { offset, length: HEADER_BYTES + length };
    const body = record.subarray(1);
    const type = record[0];
    const lastIndex = keepTo + pendingLog.length;
    if (type === RECORD_STATE) {
      const state = decodeState(body);
      if (state === null) throw corrupt(offset, "a hard-state record holds no valid state");
      term = state.term;
      votedFor = state.votedFor;
      if (pendingSnapshot !== null) {
        const dropped = Math.min(pendingBase - base, log.length);
        log.splice(0, dropped);
        entries.splice(0, dropped);
        base = pendingBase;
        snapshot = pendingSnapshot.reference;
        snapshotRecord = pendingSnapshot.span;
        deadBeforeSnapshot = true;
      }
      log.length = keepTo - base;
      entries.length = keepTo - base;
      log.push(...pendingLog);
      entries.push(...pendingEntries);
      keepTo = base + log.length;
      pendingLog = [];
      pendingEntries = [];
      pendingSnapshot = null;
      stateRecord = span;
      end = offset + span.length;
    } else if (type === RECORD_SNAPSHOT) {
      const reference = decodeSnapshotRecord(body);
      if (reference === null || reference.index < pendingBase) {
        throw corrupt(
          offset,
          `a snapshot record holds an invalid snapshot (the log's snapshot is at ${pendingBase})`,
        );
      }
      // Entries up to the snapshot's index go: those pending from the front, the acknowledged
      // ones when the save commits (below pendingBase).
      if (reference.index >= keepTo) {
        const dropped = Math.min(reference.index - keepTo, pendingLog.length);
        pendingLog = pendingLog.slice(dropped);
        pendingEntries = pendingEntries.slice(dropped);
        keepTo = reference.index;
      }
      pendingBase = reference.index;
      pendingSnapshot = { reference, span };
    } else if (
      type === RECORD_ENTRY || type === RECORD_TRUNCATE || type === RECORD_NOOP ||
      type === RECORD_CONFIG
    ) {
      const view = new DataView(body.buffer, body.byteOffset, body.byteLength);
      const index = body.length >= 8 ? view.getFloat64(0, true) : NaN;
      if (type === RECORD_TRUNCATE) {
        if (!hasFields(body, 8) || !isTerm(index) || index < pendingBase || index > lastIndex) {
          throw corrupt(
            offset,
            `a truncation record holds an invalid index (log has ${pendingBase + 1}..${lastIndex})`,
          );
        }
        truncate(index);
      } else {
        const entryTerm = body.length >= 16 ? view.getFloat64(8, true) : NaN;
        if (
          !isTerm(index) || index <= pendingBase || index > lastIndex + 1 || !isTerm(entryTerm)
        ) {
          throw corrupt(
            offset,
            `an entry record holds an invalid index or term (log has ${pendingBase + 1}..` +
              `${lastIndex})`,
          );
        }
        let entry: LogEntry;
        if (type === RECORD_NOOP) {
          if (!hasFields(body, 16)) throw corrupt(offset, "a no-op entry record has extra bytes");
          entry = { term: entryTerm, command: null, type: "noop" };
        } else if (type === RECORD_CONFIG) {
          const configuration = decodeConfiguration(body.subarray(16));
          if (typeof configuration === "string") {
            throw corrupt(offset, `a configuration entry record's command ${configuration}`);
          }
          entry = { term: entryTerm, command: configuration, type: "config" };
        } else {
          try {
            entry = { term: entryTerm, command: JSON.parse(decoder.decode(body.subarray(16))) };
          } catch {
            throw corrupt(offset, "an entry record's command is not valid JSON");
          }
        }
        truncate(index - 1);
        pendingLog.push(entry);
        pendingEntries.push(span);
      }
    } else {
      throw corrupt(offset, `a record has unknown type ${type}`);
    }
    offset += span.length;
  }
  const zeroTail = await reader.zerosFrom(end);
  return {
    state: { term, votedFor, log },
    snapshot,
    entries,
    stateRecord,
    snapshotRecord,
    deadBeforeSnapshot,
    end,
    zeroTail,
  };

  /** Cuts the log as the pending save sees it to end at `lastIndex`. */
  function truncate(lastIndex: number): void {
    if (lastIndex <= keepTo) {
      keepTo = lastIndex;
      pendingLog = [];
      pendingEntries = [];
    } else {
      pendingLog.length = Math.min(pendingLog.length, lastIndex - keepTo);
      pendingEntries.length = pendingLog.length;
    }
  }
}

/** Reads a file through a window of about 1 MiB, so a scan makes few system calls. */
class ChunkReader {
  readonly #file: Deno.FsFile;
  readonly #size: number;
  #window: Uint8Array = new Uint8Array(0);
  #windowStart = 0;

  constructor(file: Deno.FsFile, size: number) {
    this.#file = file;
    this.#size = size;
  }

  /** The bytes offset..offset+length, or `null` if the file ends first. */
  async read(offset: number, length: number): Promise<Uint8Array | null> {
    if (offset + length > this.#size) return null;
    const start = offset - this.#windowStart;
    if (start < 0 || start + length > this.#window.length) {
      const windowLength = Math.min(Math.max(length, READ_CHUNK), this.#size - offset);
      this.#window = await readAt(this.#file, offset, windowLength);
      this.#windowStart = offset;
      return this.#window.subarray(0, length);
    }
    return this.#window.subarray(start, start + length);
  }

  /**
   * Whether a record that fails its checksum was cut short by a crash inside the preallocated
   * tail: its bytes from `firstZero` on are zero, and so is at least one byte after its `end`.
   * A save always leaves zeros after its records when it writes into preallocated space, and a
   * torn write in a file without that space ends the file before the record's end; so a record
   * that ends the file, or that has non-zero bytes after it, was damaged, not torn.
   */
  async tornAt(firstZero: number, end: number): Promise<boolean> {
    return end < this.#size && await this.zerosFrom(firstZero);
  }

  /** Whether every byte from `offset` to the end of the file is zero. */
  async zerosFrom(offset: number): Promise<boolean> {
    for (let at = offset; at < this.#size; at += READ_CHUNK) {
      const chunk = await this.read(at, Math.min(READ_CHUNK, this.#size - at));
      if (chunk === null || chunk.some((byte) => byte !== 0)) return false;
    }
    return true;
  }
}

async function readAt(file: Deno.FsFile, offset: number, length: number): Promise<Uint8Array> {
  const bytes = new Uint8Array(length);
  await file.seek(offset, Deno.SeekMode.Start);
  let at = 0;
  while (at < length) {
    const read = await file.read(bytes.subarray(at));
    if (read === null) {
      throw new Error(`File ended at ${offset + at} while reading ${length} bytes`);
    }
    at += read;
  }
  return bytes;
}

/** Yields the bytes of each span, in order; spans must be in increasing offset order. */
async function* readSpans(file: Deno.FsFile, spans: Span[]): AsyncGenerator<Uint8Array> {
  const last = spans.at(-1);
  if (last === undefined) return;
  const reader = new ChunkReader(file, last.offset + last.length);
  for (const span of spans) {
    const bytes = await reader.read(span.offset, span.length);
    if (bytes === null) throw new Error(`A live record at ${span.offset} lies past the file's end`);
    yield bytes;
  }
}

function writeAllSync(file: Deno.FsFile, bytes: Uint8Array): void {
  let at = 0;
  while (at < bytes.length) at += file.writeSync(bytes.subarray(at));
}

async function writeAll(file: Deno.FsFile, bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await file.write(bytes.subarray(at));
}

/**
 * Writes `chunks` to a temporary file, syncs it, renames it to `name` and syncs the directory:
 * the file under `name` is the old one or the complete new one, whatever happens.
 */
async function writeFreshFile(
  directory: string,
  chunks: Iterable<Uint8Array> | AsyncIterable<Uint8Array>,
): Promise<void> {
  const temporaryPath = join(directory, COMPACTING_FILE);
  const file = await Deno.open(temporaryPath, { write: true, create: true, truncate: true });
  try {
    // Gathers small records into writes of about READ_CHUNK bytes.
    let pending: Uint8Array[] = [];
    let pendingBytes = 0;
    const writePending = async () => {
      const bytes = new Uint8Array(pendingBytes);
      let at = 0;
      for (const chunk of pending) {
        bytes.set(chunk, at);
        at += chunk.length;
      }
      await writeAll(file, bytes);
      pending = [];
      pendingBytes = 0;
    };
    for await (const chunk of chunks) {
      pending.push(chunk.slice());
      pendingBytes += chunk.length;
      if (pendingBytes >= READ_CHUNK) await writePending();
    }
    await writePending();
    await file.sync();
  } finally {
    file.close();
  }
  await Deno.rename(temporaryPath, join(directory, LOG_FILE));
  await syncDirectory(directory);
}

async function syncDirectory(directory: string): Promise<void> {
  const handle = await Deno.open(directory, { read: true });
  try {
    await handle.sync();
  } finally {
    handle.close();
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.lstat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

function ignoreNotFound(error: unknown): void {
  if (!(error instanceof Deno.errors.NotFound)) throw error;
}
