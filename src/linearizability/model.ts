/**
 * The sequential specification histories are checked against: a register per key, which is
 * absent at first and then holds one value, with read, write, delete and compare-and-set.
 *
 * The checker searches over the register's states many times per operation, so the model works on
 * small integers: {@linkcode ValueTable} gives each distinct value of a key an id (0 is "absent"),
 * and {@linkcode step} is then a comparison or two. Equal states are equal numbers, and a state is
 * its own hash.
 *
 * @module
 */

import type { Operation, Value } from "./history.ts";

/** The state of an absent key. Every key starts absent. */
export const ABSENT = 0;

/** What {@linkcode step} returns when the operation cannot take effect in the given state. */
export const IMPOSSIBLE = -1;

/** Gives each distinct value of one key a small integer id; `null` (absent) is always 0. */
export class ValueTable {
  readonly #ids = new Map<string, number>();
  readonly #values: (Value | null)[] = [null];

  /** The id of `value`, made on first use. `"1"` and `1` get different ids; `0` and `-0` one. */
  id(value: Value | null): number {
    if (value === null) return ABSENT;
    const key = typeof value === "string" ? `s${value}` : `n${String(value)}`;
    let id = this.#ids.get(key);
    if (id === undefined) {
      id = this.#values.length;
      this.#ids.set(key, id);
      this.#values.push(value);
    }
    return id;
  }

  /** The value whose id is `id`; `null` for {@linkcode ABSENT}. */
  value(id: number): Value | null {
    const value = this.#values[id];
    if (value === undefined) throw new RangeError(`No value has id ${id}`);
    return value;
  }
}

/** An {@linkcode Operation} with its values replaced by ids from one key's {@linkcode ValueTable}. */
export interface RegisterOperation {
  kind: Operation["kind"];
  /** Whether the client learned the outcome. */
  known: boolean;
  /** For a write, the id of the value written; for a cas, the id of the value it sets. */
  value: number;
  /** For a cas, the id of the value it expects. */
  expected: number;
  /**
   * For a read, the id of the value read; for a cas, 1 if it swapped and 0 if not. -1 when the
   * outcome is unknown.
   */
  output: number;
}

/** Translates `operation` to the register's integer form, interning its values in `values`. */
export function toRegisterOperation(operation: Operation, values: ValueTable): RegisterOperation {
  const translated = { kind: operation.kind, known: operation.output !== undefined };
  switch (operation.kind) {
    case "read": {
      const output = operation.output === undefined ? -1 : values.id(operation.output);
      return { ...translated, value: ABSENT, expected: ABSENT, output };
    }
    case "write":
      return { ...translated, value: values.id(operation.input), expected: ABSENT, output: -1 };
    case "delete":
      return { ...translated, value: ABSENT, expected: ABSENT, output: -1 };
    case "cas": {
      const output = operation.output === undefined ? -1 : operation.output ? 1 : 0;
      const expected = values.id(operation.input.expected);
      return { ...translated, value: values.id(operation.input.new), expected, output };
    }
  }
}

/**
 * The register's transition: the state after `operation` takes effect in `state`, or
 * {@linkcode IMPOSSIBLE} when its recorded output rules that out (a read that returned another
 * value, a cas whose success or failure does not fit).
 *
 * A cas with an unknown outcome is allowed only where it swaps: where it would fail it changes
 * nothing and returns nothing anyone saw, which is the same as not taking effect at all.
 */
export function step(state: number, operation: RegisterOperation): number {
  switch (operation.kind) {
    case "read":
      return operation.output === -1 || operation.output === state ? state : IMPOSSIBLE;
    case "write":
      return operation.value;
    case "delete":
      return ABSENT;
    case "cas":
      if (operation.output === 0) return state === operation.expected ? IMPOSSIBLE : state;
      return state === operation.expected ? operation.value : IMPOSSIBLE;
  }
}

