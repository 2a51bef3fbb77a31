import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { KvPersister } from "../src/storage/kv_persister.ts";
import {
  PersisterClosedError,
  PersisterCorruptError,
  PersisterLockedError,
} from "../src/storage/errors.ts";
import type { Configuration, LogEntry, PersistChange, PersistentState } from "../src/types.ts";
import {
  membershipContract,
  persisterContract,
  snapshotContract,
} from "./helpers/persister_contract.ts";
import { crc32 } from "../src/storage/_crc32.ts";
import { openInChildProcess } from "./helpers/open_elsewhere.ts";
import {
  AFTER_FORMAT_2,
  FORMAT_1_STATE,
  FORMAT_2_STATE,
  unzipFixture,
} from "./helpers/fixtures.ts";
import { configuration, snapshotData } from "./helpers/persister_contract.ts";
import { float64s } from "../src/storage/_bytes.ts";
import { sanitized } from "./helpers/sanitized.ts";

persisterContract("KvPersister", (place) => KvPersister.open(place));
snapshotContract("KvPersister", (place) => KvPersister.open(place));
membershipContract("KvPersister", (place) => KvPersister.open(place));

async function withDatabase(body: (path: string) => Promise<void>): Promise<void> {
  const directory = await Deno.makeTempDir({ prefix: "raft-kv-" });
  try {
    await body(`${directory}/peer.kv`);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}

/** What a persister opened on `path` loads; it is closed again. */
async function loadFrom(path: string): Promise<PersistentState> {
  const persister = await KvPersister.open(path);
  try {
    return await persister.load();
  } finally {
    await persister.close();
  }
}

async function rawKeys(path: string, prefix: Deno.KvKey): Promise<Deno.KvKey[]> {
  const kv = await Deno.openKv(path);
  try {
    const keys: Deno.KvKey[] = [];
    for await (const row of kv.list({ prefix })) keys.push(row.key);
    return keys;
  } finally {
    kv.close();
  }
}

/** The state key of the database at `path`, its checksum checked (formats 2 and 3). */
async function storedState(path: string): Promise<unknown> {
  const kv = await Deno.openKv(path);
  try {
    const { value } = await kv.get<Uint8Array>(["raft", "state"]);
    assert.ok(value instanceof Uint8Array, `the state key holds bytes: ${value}`);
    const json = value.subarray(4);
    assert.equal(new DataView(value.buffer, value.byteOffset).getUint32(0, true), crc32(json));
    return JSON.parse(new TextDecoder().decode(json));
  } finally {
    kv.close();
  }
}

function bigCommand(bytes: number, fill = "x"): string {
  // A JSON string of `bytes` bytes: two quotes around the fill.
  return fill.repeat(bytes - 2);
}

Deno.test(
  "KvPersister: an entry larger than one Deno.Kv value is split and read back whole",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const log: LogEntry[] = [
        { term: 1, command: bigCommand(200_000, "a") },
        { term: 1, command: "small" },
      ];
      await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: log } });
      await persister.close();
      const parts = await rawKeys(path, ["raft", "log", 1]);
      assert.equal(parts.length, 4, `expected 200 KB in 4 parts of 64 KiB, saw ${parts.length}`);
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), { term: 1, votedFor: null, snapshot: null, log });
      await reopened.close();
    });
  },
);

Deno.test(
  "KvPersister: a command of maxCommandBytes fits one save with any term; a larger entry is refused",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const limit = persister.maxCommandBytes;
      assert.ok(limit > 700_000, `expected about 800 KB, got ${limit}`);
      const largest = { term: Number.MAX_SAFE_INTEGER, command: bigCommand(limit) };
      await persister.save({ term: 1, votedFor: 0, log: { from: 1, entries: [largest] } });
      await assert.rejects(
        persister.save({
          term: 1,
          votedFor: 0,
          log: {
            from: 2,
            entries: [{ term: Number.MAX_SAFE_INTEGER, command: bigCommand(limit + 100) }],
          },
        }),
        RangeError,
      );
      assert.deepEqual((await persister.load()).log, [largest]);
      await persister.close();
    });
  },
);

