/**
 * The search at the heart of the checker: Wing and Gong's algorithm for one key, with Lowe's
 * memoization of the configurations already explored.
 *
 * Every operation becomes two entries, its call and its return, in one doubly linked list in time
 * order. A sequential order consistent with real time is built front to back: any operation whose
 * call comes before the first return left in the list may go next, since nothing still in the
 * list has finished before it began. Going next means applying it to the model, then lifting its
 * call and return out of the list. When the walk reaches a return instead, the operation that
 * returned there can no longer be placed, and the search backtracks: it puts back the last lifted
 * operation and tries the entry after it. (J. M. Wing and C. Gong, "Testing and verifying
 * concurrent objects", JPDC 17(1), 1993.)
 *
 * Two different orders of the same set of operations often lead to the same model state, and from
 * there the rest of the search is the same. Lowe's refinement records each (set of lifted
 * operations, model state) configuration once it is entered, and never enters it again. (G. Lowe,
 * "Testing for linearizability", Concurrency and Computation 29(4), 2017.) The set is a
 * {@linkcode Bitset}; its hash is kept up to date in O(1) per lift by XOR-ing a fixed random
 * 32-bit number per operation in and out (Zobrist hashing).
 *
 * An operation whose outcome is unknown is optional: it may take effect or not. Its return entry
 * sits at the last time it can matter (see `effectDeadlines` in model.ts), +Infinity at the most.
 * When the walk reaches that entry, every way of placing it has been tried, and the one choice
 * left is to leave it out: the walk lifts it without applying it, as one more step to undo when
 * backtracking. A return at +Infinity sits after every other; reaching one means every operation
 * that did return has been placed, and the rest may simply not have taken effect: the history is
 * linearizable.
 *
 * @module
 */

import { Bitset } from "./_bitset.ts";
import { IMPOSSIBLE, type RegisterOperation, step } from "./model.ts";

/** One key's operations, each given by its id: the index into every array. */
export interface SearchInput {
  /** Call times. */
  calls: readonly number[];
  /**
   * Return times; for an optional operation, the last time it can matter, `Infinity` at most.
   */
  returns: readonly number[];
  /** Which operations may be left out: some of those whose outcome is unknown. */
  optional: readonly boolean[];
  /** The operations in the model's form. */
  operations: readonly RegisterOperation[];
  /** The model's initial state. */
  initial: number;
  /** Give up when `now()` passes this. */
  giveUpAt: number;
  /** The clock `giveUpAt` is on. */
  now: () => number;
}

/** The outcome of {@linkcode search}. */
export type SearchOutcome =
  | { kind: "linearizable" }
  | {
    kind: "violation";
    /**
     * The longest order of operations found to be valid, as ids in order; optional operations
     * left out are not in it.
     */
    order: number[];
    /** The operation whose return ended that order: it could not be placed after it. */
    blocked: number;
    /** The model's state after `order`. */
    state: number;
  }
  | { kind: "timeout" };

interface Entry {
  /** The operation's id; -1 for the list's head. */
  id: number;
  isCall: boolean;
  time: number;
  /** A call's return entry. */
  match: Entry | null;
  prev: Entry | null;
  next: Entry | null;
}

/** How many steps of the search run between two looks at the clock. */
const STEPS_PER_CLOCK_READ = 1024;

