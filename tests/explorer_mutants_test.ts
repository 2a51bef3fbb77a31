// The explorer must catch classic Raft bugs: each mutant is a copy of src/ with one bug patched in
// (see tests/sim/mutants.ts), and some seed among the first few hundred must report a violation.
import assert from "node:assert/strict";
import { hunt, loadMutant, mutants } from "./sim/mutants.ts";

/** How many seeds each mutant may take; the first seeds that catch them are far below this. */
const seedBudget = 600;

for (const mutant of mutants) {
  Deno.test(`explorer catches the mutant "${mutant.name}" within ${seedBudget} seeds`, async () => {
    const make = await loadMutant(mutant);
    const found = await hunt(make, seedBudget);
    assert.ok(
      found !== null,
      `expected a violation with ${mutant.description}, but seeds 1-${seedBudget} ran clean`,
    );
    console.log(
      `caught at seed ${found.seed}: ${found.violation!.property}: ${found.violation!.message}`,
    );
  });
}