Deno.test(
  "KvPersister: a save too large for one commit is staged, then published whole",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const many = Array.from({ length: 1500 }, (_, i) => ({ term: 2, command: i }));
      const heavy = Array.from(
        { length: 4 },
        (_, i) => ({ term: 2, command: bigCommand(300_000, `${i}`) }),
      );
      await persister.save({
        term: 1,
        votedFor: null,
        log: { from: 1, entries: [{ term: 1, command: "a" }] },
      });
      await persister.save({ term: 2, votedFor: 1, log: { from: 2, entries: many } });
      await persister.save({ term: 2, votedFor: 1, log: { from: 1000, entries: heavy } });
      const expected = {
        term: 2,
        votedFor: 1,
        snapshot: null,
        log: [{ term: 1, command: "a" }, ...many.slice(0, 998), ...heavy],
      };
      assert.deepEqual(await persister.load(), expected);
      // Let cleanup run: each save deletes a bounded batch of stale and staged keys.
      for (let i = 0; i < 6; i++) await persister.save({ term: 2, votedFor: 1 });
      await persister.close();
      assert.deepEqual(await rawKeys(path, ["raft", "staged"]), []);
      const stale = (await rawKeys(path, ["raft", "log"])).filter((key) => Number(key[2]) > 1003);
      assert.deepEqual(stale, []);
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), expected);
      await reopened.close();
    });
  },
);

Deno.test(
  "KvPersister: a large save interrupted after its commit point is finished at open",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      // What a crash leaves between the state key's commit and the end of the move: entries 2..3
      // only under the staged prefix, the state key pointing at them.
      const encode = (entry: LogEntry) => {
        const json = new TextEncoder().encode(JSON.stringify(entry));
        return Uint8Array.of(1, ...json);
      };
      const kv = await Deno.openKv(path);
      await kv.atomic()
        .set(["raft", "log", 1, 0], encode({ term: 1, command: "one" }))
        .set(["raft", "log", 2, 0], encode({ term: 1, command: "stale" }))
        .set(["raft", "staged", 2, 0], encode({ term: 2, command: "two" }))
        .set(["raft", "staged", 3, 0], encode({ term: 2, command: "three" }))
        .set(["raft", "state"], { term: 2, votedFor: 0, lastIndex: 3, staged: { from: 2, to: 3 } })
        .commit();
      kv.close();
      const persister = await KvPersister.open(path);
      const expected = {
        term: 2,
        votedFor: 0,
        snapshot: null,
        log: [{ term: 1, command: "one" }, { term: 2, command: "two" }, {
          term: 2,
          command: "three",
        }],
      };
      assert.deepEqual(await persister.load(), expected);
      await persister.close();
      assert.deepEqual(await storedState(path), {
        version: 3,
        term: 2,
        votedFor: 0,
        lastIndex: 3,
        staged: null,
        snapshot: null,
      });
    });
  },
);

Deno.test(
  "KvPersister: a damaged state key or a missing entry rejects open or load",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const kv = await Deno.openKv(path);
      await kv.set(["raft", "state"], { term: "three" });
      kv.close();
      await assert.rejects(
        KvPersister.open(path),
        (error: unknown) => error instanceof PersisterCorruptError && error.message.includes(path),
      );
      const repair = await Deno.openKv(path);
      await repair.set(["raft", "state"], { term: 3, votedFor: null, lastIndex: 2, staged: null });
      await repair.set(
        ["raft", "log", 1, 0],
        Uint8Array.of(1, ...new TextEncoder().encode(`{"term":1,"command":1}`)),
      );
      repair.close();
      const persister = await KvPersister.open(path);
      await assert.rejects(
        persister.load(),
        (error: unknown) =>
          error instanceof PersisterCorruptError && /log entry 2 .* is missing/.test(error.message),
      );
      await persister.close();
    });
  },
);

