/**
 * The key/value HTTP server (`examples/kv/server.ts`) as a process: its duplicate-detection
 * header contract, and how it shuts down with requests still open.
 */

import assert from "node:assert/strict";
import { LocalCluster, PEER_V8_FLAGS } from "../examples/cluster.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Sends one request; resolves to the status and the parsed JSON reply. */
async function send(
  http: Deno.HttpClient,
  url: string,
  init: RequestInit = {},
): Promise<{ status: number; body: Record<string, unknown> }> {
  const response = await fetch(url, { ...init, client: http });
  return { status: response.status, body: await response.json() };
}

/** A request body that sends `first` and then stays open until `finish()` or `abort()`. */
function slowBody(first: string) {
  let controller!: ReadableStreamDefaultController<Uint8Array>;
  const stream = new ReadableStream<Uint8Array>({
    start(c) {
      controller = c;
      c.enqueue(new TextEncoder().encode(first));
    },
  });
  return {
    stream,
    finish(rest: string) {
      controller.enqueue(new TextEncoder().encode(rest));
      controller.close();
    },
    abort() {
      try {
        controller.error(new Error("test over"));
      } catch {
        // Already closed.
      }
    },
  };
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

Deno.test("kv server: duplicate-detection headers", sanitized, async (t) => {
  const cluster = await LocalCluster.start({ peers: 1 });
  const http = Deno.createHttpClient({});
  const base = cluster.httpUrls[0]!;
  try {
    await cluster.waitForLeader();

    await t.step(
      "a header-less request that overtakes a slow PUT does not make the PUT a duplicate",
      async () => {
        const body = slowBody("val");
        const put = send(http, `${base}/kv/a`, { method: "PUT", body: body.stream });
        await sleep(300); // the server has the PUT's headers, not its body
        const other = await send(http, `${base}/kv/b`);
        assert.deepEqual(other.status, 404);
        body.finish("ue");
        const written = await put;
        assert.deepEqual(written, { status: 200, body: { key: "a", previous: null } });
        const read = await send(http, `${base}/kv/a`);
        assert.deepEqual(read, { status: 200, body: { key: "a", value: "value" } });
      },
    );

    await t.step("header-less requests are never taken for duplicates", async () => {
      for (const value of ["1", "2", "3"]) {
        assert.deepEqual(
          (await send(http, `${base}/kv/c`, { method: "PUT", body: value })).status,
          200,
        );
      }
      assert.deepEqual((await send(http, `${base}/kv/c`)).body.value, "3");
    });

    await t.step("both headers: a retry applies once", async () => {
      const headers = { "x-client-id": "client-1", "x-request-seq": "1" };
      const first = await send(http, `${base}/kv/d`, { method: "PUT", body: "x", headers });
      assert.deepEqual(first, { status: 200, body: { key: "d", previous: null } });
      await send(http, `${base}/kv/d`, {
        method: "PUT",
        body: "y",
        headers: { "x-client-id": "client-2", "x-request-seq": "1" },
      });
      const retry = await send(http, `${base}/kv/d`, { method: "PUT", body: "x", headers });
      assert.deepEqual(retry, { status: 200, body: { key: "d", previous: null } });
      assert.deepEqual((await send(http, `${base}/kv/d`)).body.value, "y");
    });

    await t.step("one header only, an empty id or a bad seq is refused with 400", async () => {
      const cases: [string, Record<string, string>][] = [
        ["only X-Client-Id", { "x-client-id": "client-3" }],
        ["only X-Request-Seq", { "x-request-seq": "5" }],
        ["empty X-Client-Id", { "x-client-id": "", "x-request-seq": "5" }],
        ["seq 0", { "x-client-id": "client-3", "x-request-seq": "0" }],
        ["seq not an integer", { "x-client-id": "client-3", "x-request-seq": "1.5" }],
        ["seq in hex", { "x-client-id": "client-3", "x-request-seq": "0x10" }],
        ["seq too large", { "x-client-id": "client-3", "x-request-seq": "9007199254740993" }],
        ["id too long", { "x-client-id": "c".repeat(300), "x-request-seq": "1" }],
      ];
      for (const [what, headers] of cases) {
        for (const method of ["GET", "PUT", "DELETE"]) {
          const reply = await send(http, `${base}/kv/e`, {
            method,
            headers,
            ...(method === "PUT" ? { body: "v" } : {}),
          });
          assert.deepEqual(reply.status, 400, `${what}, ${method}: ${JSON.stringify(reply.body)}`);
          assert.match(String(reply.body.error), /X-Client-Id|X-Request-Seq/, what);
        }
      }
      assert.deepEqual((await send(http, `${base}/kv/e`)).status, 404, "nothing was written");
    });
  } finally {
    http.close();
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true });
  }
});

