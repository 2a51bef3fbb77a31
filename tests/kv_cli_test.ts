/**
 * `deno task kv`, the key/value example's command-line client, as a person runs it (with the
 * task's permissions) against three real peers: put, get, del, status and members, each with its
 * output and exit code; and the usage errors, which exit 2 and say what is wrong.
 */

import assert from "node:assert/strict";
import { LocalCluster } from "../examples/cluster.ts";
import { root, taskArgs } from "./helpers/tasks.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Runs `deno task kv <args>` with `env`; its exit code and output. */
async function kv(
  args: string[],
  env: Record<string, string> = {},
): Promise<{ code: number; stdout: string; stderr: string }> {
  const [run, ...flags] = await taskArgs("kv");
  const output = await new Deno.Command(Deno.execPath(), {
    args: [run!, "--no-prompt", ...flags, ...args],
    cwd: root,
    env: { NO_COLOR: "1", ...env },
    clearEnv: true,
    stdin: "null",
  }).output();
  const decoder = new TextDecoder();
  return {
    code: output.code,
    stdout: decoder.decode(output.stdout),
    stderr: decoder.decode(output.stderr),
  };
}

Deno.test(
  "deno task kv: put, get, del, status and members against a cluster",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 3 });
    try {
      const leader = await cluster.waitForLeader(15_000);
      const addresses = cluster.httpUrls.join(",");
      const http = ["--http", addresses];

      const first = await kv([...http, "put", "greeting", "hello"]);
      assert.deepEqual([first.code, first.stdout], [0, "OK (a new key)\n"], first.stderr);
      const second = await kv([...http, "put", "greeting", "hi there"]);
      assert.deepEqual([second.code, second.stdout], [0, 'OK (replaced "hello")\n'], second.stderr);

      // The address list may also come from RAFT_HTTP; a follower read asks the leader first.
      const read = await kv(["get", "greeting"], { RAFT_HTTP: addresses });
      assert.deepEqual([read.code, read.stdout], [0, "hi there\n"], read.stderr);
      const fromFollower = await kv([...http, "get", "greeting", "--consistent", "follower"]);
      assert.deepEqual([fromFollower.code, fromFollower.stdout], [0, "hi there\n"]);

      const deleted = await kv([...http, "del", "greeting"]);
      assert.deepEqual([deleted.code, deleted.stdout], [0, 'Deleted (it was "hi there")\n']);
      const missing = await kv([...http, "get", "greeting"]);
      assert.equal(missing.code, 1);
      assert.equal(missing.stdout, "");
      assert.match(missing.stderr, /Key "greeting" is not set/);

      const status = await kv([...http, "status"]);
      assert.equal(status.code, 0, status.stderr);
      const lines = status.stdout.trimEnd().split("\n");
      assert.equal(lines.length, 3, status.stdout);
      lines.forEach((line, peer) => {
        assert.match(line, new RegExp(`^${cluster.httpUrls[peer]}\\s+peer ${peer}\\s`));
        assert.match(line, peer === leader ? /\bleader\s+term/ : /\bfollower\s+term/);
      });

      const noSecret = await kv([...http, "members"]);
      assert.equal(noSecret.code, 2);
      assert.match(noSecret.stderr, /members needs the cluster's secret: set RAFT_SECRET/);
      const wrongSecret = await kv([...http, "members"], { RAFT_SECRET: `x${cluster.secret}` });
      assert.equal(wrongSecret.code, 1);
      assert.match(wrongSecret.stderr, /refused the secret in RAFT_SECRET/);
      const members = await kv([...http, "members"], { RAFT_SECRET: cluster.secret });
      assert.equal(members.code, 0, members.stderr);
      const voters = cluster.peerUrls.map((url, id) => `${id} (${url})`).join(", ");
      assert.equal(
        members.stdout,
        `voters:   ${voters}\nlearners: none\nleader:   ${leader}\n`,
      );
    } finally {
      await cluster.stop();
    }
  },
);

Deno.test("deno task kv: usage errors exit 2 and say what is wrong", sanitized, async () => {
  const cases: [string[], RegExp][] = [
    [["put", "k", "v"], /No cluster address: pass --http URL,\.\.\. or set RAFT_HTTP/],
    [["--http", "ftp://127.0.0.1:1", "get", "k"], /"ftp:\/\/127\.0\.0\.1:1" is not an http:\/\//],
    [["--http", "http://127.0.0.1:1"], /No command given/],
    [["--http", "http://127.0.0.1:1", "frob"], /Unknown command "frob"/],
    [["--http", "http://127.0.0.1:1", "put", "k"], /put takes 2 operands \(put <key> <value>\)/],
    [["--http", "http://127.0.0.1:1", "del", "k", "--consistent", "lease"], /get only/],
    [["--http", "http://127.0.0.1:1", "get", "k", "--consistent", "any"], /follower or lease/],
  ];
  for (const [args, message] of cases) {
    const { code, stdout, stderr } = await kv(args);
    assert.equal(code, 2, `${args.join(" ")}: ${stderr}`);
    assert.equal(stdout, "");
    assert.match(stderr, message);
    assert.match(stderr, /Usage: deno task kv/);
  }
});

Deno.test("deno task kv: a cluster that is not there is said so", sanitized, async () => {
  // A port that was just free: nothing listens on it.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = listener.addr.port;
  listener.close();
  const http = ["--http", `http://127.0.0.1:${port}`];
  const status = await kv([...http, "status"]);
  assert.equal(status.code, 1);
  assert.match(status.stdout, /unreachable/);
  assert.match(status.stderr, /Cannot reach the cluster: no peer answered at .*Is it running\?/);
  const put = await kv([...http, "put", "k", "v"]);
  assert.equal(put.code, 1);
  assert.match(put.stderr, /Cannot reach the cluster/);
});