Deno.test(
  "KvPersister: an entry overwritten by a smaller one ignores the old entry's extra parts",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      await persister.save({
        term: 1,
        votedFor: null,
        log: {
          from: 1,
          entries: [{ term: 1, command: bigCommand(150_000) }, { term: 1, command: 2 }],
        },
      });
      await persister.save({
        term: 2,
        votedFor: null,
        log: { from: 1, entries: [{ term: 2, command: "short" }] },
      });
      await persister.close();
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), {
        term: 2,
        votedFor: null,
        snapshot: null,
        log: [{ term: 2, command: "short" }],
      });
      await reopened.close();
    });
  },
);

Deno.test(
  "KvPersister: a second open of the same database is refused until the first closes",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      await persister.save({ term: 3, votedFor: 1 });
      await assert.rejects(
        KvPersister.open(path),
        (error: unknown) => error instanceof PersisterLockedError && error.directory === path,
      );
      // Another process is kept out by the same lock: Deno.Kv alone would let it in.
      assert.equal(
        await openInChildProcess("storage/kv_persister.ts", "KvPersister", path),
        "PersisterLockedError",
      );
      await persister.close();
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), { term: 3, votedFor: 1, snapshot: null, log: [] });
      await reopened.close();
    });
  },
);

Deno.test(
  "KvPersister: a symbolic or hard link to an open database is refused, here and elsewhere",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      await persister.save({ term: 3, votedFor: 1 });
      const symbolic = `${path}.symlink`;
      const hard = `${path}.hardlink`;
      await Deno.symlink(path, symbolic);
      await Deno.link(path, hard);
      for (const link of [symbolic, hard]) {
        await assert.rejects(
          KvPersister.open(link),
          (error: unknown) => error instanceof PersisterLockedError && error.directory === link,
          `opened ${link} in this process`,
        );
        assert.equal(
          await openInChildProcess("storage/kv_persister.ts", "KvPersister", link),
          "PersisterLockedError",
          `opened ${link} from another process`,
        );
      }
      await persister.close();
      // Once closed, the database opens through a link, and holds what was saved.
      const reopened = await KvPersister.open(symbolic);
      assert.deepEqual(await reopened.load(), { term: 3, votedFor: 1, snapshot: null, log: [] });
      await assert.rejects(KvPersister.open(path), PersisterLockedError);
      await reopened.close();
    });
  },
);

Deno.test('KvPersister: ":memory:" databases take no lock', sanitized, async () => {
  const first = await KvPersister.open(":memory:");
  const second = await KvPersister.open(":memory:");
  await first.save({ term: 1, votedFor: null });
  assert.deepEqual(await second.load(), { term: 0, votedFor: null, snapshot: null, log: [] });
  await first.close();
  await second.close();
});

Deno.test(
  "KvPersister: a state key holding null, or missing beside log keys, is damage, not a fresh store",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      await persister.save({
        term: 5,
        votedFor: 1,
        log: { from: 1, entries: [{ term: 5, command: "x" }] },
      });
      await persister.close();
      for (const damage of ["null", "missing"] as const) {
        const kv = await Deno.openKv(path);
        if (damage === "null") await kv.set(["raft", "state"], null);
        else await kv.delete(["raft", "state"]);
        kv.close();
        await assert.rejects(
          KvPersister.open(path),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.message.includes(path),
          `state key ${damage}`,
        );
        assert.equal((await rawKeys(path, ["raft", "log"])).length, 1, "the log is untouched");
      }
    });
  },
);

Deno.test(
  "KvPersister: a value Deno.Kv cannot decode is reported as damage",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      await persister.save({ term: 1, votedFor: null });
      await persister.close();
      const { DatabaseSync } = await import("node:sqlite");
      const database = new DatabaseSync(path);
      database.exec("UPDATE kv SET v = x'ff0f6f', v_encoding = 1");
      database.close();
      await assert.rejects(
        KvPersister.open(path),
        (error: unknown) => error instanceof PersisterCorruptError && error.cause !== undefined,
      );
    });
  },
);

