// The explorer over a fixed range of seeds: each draws a cluster of 3, 5 or 7 peers and a minute of
// partitions, clogs, losses, duplicates, delays, crashes and slow disks, checks Raft's safety
// properties throughout, then heals a majority and requires a commit. A failure prints the seed's
// trace and the command that replays it.
import { exploreSeed } from "./sim/explorer.ts";
import { printViolation } from "./sim/explore.ts";

const firstSeed = 1;
const seedCount = 1000;
const seedsPerTest = 100;

for (let first = firstSeed; first < firstSeed + seedCount; first += seedsPerTest) {
  const last = first + seedsPerTest - 1;
  Deno.test(`explorer: seeds ${first}-${last} keep Raft safe and live`, async () => {
    const failed: number[] = [];
    for (let seed = first; seed <= last; seed++) {
      const result = await exploreSeed(seed);
      if (result.violation === null) continue;
      failed.push(seed);
      printViolation(result, console.log);
    }
    if (failed.length > 0) {
      throw new Error(
        `Expected no violations in seeds ${first}-${last}, got some in seeds ${failed.join(", ")}`,
      );
    }
  });
}
