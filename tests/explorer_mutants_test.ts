// The explorer must catch classic Raft bugs: each mutant is a copy of src/ with one bug patched in
// (see tests/sim/mutants.ts), and some seed among the first few hundred must report a violation.
// The hunts compute rather than wait, so they run in child processes, one per core
// (tests/helpers/concurrent_tests.ts).
import assert from "node:assert/strict";
import { hunt, loadMutant, mutants } from "./sim/mutants.ts";
import { registerConcurrentTests } from "./helpers/concurrent_tests.ts";

/** How many seeds each mutant may take; the first seeds that catch them are far below this. */
const seedBudget = 600;

registerConcurrentTests(
  import.meta.url,
  mutants.filter((candidate) => candidate.huntable).map((mutant) => ({
    name: `explorer catches the mutant "${mutant.name}" within ${seedBudget} seeds`,
    fn: async () => {
      const make = await loadMutant(mutant);
      const found = await hunt(make, seedBudget);
      assert.ok(
        found !== null,
        `expected a violation with ${mutant.description}, but seeds 1-${seedBudget} ran clean`,
      );
      console.log(
        `caught at seed ${found.seed}: ${found.violation!.property}: ${found.violation!.message}`,
      );
    },
  })),
  { concurrency: navigator.hardwareConcurrency },
);
