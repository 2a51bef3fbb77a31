// The linearizability checker: it accepts what a register could have done, rejects what it could
// not, names the operation at fault, and agrees with a brute-force search on small histories.
import assert from "node:assert/strict";
import {
  checkLinearizable,
  HistoryRecorder,
  type LinearizabilityViolation,
  type Operation,
  type ReadOperation,
  type Value,
} from "../src/linearizability/mod.ts";
import { effectDeadlines, toRegisterOperation, ValueTable } from "../src/linearizability/model.ts";
import { seededRandom } from "../src/sim/seeded_random.ts";
import { bruteForceLinearizable, linearizableHistory } from "./helpers/register_histories.ts";
import { sanitized } from "./helpers/sanitized.ts";

// Terse builders: operations on key "x" unless told otherwise.
function read(
  client: number,
  call: number,
  ret: number,
  output: Value | null,
  key = "x",
): Operation {
  return { client, key, kind: "read", output, call, return: ret };
}
function write(client: number, call: number, ret: number, input: Value, key = "x"): Operation {
  return { client, key, kind: "write", input, output: "ok", call, return: ret };
}
function writeUnknown(client: number, call: number, input: Value, key = "x"): Operation {
  return { client, key, kind: "write", input, output: undefined, call, return: Infinity };
}
function remove(client: number, call: number, ret: number, key = "x"): Operation {
  return { client, key, kind: "delete", output: "ok", call, return: ret };
}
function cas(
  client: number,
  call: number,
  ret: number,
  expected: Value | null,
  next: Value,
  output: boolean | undefined,
  key = "x",
): Operation {
  return {
    client,
    key,
    kind: "cas",
    input: { expected, new: next },
    output,
    call,
    return: output === undefined ? Infinity : ret,
  };
}

function assertLinearizable(history: Operation[]): void {
  const result = checkLinearizable(history);
  assert.ok(
    result.ok === true,
    `expected a linearizable history, got ${
      result.ok === false ? `a violation:\n${result.explanation}` : "a timeout"
    }`,
  );
}

/** Checks that `history` is rejected because of `operation`, and prints the explanation. */
function assertViolation(
  history: Operation[],
  operation: Operation,
  expected: { cites?: Operation[]; says: string[] },
): LinearizabilityViolation {
  const result = checkLinearizable(history);
  assert.ok(result.ok === false, `expected a violation, got ok: ${String(result.ok)}`);
  console.log(result.explanation);
  assert.equal(result.key, operation.key);
  assert.equal(
    result.operation,
    operation,
    `expected the violation to be at ${JSON.stringify(operation)}`,
  );
  assert.equal(result.operations[0], operation);
  for (const cited of expected.cites ?? []) {
    assert.ok(
      result.operations.includes(cited),
      `expected the report to cite ${JSON.stringify(cited)}`,
    );
  }
  for (const text of expected.says) {
    assert.ok(
      result.explanation.includes(text),
      `expected the explanation to say ${JSON.stringify(text)}`,
    );
  }
  return result;
}

// --- Linearizable histories ---------------------------------------------------------------------

Deno.test("a sequential history is linearizable", sanitized, () => {
  assertLinearizable([
    read(1, 0, 1, null),
    write(1, 2, 3, "a"),
    read(2, 4, 5, "a"),
    cas(1, 6, 7, "a", "b", true),
    cas(2, 8, 9, "a", "c", false),
    read(1, 10, 11, "b"),
    remove(2, 12, 13),
    read(1, 14, 15, null),
    cas(1, 16, 17, null, 1, true),
    read(2, 18, 19, 1),
  ]);
  assertLinearizable([]);
});

Deno.test("a read overlapping a write may see the old or the new value", sanitized, () => {
  assertLinearizable([
    write(1, 0, 1, "a"),
    write(1, 2, 10, "b"),
    read(2, 3, 4, "a"),
    read(3, 3, 5, "b"),
    read(2, 5, 6, "b"),
  ]);
  // Reads that overlap each other and two writes may see them in either order, provided they
  // agree on one order: here "c" then "b".
  assertLinearizable([
    write(1, 0, 10, "b"),
    write(2, 0, 10, "c"),
    read(3, 1, 11, "c"),
    read(4, 1, 11, "b"),
    read(3, 12, 13, "b"),
  ]);
  // Equal times: a return at the very instant of another call does not order the two.
  assertLinearizable([write(1, 0, 5, "a"), read(2, 5, 6, null), read(3, 7, 8, "a")]);
});

