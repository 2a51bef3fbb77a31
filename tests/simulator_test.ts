// The simulator's promises: same seed, same run; time advances only when nothing else can run;
// ties go in scheduling order; a crash keeps a prefix of the saves in flight.
import assert from "node:assert/strict";
import { lab4B } from "./lab/lab_tests.ts";
import { runLabTestSimulated } from "./lab/run.ts";
import { sleep } from "../src/clock.ts";
import {
  seededRandom,
  SimPersister,
  SimulationStalledError,
  Simulator,
  VirtualClock,
} from "../src/sim/mod.ts";
import { sanitized } from "./helpers/sanitized.ts";

const figure8Unreliable = lab4B.find((test) => test.name === "TestFigure8Unreliable4B")!;

Deno.test(
  "two runs of one seed give the same digest, and two seeds different ones",
  sanitized,
  async () => {
    const first = await runLabTestSimulated(figure8Unreliable, 5, { print: false });
    const again = await runLabTestSimulated(figure8Unreliable, 5, { print: false });
    const other = await runLabTestSimulated(figure8Unreliable, 6, { print: false });
    assert.ok(first.eventCount > 1000, `expected a long trace, got ${first.eventCount} events`);
    assert.deepEqual(again.digest, first.digest);
    assert.deepEqual(again.eventCount, first.eventCount);
    assert.deepEqual(again.clock.now(), first.clock.now());
    assert.notDeepEqual(other.digest, first.digest);
  },
);

Deno.test("seededRandom repeats per seed and stream, and differs across them", sanitized, () => {
  const draw = (seed: number, stream = 0) => {
    const random = seededRandom(seed, stream);
    return Array.from({ length: 8 }, () => random());
  };
  assert.deepEqual(draw(9), draw(9));
  assert.notDeepEqual(draw(9), draw(10));
  assert.notDeepEqual(draw(9), draw(9, 1));
  const values = draw(123456789);
  assert.ok(values.every((x) => x >= 0 && x < 1), `values out of [0, 1): ${values}`);
});

Deno.test(
  "the virtual clock fires by due time, then by scheduling order, and cancels",
  sanitized,
  () => {
    const clock = new VirtualClock();
    const fired: string[] = [];
    clock.schedule(20, () => fired.push("b@20"));
    clock.schedule(10, () => fired.push("a@10"));
    clock.schedule(20, () => fired.push("c@20"));
    const cancel = clock.schedule(15, () => fired.push("cancelled"));
    cancel();
    cancel();
    assert.deepEqual(clock.pendingCount, 3);
    while (clock.fireNext() !== null) fired.push(`now ${clock.now()}`);
    assert.deepEqual(fired, ["a@10", "now 10", "b@20", "now 20", "c@20", "now 20"]);
  },
);

Deno.test(
  "a simulated hour of sleeping takes no wall time, and time moves only when idle",
  sanitized,
  async () => {
    const sim = new Simulator({ seed: 1 });
    const started = performance.now();
    const seen = await sim.run(async () => {
      const times: number[] = [];
      for (let i = 0; i < 60; i++) {
        await sleep(sim.clock, 60_000);
        await Promise.resolve(); // microtasks run before time moves on
        times.push(sim.clock.now());
      }
      return times;
    });
    assert.deepEqual(seen.at(-1), 3_600_000);
    assert.deepEqual(seen[0], 60_000);
    assert.ok(performance.now() - started < 2_000, "an idle simulated hour should be fast");
  },
);

Deno.test("a run that waits for nothing pending stalls with a clear error", sanitized, async () => {
  const sim = new Simulator({ seed: 1 });
  await assert.rejects(() => sim.run(() => new Promise(() => {})), SimulationStalledError);
});

Deno.test(
  "a crash keeps a prefix of the saves in flight, and resolved saves always",
  sanitized,
  async () => {
    const outcomes = new Set<number>();
    for (let seed = 1; seed <= 40; seed++) {
      const sim = new Simulator({ seed });
      const term = await sim.run(async () => {
        const disk = new SimPersister({
          clock: sim.clock,
          random: sim.random,
          saveDelayMs: { min: 10, max: 30 },
        });
        await disk.save({ term: 1, votedFor: null });
        for (let term = 2; term <= 4; term++) disk.save({ term, votedFor: null });
        assert.deepEqual(disk.pendingSaveCount, 3);
        return disk.crash().term;
      });
      outcomes.add(term);
    }
    assert.deepEqual([...outcomes].sort(), [1, 2, 3, 4]);
  },
);

Deno.test(
  "timers that fire forever at one instant stall the run instead of hanging it",
  sanitized,
  async () => {
    const sim = new Simulator({ seed: 1 });
    const spin = () => {
      sim.clock.schedule(0, spin);
    };
    await assert.rejects(
      () =>
        sim.run(() => {
          spin();
          return new Promise(() => {});
        }, { maxTimersPerInstant: 1000 }),
      SimulationStalledError,
    );
  },
);
