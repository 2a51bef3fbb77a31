/**
 * Bounds on what a peer accepts from outside (RPCs, `start()`, its own disk): how high a term may
 * be, and how deep and large a command may be. Values past them are refused where they enter,
 * before any of them reaches the protocol, so that one bad value cannot stop a peer for good.
 *
 * @module
 */

/**
 * Terms up to this (2^52) are accepted from any peer, whatever the receiver's own term. A cluster
 * that elected a leader every millisecond would need 140,000 years to get here, so no legitimate
 * term is ever refused.
 */
export const FREELY_ACCEPTED_TERM = 2 ** 52;

/**
 * A term above {@linkcode FREELY_ACCEPTED_TERM} is accepted only if it is at most this much
 * (2^20) above the receiver's own term. So one message cannot push a cluster near the end of the
 * safe integers, where `currentTerm + 1` stops being exact and no election could follow: past
 * 2^52 the term climbs by at most 2^20 per accepted message, and reaching
 * {@linkcode MAX_TERM} takes about 2^32 of them, each from a holder of the cluster's secret.
 */
export const MAX_TERM_STEP = 2 ** 20;

/**
 * No term above this (2^53 - 1 - 2^20) is valid anywhere, on the wire or on disk: a peer at this
 * term still has 2^20 elections before `term + 1` leaves the safe integers.
 */
export const MAX_TERM = Number.MAX_SAFE_INTEGER - MAX_TERM_STEP;

/**
 * Whether a term received from another peer may be adopted by a peer whose own term is
 * `currentTerm`: a non-negative safe integer, at most {@linkcode MAX_TERM}, and at most
 * {@linkcode FREELY_ACCEPTED_TERM} or within {@linkcode MAX_TERM_STEP} of `currentTerm`.
 */
export function isAcceptableTerm(term: unknown, currentTerm: number): term is number {
  return Number.isSafeInteger(term) && (term as number) >= 0 && (term as number) <= MAX_TERM &&
    (term as number) <= Math.max(FREELY_ACCEPTED_TERM, currentTerm + MAX_TERM_STEP);
}

/** The highest term a peer at `currentTerm` accepts, for error messages. */
export function highestAcceptableTerm(currentTerm: number): number {
  return Math.min(MAX_TERM, Math.max(FREELY_ACCEPTED_TERM, currentTerm + MAX_TERM_STEP));
}

/**
 * Default for `RaftOptions.maxCommandDepth`: 64 levels of arrays and objects. Services build
 * commands a few levels deep (the key/value example's are 1), while `structuredClone`, which
 * hands each command to the service, fails somewhere between 1,000 and 5,000 levels, and
 * `JSON.stringify` and recursive code in persisters have similar limits. 64 is far from both.
 */
export const DEFAULT_MAX_COMMAND_DEPTH = 64;

/**
 * Default for `RaftOptions.maxCommandBytes` when the persister gives no `maxCommandBytes` of its
 * own: 1 MiB of UTF-8 JSON. A quarter of the WebSocket transport's default frame limit, so that
 * the largest command still fits in one AppendEntries with room to spare.
 */
export const DEFAULT_MAX_COMMAND_BYTES = 1024 * 1024;

/** How deep and large a command may be. */
export interface CommandLimits {
  /** Most levels of nested arrays and objects; a scalar has depth 0, `[1]` depth 1. */
  maxCommandDepth: number;
  /** Most bytes of the command's JSON text, in UTF-8. */
  maxCommandBytes: number;
}

/** Bytes of the longest JSON text of a finite number, e.g. `-1.2345678901234567e-308`. */
const MAX_NUMBER_BYTES = 24;

/**
 * Checks that `value` is a JSON value (strings, finite numbers, booleans, null, arrays and plain
 * objects of them) within `limits`. Returns `null` when it is, or a sentence saying what is wrong.
 *
 * Walks the value without recursion, so a value nested far too deep costs no stack and is refused
 * at the first level past the limit. Sizes are bounded from both sides on the way (every UTF-16
 * unit of a string is 1 to 6 bytes of JSON); only a value whose bounds straddle the limit is
 * serialized to count its bytes exactly.
 */
