// The lab's 4A, 4B and 3D tests in a simulator's virtual time: the same tests, the same tester, a
// virtual clock. Each test's seed is fixed; LAB_SIM_SEED=n shifts them all, to explore.
import { lab3D, lab4A, lab4B } from "./lab/lab_tests.ts";
import { registerLabTests, runLabTestSimulated } from "./lab/run.ts";

const base = Number(Deno.env.get("LAB_SIM_SEED") ?? "1");
// New suites go at the end, so that the earlier tests keep their seeds.
const tests = [...lab4A, ...lab4B, ...lab3D];

registerLabTests(tests, async (test) => {
  const seed = base + tests.indexOf(test);
  const sim = await runLabTestSimulated(test, seed);
  console.log(`  (seed ${seed}, ${sim.clock.now()} virtual ms, digest ${sim.digest})`);
}, "sim: ");
