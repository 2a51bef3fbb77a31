import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { join } from "node:path";
import { crc32 } from "../src/storage/_crc32.ts";
import { FilePersister } from "../src/storage/file_persister.ts";
import { PersisterCorruptError, PersisterLockedError } from "../src/storage/errors.ts";
import { float64s } from "../src/storage/_bytes.ts";
import type { LogEntry, PersistChange, PersistentState } from "../src/types.ts";
import {
  membershipContract,
  persisterContract,
  snapshotContract,
} from "./helpers/persister_contract.ts";
import { openInChildProcess } from "./helpers/open_elsewhere.ts";
import {
  AFTER_FORMAT_2,
  FORMAT_1_STATE,
  FORMAT_2_STATE,
  unzipFixture,
} from "./helpers/fixtures.ts";
import { configuration, ReferenceModel, snapshotData } from "./helpers/persister_contract.ts";
import { sanitized } from "./helpers/sanitized.ts";

persisterContract("FilePersister", (place) => FilePersister.open(place));
snapshotContract("FilePersister", (place) => FilePersister.open(place));
membershipContract("FilePersister", (place) => FilePersister.open(place));

async function withDirectory(body: (directory: string) => Promise<void>): Promise<void> {
  const directory = await Deno.makeTempDir({ prefix: "raft-file-" });
  try {
    await body(directory);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
}

const first: PersistChange = {
  term: 1,
  votedFor: 0,
  log: { from: 1, entries: [{ term: 1, command: "one" }, { term: 1, command: "two" }] },
};
/** A configuration entry, stored in a record of its own type. */
const configEntry: LogEntry = { term: 2, command: configuration([0, 1, 2]), type: "config" };
const second: PersistChange = {
  term: 2,
  votedFor: 1,
  log: { from: 2, entries: [{ term: 2, command: { three: 3 } }, configEntry] },
};
const afterFirst: PersistentState = {
  term: 1,
  votedFor: 0,
  snapshot: null,
  log: [{ term: 1, command: "one" }, { term: 1, command: "two" }],
};
const afterSecond: PersistentState = {
  term: 2,
  votedFor: 1,
  snapshot: null,
  log: [{ term: 1, command: "one" }, { term: 2, command: { three: 3 } }, configEntry],
};

/** Saves `first` and `second`; returns the log file and the offset where `second` starts. */
async function twoSaves(directory: string): Promise<{ path: string; secondAt: number }> {
  const persister = await FilePersister.open(directory);
  await persister.save(first);
  await persister.close();
  const path = join(directory, "raft.log");
  const secondAt = (await Deno.stat(path)).size;
  const again = await FilePersister.open(directory);
  await again.save(second);
  await again.close();
  return { path, secondAt };
}

/** A record of `raft.log` as the format describes it, with `body` as given. */
function record(type: number, body: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(12 + 1 + body.length);
  const view = new DataView(bytes.buffer);
  bytes[12] = type;
  bytes.set(body, 13);
  view.setUint32(0, 1 + body.length, true);
  view.setUint32(4, crc32(bytes.subarray(12)), true);
  view.setUint32(8, crc32(bytes.subarray(0, 8)), true);
  return bytes;
}

function text(value: string): Uint8Array {
  return new TextEncoder().encode(value);
}

async function loadFrom(directory: string): Promise<PersistentState> {
  const persister = await FilePersister.open(directory);
  try {
    return await persister.load();
  } finally {
    await persister.close();
  }
}

Deno.test(
  "FilePersister: a torn last save is dropped, whatever byte the write was cut at",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path, secondAt } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      for (let cut = secondAt; cut < whole.length; cut++) {
        await Deno.writeFile(path, whole.subarray(0, cut));
        assert.deepEqual(
          await loadFrom(directory),
          afterFirst,
          `file cut at ${cut} of ${whole.length}`,
        );
        assert.equal((await Deno.stat(path)).size, secondAt, "the torn tail is removed at open");
      }
      await Deno.writeFile(path, whole);
      assert.deepEqual(await loadFrom(directory), afterSecond);
    });
  },
);

