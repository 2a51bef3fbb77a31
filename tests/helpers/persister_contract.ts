/**
 * Behaviour persisters share, as test steps: a persister suite calls
 * {@linkcode persisterContract} (durable persisters), {@linkcode snapshotContract} and
 * {@linkcode membershipContract} (every persister) with a way to open its kind of persister in a
 * fresh place.
 */

import assert from "node:assert/strict";
import { MemoryPersister } from "../../src/storage/memory_persister.ts";
import { PersisterClosedError } from "../../src/storage/errors.ts";
import type {
  Configuration,
  LogEntry,
  PersistChange,
  PersistentState,
  Persister,
  Snapshot,
} from "../../src/types.ts";
import { randomInt } from "../../src/clock.ts";
import { seededRandom } from "../../src/sim/seeded_random.ts";

/** A persister that can be closed, as the durable ones can. */
export type ClosablePersister = Persister & { close(): Promise<void> };

/** Opens a persister on `place` (a directory or a database path). */
export type OpenPersister = (place: string) => Promise<ClosablePersister>;

/**
 * A function that registers a test named `${name}: ${title}`, whose body gets a fresh place in a
 * temporary directory (named with `prefix`) that is removed afterwards.
 */
function testsOf(
  name: string,
  prefix: string,
): (title: string, body: (place: string) => Promise<void>) => void {
  return (title, body) =>
    Deno.test(`${name}: ${title}`, async () => {
      const directory = await Deno.makeTempDir({ prefix });
      try {
        await body(`${directory}/store`);
      } finally {
        await Deno.remove(directory, { recursive: true });
      }
    });
}

