/**
 * A clock whose time moves only when told to: the simulator fires its timers one by one, in order
 * of due time and, for equal times, in the order they were scheduled.
 *
 * @module
 */

import type { CancelTimer, Clock } from "../clock.ts";

interface Timer {
  at: number;
  /** Scheduling order: breaks ties between timers due at the same time. */
  sequence: number;
  callback: (() => void) | null;
}

/** What {@linkcode VirtualClock.fireNext} fired. */
export interface FiredTimer {
  /** The virtual time the timer was due, now the clock's time. */
  at: number;
  /** The timer's scheduling number: the n-th timer ever scheduled on this clock has n. */
  sequence: number;
}

/**
 * A {@linkcode Clock} in virtual time. `now()` starts at 0 and changes only in
 * {@linkcode VirtualClock.fireNext}, which jumps to the earliest pending timer and calls it.
 *
 * @example
 * ```ts
 * import { VirtualClock } from "@denoraft/raft";
 * const clock = new VirtualClock();
 * clock.schedule(60_000, () => console.log("a minute later:", clock.now()));
 * clock.fireNext(); // prints "a minute later: 60000" at once
 * ```
 */
export class VirtualClock implements Clock {
  #now = 0;
  #scheduled = 0;
  #live = 0;
  /** A binary min-heap on (at, sequence); cancelled timers stay until they reach the top. */
  readonly #heap: Timer[] = [];

  /** The current virtual time in ms. */
  now(): number {
    return this.#now;
  }

  /** Calls `callback` when virtual time reaches now + `delayMs` (a negative or NaN delay is 0). */
  schedule(delayMs: number, callback: () => void): CancelTimer {
    const delay = delayMs > 0 ? delayMs : 0;
    const timer: Timer = { at: this.#now + delay, sequence: ++this.#scheduled, callback };
    this.#push(timer);
    this.#live++;
    return () => {
      if (timer.callback === null) return;
      timer.callback = null;
      this.#live--;
    };
  }

  /** How many timers are pending (scheduled, not yet fired, not cancelled). */
  get pendingCount(): number {
    return this.#live;
  }

  /** The due time of the earliest pending timer, or `undefined` when none is pending. */
  nextAt(): number | undefined {
    this.#dropCancelled();
    return this.#heap[0]?.at;
  }

  /**
   * Moves time to the earliest pending timer and calls it. Returns what fired, or `null` (and
   * leaves time alone) when no timer is pending.
   */
  fireNext(): FiredTimer | null {
    this.#dropCancelled();
    const timer = this.#pop();
    if (timer === undefined) return null;
    const callback = timer.callback!;
    timer.callback = null;
    this.#live--;
    this.#now = timer.at;
    callback();
    return { at: timer.at, sequence: timer.sequence };
  }

  #dropCancelled(): void {
    while (this.#heap.length > 0 && this.#heap[0]!.callback === null) this.#pop();
  }

  #push(timer: Timer): void {
    const heap = this.#heap;
    heap.push(timer);
    let i = heap.length - 1;
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (!earlier(timer, heap[parent]!)) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = timer;
  }

  #pop(): Timer | undefined {
    const heap = this.#heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= heap.length) break;
      const right = left + 1;
      const child = right < heap.length && earlier(heap[right]!, heap[left]!) ? right : left;
      if (!earlier(heap[child]!, last)) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}

function earlier(a: Timer, b: Timer): boolean {
  return a.at < b.at || (a.at === b.at && a.sequence < b.sequence);
}
