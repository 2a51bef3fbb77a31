/**
 * Behaviour every durable persister shares, as test steps: a persister suite calls
 * {@linkcode persisterContract} with a way to open its kind of persister in a fresh place.
 */

import assert from "node:assert/strict";
import { MemoryPersister } from "../../src/storage/memory_persister.ts";
import { PersisterClosedError } from "../../src/storage/errors.ts";
import type { PersistChange, Persister } from "../../src/types.ts";
import { randomInt } from "../../src/clock.ts";
import { seededRandom } from "../../src/sim/seeded_random.ts";

/** A persister that can be closed, as the durable ones can. */
export type ClosablePersister = Persister & { close(): Promise<void> };

/** Opens a persister on `place` (a directory or a database path). */
export type OpenPersister = (place: string) => Promise<ClosablePersister>;

/** Registers the shared tests under `name`; each gets its own temporary directory. */
export function persisterContract(name: string, open: OpenPersister): void {
  const test = (title: string, body: (place: string) => Promise<void>) =>
    Deno.test(`${name}: ${title}`, async () => {
      const directory = await Deno.makeTempDir({ prefix: "raft-persister-" });
      try {
        await body(`${directory}/store`);
      } finally {
        await Deno.remove(directory, { recursive: true });
      }
    });

  test("a fresh store loads as term 0, no vote, empty log", async (place) => {
    const persister = await open(place);
    assert.deepEqual(await persister.load(), { term: 0, votedFor: null, log: [] });
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
    ];
    const model = new MemoryPersister();
    for (const step of steps) {
      const persister = await open(place);
      await persister.save(step);
      await model.save(step);
      await persister.close();
      const reopened = await open(place);
      assert.deepEqual(await reopened.load(), model.snapshot(), `after ${JSON.stringify(step)}`);
      await reopened.close();
    }
  });

  test("overlapping saves apply in call order, as MemoryPersister does", async (place) => {
    const random = seededRandom(7);
    const model = new MemoryPersister();
    const persister = await open(place);
    let lastIndex = 0;
    let inFlight: Promise<void>[] = [];
    for (let step = 1; step <= 400; step++) {
      const change = randomChange(random, step, lastIndex);
      lastIndex = change.log === undefined
        ? lastIndex
        : change.log.from - 1 + change.log.entries.length;
      inFlight.push(persister.save(change));
      await model.save(change);
      if (random() < 0.3) {
        await Promise.all(inFlight);
        inFlight = [];
        assert.deepEqual(await persister.load(), model.snapshot(), `after step ${step}`);
      }
    }
    await Promise.all(inFlight);
    await persister.close();
    const reopened = await open(place);
    assert.deepEqual(await reopened.load(), model.snapshot());
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
    const expected = { term: 2, votedFor: 0, log: [entry(1, "x"), entry(2, "y")] };
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
    assert.deepEqual(await reopened.load(), { term: 1, votedFor: 0, log: [] });
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

/** A random change for step `step` of a log that ends at `lastIndex`: appends, overwrites, cuts. */
export function randomChange(
  random: () => number,
  step: number,
  lastIndex: number,
): PersistChange {
  const term = step;
  const votedFor = random() < 0.3 ? null : randomInt(random, 0, 4);
  const roll = random();
  if (roll < 0.1) return { term, votedFor };
  const from = roll < 0.75
    ? lastIndex + 1
    : randomInt(random, Math.max(1, lastIndex - 5), lastIndex + 1);
  const count = randomInt(random, 0, 4);
  const entries = Array.from({ length: count }, (_, k) => entry(term, { step, k }));
  return { term, votedFor, log: { from, entries } };
}

function entry(term: number, command: unknown) {
  return { term, command };
}
