// The key/value example's state machine on RaftNode, under the explorer's fault schedules, with
// clients that time out and retry: every seed's history must be linearizable and every peer must
// end with the same data (tests/sim/kv_explorer.ts). And the explorer must catch reads that can
// be stale (tests/sim/mutants.ts, readMutants).
import assert from "node:assert/strict";
import { type CreateNode, exploreKvSeed } from "./sim/kv_explorer.ts";
import { loadMutantModule, readMutants } from "./sim/mutants.ts";
import { sanitized } from "./helpers/sanitized.ts";

const seedCount = 200;
const seedsPerTest = 50;

for (let first = 1; first <= seedCount; first += seedsPerTest) {
  const last = first + seedsPerTest - 1;
  Deno.test(
    `kv explorer: seeds ${first}-${last} are linearizable and converge`,
    sanitized,
    async () => {
      const failed: string[] = [];
      for (let seed = first; seed <= last; seed++) {
        const result = await exploreKvSeed(seed);
        if (result.violation === null) continue;
        failed.push(`seed ${seed}: ${result.violation}`);
        console.log(result.trace.slice(-60).join("\n"));
      }
      assert.deepEqual(
        failed,
        [],
        "replay one with: deno task explore --only kv --seed N --verbose",
      );
    },
  );
}

/** How many seeds each read mutant may take; the first that catch them are far below this. */
const seedBudget = 150;

for (const mutant of readMutants) {
  Deno.test(
    `kv explorer catches the mutant "${mutant.name}" within ${seedBudget} seeds`,
    sanitized,
    async () => {
      const { RaftNode } = await loadMutantModule<{ RaftNode: { create: CreateNode } }>(
        mutant,
        "node/raft_node.ts",
      );
      for (let seed = 1; seed <= seedBudget; seed++) {
        const result = await exploreKvSeed(seed, { create: RaftNode.create });
        if (result.violation === null) continue;
        console.log(`caught at seed ${seed}: ${result.violation.slice(0, 400)}`);
        return;
      }
      assert.fail(
        `expected a violation with ${mutant.description}, but seeds 1-${seedBudget} ran clean`,
      );
    },
  );
}
