/**
 * The Jepsen run must catch read-path bugs: each mutant of `bench/jepsen/mutants.ts` (a patched
 * copy of the repository) makes the short run of `tests/jepsen_test.ts` (25 s) on up to 6 seeds,
 * and one of them must find the history not linearizable. Slow (30 s to 3 minutes per mutant), so
 * it runs only when asked:
 *
 *   JEPSEN_MUTANTS=1 deno test -A tests/jepsen_mutants_test.ts     (deno task test:jepsen-mutants)
 *
 * `deno task jepsen:mutants` measures how often each mutant is caught.
 */

import assert from "node:assert/strict";
import { serviceMutants } from "../bench/jepsen/mutants.ts";
import { runJepsen, SHORT_RUN } from "../bench/jepsen/run.ts";
import { sanitized } from "./helpers/sanitized.ts";

const enabled = Deno.env.get("JEPSEN_MUTANTS") === "1";
/** Seeds tried in turn until one catches the mutant; `deno task jepsen:mutants` shows the odds. */
const seeds = [1, 2, 3, 4, 5, 6];

for (const mutant of serviceMutants) {
  Deno.test({
    name: `jepsen catches the mutant "${mutant.name}"`,
    ignore: !enabled,
    ...sanitized,
    fn: async () => {
      const verdicts: string[] = [];
      for (const seed of seeds) {
        const report = await runJepsen({
          ...SHORT_RUN,
          seed,
          mutant: mutant.name,
          keepData: false,
        });
        verdicts.push(`seed ${seed}: ${report.check.verdict}`);
        if (report.check.verdict === "not linearizable") {
          console.log(`caught on seed ${seed}: ${report.check.explanation?.split("\n")[0]}`);
          return;
        }
      }
      assert.fail(
        `expected a violation with ${mutant.description}, but every run passed (${verdicts})`,
      );
    },
  });
}
