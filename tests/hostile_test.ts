/**
 * Attacks on running peers: an insider who holds the secret and sends values no honest peer
 * sends, and outsiders who do not and try to exhaust a peer instead. Each test names the issue
 * item it covers; peers are `examples/kv/server.ts` processes (so a crash or a lowered open-file
 * limit stays theirs), except where a lone `make()` peer in this process shows the point.
 */

import assert from "node:assert/strict";
import { make } from "../src/driver.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import type { ApplyMsg } from "../src/types.ts";
import { FREELY_ACCEPTED_TERM, MAX_TERM_STEP } from "../src/raft/limits.ts";
import { LocalCluster } from "../examples/cluster.ts";
import { closeQuietly } from "../src/net/_close_quietly.ts";
import {
  assertCommits,
  HOSTILE_SECRET,
  type InsiderCluster,
  isErrorReply,
  nestedArray,
  startInsiderCluster,
  stopCluster,
} from "./helpers/hostile.ts";
import {
  floodLargeFrames,
  floodRefusals,
  peakRss,
  putLargeBody,
  rssBytes,
  SocketFlood,
} from "./helpers/attacks.ts";
import { sanitized } from "./helpers/sanitized.ts";
import {
  FakeHandler,
  RawClient,
  SECRET,
  startTransports,
  tokenUrl,
  waitFor,
} from "./helpers/websocket.ts";
import { WebSocketTransport } from "../src/transport/websocket_transport.ts";

/** A heartbeat from the insider (peer 2) in `term`, which matches any log. */
function heartbeat(term: number): Record<string, unknown> {
  return { term, leaderId: 2, prevLogIndex: 0, prevLogTerm: 0, entries: [], leaderCommit: 0 };
}

async function terms(insider: InsiderCluster): Promise<number[]> {
  const statuses = await Promise.all([0, 1].map((peer) => insider.cluster.status(peer)));
  return statuses.map((status) => status?.term ?? -1);
}

Deno.test("hostile insider: terms that leave no room to elect", sanitized, async (t) => {
  const insider = await startInsiderCluster();
  try {
    await assertCommits(insider.cluster, "before");

    await t.step("(2) a term of 2^53 - 1 is refused, and the cluster still commits", async () => {
      const before = await terms(insider);
      for (const peer of [0, 1]) {
        const reply = await insider.call(peer, "AppendEntries", heartbeat(Number.MAX_SAFE_INTEGER));
        assert.ok(isErrorReply(reply, "'term'"), `peer ${peer} answered ${JSON.stringify(reply)}`);
        const vote = await insider.call(peer, "RequestVote", {
          term: Number.MAX_SAFE_INTEGER,
          candidateId: 2,
          lastLogIndex: 1e6,
          lastLogTerm: 1,
        });
        assert.ok(isErrorReply(vote, "'term'"), `peer ${peer} answered ${JSON.stringify(vote)}`);
      }
      assert.deepEqual(await terms(insider), before, "the peers' terms");
      await assertCommits(insider.cluster, "after-max-term");
    });

    await t.step(
      "(2) a term of 2^52, the highest taken from afar, still leaves room to elect",
      async () => {
        for (const peer of [0, 1]) {
          const reply = await insider.call(peer, "AppendEntries", heartbeat(FREELY_ACCEPTED_TERM));
          assert.ok(!isErrorReply(reply, ""), `peer ${peer} refused: ${JSON.stringify(reply)}`);
        }
        // Both follow the insider, who never sends again: they must elect in term 2^52 + 1.
        await assertCommits(insider.cluster, "after-2^52");
        const now = await terms(insider);
        assert.ok(now.every((term) => term > FREELY_ACCEPTED_TERM), `terms ${now}`);
        // Above 2^52, a term may be at most 2^20 above the receiver's own.
        const far = Math.max(...now) + MAX_TERM_STEP + 1;
        for (const peer of [0, 1]) {
          const reply = await insider.call(peer, "AppendEntries", heartbeat(far));
          assert.ok(
            isErrorReply(reply, "'term'"),
            `peer ${peer} answered ${JSON.stringify(reply)}`,
          );
        }
        assert.deepEqual(await terms(insider), now, "the peers' terms");
      },
    );
  } finally {
    await insider.close();
  }
});

