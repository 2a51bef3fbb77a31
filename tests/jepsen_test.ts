/**
 * The key/value example across real processes, under faults: a short Jepsen run
 * (`bench/jepsen/`) of 3 peers and 8 clients for 25 s, with kills, pauses, partitions and a
 * deafened leader, must record a linearizable history, end with every peer holding the same
 * data, and serve again once the faults are healed. `JEPSEN_SEED` picks another fault schedule;
 * `deno task jepsen` runs longer ones, and `tests/jepsen_mutants_test.ts` shows that the run
 * catches read-path bugs.
 */

import assert from "node:assert/strict";
import { formatReport } from "../bench/jepsen/report.ts";
import { runJepsen, SHORT_RUN } from "../bench/jepsen/run.ts";
import { sanitized } from "./helpers/sanitized.ts";

const seed = Number(Deno.env.get("JEPSEN_SEED") ?? "1");

Deno.test(
  `jepsen: 3 kv peers under kills, pauses and partitions stay linearizable (seed ${seed})`,
  sanitized,
  async () => {
    const report = await runJepsen({ ...SHORT_RUN, seed });
    console.log(formatReport(report));
    const kinds = new Set(report.faults.map((fault) => fault.kind));
    assert.ok(
      report.faults.length >= 4 && kinds.size >= 3,
      `expected at least 4 faults of 3 kinds, got ${report.faults.length} of ${[...kinds]}`,
    );
    assert.equal(report.check.verdict, "linearizable", report.check.explanation);
    assert.ok(report.final.ok, `expected a converged end state: ${report.final.problems}`);
    assert.ok(
      report.operations.write.ok > 0 && report.okAfterHeal > 0,
      `expected writes to succeed, also after the faults healed; ${report.okAfterHeal} did after`,
    );
  },
);
