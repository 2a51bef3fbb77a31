/**
 * Runs a {@linkcode LabTest} on a fresh {@linkcode Tester} and cleans up whatever happens, in real
 * time or in a simulator's virtual time.
 *
 * @module
 */

import { Simulator } from "../../src/sim/mod.ts";
import type { LabTest } from "./lab_tests.ts";
import { Tester, type TesterOptions } from "./tester.ts";
import { sanitized } from "../helpers/sanitized.ts";

/** Runs `test` with `options` (real time and in-memory persisters by default). */
export async function runLabTest(test: LabTest, options: TesterOptions = {}): Promise<void> {
  const cfg = await Tester.create(test.servers, { unreliable: test.unreliable, ...options });
  try {
    await test.body(cfg);
  } finally {
    await cfg.cleanup();
  }
}

/**
 * Runs `test` in virtual time on a simulator seeded with `seed`: the tester, the network and the
 * peers all use its clock and random source, and the network's messages go into its digest.
 * The lab's lines are printed with the prefix "(virtual time) " and count virtual seconds.
 * Resolves to the simulator, whose digest identifies the run.
 */
export async function runLabTestSimulated(
  test: LabTest,
  seed: number,
  options: TesterOptions = {},
): Promise<Simulator> {
  const sim = new Simulator({ seed });
  const simulated: TesterOptions = {
    clock: sim.clock,
    random: sim.random,
    record: (event) => sim.record(event),
    printPrefix: "(virtual time) ",
    ...options,
  };
  // The lab gives each test two minutes; a run that passes ten has lost its way.
  await sim.run(() => runLabTest(test, simulated), { timeLimitMs: 10 * 60_000 });
  return sim;
}

/**
 * Registers `tests` with `Deno.test`, with the op and resource sanitizers on. Each runs through
 * `run`: by default in real time with in-memory persisters.
 */
export function registerLabTests(
  tests: LabTest[],
  run: (test: LabTest) => Promise<unknown> = (test) => runLabTest(test),
  prefix = "",
): void {
  for (const test of tests) {
    Deno.test({
      name: prefix + test.name,
      ...sanitized,
      fn: async () => {
        await run(test);
      },
    });
  }
}