/** Registers the shared tests under `name`; each gets its own temporary directory. */
export function persisterContract(name: string, open: OpenPersister): void {
  const test = testsOf(name, "raft-persister-");

  test("a fresh store loads as term 0, no vote, empty log", async (place) => {
    const persister = await open(place);
    assert.deepEqual(await persister.load(), { term: 0, votedFor: null, snapshot: null, log: [] });
    await persister.close();
  });

  test("reopening gives exactly the state last saved", async (place) => {
    const steps: PersistChange[] = [
      { term: 1, votedFor: 0, log: { from: 1, entries: [{ term: 1, command: "a" }] } },
      { term: 1, votedFor: 0, log: { from: 2, entries: [{ term: 1, command: { b: [1, 2] } }] } },
      { term: 2, votedFor: null },
      { term: 3, votedFor: 2, log: { from: 2, entries: [{ term: 3, command: null }] } },
      { term: 3, votedFor: 2, log: { from: 3, entries: [{ term: 3, command: 42 }] } },
      { term: 4, votedFor: 1, log: { from: 2, entries: [] } },
      // A new leader's no-op, told apart from a command that is null.
      {
        term: 5,
        votedFor: 1,
        log: { from: 2, entries: [{ term: 5, command: null, type: "noop" }] },
      },
      { term: 5, votedFor: 1, log: { from: 3, entries: [{ term: 5, command: null }] } },
    ];
    const model = new MemoryPersister();
    for (const step of steps) {
      const persister = await open(place);
      await persister.save(step);
      await model.save(step);
      await persister.close();
      const reopened = await open(place);
      assert.deepEqual(await reopened.load(), model.state(), `after ${JSON.stringify(step)}`);
      await reopened.close();
    }
  });

  test("overlapping saves apply in call order, as MemoryPersister does", async (place) => {
    const random = seededRandom(7);
    const model = new MemoryPersister();
    const persister = await open(place);
    let bounds: Bounds = { lastIndex: 0, snapshotIndex: 0 };
    let inFlight: Promise<void>[] = [];
    for (let step = 1; step <= 400; step++) {
      const change = randomChange(random, step, bounds);
      bounds = boundsAfterChange(change, bounds);
      inFlight.push(persister.save(change));
      await model.save(change);
      if (random() < 0.3) {
        await Promise.all(inFlight);
        inFlight = [];
        assert.deepEqual(await persister.load(), model.state(), `after step ${step}`);
      }
    }
    await Promise.all(inFlight);
    await persister.close();
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), model.state());
    await reopened.close();
  });

  test("a gap, a bad term or a non-JSON command is refused and changes nothing", async (place) => {
    const persister = await open(place);
    await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: [entry(1, "x")] } });
    await assert.rejects(
      persister.save({ term: 1, votedFor: null, log: { from: 3, entries: [entry(1, "gap")] } }),
      (error: unknown) => error instanceof RangeError && /1\.\.2, got from=3/.test(error.message),
    );
    await assert.rejects(persister.save({ term: -1, votedFor: null }), RangeError);
    await assert.rejects(persister.save({ term: 1, votedFor: 1.5 }), RangeError);
    await assert.rejects(
      persister.save({ term: 1, votedFor: null, log: { from: 2, entries: [entry(1, undefined)] } }),
      TypeError,
    );
    await persister.save({ term: 2, votedFor: 0, log: { from: 2, entries: [entry(2, "y")] } });
    const expected = { term: 2, votedFor: 0, snapshot: null, log: [entry(1, "x"), entry(2, "y")] };
    assert.deepEqual(await persister.load(), expected);
    await persister.close();
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), expected);
    await reopened.close();
  });

  test("saves after close are refused; close twice is harmless", async (place) => {
    const persister = await open(place);
    const pending = persister.save({ term: 1, votedFor: 0 });
    await persister.close();
    await pending;
    await persister.close();
    await assert.rejects(persister.save({ term: 2, votedFor: 0 }), PersisterClosedError);
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), { term: 1, votedFor: 0, snapshot: null, log: [] });
    await reopened.close();
  });

  test("close() called during a load() still waits for a save queued behind it", async (place) => {
    // With no pause, the load waits for the first save's batch; with one, it starts at once.
    for (const [round, pauseMs] of [0, 20].entries()) {
      const persister = await open(place);
      const before = await persister.load();
      const first = before.log.length + 1;
      await persister.save({
        term: 2 * round + 1,
        votedFor: 0,
        log: { from: first, entries: [{ term: 2 * round + 1, command: "a" }] },
      });
      await new Promise((resolve) => setTimeout(resolve, pauseMs));
      // The save waits for the load; close must wait for both, not only for what runs now.
      const loaded = persister.load();
      const saved = persister.save({
        term: 2 * round + 2,
        votedFor: 1,
        log: { from: first + 1, entries: [{ term: 2 * round + 2, command: "b" }] },
      });
      await persister.close();
      await Promise.all([loaded, saved]);
      const expected = {
        term: 2 * round + 2,
        votedFor: 1,
        snapshot: null,
        log: [
          ...before.log,
          { term: 2 * round + 1, command: "a" },
          { term: 2 * round + 2, command: "b" },
        ],
      };
      const reopened = await open(place);
      assert.deepEqual(await reopened.load(), expected, `acknowledged, pause ${pauseMs} ms`);
      await reopened.close();
    }
  });
}

/** Where a log stands: its last index and its snapshot's (0 without one). */
export interface Bounds {
  lastIndex: number;
  snapshotIndex: number;
}

/** The bounds after `change`, by the rules of `PersistChange`. */
export function boundsAfterChange(change: PersistChange, bounds: Bounds): Bounds {
  const snapshotIndex = change.snapshot?.index ?? bounds.snapshotIndex;
  const lastIndex = change.log === undefined
    ? Math.max(bounds.lastIndex, snapshotIndex)
    : change.log.from - 1 + change.log.entries.length;
  return { lastIndex, snapshotIndex };
}

/**
 * A random change for step `step` of a log with `bounds`: appends, overwrites, cuts and, when
 * `snapshotChance` is above 0, snapshots (at, before or past the log's end, with or without a
 * log change in the same save).
 */
