/**
 * The web view's launcher without a browser: its controls refuse requests without this run's
 * token, from another origin or under another host name, and obey the right ones; and the
 * timeline it derives from snapshots names elections, leaders and lost peers, timed from the
 * action before them.
 */

import assert from "node:assert/strict";
import { LocalCluster } from "../examples/cluster.ts";
import type { PeerSnapshot } from "../examples/kv/observe.ts";
import { ClusterView, type TimelineEntry } from "../examples/web/cluster_view.ts";
import { Dashboard } from "../examples/web/dashboard.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "web launcher: controls obey only this run's token, origin and host",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 1 });
    const dashboard = await Dashboard.start(cluster);
    const http = Deno.createHttpClient({});
    const origin = new URL(dashboard.url).origin;
    const token = new URLSearchParams(new URL(dashboard.url).hash.slice(1)).get("token")!;
    const post = async (
      path: string,
      headers: Record<string, string>,
      body: string | null = null,
    ) => {
      const response = await fetch(`${origin}${path}`, {
        method: "POST",
        headers,
        body,
        client: http,
      });
      return { status: response.status, text: await response.text() };
    };
    try {
      const refusals: [string, Record<string, string>, number, RegExp][] = [
        ["no token", {}, 403, /X-Launcher-Token/],
        ["a wrong token", { "x-launcher-token": "f".repeat(48) }, 403, /X-Launcher-Token/],
        ["the token as a cookie", { cookie: `token=${token}` }, 403, /X-Launcher-Token/],
        [
          "another origin",
          { "x-launcher-token": token, origin: "http://evil.example" },
          403,
          /origin http:\/\/evil\.example/,
        ],
      ];
      for (const [what, headers, status, message] of refusals) {
        const reply = await post("/api/peers/0/kill", headers);
        assert.deepEqual(reply.status, status, `${what}: ${reply.text}`);
        assert.match(reply.text, message, what);
        assert.ok(cluster.isRunning(0), `${what} killed the peer`);
      }
      // fetch() sends its own Host header; a DNS-rebinding page's request is written by hand.
      const rebound = await rawRequest(
        Number(new URL(origin).port),
        `POST /api/peers/0/kill HTTP/1.1\r\nHost: evil.example\r\nX-Launcher-Token: ${token}\r\n` +
          `Content-Length: 0\r\nConnection: close\r\n\r\n`,
      );
      assert.match(rebound, /^HTTP\/1\.1 403/, rebound);
      assert.match(rebound, /Unexpected Host header \\"evil\.example\\"/, rebound);
      assert.ok(cluster.isRunning(0), "a rebound host name killed the peer");

      const good = { "x-launcher-token": token, origin };
      assert.deepEqual(
        (await post("/api/peers/0/restart", good)).status,
        409,
        "restart while running",
      );
      assert.deepEqual((await post("/api/peers/7/kill", good)).status, 404);
      assert.deepEqual((await post("/api/peers/0/explode", good)).status, 404);
      assert.match(
        (await post("/api/writes", { ...good, "content-type": "application/json" }, '{"rate":-1}'))
          .text,
        /from 0 to 1000, got -1/,
      );
      assert.deepEqual((await post("/api/writes", good, '{"rate":1}')).status, 415);

      assert.deepEqual((await post("/api/peers/0/kill", good)).status, 200);
      assert.ok(!cluster.isRunning(0), "the right request killed the peer");
      assert.deepEqual((await post("/api/peers/0/restart", good)).status, 200);
      assert.ok(cluster.isRunning(0), "and restarted it");
    } finally {
      http.close();
      await dashboard.close();
      await cluster.stop();
      await Deno.remove(cluster.dataDir, { recursive: true });
    }
  },
);

/** Sends `request` as it is to 127.0.0.1:`port`; resolves to the whole response. */
async function rawRequest(port: number, request: string): Promise<string> {
  const connection = await Deno.connect({ hostname: "127.0.0.1", port });
  await connection.write(new TextEncoder().encode(request));
  let response = "";
  for await (const chunk of connection.readable.pipeThrough(new TextDecoderStream())) {
    response += chunk;
  }
  return response;
}

/** A snapshot of `id` with what a test cares about, the rest empty. */
function snapshot(
  id: number,
  pid: number,
  term: number,
  role: PeerSnapshot["status"]["role"],
  elections: Partial<PeerSnapshot["elections"]> = {},
): PeerSnapshot {
  return {
    id,
    pid,
    status: {
      id,
      term,
      role,
      leaderId: role === "leader" ? id : null,
      commitIndex: 0,
      lastApplied: 0,
      lastLogIndex: 0,
      snapshotIndex: 0,
      followers: [],
      closed: false,
    },
    log: [],
    elections: { preVotesStarted: 0, started: 0, won: 0, ...elections },
    messagesPerSecond: {},
    saves: { perSecond: 0, meanMs: null, p99Ms: null },
    events: [],
  };
}

Deno.test("web launcher: the timeline names elections and leaders, timed from the action", () => {
  const entries: TimelineEntry[] = [];
  const view = new ClusterView(["http://a", "http://b"], (change) => {
    if (change.type === "entry") entries.push(change.entry);
  });
  view.snapshot(0, snapshot(0, 100, 1, "leader", { won: 1, started: 1 }));
  view.snapshot(1, snapshot(1, 101, 1, "follower"));
  view.setReachability(0, "up", "");
  view.setReachability(1, "up", "");
  assert.deepEqual(view.leader, { id: 0, term: 1 });

  view.action(0, "Kill peer 0");
  view.setProcess(0, "stopped");
  view.setReachability(0, "lost", "its status stream ended");
  view.snapshot(1, snapshot(1, 101, 1, "follower", { preVotesStarted: 1 }));
  view.snapshot(1, snapshot(1, 101, 2, "leader", { preVotesStarted: 1, started: 1, won: 1 }));
  // A second pre-vote in the same term is not news.
  view.snapshot(1, snapshot(1, 101, 2, "leader", { preVotesStarted: 1, started: 1, won: 1 }));

  const texts = entries.map((entry) => entry.text);
  const fromKill = texts.slice(texts.indexOf("Kill peer 0") + 1);
  assert.deepEqual(fromKill, [
    "No leader: peer 0 no longer leads or is not heard",
    "Peer 0 is lost: its status stream ended",
    "Peer 1 heard from no leader in term 1 and asked for pre-votes",
    "Peer 1 started an election for term 2",
    "Peer 1 won the election for term 2",
    "Leader: peer 1, term 2",
  ]);
  const last = entries[entries.length - 1]!;
  assert.deepEqual(last.after?.action, "Kill peer 0");
  assert.ok(last.after.ms >= 0 && last.after.ms < 1000, `after ${last.after.ms} ms`);
  assert.deepEqual(view.leader, { id: 1, term: 2 });

  // A restarted peer (new pid) starts its counters afresh: no election is made up from them.
  const before = entries.length;
  view.setProcess(0, "running");
  view.snapshot(0, snapshot(0, 200, 2, "follower"));
  view.setReachability(0, "up", "");
  assert.deepEqual(entries.slice(before).map((entry) => entry.text), [
    "Peer 0 is back (pid 200): term 2, follower",
  ]);
});
