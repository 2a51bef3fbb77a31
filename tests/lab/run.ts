/**
 * Runs a {@linkcode LabTest} on a fresh {@linkcode Tester} and cleans up whatever happens, in real
 * time or in a simulator's virtual time, one after another or concurrently in child processes.
 *
 * @module
 */

import { Simulator } from "../../src/sim/mod.ts";
import type { LabTest } from "./lab_tests.ts";
import { LAB_TEST_TIME_LIMIT_MS, Tester, type TesterOptions } from "./tester.ts";
import { sanitized } from "../helpers/sanitized.ts";
import type { ConcurrentTest } from "../helpers/concurrent_tests.ts";

/** Runs `test` with `options` (real time and in-memory persisters by default). */
export async function runLabTest(test: LabTest, options: TesterOptions = {}): Promise<void> {
  const cfg = await Tester.create(test.servers, {
    unreliable: test.unreliable,
    snapshots: test.snapshots ?? false,
    ...options,
  });
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

/** Options for {@linkcode concurrentLabTests}. */
export interface ConcurrentLabTestOptions {
  /** Runs one test. Default: {@linkcode runLabTest} in real time with in-memory persisters. */
  run?: (test: LabTest) => Promise<unknown>;
  /** Put before each lab name to make the `Deno.test` name. Default: none. */
  prefix?: string;
  /**
   * About how long each test takes, in seconds, by lab name: longer tests start first. Default:
   * {@linkcode typicalLabSeconds}.
   */
  typicalSeconds?: Readonly<Record<string, number>>;
}

/**
 * `tests` as tests for `registerConcurrentTests` (tests/helpers/concurrent_tests.ts): each runs
 * alone in a child process, sanitized. The tester still fails a test that takes longer than the
 * lab's 120 s; a child still running 10 s after that is killed, so a hung test fails too.
 */
export function concurrentLabTests(
  tests: LabTest[],
  options: ConcurrentLabTestOptions = {},
): ConcurrentTest[] {
  const run = options.run ?? ((test: LabTest) => runLabTest(test));
  const typicalSeconds = options.typicalSeconds ?? typicalLabSeconds;
  return tests.map((test) => ({
    name: (options.prefix ?? "") + test.name,
    expectedSeconds: typicalSeconds[test.name] ?? 1,
    killAfterMs: LAB_TEST_TIME_LIMIT_MS + 10_000,
    fn: async () => {
      await run(test);
    },
  }));
}

/**
 * How long the lab's tests take in real time, in seconds: the medians of the stress record in the
 * README (in-memory persisters; the durable ones take about as long). Only orders the start of a
 * concurrent run; a test missing here counts as 1 s.
 */
export const typicalLabSeconds: Readonly<Record<string, number>> = {
  TestInitialElection4A: 3.5,
  TestReElection4A: 5.5,
  TestManyElections4A: 7.4,
  TestBasicAgree4B: 0.9,
  TestRPCBytes4B: 1.3,
  TestFailAgree4B: 3.6,
  TestFailNoAgree4B: 3.9,
  TestConcurrentStarts4B: 1.1,
  TestRejoin4B: 4.7,
  TestBackup4B: 7.5,
  TestCount4B: 2.5,
  TestPersist14B: 5.2,
  TestPersist24B: 13.5,
  TestPersist34B: 2.3,
  TestFigure84B: 32.5,
  TestUnreliableAgree4B: 2.6,
  TestFigure8Unreliable4B: 36.1,
  TestReliableChurn4B: 16.1,
  TestUnreliableChurn4B: 16.1,
  // The 3D tests: the stress record in docs/testing.md.
  TestSnapshotBasic3D: 2.6,
  TestSnapshotInstall3D: 38.1,
  TestSnapshotInstallUnreliable3D: 46.5,
  TestSnapshotInstallCrash3D: 27.8,
  TestSnapshotInstallUnCrash3D: 40.6,
  TestSnapshotAllCrash3D: 7.5,
  TestSnapshotInit3D: 3.3,
};