Deno.test("FilePersister: new saves after a torn tail are kept", sanitized, async () => {
  await withDirectory(async (directory) => {
    const { path, secondAt } = await twoSaves(directory);
    const whole = await Deno.readFile(path);
    await Deno.writeFile(path, whole.subarray(0, secondAt + 5));
    const persister = await FilePersister.open(directory);
    await persister.save(second);
    await persister.close();
    assert.deepEqual(await loadFrom(directory), afterSecond);
  });
});

Deno.test(
  "FilePersister: zeros after the last record (a preallocated tail) are dropped",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      await Deno.writeFile(path, new Uint8Array([...whole, ...new Uint8Array(4096)]));
      assert.deepEqual(await loadFrom(directory), afterSecond);
    });
  },
);

Deno.test(
  "FilePersister: damage before the end rejects with the file and offset, and changes nothing",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path, secondAt } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      // The first save's records start after the 8-byte magic; damage its header and its body.
      for (
        const [at, detail] of [[8 + 1, "header"], [8 + 14, "body"], [secondAt - 3, "body"]] as const
      ) {
        const damaged = whole.slice();
        damaged[at]! ^= 0x40;
        await Deno.writeFile(path, damaged);
        const recordAt = at < 8 + 30 ? 8 : undefined;
        await assert.rejects(loadFrom(directory), (error: unknown) => {
          assert.ok(
            error instanceof PersisterCorruptError,
            `expected PersisterCorruptError, saw ${error}`,
          );
          assert.ok(error.message.includes(path), `message names the file: ${error.message}`);
          assert.match(error.message, new RegExp(`offset ${error.offset}\\b`));
          if (recordAt !== undefined) {
            assert.equal(error.offset, recordAt, `damaged ${detail} at ${at}`);
          }
          return true;
        });
        assert.deepEqual(
          await Deno.readFile(path),
          damaged,
          "a refused open leaves the file as it was",
        );
      }
    });
  },
);

Deno.test(
  "FilePersister: a complete last record that fails its checksum is damage, not a torn write",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path } = await twoSaves(directory);
      const damaged = await Deno.readFile(path);
      damaged[damaged.length - 1]! ^= 0x01;
      await Deno.writeFile(path, damaged);
      await assert.rejects(loadFrom(directory), PersisterCorruptError);
    });
  },
);

Deno.test(
  "FilePersister: a file that is not a raft log is refused at offset 0",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      await Deno.writeTextFile(join(directory, "raft.log"), "hello, world");
      await assert.rejects(
        loadFrom(directory),
        (error: unknown) => error instanceof PersisterCorruptError && error.offset === 0,
      );
    });
  },
);

Deno.test(
  "FilePersister: a second open of the same directory is refused until the first closes",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const persister = await FilePersister.open(directory);
      await assert.rejects(FilePersister.open(directory), PersisterLockedError);
      // Another process is kept out by the same lock.
      assert.equal(
        await openInChildProcess("storage/file_persister.ts", "FilePersister", directory),
        "PersisterLockedError",
      );
      await persister.close();
      const reopened = await FilePersister.open(directory);
      await reopened.close();
    });
  },
);

Deno.test(
  "FilePersister: compaction rewrites the live records once dead ones dominate",
  sanitized,
  async () => {
    // Without preallocation the file's length is its records' length, which the checks below
    // follow; with it, compaction must still keep every live record.
    for (const preallocate of [false, true]) {
      await compactionRun(preallocate);
    }
  },
);

