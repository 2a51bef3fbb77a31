import assert from "node:assert/strict";
import { setTimeout as sleep } from "node:timers/promises";
import { traceFromEnvironment } from "../src/trace.ts";

Deno.test("RAFT_DEBUG: every peer's lines share one time base", async () => {
  const before = Deno.env.get("RAFT_DEBUG");
  const printed: string[] = [];
  const original = console.error;
  Deno.env.set("RAFT_DEBUG", "1");
  try {
    const early = traceFromEnvironment();
    await sleep(30);
    const late = traceFromEnvironment();
    assert.ok(early !== null && late !== null, "RAFT_DEBUG=1 turns the trace on");
    console.error = (line: string) => printed.push(line);
    early("[peer 0] first");
    late("[peer 1] second");
  } finally {
    console.error = original;
    if (before === undefined) Deno.env.delete("RAFT_DEBUG");
    else Deno.env.set("RAFT_DEBUG", before);
  }
  const stamps = printed.map((line) => Number(line.trim().split(" ")[0]));
  assert.equal(stamps.length, 2);
  assert.ok(stamps[0]! <= stamps[1]!, `lines in call order carry rising stamps: ${printed}`);
  assert.ok(printed[1]!.endsWith("[peer 1] second"));
});

Deno.test("RAFT_DEBUG unset, empty or 0 leaves the trace off", () => {
  const before = Deno.env.get("RAFT_DEBUG");
  try {
    for (const value of [undefined, "", "0"]) {
      if (value === undefined) Deno.env.delete("RAFT_DEBUG");
      else Deno.env.set("RAFT_DEBUG", value);
      assert.equal(traceFromEnvironment(), null, `RAFT_DEBUG=${value}`);
    }
  } finally {
    if (before === undefined) Deno.env.delete("RAFT_DEBUG");
    else Deno.env.set("RAFT_DEBUG", before);
  }
});
