/**
 * SimPersister: the shared snapshot rules (with saves that take real time, so that they overlap),
 * and what a crash keeps of saves in flight when some of them hold snapshots.
 */

import assert from "node:assert/strict";
import { isDeepStrictEqual } from "node:util";
import { SimPersister } from "../src/sim/sim_persister.ts";
import { Simulator } from "../src/sim/simulator.ts";
import { realClock } from "../src/clock.ts";
import type { PersistChange, PersistentState } from "../src/types.ts";
import {
  type ClosablePersister,
  membershipContract,
  ReferenceModel,
  snapshotContract,
  snapshotData,
} from "./helpers/persister_contract.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** What each place's last persister left; a reopen starts from it, as a restart does. */
const disks = new Map<string, PersistentState>();

/** A SimPersister on what the last one closed on `place` left, its saves taking 0-2 ms. */
function openSim(place: string): Promise<ClosablePersister> {
  let seed = place.length;
  const disk = new SimPersister({
    clock: realClock,
    random: () => (seed = (seed * 16807) % 2147483647) / 2147483647,
    ...(disks.has(place) ? { state: disks.get(place)! } : {}),
    saveDelayMs: { min: 0, max: 2 },
  });
  const inFlight = new Set<Promise<void>>();
  return Promise.resolve({
    load: () => disk.load(),
    save(change: PersistChange) {
      const saving = disk.save(change);
      inFlight.add(saving);
      saving.then(() => inFlight.delete(saving), () => inFlight.delete(saving));
      return saving;
    },
    async close() {
      await Promise.allSettled([...inFlight]);
      disks.set(place, disk.state());
    },
  });
}

snapshotContract("SimPersister", openSim);
membershipContract("SimPersister", openSim);

Deno.test(
  "SimPersister: a crash keeps a prefix of the saves in flight, snapshot saves included",
  sanitized,
  async () => {
    const log = (from: number, ...commands: string[]) => ({
      from,
      entries: commands.map((command) => ({ term: 1, command })),
    });
    const changes: PersistChange[] = [
      { term: 1, votedFor: 0, log: log(1, "a", "b", "c") },
      { term: 2, votedFor: 0, snapshot: { index: 2, term: 1, data: snapshotData(1, 100) } },
      { term: 3, votedFor: 1, log: log(4, "d") },
      {
        term: 4,
        votedFor: 1,
        snapshot: { index: 6, term: 1, data: snapshotData(2, 70_000) },
        log: log(7, "g"),
      },
      { term: 5, votedFor: null, log: log(8, "h") },
    ];
    // The states after each prefix of the saves in flight (the first save is resolved).
    const model = new ReferenceModel();
    const prefixes = changes.map((change) => {
      model.apply(change);
      return model.state();
    });
    const kept = new Set<number>();
    for (let seed = 1; seed <= 60; seed++) {
      const sim = new Simulator({ seed });
      const state = await sim.run(async () => {
        const disk = new SimPersister({
          clock: sim.clock,
          random: sim.random,
          saveDelayMs: { min: 10, max: 30 },
        });
        await disk.save(changes[0]!);
        for (const change of changes.slice(1)) disk.save(change);
        assert.equal(disk.pendingSaveCount, changes.length - 1);
        return disk.crash();
      });
      const prefix = prefixes.findIndex((expected) => isDeepStrictEqual(expected, state));
      assert.ok(prefix >= 0, `seed ${seed}: a state no prefix gives: ${JSON.stringify(state)}`);
      kept.add(prefix);
    }
    assert.deepEqual([...kept].sort(), [0, 1, 2, 3, 4], "every prefix shows up");
  },
);

Deno.test(
  "SimPersister: a save in flight holds its own copy of the snapshot's data",
  sanitized,
  async () => {
    const sim = new Simulator({ seed: 1 });
    const state = await sim.run(async () => {
      const disk = new SimPersister({
        clock: sim.clock,
        random: sim.random,
        saveDelayMs: { min: 5, max: 5 },
      });
      const data = new Uint8Array([1, 2, 3]);
      const saving = disk.save({ term: 1, votedFor: null, snapshot: { index: 0, term: 0, data } });
      data.fill(0);
      await saving;
      return disk.state();
    });
    assert.deepEqual(state.snapshot?.data, new Uint8Array([1, 2, 3]));
  },
);