async function compactionRun(preallocate: boolean): Promise<void> {
  await withDirectory(async (directory) => {
    const path = join(directory, "raft.log");
    const persister = await FilePersister.open(directory, { compactMinBytes: 4096, preallocate });
    // Every tenth entry a configuration entry: compaction must copy it as one.
    const entries = Array.from(
      { length: 50 },
      (_, i): LogEntry =>
        i % 10 === 0
          ? { term: 1, command: configuration([0, i + 1]), type: "config" }
          : { term: 1, command: `entry ${i}` },
    );
    await persister.save({ term: 1, votedFor: null, log: { from: 1, entries } });
    let largest = 0;
    for (let round = 0; round < 400; round++) {
      const last: LogEntry = round % 2 === 0
        ? { term: 2, command: `round ${round}` }
        : { term: 2, command: configuration([round]), type: "config" };
      await persister.save({ term: 2, votedFor: round % 3, log: { from: 50, entries: [last] } });
      largest = Math.max(largest, (await Deno.stat(path)).size);
    }
    const expected = {
      term: 2,
      votedFor: 399 % 3,
      snapshot: null,
      log: [...entries.slice(0, 49), { term: 2, command: configuration([399]), type: "config" }],
    };
    assert.deepEqual(await persister.load(), expected);
    await persister.close();
    const size = (await Deno.stat(path)).size;
    if (!preallocate) {
      assert.ok(
        largest < 4096 * 2 + 3000,
        `the file never grew far past the threshold: ${largest}`,
      );
    }
    assert.ok(size < 4096 * 2, `the file was compacted: ${size} bytes`);
    assert.deepEqual(await loadFrom(directory), expected);
    const names = [...Deno.readDirSync(directory)].map((entry) => entry.name).sort();
    assert.deepEqual(names, ["LOCK", "raft.log"]);
  });
}

Deno.test(
  "FilePersister: a compaction file left by a crash is ignored and removed",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      await twoSaves(directory);
      await Deno.writeTextFile(join(directory, "raft.log.compacting"), "RAFTLOG1 half-written");
      assert.deepEqual(await loadFrom(directory), afterSecond);
      const names = [...Deno.readDirSync(directory)].map((entry) => entry.name).sort();
      assert.deepEqual(names, ["LOCK", "raft.log"]);
    });
  },
);

Deno.test(
  "FilePersister: load after saves reads what the saves left, without reopening",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const persister = await FilePersister.open(directory);
      assert.deepEqual(await persister.load(), {
        term: 0,
        votedFor: null,
        snapshot: null,
        log: [],
      });
      await persister.save(first);
      const pending = persister.save(second);
      assert.deepEqual(await persister.load(), afterSecond);
      await pending;
      await persister.close();
    });
  },
);

/** Whether every byte of `bytes` from `from` on is zero. */
function zerosFrom(bytes: Uint8Array, from: number): boolean {
  return bytes.subarray(from).every((byte) => byte === 0);
}

Deno.test(
  "FilePersister: keeps a tail of zeros while open and cuts it off at close",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const path = join(directory, "raft.log");
      const plain = join(directory, "plain");
      const reference = await FilePersister.open(plain, { preallocate: false });
      await reference.save(first);
      const recordBytes = (await Deno.stat(join(plain, "raft.log"))).size;
      await reference.close();

      const persister = await FilePersister.open(directory);
      await persister.save(first);
      const open = await Deno.readFile(path);
      assert.ok(open.length >= 256 * 1024, `preallocated: ${open.length} bytes`);
      assert.deepEqual(open.subarray(0, recordBytes), await Deno.readFile(join(plain, "raft.log")));
      assert.ok(zerosFrom(open, recordBytes), "zeros after the records");
      await persister.close();
      assert.equal((await Deno.stat(path)).size, recordBytes, "close() cuts the tail off");
      assert.deepEqual(await loadFrom(directory), afterFirst);
    });
  },
);

Deno.test(
  "FilePersister: after a crash, the tail of zeros is kept and later saves overwrite it",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const path = join(directory, "raft.log");
      const persister = await FilePersister.open(directory);
      await persister.save(first);
      const crashed = await Deno.readFile(path); // what a kill -9 now would leave
      await persister.close();
      await Deno.writeFile(path, crashed);

      const reopened = await FilePersister.open(directory);
      assert.deepEqual(await reopened.load(), afterFirst);
      assert.equal((await Deno.stat(path)).size, crashed.length, "open keeps the zeros");
      await reopened.save(second);
      assert.equal((await Deno.stat(path)).size, crashed.length, "the save fit in the zeros");
      await reopened.close();
      assert.deepEqual(await loadFrom(directory), afterSecond);
    });
  },
);

