/**
 * The service guide (docs/services.md) is run, not just read: each code block that names a file
 * is that file, each runnable block runs with no permissions at all, and the three-process
 * counter runs with exactly the permissions the guide gives, through a leader's SIGKILL.
 */

import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { sanitized } from "./helpers/sanitized.ts";

const root = fileURLToPath(new URL("../", import.meta.url));
const guidePath = `${root}docs/services.md`;
const guide = await Deno.readTextFile(guidePath);

/** The guide's ```ts blocks: `path` for those that show a file, null for runnable ones. */
const blocks = [...guide.matchAll(/```ts( [^\n]+)?\n(.*?)```/gs)].map((match) => ({
  path: match[1]?.trim() ?? null,
  code: match[2]!,
}));

Deno.test("services guide: every block that names a file is that file", sanitized, async () => {
  const named = blocks.filter((block) => block.path !== null);
  assert.ok(named.length >= 2, `expected the guide to show its files, found ${named.length}`);
  for (const block of named) {
    const file = await Deno.readTextFile(`${root}${block.path}`);
    assert.equal(block.code, file, `the guide's copy of ${block.path} differs from the file`);
  }
});

Deno.test("services guide: the in-memory cluster runs with no permissions", sanitized, async () => {
  const runnable = blocks.filter((block) => block.path === null);
  assert.ok(runnable.length >= 1);
  for (const [i, block] of runnable.entries()) {
    // Beside the guide, so that its relative imports resolve as they read there.
    const file = `${root}docs/.guide_block_${i}.ts`;
    await Deno.writeTextFile(file, block.code);
    try {
      const output = await new Deno.Command(Deno.execPath(), {
        args: ["run", "--quiet", "--no-prompt", file],
        cwd: root,
        env: { NO_COLOR: "1" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const text = new TextDecoder().decode(output.stdout);
      assert.equal(
        output.code,
        0,
        `block ${i} failed:\n${new TextDecoder().decode(output.stderr)}`,
      );
      assert.match(text, /total: 5\ntotal: 7\n/);
      assert.match(text, /not the leader; node \d leads/);
    } finally {
      await Deno.remove(file);
    }
  }
});

/** The permission flags of the guide's `deno run` command for the counter's peers. */
const permissions = [
  "--allow-net=127.0.0.1",
  "--allow-read=data",
  "--allow-write=data",
  "--allow-env=RAFT_SECRET",
];

async function post(url: string, body: string): Promise<{ status: number; json: unknown }> {
  try {
    const response = await fetch(url, { method: "POST", body });
    return { status: response.status, json: await response.json() };
  } catch {
    return { status: 0, json: null };
  }
}

Deno.test(
  "services guide: three counter processes with the guide's permissions survive a leader's SIGKILL",
  sanitized,
  async () => {
    for (let id = 0; id < 3; id++) {
      const line = `deno run ${
        permissions.join(" ")
      } examples/counter/server.ts ${id} data/counter${id}`;
      assert.ok(guide.includes(line), `expected the guide to give the command ${line}`);
    }
    const run = `guide-test-${Date.now()}`;
    const secret = crypto.randomUUID();
    const processes: (Deno.ChildProcess | null)[] = [null, null, null];
    const start = (id: number) => {
      processes[id] = new Deno.Command(Deno.execPath(), {
        args: [
          "run",
          "--no-prompt",
          ...permissions,
          "examples/counter/server.ts",
          `${id}`,
          `data/${run}/counter${id}`,
        ],
        cwd: root,
        env: { RAFT_SECRET: secret, NO_COLOR: "1" },
        stdout: "null",
        stderr: "null",
      }).spawn();
    };
    const add = async (amount: number, deadlineMs = 15_000) => {
      const deadline = Date.now() + deadlineMs;
      while (Date.now() < deadline) {
        for (let id = 0; id < 3; id++) {
          if (processes[id] === null) continue;
          const reply = await post(`http://127.0.0.1:${8101 + id}/add`, String(amount));
          if (reply.status === 200) return { id, total: (reply.json as { total: number }).total };
        }
        await new Promise((resolve) => setTimeout(resolve, 100));
      }
      throw new Error(`no peer added ${amount} within ${deadlineMs} ms`);
    };
    try {
      for (let id = 0; id < 3; id++) start(id);
      const first = await add(5);
      assert.equal(first.total, 5);
      assert.equal((await add(2)).total, 7);
      // SIGKILL the leader: another takes over, and the total is intact.
      processes[first.id]!.kill("SIGKILL");
      await processes[first.id]!.status;
      processes[first.id] = null;
      const after = await add(1);
      assert.notEqual(after.id, first.id);
      assert.equal(after.total, 8);
      // The killed peer comes back with its state from disk.
      start(first.id);
      const deadline = Date.now() + 15_000;
      let total = -1;
      while (Date.now() < deadline && total !== 8) {
        try {
          const response = await fetch(`http://127.0.0.1:${8101 + after.id}/total`);
          total = ((await response.json()) as { total: number }).total;
        } catch {
          // Not yet.
        }
      }
      assert.equal(total, 8);
    } finally {
      for (const process of processes) {
        if (process === null) continue;
        process.kill("SIGTERM");
        await process.status;
      }
      await Deno.remove(`${root}data/${run}`, { recursive: true }).catch(() => {});
      await Deno.remove(`${root}data`).catch(() => {}); // only if empty
    }
  },
);
