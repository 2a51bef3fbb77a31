/**
 * Random draws for the protocol (election timeouts), from an injected source.
 *
 * @module
 */

/** Uniform random numbers in [0, 1), like `Math.random`. */
export type RandomSource = () => number;

/** A uniform random integer in [low, high] drawn from `random`. */
export function randomInt(random: RandomSource, low: number, high: number): number {
  return low + Math.floor(random() * (high - low + 1));
}