Deno.test(
  "hostile insider: (1) an AppendEntries carrying a command nested too deep is refused",
  sanitized,
  async () => {
    const insider = await startInsiderCluster();
    try {
      await assertCommits(insider.cluster, "settled");
      const leader = await insider.cluster.waitForLeader();
      const follower = 1 - leader;
      // Wait until the follower holds the leader's whole log, whose last entry is of this term.
      await waitFor("the follower to catch up", async () => {
        const [a, b] = await Promise.all([0, 1].map((peer) => insider.cluster.status(peer)));
        return a !== undefined && b !== undefined && a.lastLogIndex === b.lastLogIndex &&
          a.commitIndex === a.lastLogIndex && b.commitIndex === b.lastLogIndex;
      });
      const status = (await insider.cluster.status(follower))!;
      const append = (command: unknown) =>
        insider.call(follower, "AppendEntries", {
          term: status.term,
          leaderId: 2,
          prevLogIndex: status.lastLogIndex,
          prevLogTerm: status.term,
          entries: [{ term: status.term, command }],
          leaderCommit: status.lastLogIndex + 1,
        });
      // One level too deep for Raft: refused with an error reply.
      const reply = await append(nestedArray(65));
      assert.ok(
        isErrorReply(reply, "nested more than 64 levels deep"),
        `the follower answered ${JSON.stringify(reply)}`,
      );
      // 5,000 deep is past the frame limit (128 levels): the transport refuses the frame before
      // parsing it, and closes that connection (the insider redials).
      const refusedBefore = (await insider.cluster.status(follower))!.transport.refusedFrames;
      await append(nestedArray(5000));
      await waitFor("the follower to refuse the frame", async () => {
        const now = await insider.cluster.status(follower);
        return now !== undefined && now.transport.refusedFrames > refusedBefore;
      });
      await assertCommits(insider.cluster, "after-deep-command");
      // Both peers apply what commits, the follower included.
      const leaderStatus = (await insider.cluster.status(leader))!;
      await waitFor("the follower to apply the latest write", async () => {
        const now = await insider.cluster.status(follower);
        return now !== undefined && now.appliedIndex >= leaderStatus.commitIndex;
      });
    } finally {
      await insider.close();
    }
  },
);

Deno.test(
  "hostile service: start() refuses a command nested 5,000 deep with a RangeError",
  sanitized,
  async () => {
    const applied: ApplyMsg[] = [];
    const raft = await make(
      [{ call: () => Promise.resolve(undefined) }],
      0,
      new MemoryPersister(),
      (msg) => void applied.push(msg),
      { electionTimeoutMinMs: 50, electionTimeoutMaxMs: 60, heartbeatIntervalMs: 20 },
    );
    try {
      await waitFor("a leader", () => raft.getState().isLeader);
      assert.throws(
        () => raft.start({ op: "put", value: nestedArray(5000) }),
        (error: unknown) =>
          error instanceof RangeError && error.message.includes("more than 64 levels deep"),
      );
      assert.deepEqual(raft.status().lastLogIndex, 0, "nothing was appended");
      const { index } = raft.start({ op: "put", value: nestedArray(63) });
      await waitFor("the command at depth 64 to apply", () => applied.length === 1);
      assert.deepEqual(applied[0]!.commandIndex, index);
    } finally {
      raft.kill();
    }
  },
);

// ---- Outsiders: clients without the secret. ----

/** Whether the server has closed `conn` within `withinMs` (a read sees the end or fails). */
async function closedWithin(conn: Deno.Conn, withinMs: number): Promise<boolean> {
  const timer = setTimeout(() => closeQuietly(conn), withinMs);
  try {
    return await conn.read(new Uint8Array(256)) === null;
  } catch {
    return false; // our own timer closed it: the server did not
  } finally {
    clearTimeout(timer);
    closeQuietly(conn);
  }
}

function portOf(url: string): number {
  return Number(new URL(url).port);
}

