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
import {
  assertCommits,
  type InsiderCluster,
  isErrorReply,
  nestedArray,
  startInsiderCluster,
  stopCluster,
} from "./helpers/hostile.ts";
import { peakRss, putLargeBody, rssBytes, SocketFlood } from "./helpers/attacks.ts";
import { sanitized } from "./helpers/sanitized.ts";
import { waitFor } from "./helpers/websocket.ts";

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

function portOf(url: string): number {
  return Number(new URL(url).port);
}

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