Deno.test(
  "FilePersister: a save cut short in a preallocated file is dropped, wherever the cut",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path, secondAt } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      const tail = new Uint8Array(8192);
      for (let cut = secondAt; cut < whole.length; cut++) {
        await Deno.writeFile(path, new Uint8Array([...whole.subarray(0, cut), ...tail]));
        const persister = await FilePersister.open(directory);
        assert.deepEqual(await persister.load(), afterFirst, `save cut at ${cut}`);
        const after = await Deno.readFile(path);
        assert.deepEqual(after.subarray(0, secondAt), whole.subarray(0, secondAt));
        assert.ok(zerosFrom(after, secondAt), `nothing of the cut save is left (cut at ${cut})`);
        await persister.save(second);
        await persister.close();
        assert.deepEqual(await loadFrom(directory), afterSecond, `saved again after cut ${cut}`);
      }
    });
  },
);

Deno.test(
  "FilePersister: a damaged complete last record before zeros is damage, not a torn write",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path, secondAt } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      // The second save's last record is its hard state, ending in the body-end byte.
      for (const at of [whole.length - 1, whole.length - 10, secondAt + 3]) {
        const damaged = new Uint8Array([...whole, ...new Uint8Array(4096)]);
        damaged[at]! ^= 0x40;
        await Deno.writeFile(path, damaged);
        await assert.rejects(loadFrom(directory), PersisterCorruptError, `byte ${at} damaged`);
        assert.deepEqual(await Deno.readFile(path), damaged, "a refused open changes nothing");
      }
      // A vote for peer 0 is a float64 of eight zero bytes: the record still ends non-zero.
      await Deno.writeFile(path, whole);
      const persister = await FilePersister.open(directory);
      await persister.save({ term: 3, votedFor: 0 });
      await persister.close();
      const voted = await Deno.readFile(path);
      assert.deepEqual(await loadFrom(directory), { ...afterSecond, term: 3, votedFor: 0 });
      const damaged = new Uint8Array([...voted, ...new Uint8Array(4096)]);
      damaged[voted.length - 12]! ^= 0x01;
      await Deno.writeFile(path, damaged);
      await assert.rejects(loadFrom(directory), PersisterCorruptError, "the vote's record damaged");
    });
  },
);

Deno.test(
  "FilePersister: loads a file written before bodies ended with 0xFF",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      await Deno.writeFile(
        join(directory, "raft.log"),
        new Uint8Array([
          ...text("RAFTLOG1"),
          ...record(2, new Uint8Array([...float64s(1, 1), ...text(`"x"`)])), // entry 1, term 1
          ...record(1, float64s(1, 0)), // term 1, voted for peer 0
          ...record(1, float64s(2, 0)), // term 2, voted for peer 0
          ...record(3, float64s(0)), // truncation to index 0
          ...record(1, float64s(2, -1)), // term 2, no vote
        ]),
      );
      assert.deepEqual(await loadFrom(directory), {
        term: 2,
        votedFor: null,
        snapshot: null,
        log: [],
      });
    });
  },
);

Deno.test(
  "FilePersister: a cleanly closed log whose last bytes are zeroed is damage, not a torn write",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const { path } = await twoSaves(directory);
      const whole = await Deno.readFile(path);
      // Closed cleanly: no tail of zeros, so no write can have been cut short inside one. A save
      // cut short by a crash leaves a record shorter than its header says, never a complete one.
      for (const zeroed of [1, 2, 9]) {
        const damaged = whole.slice();
        damaged.fill(0, whole.length - zeroed);
        await Deno.writeFile(path, damaged);
        await assert.rejects(
          loadFrom(directory),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.message.includes(path),
          `last ${zeroed} bytes zeroed`,
        );
        assert.deepEqual(await Deno.readFile(path), damaged, "a refused open changes nothing");
      }
    });
  },
);

