// The lab's 4A and 4B tests in a simulator's virtual time: the same tests, the same tester, a
// virtual clock. Each test's seed is fixed; LAB_SIM_SEED=n shifts them all, to explore.
import { lab4A, lab4B } from "./lab/lab_tests.ts";
import { registerLabTests, runLabTestSimulated } from "./lab/run.ts";

const base = Number(Deno.env.get("LAB_SIM_SEED") ?? "1");
const tests = lab4A.concat(lab4B);

registerLabTests(tests, async (test) => {
  const seed = base + tests.indexOf(test);
  const sim = await runLabTestSimulated(test, seed);
  console.log(`  (seed ${seed}, ${sim.clock.now()} virtual ms, digest ${sim.digest})`);
}, "sim: ");
