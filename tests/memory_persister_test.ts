/**
 * MemoryPersister: what a fresh one loads, how saves change the state, and that what goes in and
 * comes out are copies.
 */

import assert from "node:assert/strict";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import { SimPersister } from "../src/sim/sim_persister.ts";
import { VirtualClock } from "../src/sim/virtual_clock.ts";
import type { LogEntry, PersistentState } from "../src/types.ts";
import { sanitized } from "./helpers/sanitized.ts";
import {
  type ClosablePersister,
  membershipContract,
  snapshotContract,
} from "./helpers/persister_contract.ts";

/** What each place's last persister held when closed; a reopen gets a copy, as a restart does. */
const stores = new Map<string, MemoryPersister>();

/** A MemoryPersister on what the last one closed on `place` left. */
function openMemory(place: string): Promise<ClosablePersister> {
  const persister = stores.get(place)?.copy() ?? new MemoryPersister();
  return Promise.resolve({
    load: () => persister.load(),
    save: (change) => persister.save(change),
    close() {
      stores.set(place, persister.copy());
      return Promise.resolve();
    },
  });
}

snapshotContract("MemoryPersister", openMemory);
membershipContract("MemoryPersister", openMemory);

function entries(...commands: string[]): LogEntry[] {
  return commands.map((command) => ({ term: 1, command }));
}

/** Term 2, vote for 1, log a b c. */
async function persisterWithLog(): Promise<MemoryPersister> {
  const persister = new MemoryPersister();
  await persister.save({ term: 2, votedFor: 1, log: { from: 1, entries: entries("a", "b", "c") } });
  return persister;
}

async function commands(persister: MemoryPersister): Promise<unknown[]> {
  return (await persister.load()).log.map((entry) => entry.command);
}

Deno.test("a fresh persister loads term 0, no vote and an empty log", sanitized, async () => {
  const persister = new MemoryPersister();
  assert.deepEqual(await persister.load(), { term: 0, votedFor: null, snapshot: null, log: [] });
  assert.equal(persister.saveCount, 0);
});

Deno.test(
  "a save without a log change sets term and vote and keeps the log",
  sanitized,
  async () => {
    const persister = await persisterWithLog();
    await persister.save({ term: 5, votedFor: null });
    assert.deepEqual(await persister.load(), {
      term: 5,
      votedFor: null,
      snapshot: null,
      log: entries("a", "b", "c"),
    });
    assert.equal(persister.saveCount, 2);
  },
);

Deno.test("a log change drops entries from `from` on, then appends", sanitized, async () => {
  const persister = await persisterWithLog();
  await persister.save({ term: 3, votedFor: 0, log: { from: 2, entries: entries("x", "y") } });
  assert.deepEqual(await commands(persister), ["a", "x", "y"], "truncate at 2, then append");
  await persister.save({ term: 3, votedFor: 0, log: { from: 4, entries: entries("z") } });
  assert.deepEqual(await commands(persister), ["a", "x", "y", "z"], "from = length + 1 appends");
  await persister.save({ term: 3, votedFor: 0, log: { from: 3, entries: [] } });
  assert.deepEqual(await commands(persister), ["a", "x"], "no entries: truncate only");
  await persister.save({ term: 4, votedFor: null, log: { from: 1, entries: [] } });
  assert.deepEqual(await persister.load(), { term: 4, votedFor: null, snapshot: null, log: [] });
});

Deno.test(
  "a log change that would leave a gap rejects with RangeError and changes nothing",
  sanitized,
  async () => {
    const persister = await persisterWithLog();
    const before = persister.state();
    for (const from of [5, 0, -1, 1.5, NaN]) {
      await assert.rejects(
        persister.save({ term: 9, votedFor: 2, log: { from, entries: entries("gap") } }),
        RangeError,
        `from=${from}`,
      );
      assert.deepEqual(persister.state(), before, `from=${from}: term, vote and log must stay`);
    }
    assert.equal(persister.saveCount, 1, "only the first save counts");
  },
);

Deno.test(
  "load() returns a copy: changing it does not change the persister",
  sanitized,
  async () => {
    const persister = await persisterWithLog();
    const loaded = await persister.load();
    loaded.term = 99;
    loaded.log.push({ term: 9, command: "extra" });
    loaded.log[0]!.term = 7;
    loaded.log[1]!.command = "changed";
    assert.deepEqual(await persister.load(), {
      term: 2,
      votedFor: 1,
      snapshot: null,
      log: entries("a", "b", "c"),
    });
  },
);