Deno.test(
  "FilePersister: a save that exactly fills the preallocated space still leaves zeros after it",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const path = join(directory, "raft.log");
      const persister = await FilePersister.open(directory);
      await persister.save(first);
      const allocated = (await Deno.stat(path)).size;
      const used = (await Deno.readFile(path)).findLastIndex((byte) => byte !== 0) + 1;
      // A command sized so that the save's records end exactly where the zeros end.
      const stateRecordBytes = 12 + 1 + 17;
      const commandBytes = allocated - used - stateRecordBytes - (12 + 1 + 16);
      const command = "y".repeat(commandBytes - 2);
      await persister.save({ term: 1, votedFor: 0, log: { from: 3, entries: [entry(command)] } });
      const after = await Deno.readFile(path);
      const end = after.findLastIndex((byte) => byte !== 0) + 1;
      assert.equal(end, allocated, "the save's records end where the old zeros ended");
      assert.ok(after.length > end, `zeros follow the records: ${after.length} > ${end}`);
      await persister.close();
      assert.deepEqual((await loadFrom(directory)).log.at(-1), entry(command));
    });
  },
);

function entry(command: unknown) {
  return { term: 1, command };
}

/** The names in `directory`, sorted. */
function namesIn(directory: string): string[] {
  return [...Deno.readDirSync(directory)].map((entry) => entry.name).sort();
}

Deno.test(
  "FilePersister: after a snapshot save the disk holds only the entries after the snapshot",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const persister = await FilePersister.open(directory);
      const entries = Array.from({ length: 50 }, (_, i) => entry(`entry-${i + 1}-marker`));
      await persister.save({ term: 1, votedFor: 0, log: { from: 1, entries } });
      const snapshot = { index: 40, term: 1, data: snapshotData(1, 5000) };
      await persister.save({ term: 1, votedFor: 0, snapshot });
      const expected = { term: 1, votedFor: 0, snapshot, log: entries.slice(40) };
      assert.deepEqual(await persister.load(), expected);
      await persister.close();
      const log = new TextDecoder().decode(await Deno.readFile(join(directory, "raft.log")));
      for (let i = 1; i <= 50; i++) {
        assert.equal(log.includes(`"entry-${i}-marker"`), i > 40, `entry ${i} on disk`);
      }
      assert.deepEqual(namesIn(directory), ["LOCK", "raft.log", "snapshot.1"]);
      // A second snapshot replaces the first file, and the log starts after it.
      const second = { index: 45, term: 1, data: snapshotData(2, 100) };
      const reopened = await FilePersister.open(directory);
      await reopened.save({ term: 2, votedFor: null, snapshot: second });
      await reopened.close();
      assert.deepEqual(namesIn(directory), ["LOCK", "raft.log", "snapshot.2"]);
      assert.deepEqual(await loadFrom(directory), {
        term: 2,
        votedFor: null,
        snapshot: second,
        log: entries.slice(45),
      });
    });
  },
);

/**
 * Runs `action` with the file system calls a save makes wrapped, and returns what the directory
 * held before each of them and at the end: what a kill at that moment would leave.
 */
async function imagesDuring(
  directory: string,
  action: () => Promise<void>,
): Promise<Map<string, Uint8Array>[]> {
  const images: Map<string, Uint8Array>[] = [];
  const capture = () => {
    const image = new Map<string, Uint8Array>();
    for (const name of namesIn(directory)) {
      if (name !== "LOCK") image.set(name, Deno.readFileSync(join(directory, name)));
    }
    images.push(image);
  };
  const file = Deno.FsFile.prototype;
  const originals = {
    rename: Deno.rename,
    remove: Deno.remove,
    write: file.write,
    writeSync: file.writeSync,
    syncData: file.syncData,
    sync: file.sync,
    truncate: file.truncate,
  };
  Deno.rename = (...args) => (capture(), originals.rename(...args));
  Deno.remove = (...args) => (capture(), originals.remove(...args));
  file.write = function (this: Deno.FsFile, bytes) {
    capture();
    return originals.write.call(this, bytes);
  };
  file.writeSync = function (this: Deno.FsFile, bytes) {
    capture();
    return originals.writeSync.call(this, bytes);
  };
  file.syncData = function (this: Deno.FsFile) {
    capture();
    return originals.syncData.call(this);
  };
  file.sync = function (this: Deno.FsFile) {
    capture();
    return originals.sync.call(this);
  };
  file.truncate = function (this: Deno.FsFile, length) {
    capture();
    return originals.truncate.call(this, length);
  };
  try {
    await action();
  } finally {
    Object.assign(Deno, { rename: originals.rename, remove: originals.remove });
    Object.assign(file, {
      write: originals.write,
      writeSync: originals.writeSync,
      syncData: originals.syncData,
      sync: originals.sync,
      truncate: originals.truncate,
    });
  }
  capture();
  return images;
}

