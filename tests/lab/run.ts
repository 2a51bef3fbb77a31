/**
 * Runs a {@linkcode LabTest} on a fresh {@linkcode Tester} and cleans up whatever happens.
 *
 * @module
 */

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

/** Registers `tests` with `Deno.test`, with the op and resource sanitizers on. */
export function registerLabTests(tests: LabTest[], options: TesterOptions = {}, prefix = ""): void {
  for (const test of tests) {
    Deno.test({
      name: prefix + test.name,
      ...sanitized,
      fn: () => runLabTest(test, options),
    });
  }
}
