/**
 * The examples run with the narrow permissions their tasks grant (the peers they start, with
 * narrower ones still), and the in-memory example with none at all.
 */

import assert from "node:assert/strict";
import { root, taskArgs } from "./helpers/tasks.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Runs `deno <args>` from the repository's root, never prompting; its exit code and output. */
async function run(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  const [subcommand, ...rest] = args;
  const output = await new Deno.Command(Deno.execPath(), {
    args: [subcommand!, "--no-prompt", ...rest],
    cwd: root,
    env: { NO_COLOR: "1" },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test("deno task demo passes with the task's permissions", sanitized, async () => {
  const { code, stdout, stderr } = await run(await taskArgs("demo"));
  assert.equal(code, 0, stdout + stderr);
  assert.match(stdout, /PASS: stopped every peer and removed the data directory/);
  const dataDir = stdout.match(/state under (data\/demo-\w+)/)?.[1];
  assert.ok(dataDir !== undefined, `no data directory named in:\n${stdout}`);
  await assert.rejects(Deno.stat(`${root}${dataDir}`), Deno.errors.NotFound, "left its data");
});

Deno.test("examples/in_memory_cluster.ts runs with no permissions", sanitized, async () => {
  const { code, stdout, stderr } = await run(["run", "examples/in_memory_cluster.ts"]);
  assert.equal(code, 0, stdout + stderr);
  assert.match(stdout, /peer 2 applies 1 \{ op: "set", key: "x", value: 1 \}/);
});