Deno.test(
  "FilePersister: a kill at any step of a snapshot save leaves the old state or the new, whole",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const place = join(directory, "peer");
      const model = new ReferenceModel();
      const changes: PersistChange[] = [
        { term: 1, votedFor: 0, log: { from: 1, entries: [1, 2, 3, 4, 5].map(entry) } },
        { term: 2, votedFor: 0, snapshot: { index: 2, term: 1, data: snapshotData(1, 3000) } },
        { term: 2, votedFor: 1, log: { from: 6, entries: [entry(6)] } },
      ];
      const persister = await FilePersister.open(place);
      for (const change of changes) {
        await persister.save(change);
        model.apply(change);
      }
      const before = model.state();
      const change: PersistChange = {
        term: 3,
        votedFor: 2,
        snapshot: { index: 4, term: 1, data: snapshotData(2, 70_000) },
        log: { from: 6, entries: [entry("six"), entry("seven")] },
      };
      model.apply(change);
      const after = model.state();
      // The save, its cleanup and compaction (which load() waits for), and a later save.
      const images = await imagesDuring(place, async () => {
        await persister.save(change);
        await persister.load();
      });
      await persister.close();
      assert.ok(images.length > 10, `a snapshot save takes many steps, saw ${images.length}`);
      const outcomes = new Set<string>();
      for (const [step, image] of images.entries()) {
        const copy = join(directory, `image-${step}`);
        await Deno.mkdir(copy);
        for (const [name, bytes] of image) await Deno.writeFile(join(copy, name), bytes);
        const reopened = await FilePersister.open(copy);
        const state = await reopened.load();
        await reopened.save({ term: 4, votedFor: null });
        await reopened.close();
        const which = isDeepStrictEqual(state, before)
          ? "before"
          : isDeepStrictEqual(state, after)
          ? "after"
          : null;
        assert.ok(which !== null, `killed at step ${step} of ${images.length}: ${state.term}`);
        outcomes.add(which);
        // Whatever the kill left, one snapshot file remains, the one the log names.
        const snapshots = namesIn(copy).filter((name) => name.startsWith("snapshot"));
        assert.equal(snapshots.length, 1, `step ${step}: ${snapshots}`);
        assert.deepEqual(
          (await loadFrom(copy)).snapshot,
          state.snapshot,
          `step ${step}: reopened after a later save`,
        );
      }
      assert.deepEqual([...outcomes].sort(), ["after", "before"]);
    });
  },
);

Deno.test(
  "FilePersister: a missing or damaged snapshot file is damage, named in the error",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const persister = await FilePersister.open(directory);
      await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: [entry("a")] } });
      await persister.save({
        term: 1,
        votedFor: null,
        snapshot: {
          index: 1,
          term: 1,
          data: snapshotData(1, 1000),
          configuration: configuration([0, 1, 2]),
        },
      });
      await persister.close();
      const path = join(directory, "snapshot.1");
      const whole = await Deno.readFile(path);
      const damages: [string, Uint8Array | null][] = [
        ["a flipped bit in the data", whole.map((byte, i) => i === 500 ? byte ^ 0x10 : byte)],
        ["a flipped bit in the header", whole.map((byte, i) => i === 10 ? byte ^ 0x01 : byte)],
        [
          "a flipped bit in the configuration",
          whole.map((byte, i) => i === 50 ? byte ^ 0x01 : byte),
        ],
        [
          "a configuration length past the end",
          whole.map((byte, i) => i === 39 ? 0x7f : byte),
        ],
        ["a cut", whole.subarray(0, whole.length - 1)],
        ["an empty file", new Uint8Array(0)],
        ["no file", null],
      ];
      for (const [what, bytes] of damages) {
        if (bytes === null) await Deno.remove(path);
        else await Deno.writeFile(path, bytes);
        await assert.rejects(
          loadFrom(directory),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.file === path &&
            error.message.includes(path),
          what,
        );
      }
    });
  },
);

