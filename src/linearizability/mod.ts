/**
 * A linearizability checker for key/value histories: record what your clients did, with
 * {@linkcode HistoryRecorder} or by hand, and {@linkcode checkLinearizable} tells whether it
 * could have happened on one copy of the data, or explains which operation could not.
 *
 * Each key is a register (read, write, delete, compare-and-set). The search is Wing and Gong's
 * with Lowe's memoization, as in Knossos and Porcupine; operations whose outcome a client never
 * learned may take effect at any time after their call, or never. See docs/linearizability.md.
 *
 * @example
 * ```ts
 * import { checkLinearizable, type Operation } from "@denoraft/raft/linearizability";
 *
 * const history: Operation[] = [
 *   { client: 1, key: "x", kind: "write", input: "a", output: "ok", call: 0, return: 10 },
 *   { client: 2, key: "x", kind: "read", output: null, call: 1, return: 2 },
 *   { client: 2, key: "x", kind: "read", output: "a", call: 3, return: 4 },
 *   { client: 3, key: "x", kind: "read", output: null, call: 5, return: 6 },
 * ];
 * const result = checkLinearizable(history);
 * console.log(result.ok); // false: once client 2 saw "a", client 3 cannot see the key absent
 * ```
 *
 * @module
 */

export {
  checkLinearizable,
  type CheckOptions,
  type CheckResult,
  type CheckTimedOut,
  type LinearizabilityViolation,
  type Linearizable,
} from "./checker.ts";
export type {
  CasInput,
  CasOperation,
  ClientId,
  DeleteOperation,
  Operation,
  OperationBase,
  OperationKind,
  ReadOperation,
  Value,
  WriteOperation,
} from "./history.ts";
export { HistoryRecorder, type HistoryRecorderOptions, type PendingOperation } from "./recorder.ts";