Deno.test(
  "hostile outsider: (3) silent sockets under a low open-file limit time out, and both listeners recover",
  sanitized,
  async () => {
    // Each peer may hold 256 descriptors; the flood opens 300 to each of peer 0's two ports.
    const cluster = await LocalCluster.start({
      peers: 3,
      secret: HOSTILE_SECRET,
      maxOpenFiles: 256,
    });
    try {
      await cluster.waitForLeader();
      const raftPort = portOf(cluster.peerUrls[0]!);
      const httpPort = portOf(cluster.httpUrls[0]!);
      const floods = [raftPort, httpPort].map((port) =>
        new SocketFlood({
          port,
          sockets: 300,
          addresses: 1,
          mode: "silent",
          durationMs: 3000,
          maxOpened: 300,
        })
      );
      await new Promise((resolve) => setTimeout(resolve, 1500));
      await Promise.all(floods.map((flood) => flood.stop()));
      // After the flood: both listeners accept again.
      await waitFor("peer 0's HTTP API to answer", async () => {
        return (await cluster.status(0)) !== undefined;
      }, 3000);
      const raft = new RawClient(await tokenUrl(cluster.peerUrls[0]!, 1, 0, HOSTILE_SECRET));
      try {
        await raft.challenge(); // the Raft port upgraded a new connection
      } finally {
        await raft.close();
      }
      // Silent sockets are closed: the Raft port's after its 2 s handshake deadline, the HTTP
      // API's after its 5 s read timeout.
      const silent = await Promise.all(
        [raftPort, raftPort, httpPort, httpPort].map((port) =>
          Deno.connect({ hostname: "127.0.0.1", port })
        ),
      );
      const closed = await Promise.all(
        silent.map((conn, i) => closedWithin(conn, i < 2 ? 3000 : 7000)),
      );
      assert.deepEqual(closed, [true, true, true, true], "silent sockets closed by the server");
      await assertCommits(cluster, "after-silent-flood");
    } finally {
      await stopCluster(cluster);
    }
  },
);

Deno.test(
  "hostile outsider: (4) silent and unauthenticated sockets from 200 addresses do not lock a peer out",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { reconnectMaxDelayMs: 200 });
    const port = portOf(cluster.urls[0]!);
    const floods = (["silent", "upgrade"] as const).map((mode) =>
      new SocketFlood({
        port,
        sockets: 200,
        addresses: 200,
        mode,
        durationMs: 8000,
        maxOpened: 20_000,
      })
    );
    let restarted: WebSocketTransport | undefined;
    try {
      await new Promise((resolve) => setTimeout(resolve, 1000)); // the slots fill
      // Peer 1 restarts, so its link to peer 0 must be rebuilt through the flood.
      await cluster.transports[1]!.close();
      restarted = await WebSocketTransport.create({
        me: 1,
        peers: cluster.urls,
        secret: SECRET,
        reconnectMaxDelayMs: 200,
        log: () => {},
      });
      const transport = restarted;
      await waitFor(
        "the link between peers 0 and 1 to come back while the flood goes on",
        () =>
          transport.connectedPeers().includes(0) &&
          cluster.transports[0]!.connectedPeers().includes(1),
        4000,
      );
      assert.ok(floods.every((flood) => flood.running), "the flood was still on");
      const { pendingHandshakes, evictedConnections } = cluster.transports[0]!.stats;
      assert.ok(pendingHandshakes <= 2 * 256, `${pendingHandshakes} pending handshakes`);
      assert.ok(evictedConnections > 0, "the flood filled the slots");
      transport.setHandler(new FakeHandler());
      assert.deepEqual(await cluster.transports[0]!.clientEnds()[1]!.call("Echo", 1), { echo: 1 });
    } finally {
      await Promise.all(floods.map((flood) => flood.stop()));
      await restarted?.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "hostile outsider: (5) 60 MiB frames cost the peer no memory, before or after authentication",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 3, secret: HOSTILE_SECRET });
    try {
      await cluster.waitForLeader();
      const { pid } = (await cluster.status(0))!;
      const port = portOf(cluster.peerUrls[0]!);
      const before = await rssBytes(pid);
      // Eight clients without the secret, each announcing a 60 MiB frame.
      const { peak: unauthenticated } = await peakRss(
        pid,
        floodLargeFrames(port, {
          connections: 8,
          frameBytes: 60 << 20,
          target: "/",
          timeLimitMs: 5000,
        }),
      );
      // An insider, authenticated as peer 1, sends one 60 MiB frame on its dialed connection.
      const insider = new RawClient(await tokenUrl(cluster.peerUrls[0]!, 1, 0, HOSTILE_SECRET));
      const { peak: authenticated } = await peakRss(
        pid,
        (async () => {
          await insider.authenticate(1, 0, HOSTILE_SECRET);
          await waitFor("the welcome", () => insider.received.length === 2);
          insider.socket.send("x".repeat(60 << 20));
          return await insider.closed;
        })(),
      );
      const growth = (peak: number) => ((peak - before) / 2 ** 20).toFixed(1);
      assert.ok(
        unauthenticated - before < 32 << 20,
        `RSS grew by ${growth(unauthenticated)} MiB under unauthenticated frames`,
      );
      assert.ok(
        authenticated - before < 32 << 20,
        `RSS grew by ${growth(authenticated)} MiB under an authenticated 60 MiB frame`,
      );
      await assertCommits(cluster, "after-large-frames");
    } finally {
      await stopCluster(cluster);
    }
  },
);

