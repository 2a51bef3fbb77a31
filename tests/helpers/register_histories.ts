/**
 * Histories for the linearizability checker's tests: random ones that are linearizable by
 * construction, and a brute-force checker to hold the real one against.
 *
 * @module
 */

import type { RandomSource } from "../../src/clock.ts";
import type { Operation, Value } from "../../src/linearizability/mod.ts";

/** Options for {@linkcode linearizableHistory}. */
export interface HistoryShape {
  /** How many clients run at once, each one operation at a time. */
  clients: number;
  /** How many keys they use. */
  keys: number;
  /** How many operations in all. */
  operations: number;
  /** How many distinct values a key's writes draw from. */
  values: number;
  /** The probability that an operation's outcome is unknown to its client. */
  unknownRate: number;
  /** Whether clients also compare-and-set. Default true. */
  cas?: boolean;
}

/**
 * A history made by running a real register: each operation takes effect at a random instant
 * between its call and its return, in the order of those instants. Clients overlap at random. An
 * operation whose outcome is unknown takes effect, at a random time after its call, or not at
 * all, by a coin toss; its client goes on as if it had timed out.
 */
export function linearizableHistory(random: RandomSource, shape: HistoryShape): Operation[] {
  const draw = (n: number) => Math.floor(random() * n);
  const planned: { operation: Operation; effectAt: number; takesEffect: boolean }[] = [];
  const clock = Array.from({ length: shape.clients }, () => random() * 5);
  for (let n = 0; n < shape.operations; n++) {
    const client = draw(shape.clients);
    const key = `k${draw(shape.keys)}`;
    const call = clock[client]!;
    const effectAt = call + random() * 5;
    const returned = effectAt + random() * 5;
    const unknown = random() < shape.unknownRate;
    clock[client] = returned + random() * 3;
    const value = (): Value => (draw(2) === 0 ? `v${draw(shape.values)}` : draw(shape.values));
    const base = { client, key, call, return: unknown ? Infinity : returned };
    const choice = draw(shape.cas === false ? 8 : 10);
    const operation: Operation = choice < 4
      ? { ...base, kind: "read", output: undefined }
      : choice < 7
      ? { ...base, kind: "write", input: value(), output: undefined }
      : choice < 8
      ? { ...base, kind: "delete", output: undefined }
      : {
        ...base,
        kind: "cas",
        input: { expected: draw(4) === 0 ? null : value(), new: value() },
        output: undefined,
      };
    if (unknown && operation.kind === "read") continue; // an unknown read says nothing
    planned.push({
      operation,
      effectAt: unknown ? call + random() * 30 : effectAt,
      takesEffect: !unknown || random() < 0.5,
    });
  }
  // Run the register in the order the operations take effect, and fill in what they returned.
  const registers = new Map<string, Value | null>();
  for (const { operation, takesEffect } of [...planned].sort((a, b) => a.effectAt - b.effectAt)) {
    if (!takesEffect) continue;
    const current = registers.get(operation.key) ?? null;
    const known = operation.return !== Infinity;
    switch (operation.kind) {
      case "read":
        operation.output = current;
        break;
      case "write":
        registers.set(operation.key, operation.input);
        if (known) operation.output = "ok";
        break;
      case "delete":
        registers.set(operation.key, null);
        if (known) operation.output = "ok";
        break;
      case "cas": {
        const swapped = current === operation.input.expected;
        if (swapped) registers.set(operation.key, operation.input.new);
        if (known) operation.output = swapped;
        break;
      }
    }
  }
  return planned.map(({ operation }) => operation).sort((a, b) => a.call - b.call);
}

/**
 * Whether `history` (one key) is linearizable, by trying every order consistent with real time
 * and every choice of which unknown-outcome operations took effect, and for an unknown cas both
 * outcomes. Exponential: for a handful of operations only.
 */
export function bruteForceLinearizable(history: readonly Operation[]): boolean {
  const operations = history.filter((op) => !(op.kind === "read" && op.output === undefined));
  const known = operations.filter((op) => op.return !== Infinity);
  const unknown = operations.filter((op) => op.return === Infinity);
  for (let mask = 0; mask < 1 << unknown.length; mask++) {
    const chosen = [...known, ...unknown.filter((_, i) => (mask & (1 << i)) !== 0)];
    if (anyOrder(chosen, null)) return true;
  }
  return false;
}

function anyOrder(remaining: readonly Operation[], state: Value | null): boolean {
  if (remaining.length === 0) return true;
  for (const op of remaining) {
    // op may go next only if nothing still to place returned before op was called.
    if (remaining.some((other) => other.return < op.call)) continue;
    const rest = remaining.filter((other) => other !== op);
    for (const next of outcomes(op, state)) if (anyOrder(rest, next)) return true;
  }
  return false;
}

/** The states `op` can leave the register in when it takes effect in `state`. */
function outcomes(op: Operation, state: Value | null): (Value | null)[] {
  switch (op.kind) {
    case "read":
      return op.output === state ? [state] : [];
    case "write":
      return [op.input];
    case "delete":
      return [null];
    case "cas": {
      const swaps = state === op.input.expected;
      if (op.output === undefined) return [swaps ? op.input.new : state];
      return op.output === swaps ? [swaps ? op.input.new : state] : [];
    }
  }
}
