/**
 * A log that an attacker cannot flood: lines beyond a small burst are counted instead of written,
 * and a summary says how many were left out.
 *
 * @module
 */

import type { Clock } from "../clock.ts";

/** Options for {@linkcode RateLimitedLog}. */
export interface RateLimitedLogOptions {
  /** Lines written at once before the limit applies. */
  burst: number;
  /** Lines allowed per second once the burst is spent. */
  linesPerSecond: number;
  /** Time source, for refilling. */
  clock: Clock;
}

/**
 * A token bucket in front of a log: up to `burst` lines at once, then `linesPerSecond`. A line
 * written after some were suppressed is preceded by one saying how many.
 */
export class RateLimitedLog {
  readonly #write: (line: string) => void;
  readonly #burst: number;
  readonly #linesPerSecond: number;
  readonly #clock: Clock;
  #tokens: number;
  #refilledAt: number;
  #suppressedSinceWrite = 0;
  #suppressed = 0;

  constructor(write: (line: string) => void, options: RateLimitedLogOptions) {
    this.#write = write;
    this.#burst = options.burst;
    this.#linesPerSecond = options.linesPerSecond;
    this.#clock = options.clock;
    this.#tokens = options.burst;
    this.#refilledAt = options.clock.now();
  }

  /** Lines left out so far. */
  get suppressed(): number {
    return this.#suppressed;
  }

  /** Writes `line`, or counts it if the limit is reached. */
  log(line: string): void {
    const now = this.#clock.now();
    this.#tokens = Math.min(
      this.#burst,
      this.#tokens + (now - this.#refilledAt) / 1000 * this.#linesPerSecond,
    );
    this.#refilledAt = now;
    if (this.#tokens < 1) {
      this.#suppressedSinceWrite++;
      this.#suppressed++;
      return;
    }
    this.#tokens--;
    if (this.#suppressedSinceWrite > 0) {
      this.#write(`(${this.#suppressedSinceWrite} similar lines left out: rate limit)`);
      this.#suppressedSinceWrite = 0;
    }
    this.#write(line);
  }
}
