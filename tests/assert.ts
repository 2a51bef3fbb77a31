/**
 * Assertions for the tests, on top of `node:assert` (the standard library's `@std/assert` is not
 * reachable here). Failures show what was expected and what was seen.
 */

import { deepStrictEqual, ok } from "node:assert/strict";

/** Throws with `message` unless `condition` holds. */
export function assert(condition: unknown, message?: string): asserts condition {
  ok(condition, message);
}

/** Throws, showing both values, unless `actual` deeply equals `expected`. */
export function assertEquals<T>(actual: unknown, expected: T, message?: string): void {
  deepStrictEqual(actual, expected, message);
}