export function randomChange(
  random: () => number,
  step: number,
  bounds: Bounds,
  snapshotChance = 0,
): PersistChange {
  const term = step;
  const votedFor = random() < 0.3 ? null : randomInt(random, 0, 4);
  const change: PersistChange = { term, votedFor };
  let snapshotIndex = bounds.snapshotIndex;
  if (random() < snapshotChance) {
    snapshotIndex = randomInt(random, snapshotIndex, bounds.lastIndex + 3);
    const size = random() < 0.1 ? randomInt(random, 60_000, 200_000) : randomInt(random, 0, 300);
    change.snapshot = { index: snapshotIndex, term, data: snapshotData(step, size) };
    // Two snapshots in three carry a configuration (decided by the step, so that the random
    // draws, and with them the rest of the workload, stay as they were before membership).
    if (step % 3 !== 0) change.snapshot.configuration = stepConfiguration(step);
    if (random() < 0.5) return change;
  }
  const lastIndex = Math.max(bounds.lastIndex, snapshotIndex);
  const roll = random();
  if (roll < 0.1 && change.snapshot === undefined) return change;
  const from = roll < 0.75
    ? lastIndex + 1
    : randomInt(random, Math.max(snapshotIndex + 1, lastIndex - 5), lastIndex + 1);
  const count = randomInt(random, 0, 4);
  // Now and then a configuration entry among the commands, decided as above.
  const entries = Array.from(
    { length: count },
    (_, k): LogEntry =>
      (step + k) % 7 === 0
        ? { term, command: stepConfiguration(step + k), type: "config" }
        : entry(term, { step, k }),
  );
  change.log = { from, entries };
  return change;
}

/** A configuration that depends on `step`: one to five voters, and sometimes a learner. */
export function stepConfiguration(step: number): Configuration {
  const voters = Array.from({ length: 1 + step % 5 }, (_, id) => id);
  return configuration(voters, step % 2 === 0 ? [9] : []);
}

/** `size` bytes that depend on `step`, for a snapshot's data. */
export function snapshotData(step: number, size: number): Uint8Array {
  const data = new Uint8Array(size);
  for (let i = 0; i < size; i++) data[i] = (i * 31 + step * 7 + (i >> 8)) & 0xff;
  return data;
}

function entry(term: number, command: unknown) {
  return { term, command };
}

/** A log change of string commands of term 1, the first at `from`. */
function log(from: number, ...commands: string[]) {
  return { from, entries: commands.map((command) => entry(1, command)) };
}

/** A snapshot through `index` with a few bytes of data. */
function snap(index: number, term = 1, data = snapshotData(index, 10)): Snapshot {
  return { index, term, data };
}

/**
 * A configuration of the voters and learners with these ids, each at an address of its own;
 * members sorted by id, as persisters store them.
 */
export function configuration(voters: number[], learners: number[] = []): Configuration {
  const member = (id: number) => ({ id, address: `ws://127.0.0.1:${7000 + id}` });
  const sorted = (ids: number[]) => ids.toSorted((a, b) => a - b).map(member);
  return { voters: sorted(voters), learners: sorted(learners) };
}

/** A configuration entry of `term`. */
function configEntry(term: number, voters: number[], learners: number[] = []): LogEntry {
  return { term, command: configuration(voters, learners), type: "config" };
}

/** A new leader's no-op entry of `term`. */
function noopEntry(term: number): LogEntry {
  return { term, command: null, type: "noop" };
}

/** What a persister opened on `place` loads; it is closed again. */
async function reopenedState(open: OpenPersister, place: string): Promise<PersistentState> {
  const persister = await open(place);
  try {
    return await persister.load();
  } finally {
    await persister.close();
  }
}

/**
 * Saves `changes` one by one on what `open(place)` gives, checking after each that a load and a
 * load after a reopen give the state {@linkcode ReferenceModel} says.
 */
async function saveAndCheckEach(
  open: OpenPersister,
  place: string,
  changes: PersistChange[],
): Promise<void> {
  const model = new ReferenceModel();
  let persister = await open(place);
  for (const [i, change] of changes.entries()) {
    await persister.save(change);
    model.apply(change);
    assert.deepEqual(await persister.load(), model.state(), `load after change ${i}`);
    await persister.close();
    persister = await open(place);
    assert.deepEqual(await persister.load(), model.state(), `reopened after change ${i}`);
  }
  await persister.close();
}

/**
 * The rules of {@linkcode PersistChange}, written as plainly as they read, with entries keyed by
 * their index: what every persister must agree with.
 */
export class ReferenceModel {
  #term = 0;
  #votedFor: number | null = null;
  #snapshot: Snapshot | null = null;
  #entries = new Map<number, LogEntry>();
  #lastIndex = 0;