Deno.test("a write with an unknown outcome may take effect late, or never", sanitized, () => {
  // It took effect, long after its client gave up.
  assertLinearizable([
    write(1, 0, 1, "a"),
    writeUnknown(2, 2, "b"),
    read(3, 3, 4, "a"),
    read(3, 50, 51, "b"),
  ]);
  // It never took effect.
  assertLinearizable([
    write(1, 0, 1, "a"),
    writeUnknown(2, 2, "b"),
    read(3, 3, 4, "a"),
    read(3, 50, 51, "a"),
  ]);
  // An unknown delete and an unknown cas, the cas taking effect.
  assertLinearizable([
    write(1, 0, 1, "a"),
    { client: 2, key: "x", kind: "delete", output: undefined, call: 2, return: Infinity },
    cas(3, 3, 0, "a", "c", undefined),
    read(1, 4, 5, "c"),
    read(1, 6, 7, null),
  ]);
  // A read with an unknown outcome constrains nothing.
  assertLinearizable([
    write(1, 0, 1, "a"),
    { client: 2, key: "x", kind: "read", output: undefined, call: 2, return: Infinity },
  ]);
});

Deno.test("compare-and-set swaps only from its expected value", sanitized, () => {
  assertLinearizable([
    cas(1, 0, 1, null, "a", true),
    cas(2, 2, 3, null, "b", false),
    cas(1, 4, 10, "a", "b", true),
    cas(2, 5, 9, "a", "c", false), // after client 1's swap
    read(3, 11, 12, "b"),
  ]);
  // 1 and "1" are different values.
  assertLinearizable([write(1, 0, 1, 1), cas(2, 2, 3, "1", "x", false), read(3, 4, 5, 1)]);
});

Deno.test("keys are independent: each key only needs an order of its own", sanitized, () => {
  // As one register this would be a stale read; as two keys it is two unrelated operations.
  const result = checkLinearizable([write(1, 0, 1, "a", "y"), read(2, 2, 3, null, "x")]);
  assert.deepEqual(result, { ok: true });
});

// --- Violations ---------------------------------------------------------------------------------

Deno.test("a stale read is rejected, naming the write that replaced the value", sanitized, () => {
  const writeA = write(2, 0.5, 1, "a", "k");
  const writeB = write(1, 2, 5, "b", "k");
  const stale = read(3, 12, 14.5, "a", "k");
  assertViolation([writeA, writeB, stale, read(4, 13, 15, "b", "k")], stale, {
    cites: [writeB, writeA],
    says: [
      'On key "k", read by client 3 at [12.0, 14.5] returned "a", but write "b" by client 1 at ' +
      '[2.0, 5.0] completed before the read began, and no write of "a" could have come between ' +
      'them (the last one, write "a" by client 2 at [0.5, 1.0], completed before write "b" began).',
      'Overlapping the read:\n  read by client 4 at [13.0, 15.0] returned "b"',
    ],
  });
});

Deno.test("a lost write is rejected: reads after it completed never see it", sanitized, () => {
  const writeA = write(1, 0, 1, "a");
  const lost = write(2, 2, 3, "b");
  const firstLater = read(1, 4, 5, "a");
  assertViolation([writeA, lost, firstLater, read(3, 6, 7, "a"), read(1, 8, 9, "a")], firstLater, {
    cites: [lost, writeA],
    says: ['but write "b" by client 2 at [2.0, 3.0] completed before the read began'],
  });
});

Deno.test("a read of a value never written is rejected", sanitized, () => {
  const phantom = read(3, 4, 5, "z");
  assertViolation([write(1, 0, 1, "a"), write(2, 2, 3, "b"), phantom], phantom, {
    says: [
      'read by client 3 at [4.0, 5.0] returned "z", but no operation on the key ever wrote "z".',
    ],
  });
  // Nor may a read see a write that began only after the read returned, known outcome or not.
  const early = read(3, 0, 1, "b");
  const writeB = writeUnknown(1, 2, "b");
  assertViolation([early, writeB], early, {
    cites: [writeB],
    says: [
      'but "b" was written only after the read returned (first by write "b" by client 1 called at 2.0)',
    ],
  });
});

Deno.test("a read of an absent key after a completed write is rejected", sanitized, () => {
  const absent = read(2, 2, 3, null);
  const writeA = write(1, 0, 1, "a");
  assertViolation([writeA, absent], absent, {
    cites: [writeA],
    says: [
      'read by client 2 at [2.0, 3.0] found the key absent, but write "a" by client 1 at [0.0, 1.0] ' +
      "completed before the read began, and no delete could have come between them.",
    ],
  });
});