Deno.test(
  "FilePersister: loads a log of format 1, then takes snapshots and new entries in it",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      await unzipFixture("file_format1_raft.log.gz", join(directory, "raft.log"));
      assert.deepEqual(await loadFrom(directory), FORMAT_1_STATE);
      const persister = await FilePersister.open(directory);
      const snapshot = { index: 2, term: 1, data: snapshotData(1, 100_000) };
      await persister.save({ term: 4, votedFor: 0, snapshot });
      await persister.save({ term: 4, votedFor: 0, log: { from: 5, entries: [entry("five")] } });
      await persister.close();
      assert.deepEqual(await loadFrom(directory), {
        term: 4,
        votedFor: 0,
        snapshot,
        log: [...FORMAT_1_STATE.log.slice(2, 4), entry("five")],
      });
    });
  },
);

Deno.test(
  "FilePersister: a snapshot save cut short anywhere in its records leaves the state before it",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const path = join(directory, "raft.log");
      const opened = await FilePersister.open(directory, { preallocate: false });
      await opened.save(first);
      await opened.close();
      const before = await Deno.readFile(path);
      const again = await FilePersister.open(directory, { preallocate: false });
      const snapshot = { index: 1, term: 1, data: snapshotData(1, 100) };
      // A log change too, so that the snapshot save's records are several. Compaction then
      // rewrites the file; before that, the file is at its longest: what the save appended.
      const images = await imagesDuring(directory, async () => {
        await again.save({
          term: 2,
          votedFor: 1,
          snapshot,
          log: { from: 3, entries: [entry(3)] },
        });
        await again.load();
      });
      await again.close();
      const appended = images.map((image) => image.get("raft.log")!).reduce((a, b) =>
        b.length > a.length ? b : a
      );
      assert.deepEqual(appended.subarray(0, before.length), before);
      for (let cut = before.length; cut < appended.length; cut++) {
        await Deno.writeFile(path, appended.subarray(0, cut));
        await Deno.writeFile(join(directory, "snapshot.1"), new Uint8Array(0)); // named by nothing
        assert.deepEqual(
          await loadFrom(directory),
          { ...afterFirst },
          `cut at ${cut} of ${appended.length}`,
        );
        assert.deepEqual(namesIn(directory), ["LOCK", "raft.log"], `cut at ${cut}`);
      }
    });
  },
);

Deno.test(
  "FilePersister: open with preallocate false cuts a tail of zeros a crash left",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      const path = join(directory, "raft.log");
      const persister = await FilePersister.open(directory);
      await persister.save(first);
      const crashed = await Deno.readFile(path); // preallocated, as a kill -9 leaves it
      await persister.close();
      const records = (await Deno.stat(path)).size;
      await Deno.writeFile(path, crashed);
      // Its saves must end the file, so that a write cut short leaves a short record.
      const plain = await FilePersister.open(directory, { preallocate: false });
      assert.equal((await Deno.stat(path)).size, records);
      await plain.save(second);
      await plain.close();
      assert.deepEqual(await loadFrom(directory), afterSecond);
    });
  },
);