Deno.test(
  "KvPersister: a file that is not a database, or a damaged one, is reported as damage",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const entries = Array.from(
        { length: 300 },
        (_, i) => ({ term: 1, command: `${i}`.repeat(99) }),
      );
      await persister.save({ term: 1, votedFor: null, log: { from: 1, entries } });
      await persister.close();
      const whole = await Deno.readFile(path);
      const notADatabase = new TextEncoder().encode("these are not the bytes of a database\n");
      const { DatabaseSync } = await import("node:sqlite");
      const damages: [string, () => Promise<void>][] = [
        ["not a database", () => Deno.writeFile(path, notADatabase.slice())],
        ["a page overwritten", async () => {
          const damaged = whole.slice();
          damaged.fill(0x55, 4096, 4096 + 200);
          await Deno.writeFile(path, damaged);
        }],
        ["a value encoding Deno.Kv does not know", async () => {
          await Deno.writeFile(path, whole);
          const database = new DatabaseSync(path);
          database.exec("UPDATE kv SET v_encoding = 0");
          database.close();
        }],
      ];
      for (const [damage, apply] of damages) {
        await apply();
        const opening = KvPersister.open(path).then(async (opened) => {
          try {
            await opened.load();
          } finally {
            await opened.close();
          }
        });
        await assert.rejects(
          opening,
          (error: unknown) => {
            assert.ok(
              error instanceof PersisterCorruptError,
              `${damage}: expected PersisterCorruptError, saw ${error}`,
            );
            assert.ok(error.message.includes(path), `${damage}: names the file: ${error.message}`);
            assert.ok(error.cause instanceof Error, `${damage}: keeps Deno.Kv's error as cause`);
            return true;
          },
        );
      }
    });
  },
);

/**
 * Flips one bit of the only copy of `marker` in the database's files (the database, or its
 * write-ahead log if the bytes are still there); fails unless there is exactly one copy.
 */
async function flipBitOf(path: string, marker: string, offsetInMarker = 3): Promise<void> {
  const needle = new TextEncoder().encode(marker);
  const hits: { file: string; at: number }[] = [];
  for (const file of [path, `${path}-wal`]) {
    let bytes: Uint8Array;
    try {
      bytes = await Deno.readFile(file);
    } catch {
      continue;
    }
    for (let at = bytes.indexOf(needle[0]!); at >= 0; at = bytes.indexOf(needle[0]!, at + 1)) {
      if (needle.every((byte, i) => bytes[at + i] === byte)) hits.push({ file, at });
    }
  }
  assert.equal(hits.length, 1, `expected one copy of ${marker}, found ${JSON.stringify(hits)}`);
  const { file, at } = hits[0]!;
  const bytes = await Deno.readFile(file);
  bytes[at + offsetInMarker]! ^= 0x02;
  await Deno.writeFile(file, bytes);
}

Deno.test(
  "KvPersister: one flipped bit in a stored command is damage, not a different command",
  sanitized,
  async () => {
    for (const [what, size] of [["a one-part entry", 40], ["a later part", 150_000]] as const) {
      await withDatabase(async (path) => {
        const persister = await KvPersister.open(path);
        const marker = `MARKER-${what.replaceAll(" ", "-")}-`;
        const command = size > 65_536
          ? `${"x".repeat(size)}${marker}`
          : `${marker}${"x".repeat(size)}`;
        await persister.save({
          term: 1,
          votedFor: null,
          log: { from: 1, entries: [{ term: 1, command: "first" }, { term: 1, command }] },
        });
        await persister.close();
        await flipBitOf(path, marker);
        const reopened = await KvPersister.open(path);
        try {
          await assert.rejects(
            reopened.load(),
            (error: unknown) =>
              error instanceof PersisterCorruptError && error.message.includes(path) &&
              /entry 2/.test(error.message),
            what,
          );
        } finally {
          await reopened.close();
        }
      });
    }
  },
);