/** Searches for an order of `input`'s operations that is valid for the model and real time. */
export function search(input: SearchInput): SearchOutcome {
  const count = input.calls.length;
  const { head, callEntries } = buildList(input.calls, input.returns);
  const zobrist = zobristNumbers(count);
  const handled = new Bitset(count);
  let handledHash = 0;
  const seen = new ConfigurationCache();
  // One step per handled operation: its call entry, the state before it, and whether it was
  // left out rather than applied.
  const stepEntries: Entry[] = [];
  const stepStates: number[] = [];
  const stepLeftOut: boolean[] = [];
  let state = input.initial;
  let entry = head.next;
  let deepest: { depth: number; order: number[]; blocked: number; state: number } | null = null;
  let steps = 0;

  /** Marks `call`'s operation handled, leading to `next`; false if that was tried before. */
  const tryStep = (call: Entry, next: number, leftOut: boolean): boolean => {
    handled.add(call.id);
    handledHash ^= zobrist[call.id]!;
    if (!seen.add(handled, handledHash, next)) {
      handled.delete(call.id);
      handledHash ^= zobrist[call.id]!;
      return false;
    }
    stepEntries.push(call);
    stepStates.push(state);
    stepLeftOut.push(leftOut);
    state = next;
    lift(call);
    return true;
  };

  while (entry !== null) {
    if (
      input.giveUpAt !== Infinity && ++steps % STEPS_PER_CLOCK_READ === 0 &&
      input.now() > input.giveUpAt
    ) {
      return { kind: "timeout" };
    }
    if (entry.isCall) {
      const next = step(state, input.operations[entry.id]!);
      if (next !== IMPOSSIBLE && tryStep(entry, next, false)) entry = head.next;
      else entry = entry.next;
      continue;
    }
    // A return: the operation it ends must have been placed by now, and was not.
    if (entry.time === Infinity) return { kind: "linearizable" };
    if (input.optional[entry.id] && tryStep(callEntries[entry.id]!, state, true)) {
      entry = head.next;
      continue;
    }
    if (deepest === null || stepEntries.length > deepest.depth) {
      const order = stepEntries.filter((_, i) => !stepLeftOut[i]).map((placed) => placed.id);
      deepest = { depth: stepEntries.length, order, blocked: entry.id, state };
    }
    // Backtrack: undo the last placement and try the entry after it. Leaving an operation out
    // was the last choice where it was made, so undoing that backtracks further.
    while (true) {
      const undone = stepEntries.pop();
      if (undone === undefined) {
        return {
          kind: "violation",
          order: deepest.order,
          blocked: deepest.blocked,
          state: deepest.state,
        };
      }
      const leftOut = stepLeftOut.pop()!;
      state = stepStates.pop()!;
      handled.delete(undone.id);
      handledHash ^= zobrist[undone.id]!;
      unlift(undone);
      if (!leftOut) {
        entry = undone.next;
        break;
      }
    }
  }
  // The list is empty: every operation has been handled.
  return { kind: "linearizable" };
}

/**
 * The list of calls and returns in time order, behind a head entry, and the call entries by id.
 * At equal times calls come first: two operations are ordered only if one returned strictly
 * before the other was called.
 */
function buildList(
  calls: readonly number[],
  returns: readonly number[],
): { head: Entry; callEntries: Entry[] } {
  const entries: Entry[] = [];
  const callEntries: Entry[] = [];
  for (let id = 0; id < calls.length; id++) {
    const returned: Entry = {
      id,
      isCall: false,
      time: returns[id]!,
      match: null,
      prev: null,
      next: null,
    };
    const call: Entry = {
      id,
      isCall: true,
      time: calls[id]!,
      match: returned,
      prev: null,
      next: null,
    };
    callEntries.push(call);
    entries.push(call, returned);
  }
  entries.sort((a, b) =>
    a.time !== b.time
      ? (a.time < b.time ? -1 : 1)
      : a.isCall !== b.isCall
      ? (a.isCall ? -1 : 1)
      : a.id - b.id
  );
  const head: Entry = {
    id: -1,
    isCall: false,
    time: -Infinity,
    match: null,
    prev: null,
    next: null,
  };
  let last = head;
  for (const entry of entries) {
    entry.prev = last;
    last.next = entry;
    last = entry;
  }
  return { head, callEntries };
}

/** Takes a call entry and its return out of the list. A call always has a successor. */
function lift(call: Entry): void {
  call.prev!.next = call.next;
  call.next!.prev = call.prev;
  const returned = call.match!;
  returned.prev!.next = returned.next;
  if (returned.next !== null) returned.next.prev = returned.prev;
}

/** Undoes {@linkcode lift}: the entries still know their neighbours. */
function unlift(call: Entry): void {
  const returned = call.match!;
  returned.prev!.next = returned;
  if (returned.next !== null) returned.next.prev = returned;
  call.prev!.next = call;
  call.next!.prev = call;
}

/** One fixed pseudo-random 32-bit number per operation id (splitmix32), the same every run. */
function zobristNumbers(count: number): Int32Array {
  const numbers = new Int32Array(count);
  let seed = 0x2545f491;
  for (let i = 0; i < count; i++) {
    seed = (seed + 0x9e3779b9) | 0;
    let z = seed;
    z = Math.imul(z ^ (z >>> 16), 0x21f0aaad);
    z = Math.imul(z ^ (z >>> 15), 0x735a2d97);
    numbers[i] = z ^ (z >>> 15);
  }
  return numbers;
}

/** The configurations (set of lifted operations, model state) the search has entered. */
class ConfigurationCache {
  readonly #buckets = new Map<number, { words: Uint32Array; state: number }[]>();

  /** Records the configuration; returns false if it was recorded before. */
  add(lifted: Bitset, liftedHash: number, state: number): boolean {
    const key = liftedHash ^ Math.imul(state + 1, 0x85ebca6b);
    const bucket = this.#buckets.get(key);
    if (bucket === undefined) {
      this.#buckets.set(key, [{ words: lifted.snapshot(), state }]);
      return true;
    }
    for (const known of bucket) {
      if (known.state === state && lifted.equals(known.words)) return false;
    }
    bucket.push({ words: lifted.snapshot(), state });
    return true;
  }
}