Deno.test(
  "FilePersister: loads a log and a snapshot file written before membership, then saves configurations",
  sanitized,
  async () => {
    await withDirectory(async (directory) => {
      await unzipFixture("file_format2_raft.log.gz", join(directory, "raft.log"));
      await unzipFixture("file_format2_snapshot.1.gz", join(directory, "snapshot.1"));
      const old = await Deno.readFile(join(directory, "snapshot.1"));
      assert.equal(new TextDecoder().decode(old.subarray(0, 8)), "RAFTSNP1");
      assert.deepEqual(await loadFrom(directory), FORMAT_2_STATE);
      const persister = await FilePersister.open(directory);
      for (const change of AFTER_FORMAT_2.changes) await persister.save(change);
      await persister.close();
      assert.deepEqual(await loadFrom(directory), AFTER_FORMAT_2.state);
      assert.deepEqual(namesIn(directory), ["LOCK", "raft.log", "snapshot.2"]);
      // The new file as docs/persisters.md describes it.
      const snapshot = AFTER_FORMAT_2.state.snapshot!;
      const file = await Deno.readFile(join(directory, "snapshot.2"));
      const view = new DataView(file.buffer);
      const json = text(JSON.stringify(snapshot.configuration));
      assert.equal(new TextDecoder().decode(file.subarray(0, 8)), "RAFTSNP2");
      assert.deepEqual([8, 16, 24].map((at) => view.getFloat64(at, true)), [4, 2, 100]);
      assert.equal(view.getUint32(32, true), crc32(snapshot.data));
      assert.equal(view.getUint32(36, true), json.length);
      assert.deepEqual(file.subarray(40, 40 + json.length), json);
      assert.equal(
        view.getUint32(40 + json.length, true),
        crc32(file.subarray(0, 40 + json.length)),
      );
      assert.deepEqual(file.subarray(44 + json.length), snapshot.data);
    });
  },
);

Deno.test(
  "FilePersister: a configuration that passes its checksum but is not one is damage",
  sanitized,
  async () => {
    const noVoters = { voters: [], learners: [{ id: 1, address: "" }] };
    // A configuration entry record: index 1, term 1, then the configuration's JSON.
    const configRecord = (json: string) =>
      record(6, new Uint8Array([...float64s(1, 1), ...text(json)]));
    const hardState = record(1, new Uint8Array([...float64s(1, -1), 0xff]));
    const logs: [string, string, RegExp][] = [
      [
        "no voters",
        JSON.stringify(noVoters),
        /is not a valid configuration: .* at least one voter/,
      ],
      ["a string", `"x"`, /is not a valid configuration: .* must be an object/],
      ["not JSON", `{"voters":`, /is not valid JSON/],
    ];
    for (const [what, json, message] of logs) {
      await withDirectory(async (directory) => {
        const path = join(directory, "raft.log");
        await Deno.writeFile(
          path,
          new Uint8Array([...text("RAFTLOG1"), ...configRecord(json), ...hardState]),
        );
        await assert.rejects(
          loadFrom(directory),
          (error: unknown) =>
            error instanceof PersisterCorruptError && error.file === path && error.offset === 8 &&
            /configuration entry record/.test(error.message) && message.test(error.message),
          what,
        );
      });
    }
    // A snapshot file whose header checks, holding a configuration that is not one.
    await withDirectory(async (directory) => {
      const persister = await FilePersister.open(directory);
      const data = snapshotData(1, 10);
      await persister.save({ term: 1, votedFor: null, snapshot: { index: 1, term: 1, data } });
      await persister.close();
      const path = join(directory, "snapshot.1");
      const file = await Deno.readFile(path);
      const json = text(JSON.stringify(noVoters));
      const header = new Uint8Array([...file.subarray(0, 36), 0, 0, 0, 0, ...json, 0, 0, 0, 0]);
      const view = new DataView(header.buffer);
      view.setUint32(36, json.length, true);
      view.setUint32(header.length - 4, crc32(header.subarray(0, header.length - 4)), true);
      await Deno.writeFile(path, new Uint8Array([...header, ...data]));
      await assert.rejects(
        loadFrom(directory),
        (error: unknown) =>
          error instanceof PersisterCorruptError && error.file === path && error.offset === 40 &&
          /snapshot's configuration is not a valid configuration/.test(error.message),
      );
    });
  },
);
