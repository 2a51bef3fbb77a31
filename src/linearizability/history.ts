/**
 * What a history is: the operations clients invoked on a key/value register, each with the time
 * it was called, the time it returned and what it returned; and the checks that turn a history
 * given by a caller into one the checker can trust.
 *
 * @module
 */

/** A value a register can hold: a JSON string or a finite number. `"1"` and `1` differ. */
export type Value = string | number;

/** Who invoked an operation: a client id, a process number, a connection name. */
export type ClientId = number | string;

/** The four operations of the register model. */
export type OperationKind = "read" | "write" | "delete" | "cas";

/** The input of a compare-and-set: set the key to `new` if it holds `expected`. */
export interface CasInput {
  /** The value the key must hold for the swap to happen; `null` means "the key is absent". */
  expected: Value | null;
  /** The value to set. */
  new: Value;
}

/**
 * The fields every operation has.
 *
 * Times are in any unit, from any origin, as long as all clients of one history share the clock:
 * one operation is known to precede another only when it returned strictly before the other was
 * called. An operation whose outcome the client never learned (a timeout, a dropped connection)
 * has `output: undefined` and `return: Infinity`: it may take effect at any time after its call,
 * or never.
 */
export interface OperationBase {
  /** Who invoked the operation; used only in explanations. */
  client: ClientId;
  /** The key the operation acts on. Keys are checked independently of one another. */
  key: string;
  /** When the client sent the operation. A finite number. */
  call: number;
  /** When the client received its outcome, at or after `call`; `Infinity` when it never did. */
  return: number;
}

/** A read: returns the key's value, or `null` when the key is absent. */
export interface ReadOperation extends OperationBase {
  /** A read. */
  kind: "read";
  /** Reads take no input. */
  input?: null | undefined;
  /** The value read, `null` for an absent key, or `undefined` when the outcome is unknown. */
  output: Value | null | undefined;
}

/** A write: sets the key to `input`. */
export interface WriteOperation extends OperationBase {
  /** A write. */
  kind: "write";
  /** The value written. */
  input: Value;
  /** `"ok"` once acknowledged, `undefined` when the outcome is unknown. */
  output: "ok" | undefined;
}

/** A delete: makes the key absent. */
export interface DeleteOperation extends OperationBase {
  /** A delete. */
  kind: "delete";
  /** Deletes take no input. */
  input?: null | undefined;
  /** `"ok"` once acknowledged, `undefined` when the outcome is unknown. */
  output: "ok" | undefined;
}

/** A compare-and-set: sets the key to `input.new` if it holds `input.expected`. */
export interface CasOperation extends OperationBase {
  /** A compare-and-set. */
  kind: "cas";
  /** What to compare and what to set. */
  input: CasInput;
  /** Whether the swap happened, or `undefined` when the outcome is unknown. */
  output: boolean | undefined;
}

/**
 * One operation of a history: a read, write, delete or compare-and-set of one key, with its call
 * and return times and its output.
 *
 * @example
 * ```ts
 * import type { Operation } from "@denoraft/raft/linearizability";
 * const history: Operation[] = [
 *   { client: 1, key: "x", kind: "write", input: "a", output: "ok", call: 0, return: 2 },
 *   { client: 2, key: "x", kind: "read", output: "a", call: 1, return: 3 },
 *   // Client 3 timed out: its write may or may not have taken effect.
 *   { client: 3, key: "x", kind: "write", input: "b", output: undefined, call: 4, return: Infinity },
 *   { client: 1, key: "x", kind: "cas", input: { expected: "a", new: "c" }, output: true, call: 5, return: 6 },
 *   { client: 2, key: "x", kind: "delete", output: "ok", call: 7, return: 8 },
 * ];
 * ```
 */
export type Operation = ReadOperation | WriteOperation | DeleteOperation | CasOperation;

const kinds: ReadonlySet<string> = new Set(["read", "write", "delete", "cas"]);

/** Quotes a value given by a caller for an error message. */
function quote(value: unknown): string {
  if (typeof value === "number" || typeof value === "bigint") return String(value);
  if (value === undefined) return "undefined";
  if (typeof value === "function") return "a function";
  try {
    return JSON.stringify(value) ?? String(value);
  } catch {
    return String(value);
  }
}

function isValue(value: unknown): value is Value {
  return typeof value === "string" || (typeof value === "number" && Number.isFinite(value));
}