Deno.test(
  "a cas that succeeded against a value that could not be there is rejected",
  sanitized,
  () => {
    const writeA = write(1, 0, 1, "a");
    const writeB = write(2, 2, 3, "b");
    const swap = cas(3, 4, 5, "a", "c", true);
    assertViolation([writeA, writeB, swap], swap, {
      cites: [writeB, writeA],
      says: ['cas "a" → "c" by client 3 at [4.0, 5.0] succeeded, but write "b" by client 2'],
    });
    const impossible = cas(3, 4, 5, "q", "c", true);
    assertViolation([writeA, impossible], impossible, {
      says: ['no operation on the key ever wrote "q"'],
    });
  },
);

Deno.test(
  "a cas that failed although the key must have held its value is rejected",
  sanitized,
  () => {
    const failed = cas(2, 2, 3, "a", "b", false);
    assertViolation([write(1, 0, 1, "a"), failed, read(1, 4, 5, "a")], failed, {
      says: [
        'cas "a" → "b" by client 2 at [2.0, 3.0] failed, but no valid order of the key\'s operations',
        'the key holds "a" (since write "a" by client 1 at [0.0, 1.0])',
      ],
    });
  },
);

Deno.test("once a read sees a write, no later read may miss it", sanitized, () => {
  // The write overlaps all three reads, so no single operation rules the last read out: only the
  // order of the first two does. The report falls back to the longest valid order.
  const writeA = write(1, 0, 10, "a");
  const last = read(3, 5, 6, null);
  const result = assertViolation([writeA, read(2, 1, 2, null), read(2, 3, 4, "a"), last], last, {
    cites: [writeA],
    says: ['after the longest one found (3 of 4 operations), the key holds "a"'],
  });
  assert.deepEqual(result.concurrent, [writeA]);
  assert.equal(result.linearized.length, 3);
});

Deno.test(
  "an overwrite that overlaps a write of the value read is not called definite",
  sanitized,
  () => {
    // "b" may have been written before "a": only the read of "b" orders them, so the explanation
    // must not claim that write "b" replaced "a" for good.
    const last = read(4, 8, 9, "a");
    assertViolation(
      [write(1, 0, 3, "a"), write(2, 2, 5, "b"), read(3, 6, 7, "b"), last],
      last,
      { says: ["no valid order of the key's operations lets it take effect there"] },
    );
  },
);

Deno.test("the violation reported is on the first key in sorted order", sanitized, () => {
  const onB = read(2, 2, 3, "z", "b");
  const onA = read(2, 2, 3, "z", "a");
  const result = checkLinearizable([onB, write(1, 0, 1, "q", "b"), onA]);
  assert.ok(result.ok === false);
  assert.equal(result.key, "a");
  assert.equal(result.operation, onA);
});

// --- Bad input ----------------------------------------------------------------------------------

Deno.test("malformed operations throw, quoting the value", sanitized, () => {
  const good = write(1, 0, 1, "a");
  const cases: [unknown, ErrorConstructor, string][] = [
    [
      { ...good, call: 5, return: 4 },
      RangeError,
      "Operation 1 of the history returns at 4, before its call at 5",
    ],
    [{ ...good, call: NaN }, RangeError, "has call time NaN"],
    [{ ...good, return: Infinity }, RangeError, 'returns at Infinity but has output "ok"'],
    [{ ...good, output: undefined }, RangeError, "has no output but returns at 1"],
    [{ ...good, kind: "append" }, TypeError, 'has kind "append"'],
    [{ ...good, key: 7 }, TypeError, "has key 7"],
    [{ ...good, input: { v: 1 } }, TypeError, 'is a write of {"v":1}'],
    [{ ...good, input: Infinity }, TypeError, "is a write of Infinity"],
    [{ ...good, output: true }, TypeError, "is a write with output true"],
    [{ ...read(1, 0, 1, null), output: ["a"] }, TypeError, 'is a read with output ["a"]'],
    [
      { ...cas(1, 0, 1, "a", "b", true), input: { expected: "a" } },
      TypeError,
      'is a cas with input {"expected":"a"}',
    ],
    [{ ...cas(1, 0, 1, "a", "b", true), output: "yes" }, TypeError, 'is a cas with output "yes"'],
    [null, TypeError, "Operation 1 of the history must be an object, got null"],
  ];
  for (const [operation, type, message] of cases) {
    assert.throws(
      () => checkLinearizable([good, operation as Operation]),
      (error: unknown) => error instanceof type && error.message.includes(message),
      `expected ${type.name} saying ${JSON.stringify(message)} for ${JSON.stringify(operation)}`,
    );
  }
  assert.throws(() => checkLinearizable("x" as unknown as Operation[]), TypeError);
  assert.throws(() => checkLinearizable([], { timeoutMs: -1 }), RangeError);
});

