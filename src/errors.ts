/**
 * The error a peer stops with when it cannot go on safely.
 *
 * @module
 */

/** Why a peer stopped: a save failed, the service's apply failed, or a protocol invariant broke. */
export type FatalReason = "save" | "apply" | "invariant";

/**
 * A peer stopped for good because going on could lose or corrupt data: a save to its persister
 * failed, the service's apply callback threw, or one of the protocol's runtime invariants broke
 * (a bug, or a peer that breaks the protocol). The original error is the `cause`. The peer is
 * killed before this error is reported; restart it (on the same persister, once the cause is
 * fixed) to rejoin the cluster.
 *
 * @example
 * ```ts
 * import { FatalError } from "@denoraft/raft";
 * const error = new FatalError("save", "Raft peer 2 stops: save failed", { cause: new Error("disk full") });
 * console.log(error.reason, error.message);
 * ```
 */
export class FatalError extends Error {
  /** The class name, for stack traces. */
  override name = "FatalError";
  /** What failed. */
  readonly reason: FatalReason;

  /** An error for `reason`, with a message naming the peer, and the failure as `options.cause`. */
  constructor(reason: FatalReason, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.reason = reason;
  }
}
