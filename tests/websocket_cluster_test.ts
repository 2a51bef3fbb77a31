/**
 * Three key/value peers as separate `deno run` processes over WebSockets, with state on disk:
 * elections and commits, a SIGKILLed leader, restart from disk, a peer cut off at the transport,
 * and hostile clients. The steps share one cluster and run in order.
 */

import assert from "node:assert/strict";
import { LocalCluster } from "../examples/cluster.ts";
import { KvClient } from "../examples/kv/client.ts";
import { RawClient, tokenUrl, waitFor } from "./helpers/websocket.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Writes `count` keys named `prefix`N; returns what was acknowledged. */
async function writeKeys(
  client: KvClient,
  prefix: string,
  count: number,
): Promise<Map<string, string>> {
  const written = new Map<string, string>();
  for (let i = 0; i < count; i++) {
    await client.put(`${prefix}${i}`, `value-${prefix}${i}`);
    written.set(`${prefix}${i}`, `value-${prefix}${i}`);
  }
  return written;
}

/** Waits until every running peer has applied all of `expected` and holds the same data. */
async function waitForSameData(
  cluster: LocalCluster,
  expected: Map<string, string>,
): Promise<void> {
  const peers = cluster.peerUrls.map((_, peer) => peer).filter((peer) => cluster.isRunning(peer));
  let seen: unknown;
  try {
    await waitFor("all peers to hold every acknowledged write", async () => {
      const data = await Promise.all(peers.map((peer) => cluster.data(peer)));
      seen = data;
      return data.every((entries) =>
        entries !== undefined && [...expected].every(([key, value]) =>
          new Map(entries).get(key) === value
        ) && JSON.stringify(entries) === JSON.stringify(data[0])
      );
    }, 10000);
  } catch (error) {
    throw new Error(`${error}; last seen ${JSON.stringify(seen).slice(0, 500)}`);
  }
}

Deno.test("3 peer processes over WebSockets", sanitized, async (t) => {
  // A known secret, so that the malformed-frames step can get past the upgrade.
  const secret = "cluster-test-secret-0123456789";
  const cluster = await LocalCluster.start({ peers: 3, faultInjection: true, secret });
  const client = new KvClient(cluster.httpUrls, { deadlineMs: 15000 });
  const acknowledged = new Map<string, string>();
  try {
    let leader = -1;

    await t.step("elect a leader and commit writes", async () => {
      leader = await cluster.waitForLeader();
      for (const [key, value] of await writeKeys(client, "a", 10)) acknowledged.set(key, value);
      assert.deepEqual(await client.get("a3"), "value-a3");
      assert.deepEqual(await client.get("missing"), null);
      await waitForSameData(cluster, acknowledged);
    });

    await t.step("a client without the secret is refused", async () => {
      const forged = await tokenUrl(
        cluster.peerUrls[leader]!,
        (leader + 1) % 3,
        leader,
        "not-the-cluster-secret-at-all",
      );
      // Refused at the upgrade request, before any WebSocket exists.
      for (const url of [forged, cluster.peerUrls[leader]!]) {
        const forger = new RawClient(url);
        await forger.closed;
        assert.deepEqual(forger.wasOpened, false, url);
      }
      assert.deepEqual(await client.get("a0"), "value-a0", "the cluster still serves");
    });

    await t.step(
      "malformed, oversized and wrong-type frames leave the peer serving, state unchanged",
      async () => {
        const target = (leader + 1) % 3;
        const before = { status: await cluster.status(target), data: await cluster.data(target) };
        const frames: (string | Uint8Array)[] = [
          "{not json",
          new Uint8Array([0xde, 0xad]),
          JSON.stringify({
            v: 1,
            type: "request",
            id: 1,
            method: "AppendEntries",
            args: "x".repeat(5 << 20),
          }),
          JSON.stringify({
            v: 1,
            type: "request",
            id: 1,
            method: "RequestVote",
            args: { term: 1e9, candidateId: 0 },
          }),
          JSON.stringify({ v: 7, type: "hello" }),
          JSON.stringify([1, 2, 3]),
        ];
        for (const frame of frames) {
          // With a valid token (the secret), the frames before the hello reach the parser.
          const url = await tokenUrl(cluster.peerUrls[target]!, (target + 1) % 3, target, secret);
          const client = new RawClient(url);
          await client.challenge();
          client.socket.send(frame);
          assert.deepEqual((await client.closed).code, 4008, `frame ${String(frame).slice(0, 40)}`);
        }
        const after = { status: await cluster.status(target), data: await cluster.data(target) };
        assert.deepEqual(after.status?.term, before.status?.term, "the peer's term");
        assert.deepEqual(after.status?.pid, before.status?.pid, "the peer process");
        assert.deepEqual(after.data, before.data, "the peer's data");
        acknowledged.set("b", "after-bad-frames");
        await client.put("b", "after-bad-frames");
        await waitForSameData(cluster, acknowledged);
      },
    );

    await t.step("a peer cut off at the transport is healed and catches up", async () => {
      const isolated = (leader + 1) % 3;
      await cluster.inject(isolated, "cut-off");
      for (const [key, value] of await writeKeys(client, "c", 5)) acknowledged.set(key, value);
      const data = new Map(await cluster.data(isolated));
      assert.deepEqual(data.has("c0"), false, "the cut-off peer got a write");
      await cluster.inject(isolated, "heal");
      await waitForSameData(cluster, acknowledged);
      leader = await cluster.waitForLeader();
    });

    let killedTerm = 0;
    let killedLogIndex = 0;
    await t.step("SIGKILL of the leader: a new leader takes over and writes continue", async () => {
      const killed = leader;
      ({ term: killedTerm, lastLogIndex: killedLogIndex } = (await cluster.status(killed))!);
      await cluster.kill(killed, "SIGKILL");
      leader = await cluster.waitForLeader(10000);
      assert.ok(leader !== killed, `peer ${killed} was killed but is reported as leader`);
      for (const [key, value] of await writeKeys(client, "d", 10)) acknowledged.set(key, value);
      await waitForSameData(cluster, acknowledged);
      leader = killed; // remembered for the next step
    });

    await t.step("a restarted peer recovers its state from disk and catches up", async () => {
      const restarted = leader;
      await cluster.startPeer(restarted, { cutOff: true });
      const status = (await cluster.status(restarted))!;
      assert.ok(
        status.term >= killedTerm,
        `restarted while cut off, the peer should have its term ${killedTerm} from disk; it has ${status.term}`,
      );
      assert.ok(
        status.lastLogIndex >= killedLogIndex,
        `restarted while cut off, the peer should have its ${killedLogIndex} log entries from disk; ` +
          `it has ${status.lastLogIndex}`,
      );
      await cluster.inject(restarted, "heal");
      await waitForSameData(cluster, acknowledged);
    });
  } finally {
    client.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true });
  }
});
