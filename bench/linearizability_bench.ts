/**
 * The linearizability checker on histories of the size a Jepsen-style test records, so that
 * regressions in the search show:
 *
 *   deno bench bench/linearizability_bench.ts     (or: deno task bench)
 *
 * Each history comes from a real register (see tests/helpers/register_histories.ts): 5 clients,
 * 20 keys, 5000 operations. "Falsified" changes the last read to a value never written, so the
 * search must exhaust its key before it can say no, which is its slow case.
 *
 * @module
 */

import { checkLinearizable, type Operation } from "../src/linearizability/mod.ts";
import { seededRandom } from "../src/sim/seeded_random.ts";
import { type HistoryShape, linearizableHistory } from "../tests/helpers/register_histories.ts";

const shapes: [string, HistoryShape][] = [
  ["4 values per key, cas, 1% unknown", {
    clients: 5,
    keys: 20,
    operations: 5000,
    values: 4,
    unknownRate: 0.01,
  }],
  ["unique values, no cas, 10% unknown (a key/value service)", {
    clients: 5,
    keys: 20,
    operations: 5000,
    values: 1e9,
    unknownRate: 0.1,
    cas: false,
  }],
];

for (const [name, shape] of shapes) {
  const history = linearizableHistory(seededRandom(7), shape);
  const victim = history.findLast((op) => op.kind === "read" && op.output !== undefined)!;
  const falsified = history.map((op) =>
    op === victim ? { ...victim, output: "never written" } as Operation : op
  );
  Deno.bench(`linearizable: ${name}`, { group: name, baseline: true }, () => {
    if (checkLinearizable(history).ok !== true) throw new Error("expected linearizable");
  });
  Deno.bench(`falsified: ${name}`, { group: name }, () => {
    if (checkLinearizable(falsified).ok !== false) throw new Error("expected a violation");
  });
}