// --- The timeout --------------------------------------------------------------------------------

Deno.test("a search past its timeout answers unknown", sanitized, () => {
  // Twenty overlapping writes with unknown outcomes, read one by one, then the first value read
  // again, which no order allows. Every subset of the writes may have taken effect early, so
  // proving that takes a search through about 2^20 configurations.
  const history: Operation[] = Array.from(
    { length: 20 },
    (_, i) => writeUnknown(i, i * 0.01, `v${i}`),
  );
  for (let i = 0; i < 20; i++) history.push(read(99, 10 + 2 * i, 11 + 2 * i, `v${i}`));
  history.push(read(99, 60, 61, "v0"));
  const result = checkLinearizable(history, { timeoutMs: 0 });
  assert.deepEqual(result, { ok: "unknown", reason: "timeout", key: "x" });
  // With a few writes fewer, the same search ends, and finds the violation.
  const small = checkLinearizable([
    ...history.slice(0, 6),
    ...history.slice(20, 26),
    read(99, 60, 61, "v0"),
  ]);
  assert.equal(small.ok, false);
});

Deno.test(
  "unknown outcomes: required when only they explain a read, left out when unseen",
  sanitized,
  () => {
    const deadlines = (history: Operation[]) => {
      const values = new ValueTable();
      return effectDeadlines(
        history.map((operation) => toRegisterOperation(operation, values)),
        history.map((operation) => operation.call),
        history.map((operation) => operation.return),
      );
    };
    // Only the unknown write could have written "b", which two reads saw: it took effect before the
    // first of them returned. Nobody saw "c": that write may as well not have happened.
    assert.deepEqual(
      deadlines([
        writeUnknown(1, 0, "b"),
        read(2, 5, 6, "b"),
        read(3, 1, 4, "b"),
        writeUnknown(4, 0, "c"),
        { client: 5, key: "x", kind: "read", output: undefined, call: 0, return: Infinity },
      ]),
      [
        { by: 4, optional: false },
        { by: 6, optional: false },
        { by: 4, optional: false },
        null,
        null,
      ],
    );
    // Two writes of "b": neither is required, each matters until the last read of "b" after it.
    // A cas that failed expecting "a" (which is written) could have needed either write.
    assert.deepEqual(
      deadlines([
        writeUnknown(1, 0, "b"),
        write(2, 0, 1, "b"),
        read(3, 5, 6, "b"),
        write(4, 7, 8, "a"),
        writeUnknown(5, 7, "c"),
        cas(6, 9, 10, "a", "d", false),
      ]).map((deadline) => deadline === null ? null : `${deadline.by} ${deadline.optional}`),
      ["10 true", "1 false", "6 false", "8 false", "10 true", "10 false"],
    );
  },
);

// --- The recorder -------------------------------------------------------------------------------

Deno.test(
  "HistoryRecorder records times from its clock and the outcome clients saw",
  sanitized,
  () => {
    let now = 0;
    const recorder = new HistoryRecorder({ now: () => now });
    const w = recorder.invoke(1, "x", "write", "a");
    const r = recorder.invoke(2, "x", "read");
    now = 2;
    w.ok();
    now = 3;
    r.ok("a");
    const refused = recorder.invoke(3, "x", "delete");
    const timedOut = recorder.invoke("c4", "x", "cas", { expected: "a", new: "b" });
    const pending = recorder.invoke(5, "x", "write", 7);
    now = 4;
    refused.fail();
    timedOut.unknown();
    assert.equal(recorder.pendingCount, 1);
    assert.deepEqual(recorder.history(), [
      { client: 1, key: "x", kind: "write", input: "a", output: "ok", call: 0, return: 2 },
      { client: 2, key: "x", kind: "read", output: "a", call: 0, return: 3 },
      {
        client: "c4",
        key: "x",
        kind: "cas",
        input: { expected: "a", new: "b" },
        output: undefined,
        call: 3,
        return: Infinity,
      },
      {
        client: 5,
        key: "x",
        kind: "write",
        input: 7,
        output: undefined,
        call: 3,
        return: Infinity,
      },
    ]);
    assert.deepEqual(checkLinearizable(recorder.history()), { ok: true });
    assert.throws(() => w.ok(), /already settled as ok/);
    assert.throws(() => refused.unknown(), /already settled as failed/);
    const badRead = recorder.invoke(1, "x", "read");
    assert.throws(() => badRead.ok({ value: 1 } as unknown as string), TypeError);
    badRead.ok(null);
    assert.throws(
      () => recorder.invoke(1, "x", "write", undefined as unknown as string),
      TypeError,
    );
    pending.ok();
  },
);