/** Starts a PUT whose body never ends; resolves once the server has surely seen its headers. */
async function holdOpenPut(http: Deno.HttpClient, url: string) {
  const body = slowBody("never finished");
  const reply = fetch(url, { method: "PUT", body: body.stream, client: http }).then(
    async (response) => ({ status: response.status, text: await response.text() }),
    (error) => ({ status: 0, text: String(error) }),
  );
  await sleep(300);
  return { reply, abort: () => body.abort() };
}

for (
  const [what, signals, limitMs] of [
    ["SIGTERM exits within a few seconds", ["SIGTERM"], 4500],
    ["a second signal exits at once", ["SIGTERM", "SIGINT"], 1000],
  ] as const
) {
  Deno.test(`kv server: with a request body held open, ${what}`, sanitized, async () => {
    const cluster = await LocalCluster.start({ peers: 1 });
    const http = Deno.createHttpClient({});
    try {
      await cluster.waitForLeader();
      const held = await holdOpenPut(http, `${cluster.httpUrls[0]}/kv/held`);
      const started = Date.now();
      for (const signal of signals.slice(0, -1)) {
        cluster.signal(0, signal);
        await sleep(100);
      }
      // kill() sends the last signal, waits 5 s, then SIGKILLs.
      await cluster.kill(0, signals[signals.length - 1]);
      const elapsed = Date.now() - started;
      held.abort();
      await held.reply;
      assert.ok(elapsed < limitMs, `the server took ${elapsed} ms to exit (limit ${limitMs} ms)`);
    } finally {
      http.close();
      await cluster.stop();
      await Deno.remove(cluster.dataDir, { recursive: true });
    }
  });
}

Deno.test(
  "kv server: SIGTERM answers requests waiting for a commit at once",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 3, faultInjection: true });
    const http = Deno.createHttpClient({});
    try {
      const leader = await cluster.waitForLeader();
      await cluster.inject(leader, "cut-off"); // still leader, but nothing it proposes commits
      const waiting = send(http, `${cluster.httpUrls[leader]}/kv/w`, { method: "PUT", body: "v" });
      await sleep(300);
      const started = Date.now();
      cluster.signal(leader, "SIGTERM");
      const reply = await waiting;
      const elapsed = Date.now() - started;
      assert.deepEqual(reply, { status: 503, body: { error: "peer shutting down; retry" } });
      assert.ok(elapsed < 1000, `the waiting request was answered ${elapsed} ms after SIGTERM`);
    } finally {
      http.close();
      await cluster.stop();
      await Deno.remove(cluster.dataDir, { recursive: true });
    }
  },
);

Deno.test(
  "kv server: a follower answers a write with 421, the leader in the body and a Location header; /metrics",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 3 });
    const http = Deno.createHttpClient({});
    try {
      const leader = await cluster.waitForLeader();
      const leaderUrl = cluster.httpUrls[leader]!;
      // Every follower learns who leads with the first AppendEntries after a commit.
      assert.equal(
        (await send(http, `${leaderUrl}/kv/x`, { method: "PUT", body: "1" })).status,
        200,
      );
      const follower = [0, 1, 2].find((peer) => peer !== leader)!;
      const response = await fetch(`${cluster.httpUrls[follower]}/kv/x?y=1`, {
        method: "PUT",
        body: "2",
        client: http,
        redirect: "manual",
      });
      assert.equal(response.status, 421);
      assert.deepEqual(await response.json(), { error: "not the leader", leader: leaderUrl });
      assert.equal(response.headers.get("location"), new URL("/kv/x", leaderUrl).href);

      const metrics = await fetch(`${leaderUrl}/metrics`, { client: http });
      assert.match(metrics.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await metrics.text();
      assert.match(text, /^raft_role\{role="leader"\} 1$/m);
      assert.match(text, /^raft_proposals_committed_total [1-9]/m);
    } finally {
      http.close();
      await cluster.stop();
    }
  },
);

