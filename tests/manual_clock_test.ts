/** The test helpers themselves: the manual clock fires timers as a real one would, in order. */

import assert from "node:assert/strict";
import { fixedRandom, ManualClock } from "./helpers/manual_clock.ts";

Deno.test("ManualClock fires due timers in time order, each at its own time", () => {
  const clock = new ManualClock(100);
  const fired: string[] = [];
  const at = (name: string) => () => fired.push(`${name}@${clock.now()}`);
  clock.schedule(30, at("c"));
  clock.schedule(10, at("a"));
  clock.schedule(10, at("b")); // same time: scheduling order
  const cancel = clock.schedule(20, at("cancelled"));
  clock.schedule(-5, at("negative delay"));
  assert.equal(clock.pendingTimers, 5);
  cancel();
  cancel();
  assert.equal(clock.pendingTimers, 4);

  clock.advance(10);
  assert.deepEqual(fired, ["negative delay@100", "a@110", "b@110"]);
  assert.equal(clock.now(), 110);
  clock.advance(100);
  assert.deepEqual(fired.slice(3), ["c@130"]);
  assert.equal(clock.now(), 210);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("ManualClock fires a timer scheduled during an advance if it falls due within it", () => {
  const clock = new ManualClock();
  const fired: number[] = [];
  clock.schedule(10, () => {
    fired.push(clock.now());
    clock.schedule(10, () => fired.push(clock.now()));
    clock.schedule(100, () => fired.push(clock.now()));
  });
  clock.advance(50);
  assert.deepEqual(fired, [10, 20]);
  assert.deepEqual(clock.pendingDueTimes(), [110]);
});

Deno.test("ManualClock.advanceAsync fires timers scheduled by promise continuations", async () => {
  const clock = new ManualClock();
  const fired: number[] = [];
  clock.schedule(5, () => {
    Promise.resolve().then(() => clock.schedule(5, () => fired.push(clock.now())));
  });
  await clock.advanceAsync(20);
  assert.deepEqual(fired, [10]);
  assert.equal(clock.now(), 20);
});

Deno.test("fixedRandom returns its values in turn, then repeats the last", () => {
  const random = fixedRandom(0.1, 0.2);
  assert.deepEqual([random(), random(), random()], [0.1, 0.2, 0.2]);
});
