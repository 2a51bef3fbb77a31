// Bugs the explorer found in the library, each pinned to a seed that showed it: the seed must run
// clean on the library as it is, and must still catch the bug when the fix is taken out again
// (as a mutant of tests/sim/mutants.ts), so the seed keeps testing what it was chosen for. Seed
// numbers belong to the fault model of tests/sim/fault_schedule.ts; if that changes, find the
// seeds again with `deno task mutants --all`.
import assert from "node:assert/strict";
import { exploreSeed } from "./sim/explorer.ts";
import { loadMutant, mutants } from "./sim/mutants.ts";
import { printViolation } from "./sim/explore.ts";
import { sanitized } from "./helpers/sanitized.ts";

interface Regression {
  seed: number;
  bug: string;
  /** The mutant that takes the fix out again. */
  mutant: string;
  /** The property the seed breaks without the fix. */
  property: string;
}

const regressions: Regression[] = [
  {
    seed: 22,
    bug:
      "a leader that could send but not hear kept leading, so a healed majority never committed (fixed by check-quorum)",
    mutant: "no check-quorum",
    property: "Liveness",
  },
  {
    seed: 23079,
    bug:
      "saves started one after another, so a follower with a slow disk fell ever further behind and the healed core could not elect a leader (fixed by starting saves at once)",
    mutant: "saves one at a time",
    property: "Liveness",
  },
  {
    seed: 58871,
    bug:
      "a peer outside the healed core, with the best log but links to only some peers, kept starting elections and taking the core's votes (fixed by pre-vote)",
    mutant: "no pre-vote",
    property: "Liveness",
  },
];

for (const regression of regressions) {
  Deno.test(
    `explorer regression: seed ${regression.seed}, ${regression.bug}`,
    sanitized,
    async () => {
      const fixed = await exploreSeed(regression.seed);
      if (fixed.violation !== null) printViolation(fixed, console.log);
      assert.equal(fixed.violation, null, `expected seed ${regression.seed} to run clean`);

      const mutant = mutants.find((candidate) => candidate.name === regression.mutant)!;
      const broken = await exploreSeed(regression.seed, { make: await loadMutant(mutant) });
      assert.equal(
        broken.violation?.property,
        regression.property,
        `expected seed ${regression.seed} to break ${regression.property} without the fix, got ${
          broken.violation === null ? "no violation" : broken.violation.property
        }`,
      );
    },
  );
}
