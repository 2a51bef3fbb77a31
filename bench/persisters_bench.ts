/**
 * Saves per second and entries per second of the durable persisters, at log lengths of 1,000
 * and 100,000 entries, next to the raw rate of append-plus-fdatasync on the same disk.
 *
 * Run: deno task bench   (deno bench --unstable-kv --allow-read --allow-write bench/)
 *
 * Each iteration overwrites the log's last entries, so the log keeps its length: a save of one
 * entry (what a leader writes per command) and a save of 64 entries (what a follower writes per
 * AppendEntries). The "raw" baselines write the same number of bytes to a plain file and call
 * fdatasync: the floor any durable persister pays.
 *
 * The "snapshots" group saves a snapshot of 64 KiB or 1 MiB with one new entry, on a log that
 * keeps 1,000 entries after the snapshot: the snapshot's index advances by one each time, so each
 * save also discards one entry (and FilePersister rewrites its log without it). Its baseline
 * writes the snapshot's bytes to a plain file and calls fdatasync.
 */

import { FilePersister } from "../src/storage/file_persister.ts";
import { KvPersister } from "../src/storage/kv_persister.ts";
import type { LogEntry } from "../src/types.ts";

const BATCH = 64;
const directory = await Deno.makeTempDir({ prefix: "raft-bench-" });
const closers: (() => void)[] = [];
globalThis.addEventListener("unload", () => {
  for (const close of closers) close();
  Deno.removeSync(directory, { recursive: true });
});

function entry(term: number, i: number): LogEntry {
  return { term, command: { op: "put", key: `key-${i}`, value: `value-${i}-${"x".repeat(24)}` } };
}

/** An entry record's size on disk in FilePersister: header, index, term, JSON command. */
const RECORD_BYTES = 13 + 16 + JSON.stringify(entry(1, 99_999).command).length;

interface Store {
  save(change: Parameters<KvPersister["save"]>[0]): Promise<void>;
}

async function filled<T extends Store>(store: T, length: number, batch: number): Promise<T> {
  for (let from = 1; from <= length; from += batch) {
    const entries = [];
    for (let i = from; i < Math.min(from + batch, length + 1); i++) entries.push(entry(1, i));
    await store.save({ term: 1, votedFor: 0, log: { from, entries } });
  }
  return store;
}

const raw = await Deno.open(`${directory}/raw.log`, { write: true, create: true, append: true });
closers.push(() => raw.close());
const rawOne = new Uint8Array(RECORD_BYTES + 29); // one entry record and one hard-state record
const rawBatch = new Uint8Array(BATCH * RECORD_BYTES + 29);
async function rawAppend(bytes: Uint8Array): Promise<void> {
  let at = 0;
  while (at < bytes.length) at += await raw.write(bytes.subarray(at));
  await raw.syncData();
}

const lengths = [1_000, 100_000];
const stores: { name: string; length: number; store: Store }[] = [];
for (const length of lengths) {
  const kv = await filled(await KvPersister.open(`${directory}/kv-${length}.kv`), length, 500);
  closers.push(() => void kv.close());
  stores.push({ name: "KvPersister", length, store: kv });
  const file = await filled(await FilePersister.open(`${directory}/file-${length}`), length, 1000);
  closers.push(() => void file.close());
  stores.push({ name: "FilePersister", length, store: file });
}

Deno.bench("raw append + fdatasync, 1 entry", { group: "saves", baseline: true }, async () => {
  await rawAppend(rawOne);
});
Deno.bench("raw append + fdatasync, 64 entries", { group: "entries", baseline: true }, async () => {
  await rawAppend(rawBatch);
});

for (const { name, length, store } of stores) {
  let term = 2;
  Deno.bench(
    `${name}, log of ${length.toLocaleString("en")}, 1 entry`,
    { group: "saves" },
    async () => {
      term++;
      await store.save({
        term,
        votedFor: 0,
        log: { from: length, entries: [entry(term, length)] },
      });
    },
  );
  Deno.bench(
    `${name}, log of ${length.toLocaleString("en")}, 64 entries`,
    { group: "entries" },
    async () => {
      term++;
      const from = length - BATCH + 1;
      const entries = Array.from({ length: BATCH }, (_, k) => entry(term, from + k));
      await store.save({ term, votedFor: 0, log: { from, entries } });
    },
  );
}

const SNAPSHOT_LOG = 1_000;
const snapshotSizes = [64 * 1024, 1024 * 1024];
const rawSnapshot = await Deno.open(`${directory}/raw.snapshot`, { write: true, create: true });
closers.push(() => rawSnapshot.close());
for (const size of snapshotSizes) {
  const data = new Uint8Array(size).map((_, i) => i & 0xff);
  const label = size < 1024 * 1024 ? `${size / 1024} KiB` : `${size / 1024 / 1024} MiB`;
  Deno.bench(
    `raw snapshot write + fdatasync, ${label}`,
    { group: `snapshots of ${label}`, baseline: true },
    async () => {
      await rawSnapshot.seek(0, Deno.SeekMode.Start);
      let at = 0;
      while (at < data.length) at += await rawSnapshot.write(data.subarray(at));
      await rawSnapshot.syncData();
    },
  );
  const stores: [string, Store][] = [
    [
      "KvPersister",
      await filled(
        await KvPersister.open(`${directory}/kv-snapshot-${size}.kv`),
        SNAPSHOT_LOG,
        500,
      ),
    ],
    [
      "FilePersister",
      await filled(
        await FilePersister.open(`${directory}/file-snapshot-${size}`),
        SNAPSHOT_LOG,
        1000,
      ),
    ],
  ];
  for (const [name, store] of stores) {
    closers.push(() => void (store as KvPersister | FilePersister).close());
    let index = 0;
    Deno.bench(
      `${name}, snapshot of ${label}, log of ${SNAPSHOT_LOG.toLocaleString("en")} after it`,
      { group: `snapshots of ${label}` },
      async () => {
        index++;
        const from = SNAPSHOT_LOG + index;
        await store.save({
          term: 1,
          votedFor: 0,
          snapshot: { index, term: 1, data },
          log: { from, entries: [entry(1, from)] },
        });
      },
    );
  }
}
