/**
 * Turns the search's longest valid order into a sentence a person can check against the history:
 * which operation could not be placed, and why, naming the operations that rule it out.
 *
 * The search's order is one witness among many, so the explanation prefers facts that hold in
 * every order: a value that no operation wrote, or one overwritten, by an operation that began
 * after every write of it and completed before the read began. Only when no such fact is found
 * does it describe the longest order found.
 *
 * @module
 */

import type { Operation, Value } from "./history.ts";

/** What a violation report holds besides `ok` and `key`. */
export interface Explained {
  explanation: string;
  operation: Operation;
  operations: Operation[];
  concurrent: Operation[];
  linearized: Operation[];
}

/** How many operations of the longest valid order the explanation lists, from its end. */
const ORDER_TAIL = 8;

/**
 * Explains why `operation` could not be placed after the valid order `linearized`, after which
 * the key held `state`. `operations` are all the key's operations, including those the search
 * left out.
 */
export function explain(
  key: string,
  operations: readonly Operation[],
  linearized: Operation[],
  operation: Operation,
  state: Value | null,
): Explained {
  const concurrent = operations.filter((other) =>
    other !== operation && other.call <= operation.return && other.return >= operation.call
  ).sort((a, b) => a.call - b.call);
  const { sentence, cited } = definiteReason(operations, operation) ??
    longestOrderReason(operations, operation, linearized, state);
  const lines = [
    `On key ${JSON.stringify(key)}, ${describe(operation)} ${outcome(operation)}, ${sentence}`,
  ];
  lines.push(
    concurrent.length === 0
      ? `No operation on the key overlaps the ${operation.kind}.`
      : `Overlapping the ${operation.kind}:`,
  );
  for (const other of concurrent) lines.push(`  ${describe(other)} ${outcome(other)}`);
  const shown = linearized.slice(-ORDER_TAIL);
  lines.push(
    `The longest valid order found places ${linearized.length} of ${operations.length} ` +
      `operations on the key${
        shown.length < linearized.length
          ? `; its last ${shown.length}:`
          : shown.length > 0
          ? ":"
          : "."
      }`,
  );
  for (const other of shown) lines.push(`  ${describe(other)} ${outcome(other)}`);
  return {
    explanation: lines.join("\n"),
    operation,
    operations: [operation, ...cited.filter((other) => other !== operation)],
    concurrent,
    linearized,
  };
}

interface Reason {
  /** Finishes the sentence that begins with the operation and its outcome. */
  sentence: string;
  /** The operations the sentence names. */
  cited: Operation[];
}

/**
 * A reason that holds in every order, for an operation that needs the key to hold a value (a read,
 * a cas that swapped): no operation could have put the value there, or one replaced it for good
 * before the operation began. `null` when neither is found.
 */
function definiteReason(operations: readonly Operation[], operation: Operation): Reason | null {
  let needed: Value | null;
  if (operation.kind === "read" && operation.output !== undefined) needed = operation.output;
  else if (operation.kind === "cas" && operation.output === true) needed = operation.input.expected;
  else return null;

  const producers = operations.filter((other) => other !== operation && produces(other, needed));
  if (needed !== null) {
    if (producers.length === 0) {
      return { sentence: `but no operation on the key ever wrote ${show(needed)}.`, cited: [] };
    }
    const early = producers.filter((other) => other.call <= operation.return);
    if (early.length === 0) {
      const first = producers.reduce((a, b) => (b.call < a.call ? b : a));
      return {
        sentence: `but ${show(needed)} was written only after the ${operation.kind} returned ` +
          `(first by ${describe(first)}).`,
        cited: [first],
      };
    }
  }

  // Every write of the needed value that could come before the operation is over before
  // `replacer` begins, and `replacer` is over before the operation begins.
  const mayPrecede = producers.filter((other) => other.call <= operation.return);
  const lastProducer = mayPrecede.length === 0
    ? null
    : mayPrecede.reduce((a, b) => (b.return > a.return ? b : a));
  const producersOver = lastProducer === null ? -Infinity : lastProducer.return;
  let replacer: Operation | null = null;
  for (const other of operations) {
    if (
      other !== operation && other.call > producersOver && other.return < operation.call &&
      replaces(other, needed) && (replacer === null || other.return > replacer.return)
    ) {
      replacer = other;
    }
  }
  if (replacer === null) return null;
  const noun = needed === null ? "delete" : `write of ${show(needed)}`;
  const last = lastProducer === null
    ? ""
    : ` (the last one, ${describe(lastProducer)}, completed before ${name(replacer)} began)`;
  return {
    sentence: `but ${describe(replacer)} completed before the ${operation.kind} began, and no ` +
      `${noun} could have come between them${last}.`,
    cited: lastProducer === null ? [replacer] : [replacer, lastProducer],
  };
}