export function checkCommand(value: unknown, limits: CommandLimits): string | null {
  const { maxCommandDepth, maxCommandBytes } = limits;
  let lowest = 0;
  let highest = 0;
  const stack: { value: unknown; depth: number }[] = [{ value, depth: 0 }];
  while (stack.length > 0) {
    const { value: node, depth } = stack.pop()!;
    switch (typeof node) {
      case "string":
        lowest += node.length + 2;
        highest += node.length * 6 + 2;
        break;
      case "number":
        if (!Number.isFinite(node)) return `Command holds the number ${node}, which JSON cannot`;
        lowest += 1;
        highest += MAX_NUMBER_BYTES;
        break;
      case "boolean":
        lowest += 4;
        highest += 5;
        break;
      case "object": {
        if (node === null) {
          lowest += 4;
          highest += 4;
          break;
        }
        if (depth >= maxCommandDepth) {
          return `Command is nested more than ${maxCommandDepth} levels deep`;
        }
        if (Array.isArray(node)) {
          // Brackets and commas; an empty array is "[]".
          lowest += Math.max(2, node.length + 1);
          highest += Math.max(2, node.length + 1);
          for (let i = 0; i < node.length; i++) stack.push({ value: node[i], depth: depth + 1 });
          break;
        }
        const prototype = Object.getPrototypeOf(node);
        if (prototype !== Object.prototype && prototype !== null) {
          return `Command holds a ${describeKind(node)}, which is not a JSON value`;
        }
        const keys = Object.keys(node);
        lowest += Math.max(2, keys.length + 1);
        highest += Math.max(2, keys.length + 1);
        for (const key of keys) {
          // The key's quotes and its colon.
          lowest += key.length + 3;
          highest += key.length * 6 + 3;
          stack.push({ value: (node as Record<string, unknown>)[key], depth: depth + 1 });
        }
        break;
      }
      default:
        return `Command holds a ${typeof node}, which is not a JSON value`;
    }
    if (lowest > maxCommandBytes) {
      return `Command is more than ${maxCommandBytes} bytes of JSON`;
    }
  }
  if (highest <= maxCommandBytes) return null;
  const bytes = new TextEncoder().encode(JSON.stringify(value)).length;
  if (bytes > maxCommandBytes) {
    return `Command is ${bytes} bytes of JSON, more than the limit of ${maxCommandBytes}`;
  }
  return null;
}

/**
 * A first look at a caller's value before it is serialized: a sentence if it is surely nested
 * more than `maxCommandDepth` deep or larger than `maxCommandBytes`, counting any object, else
 * `null`. Stops at the first level past the depth limit, and after `maxCommandBytes` values
 * (each is at least one byte of JSON), so a value nested a million deep, or one whose shared
 * parts would serialize to gigabytes, costs no more than a value at the limits. A path that deep
 * through a cycle does not count: serializing reports the cycle better.
 */
export function precheckCommand(value: unknown, limits: CommandLimits): string | null {
  interface Visit {
    value: unknown;
    depth: number;
    parent: Visit | undefined;
  }
  const { maxCommandDepth, maxCommandBytes } = limits;
  const stack: Visit[] = [{ value, depth: 0, parent: undefined }];
  let visited = 0;
  while (stack.length > 0) {
    const visit = stack.pop()!;
    if (++visited > maxCommandBytes) return `Command is more than ${maxCommandBytes} bytes of JSON`;
    const node = visit.value;
    if (typeof node !== "object" || node === null) continue;
    if (visit.depth >= maxCommandDepth) {
      const path = new Set<unknown>();
      for (let step: Visit | undefined = visit; step !== undefined; step = step.parent) {
        if (path.has(step.value)) return null;
        path.add(step.value);
      }
      return `Command is nested more than ${maxCommandDepth} levels deep`;
    }
    for (const child of Array.isArray(node) ? node : Object.values(node)) {
      stack.push({ value: child, depth: visit.depth + 1, parent: visit });
    }
  }
  return null;
}

function describeKind(value: object): string {
  const name = (value as { constructor?: { name?: unknown } }).constructor?.name;
  return typeof name === "string" && name !== "" ? name : "non-plain object";
}
