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

/** Each entry point, run with no permissions at all: what it must name, and the task it offers. */
const withoutPermissions: { args: string[]; names: RegExp[]; task?: string }[] = [
  {
    args: ["examples/demo.ts"],
    names: [/network access to 127\.0\.0\.1/, /--allow-net=127\.0\.0\.1/, /--allow-write=data/],
    task: "deno task demo",
  },
  {
    args: ["examples/demo.ts", "--web"],
    names: [/read access to examples\/web\/page/, /--allow-read=examples\/web\/page/],
    task: "deno task demo --web",
  },
  {
    args: ["examples/replace_demo.ts"],
    names: [/permission to run deno/, /--allow-run=deno/],
    task: "deno task demo:replace",
  },
  {
    args: ["examples/cluster.ts", "--data", "/srv/raft"],
    names: [/write access to \/srv\/raft/, /--allow-write=\/srv\/raft/],
  },
  {
    args: [
      "examples/kv/server.ts",
      ...["--me", "0", "--peers", "ws://127.0.0.1:7001", "--http", "http://127.0.0.1:8001"],
      ...["--data", "data/peer0", "--fault-injection"],
    ],
    names: [
      /the environment variables RAFT_SECRET and RAFT_FAULT_TOKEN/,
      /--allow-read=data\/peer0 --allow-write=data\/peer0/,
      /--allow-env=RAFT_SECRET,RAFT_FAULT_TOKEN/,
    ],
    task: "deno task cluster",
  },
  {
    args: ["examples/counter/server.ts", "0", "data/counter0"],
    names: [/--allow-net=127\.0\.0\.1 --allow-read=data\/counter0 --allow-write=data\/counter0/],
  },
];

for (const { args, names, task } of withoutPermissions) {
  Deno.test(
    `deno run ${args.join(" ")}, with no permissions, says which flags to add`,
    sanitized,
    async () => {
      const { code, stdout, stderr } = await run(["run", ...args]);
      assert.equal(code, 2, stdout + stderr);
      assert.match(stderr, /^This example needs .+: run it with --allow-.+\.\n$/);
      for (const name of names) assert.match(stderr, name);
      if (task !== undefined) assert.ok(stderr.includes(`(or use \`${task}\`)`), stderr);
      else assert.doesNotMatch(stderr, /or use/);
    },
  );
}

Deno.test(
  "a permission error after the up-front check is one line, not a stack trace",
  sanitized,
  async () => {
    const { code, stdout, stderr } = await run(["run", "tests/fixtures/lacks_permission.ts"]);
    assert.equal(code, 2, stdout + stderr);
    assert.equal(stdout, "");
    assert.match(
      stderr,
      /^This example lacks a permission\. Requires read access to ".+lacks_permission\.ts", run again with the --allow-read flag \(or use `deno task fixture`\)\.\n$/,
    );
  },
);
