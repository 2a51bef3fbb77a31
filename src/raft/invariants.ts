/**
 * Runtime invariants of the protocol. Each costs O(1) where it is checked; a broken one means a
 * bug (or a peer that breaks the protocol), and continuing could lose committed data, so the core
 * throws {@linkcode InvariantError} and its driver stops the peer for good.
 *
 * @module
 */

/** An invariant of the protocol does not hold: the peer must stop. */
export class InvariantError extends Error {
  /** The class name, for stack traces. */
  override name = "InvariantError";
}

/** Throws an {@linkcode InvariantError} with `message()` unless `condition` holds. */
export function invariant(condition: boolean, message: () => string): asserts condition {
  if (!condition) throw new InvariantError(message());
}