// --- Against a brute-force search, and on histories from a real register -------------------------

Deno.test(
  "the checker agrees with a brute-force search on 3000 small random histories",
  sanitized,
  () => {
    const random = seededRandom(20240601);
    const draw = (n: number) => Math.floor(random() * n);
    const counts = { linearizable: 0, not: 0 };
    for (let n = 0; n < 3000; n++) {
      const history: Operation[] = [];
      const size = 2 + draw(6);
      for (let i = 0; i < size; i++) {
        const call = draw(10);
        const unknown = draw(6) === 0;
        const ret = unknown ? Infinity : call + draw(4);
        const value = (): Value => ["a", "b"][draw(2)]!;
        const base = { client: i, key: "x", call, return: ret };
        const kind = draw(4);
        history.push(
          kind === 0
            ? {
              ...base,
              kind: "read",
              output: unknown ? undefined : draw(3) === 0 ? null : value(),
            }
            : kind === 1
            ? { ...base, kind: "write", input: value(), output: unknown ? undefined : "ok" }
            : kind === 2
            ? { ...base, kind: "delete", output: unknown ? undefined : "ok" }
            : {
              ...base,
              kind: "cas",
              input: { expected: draw(3) === 0 ? null : value(), new: value() },
              output: unknown ? undefined : draw(2) === 0,
            },
        );
      }
      const expected = bruteForceLinearizable(history);
      const result = checkLinearizable(history);
      assert.equal(
        result.ok,
        expected,
        `history ${n}: brute force says ${expected}, the checker ${String(result.ok)}:\n` +
          JSON.stringify(history),
      );
      counts[expected ? "linearizable" : "not"]++;
    }
    console.log(`${counts.linearizable} linearizable, ${counts.not} not`);
    // Both answers must be common, or the comparison proves little.
    assert.ok(counts.linearizable > 500 && counts.not > 500, JSON.stringify(counts));
  },
);

Deno.test(
  "histories of a real register are accepted, and rejected once a read is falsified",
  sanitized,
  () => {
    for (let seed = 1; seed <= 200; seed++) {
      const random = seededRandom(seed);
      const history = linearizableHistory(random, {
        clients: 2 + (seed % 5),
        keys: 1 + (seed % 3),
        operations: 40 + (seed % 60),
        values: 3,
        unknownRate: seed % 4 === 0 ? 0.1 : 0.02,
      });
      const result = checkLinearizable(history);
      assert.ok(
        result.ok === true,
        `seed ${seed}: expected linearizable, got ${
          result.ok === false ? result.explanation : "timeout"
        }`,
      );
      const reads = history.filter((op): op is ReadOperation =>
        op.kind === "read" && op.output !== undefined
      );
      if (reads.length === 0) continue;
      const victim = reads[Math.floor(random() * reads.length)]!;
      const falsified: ReadOperation = { ...victim, output: "never written" };
      const mutated = history.map((op) => (op === victim ? falsified : op));
      const rejected = checkLinearizable(mutated);
      assert.ok(
        rejected.ok === false,
        `seed ${seed}: a read of a value never written was accepted`,
      );
      assert.equal(rejected.key, victim.key, `seed ${seed}`);
      assert.equal(rejected.operation, falsified, `seed ${seed}: ${rejected.explanation}`);
      assert.ok(rejected.explanation.includes('ever wrote "never written"'), rejected.explanation);
    }
  },
);

Deno.test("5000 operations over 20 keys from 5 clients check quickly", sanitized, () => {
  const history = linearizableHistory(seededRandom(7), {
    clients: 5,
    keys: 20,
    operations: 5000,
    values: 4,
    unknownRate: 0.01,
  });
  const started = performance.now();
  const result = checkLinearizable(history);
  const elapsed = performance.now() - started;
  console.log(`checked ${history.length} operations in ${elapsed.toFixed(0)} ms`);
  assert.deepEqual(result, { ok: true });
  const victim = history.findLast((op) => op.kind === "read" && op.output !== undefined)!;
  const mutated = history.map((
    op,
  ) => (op === victim ? { ...victim, output: "never written" } as Operation : op));
  const again = performance.now();
  const rejected = checkLinearizable(mutated);
  console.log(`found the falsified read in ${(performance.now() - again).toFixed(0)} ms`);
  assert.equal(rejected.ok, false);
});
