/**
 * A fixed-size set of small integers (operation ids) in a `Uint32Array`, as the search's
 * "linearized so far" set and the cache's keys.
 *
 * @module
 */

/** A set of the integers 0 to size - 1. */
export class Bitset {
  /** The set's bits: integer i is bit i % 32 of word i / 32. */
  readonly words: Uint32Array;

  constructor(size: number) {
    this.words = new Uint32Array((size + 31) >>> 5);
  }

  /** Adds `index`. */
  add(index: number): void {
    this.words[index >>> 5]! |= 1 << (index & 31);
  }

  /** Removes `index`. */
  delete(index: number): void {
    this.words[index >>> 5]! &= ~(1 << (index & 31));
  }

  /** Whether the set holds exactly the integers whose bits are set in `words`. */
  equals(words: Uint32Array): boolean {
    const own = this.words;
    for (let i = 0; i < own.length; i++) if (own[i] !== words[i]) return false;
    return true;
  }

  /** A copy of the bits, for a cache key that must not change as the set does. */
  snapshot(): Uint32Array {
    return this.words.slice();
  }
}
