// The helper that runs slow tests concurrently in child processes (tests/helpers/concurrent_tests.ts)
// must still fail every test that fails, leaks or hangs, keep what the tests print, and really run
// tests at the same time. It runs tests/fixtures/concurrent_cases.ts as `deno test -A` would.
import assert from "node:assert/strict";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test("concurrent tests: each keeps its own verdict and output", sanitized, async () => {
  const directory = await Deno.makeTempDir({ prefix: "raft-concurrent-cases-" });
  try {
    const fixture = new URL("./fixtures/concurrent_cases.ts", import.meta.url).pathname;
    const result = await new Deno.Command(Deno.execPath(), {
      args: ["test", "-A", "--no-check", fixture],
      env: { CONCURRENT_CASES_DIR: directory, RAFT_TEST_CONCURRENCY: "8", NO_COLOR: "1" },
      stdin: "null",
    }).output();
    const output = new TextDecoder().decode(result.stdout) +
      new TextDecoder().decode(result.stderr);
    // The verdicts come before the errors, which quote the children's own lines.
    const summary = output.split("\n ERRORS \n")[0]!;
    const verdicts: Record<string, string> = {};
    for (const match of summary.matchAll(/^(\S.*) \.\.\. (ok|FAILED) \(/gm)) {
      verdicts[match[1]!] = match[2]!;
    }
    assert.deepEqual(verdicts, {
      "prints and passes": "ok",
      "meets its partner": "ok",
      "meets its partner too": "ok",
      "fails an assertion": "FAILED",
      "leaks a timer": "FAILED",
      "leaks a file": "FAILED",
      "hangs": "FAILED",
      "exits early": "FAILED",
    }, output);
    assert.notEqual(result.code, 0);
    assert.match(output, /^hello from the child$/m);
    assert.match(output, /expected 1, saw 2/);
    assert.match(output, /A timer was started in this test, but never completed/);
    assert.match(output, /A file was opened during the test, but not closed/);
    assert.match(output, /hangs: still running after 1000 ms, killed/);
    assert.match(output, /exits early: failed/);
  } finally {
    await Deno.remove(directory, { recursive: true });
  }
});