Deno.test("save() and the constructor copy what they are given", sanitized, async () => {
  const given = entries("a");
  const persister = new MemoryPersister();
  await persister.save({ term: 1, votedFor: null, log: { from: 1, entries: given } });
  given[0]!.command = "changed";
  given.push({ term: 1, command: "extra" });
  assert.deepEqual(await commands(persister), ["a"]);

  const state: PersistentState = { term: 1, votedFor: 0, snapshot: null, log: entries("b") };
  const built = new MemoryPersister(state);
  state.log[0]!.command = "changed";
  state.log.push({ term: 1, command: "extra" });
  assert.deepEqual(await built.load(), { term: 1, votedFor: 0, snapshot: null, log: entries("b") });
});

Deno.test("copy() is an independent persister holding the same state", sanitized, async () => {
  const original = await persisterWithLog();
  const copy = original.copy();
  assert.deepEqual(await copy.load(), await original.load());

  await original.save({ term: 3, votedFor: 2, log: { from: 2, entries: entries("late write") } });
  assert.deepEqual(await copy.load(), {
    term: 2,
    votedFor: 1,
    snapshot: null,
    log: entries("a", "b", "c"),
  }, "a crashed peer's late write must not reach its restart's copy");

  await copy.save({ term: 4, votedFor: null, log: { from: 4, entries: entries("d") } });
  assert.deepEqual(await commands(original), ["a", "late write"]);
  assert.equal(copy.saveCount, 1, "a copy counts its own saves");
});

// Regression: MemoryPersister once kept the command objects it was given, so a service mutating an
// applied command (the log's own object) changed the "saved" state. It now stores JSON text.
Deno.test({
  ...sanitized,
  name:
    "commands are copied too: an object command changed after save or load stays saved as it was",

  fn: async () => {
    const command = { value: 1 };
    const persister = new MemoryPersister();
    await persister.save({
      term: 1,
      votedFor: null,
      log: { from: 1, entries: [{ term: 1, command }] },
    });
    const copy = persister.copy();
    command.value = 2;
    ((await persister.load()).log[0]!.command as { value: number }).value = 3;
    assert.deepEqual(
      persister.state().log[0]!.command,
      { value: 1 },
      "the persister's own state",
    );
    assert.deepEqual(copy.state().log[0]!.command, { value: 1 }, "the copy's state");
  },
});

Deno.test(
  "stateSize() is the JSON length of term, vote and log, without the snapshot",
  sanitized,
  async () => {
    const persister = await persisterWithLog();
    const { term, votedFor, log } = await persister.load();
    assert.equal(persister.stateSize(), JSON.stringify({ term, votedFor, log }).length);
    assert.equal(new MemoryPersister().stateSize(), '{"term":0,"votedFor":null,"log":[]}'.length);
    assert.equal(persister.snapshotSize(), 0);

    // A snapshot through index 2 leaves entry 3 in the state, and its data counts apart.
    await persister.save({
      term: 2,
      votedFor: 1,
      snapshot: { index: 2, term: 1, data: new Uint8Array(1000) },
    });
    const afterSnapshot = { term: 2, votedFor: 1, log: entries("c") };
    assert.equal(persister.stateSize(), JSON.stringify(afterSnapshot).length);
    assert.equal(persister.snapshotSize(), 1000);
  },
);

Deno.test(
  "snapshot() is a deprecated alias of state(), on MemoryPersister and SimPersister",
  sanitized,
  async () => {
    const persister = await persisterWithLog();
    await persister.save({
      term: 3,
      votedFor: null,
      snapshot: { index: 1, term: 1, data: new Uint8Array([7]) },
    });
    const expected = {
      term: 3,
      votedFor: null,
      snapshot: { index: 1, term: 1, data: new Uint8Array([7]) },
      log: entries("b", "c"),
    };
    assert.deepEqual(persister.state(), expected);
    assert.deepEqual(persister.snapshot(), expected);
    const disk = new SimPersister({ clock: new VirtualClock(), random: () => 0, state: expected });
    assert.deepEqual(disk.state(), expected);
    assert.deepEqual(disk.snapshot(), expected);
  },
);