/** The reason given when no definite one is found: the state after the longest order. */
function longestOrderReason(
  operations: readonly Operation[],
  operation: Operation,
  linearized: readonly Operation[],
  state: Value | null,
): Reason {
  const setter = linearized.findLast((other) =>
    other.kind === "write" || other.kind === "delete" ||
    (other.kind === "cas" && other.output !== false)
  );
  const holds = state === null ? "the key is absent" : `the key holds ${show(state)}`;
  const since = setter === undefined ? "as it was at first" : `since ${describe(setter)}`;
  return {
    sentence: `but no valid order of the key's operations lets it take effect there: after the ` +
      `longest one found (${linearized.length} of ${operations.length} operations), ${holds} ` +
      `(${since}), and no operation called before the ${operation.kind} returned can take ` +
      `effect next and change that.`,
    cited: setter === undefined ? [] : [setter],
  };
}

/** Whether `operation` may leave the key holding `value` (`null`: absent). */
function produces(operation: Operation, value: Value | null): boolean {
  switch (operation.kind) {
    case "read":
      return false;
    case "write":
      return value !== null && operation.input === value;
    case "delete":
      return value === null;
    case "cas":
      return operation.output !== false && value !== null && operation.input.new === value;
  }
}

/** Whether `operation` certainly took effect and left the key holding something else than `value`. */
function replaces(operation: Operation, value: Value | null): boolean {
  switch (operation.kind) {
    case "read":
      return false;
    case "write":
      return operation.output === "ok" && (value === null || operation.input !== value);
    case "delete":
      return operation.output === "ok" && value !== null;
    case "cas":
      return operation.output === true && (value === null || operation.input.new !== value);
  }
}

/** `"a"`, `1`, or `absent`. */
function show(value: Value | null): string {
  return value === null ? "absent" : JSON.stringify(value);
}

/** An operation without its key and outcome: `write "b" by client 1 at [2.0, 5.0]`. */
export function describe(operation: Operation): string {
  const client = typeof operation.client === "string"
    ? JSON.stringify(operation.client)
    : String(operation.client);
  const when = operation.return === Infinity
    ? `called at ${time(operation.call)}`
    : `at [${time(operation.call)}, ${time(operation.return)}]`;
  return `${name(operation)} by client ${client} ${when}`;
}

/** The operation's kind and input: `read`, `write "b"`, `cas "a" → "b"`. */
function name(operation: Operation): string {
  switch (operation.kind) {
    case "read":
    case "delete":
      return operation.kind;
    case "write":
      return `write ${show(operation.input)}`;
    case "cas":
      return `cas ${show(operation.input.expected)} → ${show(operation.input.new)}`;
  }
}

/** What an operation returned: `returned "a"`, `succeeded`, `outcome unknown`. */
function outcome(operation: Operation): string {
  if (operation.output === undefined) return "(outcome unknown)";
  switch (operation.kind) {
    case "read":
      return operation.output === null
        ? "found the key absent"
        : `returned ${show(operation.output)}`;
    case "write":
    case "delete":
      return "(ok)";
    case "cas":
      return operation.output ? "succeeded" : "failed";
  }
}

/** A time with one decimal at least and as many as it needs, up to six. */
function time(value: number): string {
  for (let digits = 1; digits <= 6; digits++) {
    const text = value.toFixed(digits);
    if (Number(text) === value) return text;
  }
  return value.toFixed(6);
}