Deno.test(
  "KvPersister: a second close() waits for the first, and load() during close is refused",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const entries = Array.from({ length: 3 }, () => ({ term: 1, command: bigCommand(300_000) }));
      const saved = persister.save({ term: 1, votedFor: null, log: { from: 1, entries } });
      const closing = persister.close();
      const loading = assert.rejects(persister.load(), PersisterClosedError);
      await persister.close();
      const reopened = await KvPersister.open(path); // the first close() has released the lock
      assert.equal((await reopened.load()).log.length, 3);
      await reopened.close();
      await Promise.all([saved, closing, loading]);
      await assert.rejects(persister.load(), PersisterClosedError);
    });
  },
);

Deno.test(
  "KvPersister: after a failed commit, load() refuses and a reopen sees one whole save",
  sanitized,
  async () => {
    const old = [1, 2, 3].map((i) => ({ term: 1, command: `old ${i}` }));
    const large = [1, 2, 3].map((i) => ({ term: 2, command: bigCommand(300_000, `${i}`) }));
    const commit = Deno.AtomicOperation.prototype.commit;
    // Fail the first, second, ... commit of a save that is staged and then moved into place.
    for (let failAt = 1; failAt <= 12; failAt++) {
      await withDatabase(async (path) => {
        const persister = await KvPersister.open(path);
        await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: old } });
        let commits = 0;
        Deno.AtomicOperation.prototype.commit = function (this: Deno.AtomicOperation) {
          if (++commits === failAt) return Promise.reject(new Error("injected failure"));
          return commit.call(this);
        };
        let failed = false;
        try {
          await persister.save({ term: 2, votedFor: 0, log: { from: 1, entries: large } });
        } catch {
          failed = true;
        } finally {
          Deno.AtomicOperation.prototype.commit = commit;
        }
        if (failed) await assert.rejects(persister.load(), PersisterClosedError);
        await persister.close();
        const reopened = await KvPersister.open(path);
        const state = await reopened.load();
        await reopened.close();
        const before = { term: 1, votedFor: null, snapshot: null, log: old };
        const after = { term: 2, votedFor: 0, snapshot: null, log: large };
        assert.ok(
          failed
            ? [before, after].some((s) => isDeepStrictEqual(s, state))
            : isDeepStrictEqual(after, state),
          `commit ${failAt} failed: reopened with term ${state.term}, ${state.log.length} entries`,
        );
      });
    }
  },
);

Deno.test(
  "KvPersister: loads a database of format 1, then takes snapshots and new entries in it",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      await unzipFixture("kv_format1.kv.gz", path);
      const persister = await KvPersister.open(path);
      assert.deepEqual(await persister.load(), FORMAT_1_STATE);
      // Entries 3 and 4 stay in format 1 (entry 3 in two parts) after a snapshot through 2.
      const snapshot = { index: 2, term: 1, data: snapshotData(1, 100_000) };
      await persister.save({ term: 4, votedFor: 0, snapshot });
      await persister.save({
        term: 4,
        votedFor: 0,
        log: { from: 5, entries: [{ term: 4, command: "five" }] },
      });
      await persister.close();
      const expected = {
        term: 4,
        votedFor: 0,
        snapshot,
        log: [...FORMAT_1_STATE.log.slice(2, 4), { term: 4, command: "five" }],
      };
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), expected);
      await reopened.close();
      assert.equal((await storedState(path) as { version: number }).version, 3);
    });
  },
);

Deno.test(
  "KvPersister: snapshot data lies in chunks of one generation; older ones are deleted",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const entries = Array.from({ length: 6 }, (_, i) => ({ term: 1, command: `e${i + 1}` }));
      await persister.save({ term: 1, votedFor: null, log: { from: 1, entries } });
      const first = { index: 3, term: 1, data: snapshotData(1, 200_000) };
      await persister.save({ term: 1, votedFor: null, snapshot: first });
      assert.deepEqual(
        (await rawKeys(path, ["raft", "snapshot"])).map((key) => key.slice(2)),
        [[1, 0], [1, 1], [1, 2], [1, 3]],
        "200,000 bytes in 4 chunks of generation 1",
      );
      const second = { index: 5, term: 1, data: snapshotData(2, 70_000) };
      await persister.save({ term: 2, votedFor: null, snapshot: second });
      // Cleanup runs a bounded batch after each save.
      for (let i = 0; i < 4; i++) await persister.save({ term: 2, votedFor: null });
      assert.deepEqual(
        (await rawKeys(path, ["raft", "snapshot"])).map((key) => key.slice(2)),
        [[2, 0], [2, 1]],
        "only generation 2 is left",
      );
      assert.deepEqual(
        (await rawKeys(path, ["raft", "log"])).map((key) => key[2]),
        [6],
        "log keys at or before the snapshot are deleted",
      );
      const expected = { term: 2, votedFor: null, snapshot: second, log: entries.slice(5) };
      assert.deepEqual(await persister.load(), expected);
      await persister.close();
    });
  },
);