/**
 * Throws unless `operation` (element `index` of a history) is a well-formed {@linkcode Operation}:
 * a `TypeError` for a field of the wrong type, a `RangeError` for a value out of range.
 */
export function validateOperation(
  operation: unknown,
  index: number,
): asserts operation is Operation {
  const at = `Operation ${index} of the history`;
  if (typeof operation !== "object" || operation === null || Array.isArray(operation)) {
    throw new TypeError(`${at} must be an object, got ${quote(operation)}`);
  }
  const op = operation as Record<string, unknown>;
  const client = op.client;
  if (typeof client !== "string" && typeof client !== "number") {
    throw new TypeError(`${at} has client ${quote(client)}; a client is a number or a string`);
  }
  if (typeof op.key !== "string") {
    throw new TypeError(`${at} has key ${quote(op.key)}; a key is a string`);
  }
  const kind = op.kind;
  if (typeof kind !== "string" || !kinds.has(kind)) {
    throw new TypeError(
      `${at} has kind ${quote(kind)}; the kinds are "read", "write", "delete" and "cas"`,
    );
  }
  const { call, return: returned, input, output } = op;
  if (typeof call !== "number" || !Number.isFinite(call)) {
    throw new RangeError(`${at} has call time ${quote(call)}; it must be a finite number`);
  }
  if (typeof returned !== "number" || Number.isNaN(returned)) {
    throw new RangeError(
      `${at} has return time ${quote(returned)}; it must be a number, Infinity when unknown`,
    );
  }
  if (returned < call) {
    throw new RangeError(`${at} returns at ${returned}, before its call at ${call}`);
  }
  if (output === undefined && returned !== Infinity) {
    throw new RangeError(
      `${at} has no output but returns at ${returned}; an operation whose outcome is unknown ` +
        `returns at Infinity`,
    );
  }
  if (output !== undefined && returned === Infinity) {
    throw new RangeError(
      `${at} returns at Infinity but has output ${quote(output)}; an operation that never ` +
        `returned has output undefined`,
    );
  }
  switch (kind) {
    case "read":
      if (input !== undefined && input !== null) {
        throw new TypeError(`${at} is a read with input ${quote(input)}; a read takes no input`);
      }
      if (output !== undefined && output !== null && !isValue(output)) {
        throw new TypeError(
          `${at} is a read with output ${quote(output)}; a read returns a string, a finite ` +
            `number, or null for an absent key`,
        );
      }
      break;
    case "write":
      if (!isValue(input)) {
        throw new TypeError(
          `${at} is a write of ${quote(input)}; a write sets a string or a finite number`,
        );
      }
      if (output !== undefined && output !== "ok") {
        throw new TypeError(
          `${at} is a write with output ${quote(output)}; a write returns "ok", or undefined ` +
            `when unknown`,
        );
      }
      break;
    case "delete":
      if (input !== undefined && input !== null) {
        throw new TypeError(
          `${at} is a delete with input ${quote(input)}; a delete takes no input`,
        );
      }
      if (output !== undefined && output !== "ok") {
        throw new TypeError(
          `${at} is a delete with output ${quote(output)}; a delete returns "ok", or undefined ` +
            `when unknown`,
        );
      }
      break;
    case "cas": {
      const cas = input as Record<string, unknown> | null;
      if (
        typeof cas !== "object" || cas === null ||
        !(cas.expected === null || isValue(cas.expected)) ||
        !isValue(cas.new)
      ) {
        throw new TypeError(
          `${at} is a cas with input ${quote(input)}; a cas takes { expected, new }, where ` +
            `expected is a value or null and new is a string or a finite number`,
        );
      }
      if (output !== undefined && typeof output !== "boolean") {
        throw new TypeError(
          `${at} is a cas with output ${quote(output)}; a cas returns true or false, or ` +
            `undefined when unknown`,
        );
      }
      break;
    }
  }
}

/**
 * Checks every operation of `history` (see {@linkcode validateOperation}) and groups them by key,
 * keys in sorted order, each key's operations in history order.
 */
export function partitionByKey(history: readonly unknown[]): Map<string, Operation[]> {
  if (!Array.isArray(history)) {
    throw new TypeError(`A history must be an array of operations, got ${quote(history)}`);
  }
  const byKey = new Map<string, Operation[]>();
  history.forEach((operation: unknown, index) => {
    validateOperation(operation, index);
    const list = byKey.get(operation.key);
    if (list === undefined) byKey.set(operation.key, [operation]);
    else list.push(operation);
  });
  return new Map([...byKey].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)));
}
