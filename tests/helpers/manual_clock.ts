/**
 * Deterministic time and randomness for unit tests: a {@linkcode Clock} that moves only when a
 * test advances it, and a seeded random source.
 *
 * @module
 */

import type { CancelTimer, Clock, RandomSource } from "../../src/clock.ts";

interface Timer {
  at: number;
  /** Scheduling order: timers due at the same time fire in the order they were made. */
  seq: number;
  callback: () => void;
}

/**
 * A clock that stands still until {@linkcode ManualClock.advance} moves it. Timers fire in time
 * order, each with `now()` equal to its due time; a timer scheduled while advancing fires in the
 * same advance if it falls due within it.
 */
export class ManualClock implements Clock {
  #now: number;
  #seq = 0;
  readonly #timers = new Set<Timer>();

  /** Starts the clock at `start` ms. */
  constructor(start = 0) {
    this.#now = start;
  }

  /** The current manual time. */
  now(): number {
    return this.#now;
  }

  /** Schedules `callback` at `now() + max(0, delayMs)`; the returned function cancels it. */
  schedule(delayMs: number, callback: () => void): CancelTimer {
    const timer: Timer = { at: this.#now + Math.max(0, delayMs), seq: this.#seq++, callback };
    this.#timers.add(timer);
    return () => {
      this.#timers.delete(timer);
    };
  }

  /** Timers scheduled and neither fired nor cancelled. */
  get pendingTimers(): number {
    return this.#timers.size;
  }

  /** Due times of the pending timers, earliest first. */
  pendingDueTimes(): number[] {
    return [...this.#timers].sort(byDueTime).map((timer) => timer.at);
  }

  /** Moves time forward by `ms`, firing every timer that falls due, in time order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (let timer = this.#nextDue(target); timer !== null; timer = this.#nextDue(target)) {
      this.#fire(timer);
    }
    this.#now = target;
  }

  /**
   * Like {@linkcode advance}, but lets promise continuations run before and after each timer, so
   * that timers scheduled by async code (a reply arriving, then a delay) fire in the same advance.
   */
  async advanceAsync(ms: number): Promise<void> {
    const target = this.#now + ms;
    await settle();
    for (let timer = this.#nextDue(target); timer !== null; timer = this.#nextDue(target)) {
      this.#fire(timer);
      await settle();
    }
    this.#now = target;
    await settle();
  }

  #nextDue(target: number): Timer | null {
    let earliest: Timer | null = null;
    for (const timer of this.#timers) {
      if (timer.at <= target && (earliest === null || byDueTime(timer, earliest) < 0)) {
        earliest = timer;
      }
    }
    return earliest;
  }

  #fire(timer: Timer): void {
    this.#timers.delete(timer);
    this.#now = Math.max(this.#now, timer.at);
    timer.callback();
  }
}

function byDueTime(a: Timer, b: Timer): number {
  return a.at - b.at || a.seq - b.seq;
}

/**
 * Resolves once every promise continuation queued so far, and those they queue in turn, has run:
 * a zero-delay macrotask runs only after the microtask queue is empty.
 */
export function settle(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, 0));
}

/** A random source that returns `values` in turn, then repeats the last one. */
export function fixedRandom(...values: number[]): RandomSource {
  let next = 0;
  return () => values[Math.min(next++, values.length - 1)] ?? 0;
}