Deno.test(
  "KvPersister: chunks an interrupted snapshot save left are never read, and are deleted",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      const persister = await KvPersister.open(path);
      const first = { index: 1, term: 1, data: snapshotData(1, 100) };
      await persister.save({ term: 1, votedFor: null, snapshot: first });
      await persister.close();
      // What a crash during the chunk commits of a 10-chunk snapshot leaves: generation 2, not
      // named by the state key.
      const kv = await Deno.openKv(path);
      for (let k = 0; k < 10; k++) await kv.set(["raft", "snapshot", 2, k], new Uint8Array(9));
      kv.close();
      const reopened = await KvPersister.open(path);
      assert.deepEqual(await reopened.load(), {
        term: 1,
        votedFor: null,
        snapshot: first,
        log: [],
      });
      // The next snapshot takes generation 2 again, with fewer chunks than the leftovers.
      const second = { index: 2, term: 1, data: snapshotData(2, 70_000) };
      await reopened.save({ term: 1, votedFor: null, snapshot: second });
      for (let i = 0; i < 4; i++) await reopened.save({ term: 1, votedFor: null });
      assert.deepEqual(await reopened.load(), {
        term: 1,
        votedFor: null,
        snapshot: second,
        log: [],
      });
      await reopened.close();
      assert.deepEqual(
        (await rawKeys(path, ["raft", "snapshot"])).map((key) => key.slice(2)),
        [[2, 0], [2, 1]],
      );
    });
  },
);

Deno.test(
  "KvPersister: a snapshot save that fails at any commit leaves the old state or the new, whole",
  sanitized,
  async () => {
    const old = {
      term: 1,
      votedFor: null,
      snapshot: null,
      log: [1, 2, 3].map((i) => ({ term: 1, command: `old ${i}` })),
    };
    // 2 MB of data (about 3 commits of chunks) and entries too large for one commit (staged).
    const snapshot = {
      index: 2,
      term: 1,
      data: snapshotData(3, 2_000_000),
      configuration: configuration([0, 1, 2], [3]),
    };
    const large = [3, 4, 5].map((i) => ({ term: 2, command: bigCommand(300_000, `${i}`) }));
    const change = { term: 2, votedFor: 0, snapshot, log: { from: 3, entries: large } };
    const after = { term: 2, votedFor: 0, snapshot, log: large };
    const commit = Deno.AtomicOperation.prototype.commit;
    let lastFailed = true;
    for (let failAt = 1; failAt <= 12; failAt++) {
      await withDatabase(async (path) => {
        const persister = await KvPersister.open(path);
        await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: old.log } });
        let commits = 0;
        Deno.AtomicOperation.prototype.commit = function (this: Deno.AtomicOperation) {
          if (++commits === failAt) return Promise.reject(new Error("injected failure"));
          return commit.call(this);
        };
        let failed = false;
        try {
          await persister.save(change);
        } catch {
          failed = true;
        } finally {
          Deno.AtomicOperation.prototype.commit = commit;
        }
        await persister.close();
        const reopened = await KvPersister.open(path);
        const state = await reopened.load();
        // Saves after the reopen clear whatever the failed save left.
        for (let i = 0; i < 4; i++) await reopened.save({ term: 3, votedFor: null });
        const snapshotKeys = await (async () => {
          await reopened.close();
          return (await rawKeys(path, ["raft", "snapshot"])).map((key) => Number(key[2]));
        })();
        assert.ok(
          failed
            ? [old, after].some((s) => isDeepStrictEqual(s, state))
            : isDeepStrictEqual(after, state),
          `commit ${failAt} failed: reopened with term ${state.term}, ${state.log.length} entries`,
        );
        const generations = [...new Set(snapshotKeys)];
        assert.deepEqual(generations, state.snapshot === null ? [] : [1], `commit ${failAt}`);
        lastFailed = failed;
      });
    }
    assert.ok(!lastFailed, "the save has fewer than 12 commits: the last round failed none");
  },
);