/** By when an operation takes effect, if it does: see {@linkcode effectDeadlines}. */
export interface EffectDeadline {
  /** It takes effect by this time, `Infinity` if at any time after its call. */
  by: number;
  /** Whether it may also not take effect at all. */
  optional: boolean;
}

/**
 * For each operation of one key, by when it takes effect, if it does, as far as the answer is
 * concerned; `null` when it can be left out of the search without changing the answer.
 *
 * An operation whose outcome is known takes effect by its return. One whose outcome is unknown
 * may take effect at any time after its call, or never; left pending to the end of the history
 * it makes the search try it before every later operation, and each such operation doubles the
 * configurations a failing search goes through. Two facts narrow that down:
 *
 * - Required: if a known operation observes a value v (a read that returned v, a cas expecting v
 *   that succeeded) and only this operation could have written v, it took effect, before that
 *   observer returned. It becomes an operation like the known ones, returning at the earliest
 *   such observer's return.
 * - Useless: say an unknown write of v takes effect in a valid order. Until the next operation
 *   that changes the key, the key holds v where it would otherwise hold its previous value p, and
 *   nothing in that stretch can tell, unless it observes v (as above, or an unknown cas expecting
 *   v), or it is a cas that failed because the key did not hold its expected value e, which v
 *   may have made true and p not (e is not v, and some operation writes e, or e is absent). So an
 *   unknown write, delete (v is absent) or cas (v is its new value) that takes effect after the
 *   last such observer could as well not take effect. It stays optional, but only until the
 *   latest return of an observer that may follow it, and is left out when none may follow it.
 *
 * A read with an unknown outcome observes nothing and is always left out.
 */
export function effectDeadlines(
  operations: readonly RegisterOperation[],
  calls: readonly number[],
  returns: readonly number[],
): (EffectDeadline | null)[] {
  // How many operations may write each value.
  const writers = new Map<number, number>();
  for (const operation of operations) {
    if (operation.kind === "write" || (operation.kind === "cas" && operation.output !== 0)) {
      writers.set(operation.value, (writers.get(operation.value) ?? 0) + 1);
    }
  }
  const writable = (value: number) => value === ABSENT || writers.has(value);
  // Which operations observe each value, and the failed cas, which observe all values but one.
  const knownObservers = new Map<number, number[]>();
  const observers = new Map<number, number[]>();
  const failedCas: number[] = [];
  const add = (map: Map<number, number[]>, value: number, index: number) => {
    const list = map.get(value);
    if (list === undefined) map.set(value, [index]);
    else list.push(index);
  };
  operations.forEach((operation, i) => {
    if (operation.kind === "read" && operation.known) {
      add(knownObservers, operation.output, i);
      add(observers, operation.output, i);
    } else if (operation.kind === "cas" && operation.output !== 0) {
      if (operation.known) add(knownObservers, operation.expected, i);
      add(observers, operation.expected, i);
    } else if (operation.kind === "cas" && writable(operation.expected)) {
      failedCas.push(i);
    }
  });
  return operations.map((operation, i) => {
    if (operation.known) return { by: returns[i]!, optional: false };
    if (operation.kind === "read") return null;
    const call = calls[i]!;
    const value = operation.value;
    const known = knownObservers.get(value) ?? [];
    // A known observer that returned before this call is a violation the search will find.
    if (
      value !== ABSENT && writers.get(value) === 1 && known.length > 0 &&
      known.every((o) => returns[o]! >= call)
    ) {
      return { by: Math.min(...known.map((o) => returns[o]!)), optional: false };
    }
    let last: number | null = null;
    const consider = (o: number) => {
      // An observer that returned before this call cannot come after it.
      if (o !== i && returns[o]! >= call && (last === null || returns[o]! > last)) {
        last = returns[o]!;
      }
    };
    for (const o of observers.get(value) ?? []) consider(o);
    for (const o of failedCas) if (operations[o]!.expected !== value) consider(o);
    return last === null ? null : { by: last, optional: true };
  });
}