Deno.test(
  "kv server: GET writes nothing to the log; follower reads; a bad consistency level; SIGTERM hands leadership over",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 3 });
    const http = Deno.createHttpClient({});
    try {
      const leader = await cluster.waitForLeader();
      const leaderUrl = cluster.httpUrls[leader]!;
      assert.equal(
        (await send(http, `${leaderUrl}/kv/a`, { method: "PUT", body: "1" })).status,
        200,
      );
      const before = (await cluster.status(leader))!.lastLogIndex;
      for (let i = 0; i < 5; i++) {
        assert.deepEqual(await send(http, `${leaderUrl}/kv/a`), {
          status: 200,
          body: { key: "a", value: "1" },
        });
      }
      assert.equal((await cluster.status(leader))!.lastLogIndex, before, "reads append nothing");

      const follower = [0, 1, 2].find((peer) => peer !== leader)!;
      const followerUrl = cluster.httpUrls[follower]!;
      assert.equal(
        (await send(http, `${followerUrl}/kv/a`)).status,
        421,
        "leader reads by default",
      );
      assert.deepEqual(await send(http, `${followerUrl}/kv/a?consistent=follower`), {
        status: 200,
        body: { key: "a", value: "1" },
      });
      const bad = await send(http, `${followerUrl}/kv/a?consistent=eventual`);
      assert.equal(bad.status, 400);
      assert.match(String(bad.body.error), /consistent must be linearizable, follower or lease/);
      assert.equal((await send(http, `${leaderUrl}/kv/a?consistent=lease`)).status, 400);

      // A planned stop: the leader hands over before it exits, so a new leader is there well
      // before an election timeout (700 ms at least) could have passed.
      const started = Date.now();
      cluster.signal(leader, "SIGTERM");
      const next = await cluster.waitForLeader(5000, [leader]);
      const took = Date.now() - started;
      assert.notEqual(next, leader);
      assert.ok(took < 700, `a new leader took over ${took} ms after SIGTERM`);
    } finally {
      http.close();
      await cluster.stop();
    }
  },
);

Deno.test(
  "kv server: fault injection obeys only requests with the launcher's token",
  sanitized,
  async () => {
    const cluster = await LocalCluster.start({ peers: 1, faultInjection: true });
    const http = Deno.createHttpClient({});
    try {
      const url = `${cluster.httpUrls[0]}/admin/cut-off`;
      // What a form on another origin could send, and a guessed token.
      for (const headers of [{}, { "x-fault-token": "0".repeat(48) }]) {
        const reply = await send(http, url, { method: "POST", headers });
        assert.deepEqual(reply.status, 404, `headers ${JSON.stringify(headers)}`);
      }
      await cluster.inject(0, "cut-off"); // throws unless the peer obeys
      await cluster.inject(0, "heal");
    } finally {
      http.close();
      await cluster.stop();
      await Deno.remove(cluster.dataDir, { recursive: true });
    }
  },
);

Deno.test(
  "local cluster: its peers run with its V8 flags, PEER_V8_FLAGS by default",
  sanitized,
  async () => {
    const cmdline = async (pid: number) =>
      (await Deno.readTextFile(`/proc/${pid}/cmdline`)).split("\0");
    const cluster = await LocalCluster.start({ peers: 1 });
    try {
      const { pid } = (await cluster.status(0))!;
      assert.ok(
        (await cmdline(pid)).includes(`--v8-flags=${PEER_V8_FLAGS.join(",")}`),
        `peer command line: ${(await cmdline(pid)).join(" ")}`,
      );
    } finally {
      await cluster.stop();
      await Deno.remove(cluster.dataDir, { recursive: true });
    }
    const plain = await LocalCluster.start({ peers: 1, v8Flags: [] });
    try {
      const { pid } = (await plain.status(0))!;
      assert.ok(!(await cmdline(pid)).some((arg) => arg.startsWith("--v8-flags")));
    } finally {
      await plain.stop();
      await Deno.remove(plain.dataDir, { recursive: true });
    }
    // A flag V8 does not know stops the peer: the flags do reach V8.
    const dataDir = await Deno.makeTempDir({ prefix: "denoraft-" });
    try {
      await assert.rejects(
        LocalCluster.start({ peers: 1, dataDir, v8Flags: ["--no-such-v8-flag"] }),
        /Peer 0 exited with code 1 while starting/,
      );
      assert.match(await Deno.readTextFile(`${dataDir}/peer0.log`), /did not recognize flag/);
    } finally {
      await Deno.remove(dataDir, { recursive: true });
    }
  },
);