Deno.test(
  "KvPersister: one flipped bit in a snapshot chunk or in the state key is damage",
  sanitized,
  async () => {
    const marker = "SNAPSHOT-MARKER";
    const data = new Uint8Array([...new TextEncoder().encode(marker), ...snapshotData(4, 90_000)]);
    const places = [["a snapshot chunk", marker], ["the state key", `"term":12345`]] as const;
    for (const [what, find] of places) {
      await withDatabase(async (path) => {
        const persister = await KvPersister.open(path);
        await persister.save({
          term: 12345,
          votedFor: null,
          snapshot: { index: 7, term: 3, data },
        });
        await persister.close();
        await flipBitOf(path, find, find.length - 2);
        await assert.rejects(
          loadFrom(path),
          (error: unknown) =>
            error instanceof PersisterCorruptError && /checksum/.test(error.message),
          what,
        );
      });
    }
  },
);

Deno.test(
  "KvPersister: loads a database of format 2, then saves configurations in format 3",
  sanitized,
  async () => {
    await withDatabase(async (path) => {
      await unzipFixture("kv_format2.kv.gz", path);
      const persister = await KvPersister.open(path);
      assert.deepEqual(await persister.load(), FORMAT_2_STATE);
      for (const change of AFTER_FORMAT_2.changes) await persister.save(change);
      await persister.close();
      assert.deepEqual(await loadFrom(path), AFTER_FORMAT_2.state);
      const state = await storedState(path) as { version: number; snapshot: unknown };
      assert.equal(state.version, 3);
      const { configuration } = AFTER_FORMAT_2.state.snapshot!;
      const bytes = new TextEncoder().encode(JSON.stringify(configuration)).length;
      assert.deepEqual(state.snapshot, {
        index: 4,
        term: 2,
        generation: 2,
        configurationBytes: bytes,
        bytes: 100,
        chunks: 1,
      });
    });
  },
);

/** The state key's value for `state`: its CRC-32, then its JSON. */
function stateValue(state: unknown): Uint8Array {
  const json = new TextEncoder().encode(JSON.stringify(state));
  const value = new Uint8Array(4 + json.length);
  new DataView(value.buffer).setUint32(0, crc32(json), true);
  value.set(json, 4);
  return value;
}

/** A one-part entry holding `json`, with a checksum that passes, for index `index`. */
function entryValue(index: number, json: string): Uint8Array {
  const bytes = new TextEncoder().encode(json);
  const value = new Uint8Array(6 + bytes.length);
  value[0] = 0xc1;
  value[1] = 1;
  new DataView(value.buffer).setUint32(2, crc32(bytes, crc32(float64s(index))), true);
  value.set(bytes, 6);
  return value;
}

/** A snapshot chunk holding `bytes`, with a checksum that passes, as chunk `k` of `generation`. */
function chunkValue(generation: number, k: number, bytes: Uint8Array): Uint8Array {
  const value = new Uint8Array(4 + bytes.length);
  new DataView(value.buffer).setUint32(0, crc32(bytes, crc32(float64s(generation, k))), true);
  value.set(bytes, 4);
  return value;
}

