/**
 * Membership across real processes: the key/value example's membership API (`/members`) on
 * three peers over WebSockets, every refusal with its status; and the one-command demo of
 * replacing a dead machine (`deno task demo:replace`), which must pass.
 */

import assert from "node:assert/strict";
import { LocalCluster } from "../examples/cluster.ts";
import { root, taskArgs } from "./helpers/tasks.ts";
import { sanitized } from "./helpers/sanitized.ts";

async function send(
  http: Deno.HttpClient,
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { ...init, client: http });
  return { status: response.status, body: await response.json() };
}

Deno.test(
  "kv example: the membership API refuses what it must, and changes the cluster",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 4, initialPeers: 3, absent: [3] });
    const http = Deno.createHttpClient({});
    try {
      const leader = await cluster.waitForLeader(15_000);
      const follower = [0, 1, 2].find((peer) => peer !== leader)!;
      const admin = { authorization: `Bearer ${cluster.secret}` };
      const at = (peer: number, path: string) => `${cluster.httpUrls[peer]}${path}`;

      assert.equal((await send(http, at(leader, "/members"))).status, 401, "no secret");
      const wrong = await send(http, at(leader, "/members"), {
        headers: { authorization: `Bearer ${cluster.secret.slice(1)}x` },
      });
      assert.equal(wrong.status, 401, "a wrong secret");
      const listed = await send(http, at(follower, "/members"), { headers: admin });
      assert.equal(listed.status, 200);
      assert.deepEqual(
        (listed.body.configuration as { voters: { id: number }[] }).voters.map((m) => m.id),
        [0, 1, 2],
      );

      const post = (peer: number, body: unknown, path = "/members") =>
        send(http, at(peer, path), { method: "POST", headers: admin, body: JSON.stringify(body) });
      const fromFollower = await post(follower, { id: 3, address: cluster.peerUrls[3] });
      assert.equal(fromFollower.status, 421, "a follower points at the leader");
      assert.equal(fromFollower.body.leader, cluster.httpUrls[leader]);
      assert.equal((await post(leader, { id: 1, address: cluster.peerUrls[1] })).status, 409);
      assert.equal((await post(leader, { id: -2, address: "x" })).status, 400);
      assert.equal((await post(leader, "not an object")).status, 400);
      const unknown = await send(http, at(leader, "/members/9"), {
        method: "DELETE",
        headers: admin,
      });
      assert.equal(unknown.status, 404);
      assert.equal((await post(leader, {}, "/members/9/promote")).status, 404);

      // Grow to four: the new peer joins, is added and promoted in one call.
      await cluster.startPeer(3);
      const grown = await post(leader, { id: 3, address: cluster.peerUrls[3], voter: true });
      assert.equal(grown.status, 200, JSON.stringify(grown.body));
      assert.deepEqual(
        (grown.body.configuration as { voters: { id: number }[] }).voters.map((m) => m.id),
        [0, 1, 2, 3],
      );
      const status = await cluster.status(3);
      assert.ok(status !== undefined && status.appliedIndex > 0, "the new peer applied the log");
    } finally {
      await cluster.stop();
      http.close();
    }
  },
);

Deno.test("deno task demo:replace passes, with the task's permissions", sanitized, async () => {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", "--no-prompt", ...(await taskArgs("demo:replace")).slice(1)],
    cwd: root,
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout) + new TextDecoder().decode(output.stderr);
  assert.equal(output.code, 0, text);
  assert.match(text, /all \d+ acknowledged writes are on every member: 0, 2, 3/);
  assert.match(text, /replace demo passed/);
  assert.match(text, /state under (data\/replace-demo-\w+)/);
  const dataDir = text.match(/state under (data\/replace-demo-\w+)/)![1]!;
  await assert.rejects(Deno.stat(`${root}${dataDir}`), Deno.errors.NotFound, "left its data");
});
