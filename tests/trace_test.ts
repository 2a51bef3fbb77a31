import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { traceFromEnvironment } from "../src/trace.ts";

// The tests give traceFromEnvironment the variable's value instead of setting RAFT_DEBUG: the
// environment is the whole process's, shared with test files that run in parallel.

Deno.test("RAFT_DEBUG: every peer's lines share one time base", async () => {
  const printed: string[] = [];
  const original = console.error;
  try {
    const early = traceFromEnvironment(() => "1");
    await sleep(30);
    const late = traceFromEnvironment(() => "1");
    assert.ok(early !== null && late !== null, "RAFT_DEBUG=1 turns the trace on");
    console.error = (line: string) => printed.push(line);
    early("[peer 0] first");
    late("[peer 1] second");
  } finally {
    console.error = original;
  }
  const stamps = printed.map((line) => Number(line.trim().split(" ")[0]));
  assert.equal(stamps.length, 2);
  assert.ok(stamps[0]! <= stamps[1]!, `lines in call order carry rising stamps: ${printed}`);
  assert.ok(printed[1]!.endsWith("[peer 1] second"));
});

Deno.test("RAFT_DEBUG unset, empty or 0 leaves the trace off", () => {
  for (const value of [undefined, "", "0"]) {
    assert.equal(traceFromEnvironment(() => value), null, `RAFT_DEBUG=${value}`);
  }
});

Deno.test("RAFT_DEBUG is read from the environment by default", async () => {
  const run = async (env: Record<string, string>) => {
    const code = `import { traceFromEnvironment } from ${
      JSON.stringify(
        new URL("../src/trace.ts", import.meta.url).href,
      )
    }; console.log(traceFromEnvironment() === null ? "off" : "on");`;
    const output = await new Deno.Command(Deno.execPath(), {
      args: ["eval", code],
      env,
      clearEnv: true,
    }).output();
    return new TextDecoder().decode(output.stdout).trim();
  };
  assert.equal(await run({ RAFT_DEBUG: "1" }), "on");
  assert.equal(await run({ RAFT_DEBUG: "0" }), "off");
  assert.equal(await run({}), "off");
});