Deno.test(
  "KvPersister: a configuration that is damaged or is not a configuration is corruption",
  sanitized,
  async () => {
    // One flipped bit, in an entry's configuration or the snapshot's: their checksums catch it.
    const marker = "ws://MARKER.example";
    const marked: Configuration = { voters: [{ id: 0, address: marker }], learners: [] };
    const flips: [string, RegExp, PersistChange][] = [
      ["a configuration entry", /log entry 2 fails its checksum/, {
        term: 1,
        votedFor: null,
        log: {
          from: 1,
          entries: [{ term: 1, command: "a" }, { term: 1, command: marked, type: "config" }],
        },
      }],
      ["a snapshot's configuration", /chunk 0 of 2 .* fails its checksum/, {
        term: 1,
        votedFor: null,
        snapshot: { index: 1, term: 1, data: snapshotData(1, 70_000), configuration: marked },
      }],
    ];
    for (const [what, message, change] of flips) {
      await withDatabase(async (path) => {
        const persister = await KvPersister.open(path);
        await persister.save(change);
        await persister.close();
        await flipBitOf(path, marker);
        await assert.rejects(
          loadFrom(path),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.message.includes(path) &&
            message.test(error.message),
          what,
        );
      });
    }
    // Values whose checksums pass, but that no persister writes.
    const json = (value: unknown) => new TextEncoder().encode(JSON.stringify(value));
    const noVoters = { voters: [], learners: [{ id: 1, address: "" }] };
    const snapshotState = (configurationBytes: number, bytes: number) => ({
      version: 3,
      term: 1,
      votedFor: null,
      lastIndex: 1,
      staged: null,
      snapshot: { index: 1, term: 1, generation: 1, configurationBytes, bytes, chunks: 1 },
    });
    const entryState = {
      version: 3,
      term: 1,
      votedFor: null,
      lastIndex: 1,
      staged: null,
      snapshot: null,
    };
    const stored: [string, RegExp, [Deno.KvKey, Uint8Array][]][] = [
      [
        "an entry whose configuration has no voters",
        /configuration of log entry 1 is not a valid configuration: .* at least one voter/,
        [
          [["raft", "state"], stateValue(entryState)],
          [
            ["raft", "log", 1, 0],
            entryValue(1, JSON.stringify({ term: 1, type: "config", command: noVoters })),
          ],
        ],
      ],
      [
        "an entry whose configuration is a string",
        /configuration of log entry 1 is not a valid configuration: .* must be an object/,
        [
          [["raft", "state"], stateValue(entryState)],
          [["raft", "log", 1, 0], entryValue(1, `{"term":1,"type":"config","command":"x"}`)],
        ],
      ],
      [
        "a snapshot whose configuration has no voters",
        /configuration of the snapshot through index 1 .* is not a valid configuration/,
        [
          [["raft", "state"], stateValue(snapshotState(json(noVoters).length, 2))],
          [["raft", "snapshot", 1, 0], chunkValue(1, 0, Uint8Array.of(...json(noVoters), 7, 8))],
        ],
      ],
      [
        "a snapshot whose configuration is not JSON",
        /configuration of the snapshot through index 1 .* is not valid JSON/,
        [
          [["raft", "state"], stateValue(snapshotState(3, 0))],
          [["raft", "snapshot", 1, 0], chunkValue(1, 0, json("ab").subarray(0, 3))],
        ],
      ],
      [
        "a state key of format 3 whose snapshot has no configuration length",
        /key \["raft","state"\] holds an invalid snapshot/,
        [[
          ["raft", "state"],
          stateValue({
            ...snapshotState(0, 0),
            snapshot: { index: 1, term: 1, generation: 1, bytes: 0, chunks: 0 },
          }),
        ]],
      ],
      [
        "a state key of format 2 whose snapshot has a configuration length",
        /key \["raft","state"\] holds an invalid snapshot/,
        [[["raft", "state"], stateValue({ ...snapshotState(2, 2), version: 2 })]],
      ],
    ];
    for (const [what, message, rows] of stored) {
      await withDatabase(async (path) => {
        const kv = await Deno.openKv(path);
        for (const [key, value] of rows) await kv.set(key, value);
        kv.close();
        await assert.rejects(
          loadFrom(path),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.message.includes(path) &&
            message.test(error.message),
          what,
        );
      });
    }
  },
);