Deno.test(
  "hostile outsider: (6) refusals are logged at a bounded rate and counted",
  sanitized,
  async () => {
    const cluster = await startTransports(2);
    try {
      const started = performance.now();
      const made = await floodRefusals(portOf(cluster.urls[0]!), {
        count: 600,
        parallel: 10,
        timeLimitMs: 15_000,
      });
      const seconds = (performance.now() - started) / 1000;
      const lines = cluster.logs[0]!.length;
      // A burst of 20, then 2 a second, plus one line per pause saying how many were left out.
      const allowed = 20 + 2 * (2 * Math.ceil(seconds) + 1);
      assert.ok(lines <= allowed, `${lines} log lines for ${made} refusals in ${seconds} s`);
      const stats = cluster.transports[0]!.stats;
      const refusals = stats.refusedUpgrades + stats.refusedHandshakes + stats.refusedFrames +
        stats.evictedConnections;
      assert.ok(refusals >= made, `${refusals} refusals counted for ${made} made`);
      assert.ok(
        stats.suppressedLogLines >= made - lines,
        `${stats.suppressedLogLines} log lines counted as left out`,
      );
      assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
    } finally {
      await cluster.close();
    }
  },
);

Deno.test(
  "hostile outsider: (7) the key/value API refuses bad escapes, oversized and non-UTF-8 bodies",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 1 });
    const http = Deno.createHttpClient({});
    const base = cluster.httpUrls[0]!;
    try {
      await cluster.waitForLeader();
      const { pid } = (await cluster.status(0))!;
      const port = portOf(base);

      const escape = await fetch(`${base}/kv/%ZZ`, { client: http });
      assert.deepEqual(escape.status, 400, await escape.text());

      const before = await rssBytes(pid);
      for (const chunked of [false, true]) {
        const { result, peak } = await peakRss(
          pid,
          putLargeBody(port, "/kv/big", { bodyBytes: 50 << 20, chunked, timeLimitMs: 5000 }),
        );
        assert.deepEqual(result.status, 413, `a 50 MB body${chunked ? ", chunked" : ""}`);
        const grown = (peak - before) / 2 ** 20;
        assert.ok(grown < 32, `RSS grew by ${grown.toFixed(1)} MiB for a 50 MB body`);
      }

      const invalid = await fetch(`${base}/kv/bytes`, {
        method: "PUT",
        body: new Uint8Array([0x61, 0xff, 0xfe, 0x62]),
        client: http,
      });
      assert.deepEqual(invalid.status, 400, await invalid.text());
      const absent = await fetch(`${base}/kv/bytes`, { client: http });
      assert.deepEqual(absent.status, 404, "nothing was stored");
      await absent.body?.cancel();
      const valid = await fetch(`${base}/kv/bytes`, {
        method: "PUT",
        body: "é ok",
        client: http,
      });
      assert.deepEqual(valid.status, 200, await valid.text());
      const read = await fetch(`${base}/kv/bytes`, { client: http });
      assert.deepEqual((await read.json()).value, "é ok");
    } finally {
      http.close();
      await stopCluster(cluster);
    }
  },
);

Deno.test(
  "hostile outsider: (3) the accept loop survives running out of file descriptors",
  sanitized,
  async () => {
    // A server whose caps are too high to help: only `ulimit -n 128` bounds its descriptors.
    const script = new URL("./helpers/bounded_server.ts", import.meta.url).pathname;
    const child = new Deno.Command("bash", {
      args: ["-c", `ulimit -n 128 && exec "$@"`, "bash", Deno.execPath(), "run", "-A", script],
      stdout: "piped",
      stderr: "null",
    }).spawn();
    const lines = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
    const http = Deno.createHttpClient({});
    try {
      const port = Number((await lines.read()).value);
      const flood = new SocketFlood({
        port,
        sockets: 300,
        addresses: 1,
        mode: "silent",
        durationMs: 3000,
        maxOpened: 300,
      });
      await new Promise((resolve) => setTimeout(resolve, 1000));
      await flood.stop();
      let stats: { acceptErrors?: number } | undefined;
      await waitFor("the server to answer after the flood", async () => {
        try {
          const response = await fetch(`http://127.0.0.1:${port}/stats`, {
            client: http,
            signal: AbortSignal.timeout(500),
          });
          stats = await response.json();
          return true;
        } catch {
          return false;
        }
      }, 5000);
      assert.ok((stats?.acceptErrors ?? 0) > 0, `accept never failed: ${JSON.stringify(stats)}`);
    } finally {
      http.close();
      await lines.cancel();
      child.kill("SIGKILL");
      await child.status;
    }
  },
);
