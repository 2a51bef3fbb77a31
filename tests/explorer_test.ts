// The explorer over a fixed range of seeds: each draws a cluster of 3, 5 or 7 peers and a minute of
// partitions, clogs, losses, duplicates, delays, crashes and slow disks, checks Raft's safety
// properties throughout, then heals a majority and requires a commit. A failure prints the seed's
// trace and the command that replays it. The tests compute rather than wait, so they run in child
// processes, one per core (tests/helpers/concurrent_tests.ts).
import assert from "node:assert/strict";
import { exploreSeed } from "./sim/explorer.ts";
import { printViolation } from "./sim/explore.ts";
import { type ConcurrentTest, registerConcurrentTests } from "./helpers/concurrent_tests.ts";

const firstSeed = 1;
const seedCount = 1000;
const seedsPerTest = 100;

const tests: ConcurrentTest[] = [];
for (let first = firstSeed; first < firstSeed + seedCount; first += seedsPerTest) {
  const last = first + seedsPerTest - 1;
  tests.push({
    name: `explorer: seeds ${first}-${last} keep Raft safe and live`,
    fn: async () => {
      const failed: number[] = [];
      for (let seed = first; seed <= last; seed++) {
        const result = await exploreSeed(seed);
        if (result.violation === null) continue;
        failed.push(seed);
        printViolation(result, console.log);
      }
      if (failed.length > 0) {
        throw new Error(
          `Expected no violations in seeds ${first}-${last}, got some in seeds ${
            failed.join(", ")
          }`,
        );
      }
    },
  });
}

tests.push({
  name: "explorer: a seed replays exactly, and another seed runs differently",
  fn: async () => {
    const first = await exploreSeed(7);
    const again = await exploreSeed(7);
    const other = await exploreSeed(8);
    assert.equal(again.digest, first.digest);
    assert.equal(again.events, first.events);
    assert.equal(again.virtualMs, first.virtualMs);
    assert.notEqual(other.digest, first.digest);
  },
});

registerConcurrentTests(import.meta.url, tests, { concurrency: navigator.hardwareConcurrency });
