import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { KvPersister } from "../src/storage/kv_persister.ts";
import {
  PersisterClosedError,
  PersisterCorruptError,
  PersisterLockedError,
} from "../src/storage/errors.ts";
import type { LogEntry } from "../src/types.ts";
import { persisterContract } from "./helpers/persister_contract.ts";
import { openInChildProcess } from "./helpers/open_elsewhere.ts";
import { sanitized } from "./helpers/sanitized.ts";

persisterContract("KvPersister", (place) => KvPersister.open(place));

async function withDatabase(body: (path: string) => Promise<void>): Promise<void> {
  const directory = await Deno.makeTempDir({ prefix: "raft-kv-" });
  try {
    await body(`${directory}/peer.kv`);
  } finally {
    await Deno.remove(directory, { recursive: true });
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
      const check = await Deno.openKv(path);
      const state = await check.get(["raft", "state"]);
      check.close();
      assert.deepEqual(state.value, { term: 2, votedFor: 0, lastIndex: 3, staged: null });
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
