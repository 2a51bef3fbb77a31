/**
 * `checkLinearizable`: whether a history of register operations could have happened on a single
 * copy of the data, each operation taking effect at one instant between its call and its return.
 *
 * @module
 */

import { explain } from "./_explain.ts";
import { search } from "./_search.ts";
import { type Operation, partitionByKey } from "./history.ts";
import { ABSENT, effectDeadlines, toRegisterOperation, ValueTable } from "./model.ts";

/** Options for {@linkcode checkLinearizable}. */
export interface CheckOptions {
  /**
   * Give up after this many milliseconds of searching and answer `ok: "unknown"`. Default
   * `Infinity`: the check runs to the end, because an answer of "unknown" is easy to mistake for
   * a pass. Set it in CI, where a history that is pathological for the search should fail the
   * run rather than hang it.
   */
  timeoutMs?: number;
}

/** The history is linearizable. */
export interface Linearizable {
  /** Always `true`. */
  ok: true;
}

/** The history is not linearizable: one key's operations admit no valid order. */
export interface LinearizabilityViolation {
  /** Always `false`. */
  ok: false;
  /** The key whose operations admit no valid order. */
  key: string;
  /**
   * Why, for a person: a sentence naming the operation that could not be placed and the ones
   * that rule it out (client, kind, input, output, call and return times), then the operations
   * overlapping it and the end of the longest valid order found.
   */
  explanation: string;
  /** The operation that could not be placed after the longest valid order found. */
  operation: Operation;
  /** The operations the explanation's first sentence names, `operation` first. */
  operations: Operation[];
  /** The key's operations whose call-to-return intervals overlap `operation`'s. */
  concurrent: Operation[];
  /**
   * The longest valid order found: operations of the key that can take effect one after another
   * in this order, each between its call and its return. `operation` cannot come next.
   */
  linearized: Operation[];
}

/** The search ran out of time; the history may or may not be linearizable. */
export interface CheckTimedOut {
  /** Always `"unknown"`. */
  ok: "unknown";
  /** Why there is no answer: the search reached {@linkcode CheckOptions.timeoutMs}. */
  reason: "timeout";
  /** The key being checked when time ran out; the keys before it in sorted order passed. */
  key: string;
}

/** The answer of {@linkcode checkLinearizable}. */
export type CheckResult = Linearizable | LinearizabilityViolation | CheckTimedOut;

/**
 * Checks that `history` is linearizable with respect to a register per key: that there is one
 * order of all its operations, consistent with real time (an operation that returned before
 * another was called comes first), in which every read returns the value of the latest write
 * before it, `null` after a delete or before any write, and every compare-and-set succeeds
 * exactly when the key holds its expected value.
 *
 * Keys are checked independently (linearizability is compositional), in sorted order; the first
 * key with a violation is reported. Operations with an unknown outcome (`output: undefined`,
 * `return: Infinity`) may take effect at any time after their call, or never; a read with an
 * unknown outcome constrains nothing and is ignored.
 *
 * The search is Wing and Gong's with Lowe's memoization. Its worst case is exponential in the
 * number of operations that overlap in time, so see {@linkcode CheckOptions.timeoutMs}.
 *
 * @param history The operations, in any order. Their objects are returned as they are in a
 *   violation.
 * @param options See {@linkcode CheckOptions}.
 * @returns `{ ok: true }`, a {@linkcode LinearizabilityViolation}, or `{ ok: "unknown" }` on a
 *   timeout.
 * @throws {TypeError} If an operation has a field of the wrong type.
 * @throws {RangeError} If an operation's times are invalid (NaN, a return before the call, a
 *   finite return with an unknown output) or `timeoutMs` is negative or NaN.
 *
 * @example
 * ```ts
 * import { checkLinearizable, type Operation } from "@denoraft/raft/linearizability";
 *
 * const history: Operation[] = [
 *   { client: 1, key: "x", kind: "write", input: "a", output: "ok", call: 0, return: 1 },
 *   { client: 1, key: "x", kind: "write", input: "b", output: "ok", call: 2, return: 3 },
 *   // Reads "a" although "b" replaced it before the read began: a stale read.
 *   { client: 2, key: "x", kind: "read", output: "a", call: 4, return: 5 },
 * ];
 * const result = checkLinearizable(history);
 * if (result.ok === false) console.log(result.explanation);
 * // On key "x", read by client 2 at [4.0, 5.0] returned "a", but write "b" by client 1 at
 * // [2.0, 3.0] completed before the read began, and no write of "a" could have come between
 * // them (the last one, write "a" by client 1 at [0.0, 1.0], completed before write "b" began).
 * // ...
 * ```
 */
export function checkLinearizable(
  history: readonly Operation[],
  options: CheckOptions = {},
): CheckResult {
  const timeoutMs = options.timeoutMs ?? Infinity;
  if (typeof timeoutMs !== "number" || Number.isNaN(timeoutMs) || timeoutMs < 0) {
    throw new RangeError(`The timeout must be a non-negative number of ms, got ${timeoutMs}`);
  }
  const giveUpAt = performance.now() + timeoutMs;
  const now = () => performance.now();
  for (const [key, all] of partitionByKey(history)) {
    const values = new ValueTable();
    const translated = all.map((operation) => toRegisterOperation(operation, values));
    const deadlines = effectDeadlines(
      translated,
      all.map((operation) => operation.call),
      all.map((operation) => operation.return),
    );
    const kept = all.flatMap((_, i) => (deadlines[i] === null ? [] : [i]));
    const operations = kept.map((i) => all[i]!);
    const outcome = search({
      calls: kept.map((i) => all[i]!.call),
      returns: kept.map((i) => deadlines[i]!.by),
      optional: kept.map((i) => deadlines[i]!.optional),
      operations: kept.map((i) => translated[i]!),
      initial: ABSENT,
      giveUpAt,
      now,
    });
    if (outcome.kind === "timeout") return { ok: "unknown", reason: "timeout", key };
    if (outcome.kind === "violation") {
      const explained = explain(
        key,
        all,
        outcome.order.map((id) => operations[id]!),
        operations[outcome.blocked]!,
        values.value(outcome.state),
      );
      return { ok: false, key, ...explained };
    }
  }
  return { ok: true };
}