  /** Applies a change that the rules allow. */
  apply(change: PersistChange): void {
    if (change.snapshot !== undefined) {
      this.#snapshot = structuredClone(change.snapshot);
      const { index } = change.snapshot;
      for (const key of [...this.#entries.keys()]) if (key <= index) this.#entries.delete(key);
      this.#lastIndex = Math.max(this.#lastIndex, index);
    }
    if (change.log !== undefined) {
      const { from, entries } = change.log;
      for (const key of [...this.#entries.keys()]) if (key >= from) this.#entries.delete(key);
      entries.forEach((entry, k) => this.#entries.set(from + k, structuredClone(entry)));
      this.#lastIndex = from - 1 + entries.length;
    }
    this.#term = change.term;
    this.#votedFor = change.votedFor;
  }

  /** The state a persister must load. */
  state(): PersistentState {
    const first = (this.#snapshot?.index ?? 0) + 1;
    const log: LogEntry[] = [];
    for (let index = first; index <= this.#lastIndex; index++) {
      log.push(structuredClone(this.#entries.get(index)!));
    }
    const snapshot = structuredClone(this.#snapshot);
    return { term: this.#term, votedFor: this.#votedFor, snapshot, log };
  }
}

/**
 * Registers the snapshot tests under `name`, for every persister, durable or not: `open(place)`
 * gives a persister on what the last one closed on `place` left. Each test gets a fresh place.
 */
export function snapshotContract(name: string, open: OpenPersister): void {
  const test = testsOf(name, "raft-snapshot-");
  const saveAndCheck = (place: string, changes: PersistChange[]) =>
    saveAndCheckEach(open, place, changes);

  test("a snapshot discards the entries it covers and keeps those after it", async (place) => {
    await saveAndCheck(place, [
      { term: 1, votedFor: 0, log: log(1, "a", "b", "c", "d", "e") },
      { term: 1, votedFor: 0, snapshot: snap(3) },
      { term: 2, votedFor: 1, log: log(6, "f") },
      { term: 2, votedFor: 1, log: log(5, "e2") },
      { term: 2, votedFor: 1, snapshot: snap(5) },
    ]);
    // What the lab's tester measures: no entry at or below the snapshot's index is left.
    const persister = await open(place);
    const state = await persister.load();
    await persister.close();
    assert.deepEqual(state.log, []);
    assert.equal(state.snapshot?.index, 5);
  });

  test("a snapshot past the end of the log empties it; the log goes on after it", async (place) => {
    await saveAndCheck(place, [
      { term: 1, votedFor: null, log: log(1, "a", "b") },
      { term: 3, votedFor: null, snapshot: snap(10, 3) },
      { term: 3, votedFor: null, log: log(11, "k", "l") },
      { term: 3, votedFor: null, snapshot: snap(11, 3) },
      { term: 4, votedFor: 2, log: log(12) },
    ]);
  });

  test("a snapshot and a log change in one save apply together, the snapshot first", async (place) => {
    await saveAndCheck(place, [
      { term: 1, votedFor: 0, log: log(1, "a", "b", "c", "d") },
      // Snapshot through 2, then entries from 4 on replaced: c stays.
      { term: 2, votedFor: 0, snapshot: snap(2), log: log(4, "D", "E") },
      // Snapshot past the end, and the log restarts right after it.
      { term: 3, votedFor: null, snapshot: snap(8, 3), log: log(9, "i") },
      // Snapshot at the last entry, log cut to nothing after it.
      { term: 3, votedFor: null, snapshot: snap(9, 3), log: log(10) },
      // The same index again, with new data.
      { term: 4, votedFor: 1, snapshot: snap(9, 3, snapshotData(99, 50)) },
    ]);
  });

  test("snapshot data comes back byte for byte, from empty to several MiB", async (place) => {
    const sizes = [0, 1, 65_535, 65_536, 65_537, 819_200, 3 * 1024 * 1024 + 5];
    const changes: PersistChange[] = sizes.map((size, i) => ({
      term: i + 1,
      votedFor: null,
      snapshot: { index: i * 2, term: i + 1, data: snapshotData(i, size) },
      log: log(i * 2 + 1, `after ${size}`),
    }));
    // Then a smaller snapshot after the largest: nothing of the larger one may show.
    changes.push({ term: 9, votedFor: null, snapshot: snap(20, 9, snapshotData(5, 3)) });
    await saveAndCheck(place, changes);
  });

  test("a snapshot with empty data is stored and loaded as saved, index and term kept", async (place) => {
    const persister = await open(place);
    await persister.save({ term: 2, votedFor: null, log: log(1, "a", "b", "c") });
    const empty = { index: 2, term: 1, data: new Uint8Array(0) };
    await persister.save({ term: 2, votedFor: null, snapshot: empty });
    await persister.close();
    const reopened = await open(place);
    const expected = { term: 2, votedFor: null, snapshot: empty, log: [entry(1, "c")] };
    assert.deepEqual(await reopened.load(), expected);
    await reopened.close();
  });

  test("snapshot data is copied: changing it after save or load changes nothing stored", async (place) => {
    const persister = await open(place);
    const data = new Uint8Array([1, 2, 3]);
    const saving = persister.save({
      term: 1,
      votedFor: null,
      snapshot: { index: 0, term: 0, data },
    });
    data[0] = 9;
    await saving;
    const loaded = await persister.load();
    loaded.snapshot!.data[1] = 9;
    assert.deepEqual((await persister.load()).snapshot?.data, new Uint8Array([1, 2, 3]));
    await persister.close();
  });

  test("saves check snapshots against the state the queued saves leave", async (place) => {
    const persister = await open(place);
    const saves = [
      persister.save({ term: 1, votedFor: null, log: log(1, "a", "b", "c", "d", "e") }),
      persister.save({ term: 1, votedFor: null, snapshot: snap(4) }),
    ];
    await assert.rejects(
      persister.save({ term: 1, votedFor: null, log: log(4, "x") }),
      (error: unknown) => error instanceof RangeError && /5\.\.6, got from=4/.test(error.message),
    );
    await assert.rejects(
      persister.save({ term: 1, votedFor: null, snapshot: snap(3) }),
      (error: unknown) =>
        error instanceof RangeError &&
        /at least the stored snapshot's index 4, got 3/.test(error.message),
    );
    saves.push(persister.save({ term: 2, votedFor: null, log: log(6, "f") }));
    await Promise.all(saves);
    const expected = {
      term: 2,
      votedFor: null,
      snapshot: snap(4),
      log: [entry(1, "e"), entry(1, "f")],
    };
    assert.deepEqual(await persister.load(), expected);
    await persister.close();
  });

  test("a malformed snapshot change is refused and changes nothing", async (place) => {
    const persister = await open(place);
    await persister.save({ term: 2, votedFor: 1, log: log(1, "a", "b", "c", "d") });
    await persister.save({ term: 2, votedFor: 1, snapshot: snap(2) });
    const before = await persister.load();
    const data = new Uint8Array([1]);
    const bad: [string, unknown, typeof RangeError | typeof TypeError, RegExp][] = [
      [
        "an index below the stored one",
        { index: 1, term: 1, data },
        RangeError,
        /Snapshot index must be at least the stored snapshot's index 2, got 1/,
      ],
      ["a negative index", { index: -1, term: 1, data }, RangeError, /index .* got -1/],
      ["a fractional index", { index: 2.5, term: 1, data }, RangeError, /index .* got 2\.5/],
      ["a NaN index", { index: NaN, term: 1, data }, RangeError, /index .* got NaN/],
      ["a string index", { index: "3", term: 1, data }, RangeError, /index .* got "3"/],
      ["an index past 2^53", { index: 2 ** 53, term: 1, data }, RangeError, /index/],
      ["a fractional term", { index: 3, term: 0.5, data }, RangeError, /term .* got 0\.5/],
      ["a negative term", { index: 3, term: -2, data }, RangeError, /term .* got -2/],
      ["a missing term", { index: 3, data }, RangeError, /term .* got undefined/],
      ["data that is an array", { index: 3, term: 1, data: [1] }, TypeError, /data .* array/],
      ["data that is a string", { index: 3, term: 1, data: "x" }, TypeError, /data .* "x"/],
      [
        "data that is an ArrayBuffer",
        { index: 3, term: 1, data: new ArrayBuffer(1) },
        TypeError,
        /data .* ArrayBuffer/,
      ],
      ["no data", { index: 3, term: 1 }, TypeError, /data .* undefined/],
      ["a snapshot that is not an object", 3, TypeError, /Snapshot must be an object, got 3/],
      ["a null snapshot", null, TypeError, /Snapshot must be an object, got null/],
    ];
    for (const [why, snapshot, kind, message] of bad) {
      await assert.rejects(
        persister.save({ term: 3, votedFor: 0, snapshot: snapshot as Snapshot }),
        (error: unknown) => error instanceof kind && message.test((error as Error).message),
        why,
      );
      // The same snapshot beside a log change that would be fine: still refused whole.
      await assert.rejects(
        persister.save({ term: 3, votedFor: 0, snapshot: snapshot as Snapshot, log: log(5, "e") }),
        kind,
        `${why}, with a log change`,
      );
    }
    const badLogs: [string, PersistChange, RegExp][] = [
      [
        "a log change at the stored snapshot's index",
        { term: 3, votedFor: 0, log: log(2, "x") },
        /3\.\.5, got from=2/,
      ],
      ["a log change at the new snapshot's index", {
        term: 3,
        votedFor: 0,
        snapshot: snap(4),
        log: log(4, "x"),
      }, /5\.\.5, got from=4/],
      ["a log change past the end with a snapshot inside the log", {
        term: 3,
        votedFor: 0,
        snapshot: snap(3),
        log: log(6, "x"),
      }, /4\.\.5, got from=6/],
      ["a log change past a snapshot past the end", {
        term: 3,
        votedFor: 0,
        snapshot: snap(7),
        log: log(9, "x"),
      }, /8\.\.8, got from=9/],
      [
        "a fractional from",
        { term: 3, votedFor: 0, snapshot: snap(3), log: log(4.5, "x") },
        /4\.\.5, got from=4\.5/,
      ],
    ];
    for (const [why, change, message] of badLogs) {
      await assert.rejects(
        persister.save(change),
        (error: unknown) => error instanceof RangeError && message.test(error.message),
        why,
      );
    }
    assert.deepEqual(await persister.load(), before, "nothing changed");
    // The refused saves left the queue's idea of the log alone: a good save still fits.
    await persister.save({ term: 3, votedFor: 0, snapshot: snap(4), log: log(5, "e") });
    await persister.close();
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), {
      term: 3,
      votedFor: 0,
      snapshot: snap(4),
      log: [entry(1, "e")],
    });
    await reopened.close();
  });

  test("random overlapping saves with snapshots agree with the rules, reopened or not", async (place) => {
    const random = seededRandom(name.length * 1009 + 5);
    const model = new ReferenceModel();
    let persister = await open(place);
    let bounds: Bounds = { lastIndex: 0, snapshotIndex: 0 };
    let inFlight: Promise<void>[] = [];
    for (let step = 1; step <= 300; step++) {
      const change = randomChange(random, step, bounds, 0.15);
      bounds = boundsAfterChange(change, bounds);
      inFlight.push(persister.save(change));
      model.apply(change);
      const roll = random();
      if (roll < 0.3) {
        await Promise.all(inFlight);
        inFlight = [];
        assert.deepEqual(await persister.load(), model.state(), `after step ${step}`);
      } else if (roll < 0.35) {
        await Promise.all(inFlight);
        inFlight = [];
        await persister.close();
        persister = await open(place);
        assert.deepEqual(await persister.load(), model.state(), `reopened after step ${step}`);
      }
    }
    await Promise.all(inFlight);
    await persister.close();
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), model.state());
    await reopened.close();
  });
}

/**
 * Registers the membership tests under `name`, for every persister: configuration entries and
 * snapshot configurations. `open(place)` gives a persister on what the last one closed on
 * `place` left. Each test gets a fresh place.
 */
export function membershipContract(name: string, open: OpenPersister): void {
  const test = testsOf(name, "raft-membership-");
  const saveAndCheck = (place: string, changes: PersistChange[]) =>
    saveAndCheckEach(open, place, changes);

  test("configuration entries come back among commands and no-ops, and go when cut", async (place) => {
    await saveAndCheck(place, [
      {
        term: 1,
        votedFor: 0,
        log: {
          from: 1,
          entries: [
            noopEntry(1),
            configEntry(1, [0, 1, 2]),
            entry(1, "a"),
            configEntry(1, [0, 1, 2], [3]),
            entry(1, null),
          ],
        },
      },
      // A truncation takes the configuration entry at 4 with it.
      { term: 2, votedFor: 1, log: { from: 4, entries: [] } },
      {
        term: 2,
        votedFor: 1,
        log: { from: 4, entries: [noopEntry(2), configEntry(2, [0, 1, 3]), entry(2, { c: 1 })] },
      },
      // A conflicting leader's entries replace a configuration entry; a command that looks like
      // a configuration stays a command.
      { term: 3, votedFor: 2, log: { from: 5, entries: [entry(3, configuration([0, 1]))] } },
    ]);
  });

  test("a snapshot's configuration comes back; a later snapshot without one has none", async (place) => {
    // Large enough to span Deno.Kv chunks, with the data after it in the same chunk.
    const many = Array.from({ length: 800 }, (_, id) => id);
    const large: Configuration = {
      voters: many.slice(0, 5).map((id) => ({ id, address: `ws://host-${id}.example:7000/` })),
      learners: many.slice(5).map((id) => ({ id, address: "ws://learner.example/".repeat(5) })),
    };
    await saveAndCheck(place, [
      { term: 1, votedFor: 0, log: log(1, "a", "b", "c") },
      { term: 1, votedFor: 0, snapshot: { ...snap(2), configuration: configuration([0, 1, 2]) } },
      // The same index again, with another configuration and data over several chunks.
      {
        term: 2,
        votedFor: 0,
        snapshot: { ...snap(2, 1, snapshotData(7, 70_000)), configuration: large },
      },
      // Empty data, with a configuration.
      {
        term: 2,
        votedFor: 0,
        snapshot: { index: 3, term: 1, data: new Uint8Array(0), configuration: configuration([5]) },
      },
      // A later snapshot without a configuration has none.
      { term: 3, votedFor: null, snapshot: snap(3, 1, snapshotData(3, 100)), log: log(4, "d") },
      { term: 3, votedFor: null, snapshot: { ...snap(4), configuration: configuration([0], [1]) } },
    ]);
  });

  test("a snapshot that compacts configuration entries away keeps the later ones", async (place) => {
    await saveAndCheck(place, [
      {
        term: 1,
        votedFor: 0,
        log: {
          from: 1,
          entries: [
            configEntry(1, [0]),
            entry(1, "a"),
            configEntry(1, [0, 1]),
            entry(1, "b"),
            configEntry(1, [0, 1, 2]),
            noopEntry(1),
          ],
        },
      },
      { term: 1, votedFor: 0, snapshot: { ...snap(4), configuration: configuration([0, 1]) } },
      { term: 2, votedFor: 0, log: { from: 7, entries: [configEntry(2, [0, 1, 2, 3])] } },
      { term: 2, votedFor: 0, snapshot: { ...snap(6), configuration: configuration([0, 1, 2]) } },
      { term: 3, votedFor: 1, log: { from: 8, entries: [configEntry(3, [1, 2, 3])] } },
    ]);
  });

  test("configurations are copied: changing them after save or load changes nothing stored", async (place) => {
    const persister = await open(place);
    const inEntry = configuration([0, 1]);
    const inSnapshot = configuration([0, 1, 2]);
    const saving = persister.save({
      term: 1,
      votedFor: null,
      snapshot: { index: 0, term: 0, data: new Uint8Array([1]), configuration: inSnapshot },
      log: { from: 1, entries: [{ term: 1, command: inEntry, type: "config" }] },
    });
    inEntry.voters[0]!.address = "changed";
    inEntry.voters.pop();
    inSnapshot.learners.push({ id: 9, address: "" });
    await saving;
    const expected: PersistentState = {
      term: 1,
      votedFor: null,
      snapshot: {
        index: 0,
        term: 0,
        data: new Uint8Array([1]),
        configuration: configuration([0, 1, 2]),
      },
      log: [configEntry(1, [0, 1])],
    };
    const loaded = await persister.load();
    assert.deepEqual(loaded, expected);
    (loaded.log[0]!.command as Configuration).voters.length = 0;
    loaded.snapshot!.configuration!.voters[0]!.id = 99;
    assert.deepEqual(await persister.load(), expected);
    await persister.close();
    assert.deepEqual(await reopenedState(open, place), expected);
  });

  test("configurations are stored as plain copies, members sorted by id", async (place) => {
    const unsorted = {
      voters: [{ id: 2, address: "c", extra: true }, { id: 0, address: "a" }],
      learners: [{ id: 5, address: "" }, { id: 3, address: "d" }],
    };
    const sorted: Configuration = {
      voters: [{ id: 0, address: "a" }, { id: 2, address: "c" }],
      learners: [{ id: 3, address: "d" }, { id: 5, address: "" }],
    };
    const persister = await open(place);
    await persister.save({
      term: 1,
      votedFor: null,
      snapshot: { index: 1, term: 1, data: new Uint8Array(0), configuration: unsorted },
      log: { from: 2, entries: [{ term: 1, command: unsorted, type: "config" }] },
    });
    const expected: PersistentState = {
      term: 1,
      votedFor: null,
      snapshot: { index: 1, term: 1, data: new Uint8Array(0), configuration: sorted },
      log: [{ term: 1, command: sorted, type: "config" }],
    };
    assert.deepEqual(await persister.load(), expected);
    await persister.close();
    assert.deepEqual(await reopenedState(open, place), expected);
  });

  test("a configuration that is not one, or an unknown entry type, is refused and changes nothing", async (place) => {
    const persister = await open(place);
    await persister.save({
      term: 1,
      votedFor: 0,
      log: { from: 1, entries: [configEntry(1, [0])] },
    });
    const before = await persister.load();
    const twice = { voters: [{ id: 1, address: "a" }, { id: 1, address: "b" }], learners: [] };
    const badEntries: [string, LogEntry, RegExp][] = [
      [
        "no voters",
        { term: 1, command: { voters: [], learners: [] }, type: "config" },
        /entry at 2 is not valid: a configuration must have at least one voter/,
      ],
      ["a string", { term: 1, command: "x", type: "config" }, /must be an object/],
      ["a member twice", { term: 1, command: twice, type: "config" }, /member 1 appears twice/],
      [
        "an unknown type",
        { term: 1, command: 1, type: "other" as "noop" },
        /Entry type must be "noop", "config" or absent, got "other"/,
      ],
    ];
    for (const [why, bad, message] of badEntries) {
      // Beside a good entry, so that the whole change is refused.
      const change = { term: 2, votedFor: 1, log: { from: 2, entries: [entry(2, "ok"), bad] } };
      await assert.rejects(
        persister.save({ ...change, log: { from: 2, entries: [bad, entry(2, "ok")] } }),
        (error: unknown) => error instanceof TypeError && message.test(error.message),
        why,
      );
      await assert.rejects(persister.save(change), TypeError, `${why}, second`);
    }
    const badSnapshots: [string, unknown, RegExp][] = [
      ["null", null, /snapshot through 1 is not valid: a configuration must be an object/],
      ["no voters", { voters: [], learners: [{ id: 1, address: "" }] }, /at least one voter/],
      ["a negative id", { voters: [{ id: -1, address: "" }], learners: [] }, /got -1/],
      ["a member twice", twice, /member 1 appears twice/],
    ];
    for (const [why, bad, message] of badSnapshots) {
      const snapshot = { ...snap(1), configuration: bad as Configuration };
      await assert.rejects(
        persister.save({ term: 2, votedFor: 1, snapshot, log: log(2, "ok") }),
        (error: unknown) => error instanceof TypeError && message.test(error.message),
        why,
      );
    }
    assert.deepEqual(await persister.load(), before, "nothing changed");
    await persister.save({ term: 2, votedFor: 1, log: log(2, "ok") });
    await persister.close();
    assert.deepEqual(await reopenedState(open, place), {
      ...before,
      term: 2,
      votedFor: 1,
      log: [...before.log, entry(1, "ok")],
    });
  });
}
