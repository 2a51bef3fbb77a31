/**
 * Time and randomness, injected everywhere so that a simulator can drive peers in virtual time.
 *
 * @module
 */

/** Cancels a timer made by {@linkcode Clock.schedule}; calling it twice is harmless. */
export type CancelTimer = () => void;

/** A source of time and one-shot timers. */
export interface Clock {
  /** Milliseconds since an arbitrary origin; never decreases. */
  now(): number;
  /** Calls `callback` once, `delayMs` from now; returns a function that cancels the call. */
  schedule(delayMs: number, callback: () => void): CancelTimer;
}

export { randomInt, type RandomSource } from "./raft/_random.ts";

/** The real clock: `performance.now()` and `setTimeout`. */
export const realClock: Clock = {
  now: () => performance.now(),
  schedule(delayMs: number, callback: () => void): CancelTimer {
    const id = setTimeout(callback, Math.max(0, delayMs));
    return () => clearTimeout(id);
  },
};

/** Resolves after `delayMs` on `clock`. */
export function sleep(clock: Clock, delayMs: number): Promise<void> {
  return new Promise((resolve) => clock.schedule(delayMs, resolve));
}
