/**
 * A small seeded pseudo-random generator, so that one number fixes every random draw of a run.
 *
 * @module
 */

import type { RandomSource } from "../clock.ts";

/**
 * Returns a {@linkcode RandomSource} that draws from xoshiro128** seeded with `seed` (any safe
 * integer; its state is expanded with splitmix32). Two sources made with the same seed and
 * `stream` give the same sequence; a different `stream` gives an independent one, so that, for
 * example, a fault schedule stays the same when the code under test draws more or fewer numbers.
 *
 * @param seed Any safe integer.
 * @param stream Selects an independent sequence for the same seed. Default 0.
 * @throws {RangeError} If `seed` or `stream` is not a safe integer.
 *
 * @example
 * ```ts
 * import { seededRandom } from "@denoraft/raft";
 * const a = seededRandom(42);
 * const b = seededRandom(42);
 * console.log(a() === b()); // true
 * ```
 */
export function seededRandom(seed: number, stream = 0): RandomSource {
  if (!Number.isSafeInteger(seed)) throw new RangeError(`Seed must be a safe integer, got ${seed}`);
  if (!Number.isSafeInteger(stream)) {
    throw new RangeError(`Stream must be a safe integer, got ${stream}`);
  }
  // splitmix32 over the seed's two 32-bit halves and the stream fills the 128-bit state.
  let mix = (seed >>> 0) ^ Math.imul(Math.floor(seed / 2 ** 32) | 0, 0x9e3779b9) ^
    Math.imul(stream | 0, 0x85ebca6b);
  const splitmix = (): number => {
    mix = (mix + 0x9e3779b9) | 0;
    let z = mix;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    return (z ^ (z >>> 15)) >>> 0;
  };
  let a = splitmix();
  let b = splitmix();
  let c = splitmix();
  let d = splitmix();
  if ((a | b | c | d) === 0) a = 1; // the all-zero state is the one xoshiro cannot leave
  return () => {
    // xoshiro128** (Blackman and Vigna), one 32-bit output scaled to [0, 1).
    const result = Math.imul(rotateLeft(Math.imul(b, 5), 7), 9) >>> 0;
    const t = b << 9;
    c ^= a;
    d ^= b;
    b ^= c;
    a ^= d;
    c ^= t;
    d = rotateLeft(d, 11);
    return result / 2 ** 32;
  };
}

function rotateLeft(x: number, k: number): number {
  return (x << k) | (x >>> (32 - k));
}
