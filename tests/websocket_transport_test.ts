import assert from "node:assert/strict";
import { WebSocketTransport } from "../src/transport/websocket_transport.ts";
import {
  FakeHandler,
  freePorts,
  HandshakingServer,
  RawClient,
  SECRET,
  spawnEchoPeer,
  startTransports,
  tokenUrl,
  UNREACHABLE_ADDRESS,
  waitFor,
} from "./helpers/websocket.ts";
import { sanitized } from "./helpers/sanitized.ts";
import { FreezableProxy } from "./helpers/freezable_proxy.ts";
import { ManualClock } from "./helpers/manual_clock.ts";
import { encodeFrame, isRefusal, parseFrame } from "../src/transport/_websocket_envelope.ts";
import {
  importSecret,
  parseUpgradeToken,
  signUpgrade,
  UpgradeReplayGuard,
  withUpgradeToken,
} from "../src/transport/_websocket_handshake.ts";

Deno.test("calls reach the peer's handler and return its reply", sanitized, async () => {
  const cluster = await startTransports(3);
  try {
    const ends = cluster.transports[0]!.clientEnds();
    assert.deepEqual(await ends[1]!.call("Echo", { x: 1 }), { echo: { x: 1 } });
    assert.deepEqual(await ends[2]!.call("Echo", [2, "two"]), { echo: [2, "two"] });
    assert.deepEqual(await ends[0]!.call("Echo", 0), undefined, "a call to oneself");
    assert.deepEqual(cluster.handlers[1]!.served, [{ method: "Echo", args: { x: 1 } }]);
  } finally {
    await cluster.close();
  }
});

Deno.test("many calls in flight on one link each get their own reply", sanitized, async () => {
  const cluster = await startTransports(2);
  try {
    const end = cluster.transports[0]!.clientEnds()[1]!;
    // Later calls answer sooner, so replies come back out of order.
    const delays = Array.from({ length: 50 }, (_, i) => 50 - i);
    const replies = await Promise.all(delays.map((delay) => end.call("Delay", delay)));
    assert.deepEqual(replies, delays.map((delay) => ({ echo: delay })));
  } finally {
    await cluster.close();
  }
});

Deno.test("a large request and reply cross in both directions", sanitized, async () => {
  const cluster = await startTransports(2);
  try {
    const big = "é".repeat(300_000);
    assert.deepEqual(await cluster.transports[0]!.clientEnds()[1]!.call("Echo", big), {
      echo: big,
    });
    assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", big), {
      echo: big,
    });
  } finally {
    await cluster.close();
  }
});

Deno.test(
  "a call resolves undefined on timeout, on a failing handler and on disconnect",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { callTimeoutMs: 200 });
    try {
      const end = cluster.transports[0]!.clientEnds()[1]!;
      const started = performance.now();
      assert.deepEqual(await end.call("Hang", null), undefined);
      const waited = performance.now() - started;
      assert.ok(
        waited >= 190,
        `expected the call to wait for its 200 ms timeout, it took ${waited} ms`,
      );
      assert.deepEqual(await end.call("Throw", null), undefined);
      assert.ok(cluster.logs[1]!.some((line) => line.includes("Handler failed on Throw")));

      const hanging = end.call("Hang", null);
      await cluster.transports[1]!.close();
      assert.deepEqual(await hanging, undefined);
      assert.deepEqual(await end.call("Echo", 1), undefined, "a call to a closed peer");
    } finally {
      await cluster.close();
    }
  },
);

Deno.test("a restarted peer is redialed and calls succeed again", sanitized, async () => {
  const cluster = await startTransports(2, { reconnectMaxDelayMs: 100 });
  let restarted: WebSocketTransport | undefined;
  try {
    await cluster.transports[1]!.close();
    const end = cluster.transports[0]!.clientEnds()[1]!;
    await waitFor("peer 0 to notice", () => cluster.transports[0]!.connectedPeers().length === 0);
    restarted = await WebSocketTransport.create({
      me: 1,
      peers: cluster.urls,
      secret: SECRET,
      log: () => {},
    });
    const handler = new FakeHandler();
    restarted.setHandler(handler);
    await waitFor("the link to come back", () => restarted!.connectedPeers().length === 1);
    await waitFor("peer 0 to see it", () => cluster.transports[0]!.connectedPeers().length === 1);
    assert.deepEqual(await end.call("Echo", "again"), { echo: "again" });
    assert.deepEqual(handler.served.length, 1);
  } finally {
    await restarted?.close();
    await cluster.close();
  }
});

Deno.test("a peer cut off at the transport is unreachable until healed", sanitized, async () => {
  // A peer that is cut off drops requests silently, so callers wait out their timeout.
  const cluster = await startTransports(3, { callTimeoutMs: 200 });
  try {
    const [a, b] = cluster.transports;
    cluster.transports[2]!.cutOff();
    assert.deepEqual(await a!.clientEnds()[2]!.call("Echo", 1), undefined);
    assert.deepEqual(await cluster.transports[2]!.clientEnds()[0]!.call("Echo", 1), undefined);
    assert.deepEqual(cluster.handlers[2]!.served.length, 0, "the cut-off peer served nothing");
    assert.deepEqual(await a!.clientEnds()[1]!.call("Echo", 1), { echo: 1 }, "others still talk");
    assert.deepEqual(await b!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
    cluster.transports[2]!.heal();
    assert.deepEqual(await a!.clientEnds()[2]!.call("Echo", 2), { echo: 2 });
    assert.deepEqual(await cluster.transports[2]!.clientEnds()[1]!.call("Echo", 3), { echo: 3 });
  } finally {
    await cluster.close();
  }
});

Deno.test(
  "a peer with the wrong secret never links, and the others keep serving",
  sanitized,
  async () => {
    const cluster = await startTransports(2);
    const ports = freePorts(1);
    const urls = [...cluster.urls, `ws://127.0.0.1:${ports[0]}`];
    const intruderLog: string[] = [];
    // Peers 0 and 1 know only two peers, so pose as peer 1 dialing peer 0.
    const intruder = await WebSocketTransport.create({
      me: 1,
      peers: [cluster.urls[0]!, urls[2]!],
      secret: "not-the-cluster-secret",
      log: (line) => intruderLog.push(line),
    });
    try {
      // Refused at the upgrade request: its token's proof is wrong.
      await waitFor(
        "peer 0 to refuse the intruder",
        () => cluster.transports[0]!.stats.refusedUpgrades > 0,
      );
      assert.ok(
        cluster.logs[0]!.some((line) => line.includes("failed to prove the cluster secret")),
        `expected a refusal in peer 0's log, got ${JSON.stringify(cluster.logs[0])}`,
      );
      assert.deepEqual(intruder.connectedPeers(), []);
      assert.deepEqual(await intruder.clientEnds()[0]!.call("Echo", 1), undefined);
      assert.deepEqual(cluster.handlers[0]!.served.length, 0);
      assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
    } finally {
      await intruder.close();
      await cluster.close();
    }
  },
);

Deno.test("a client without the secret is refused", sanitized, async () => {
  const cluster = await startTransports(2, { handshakeTimeoutMs: 300 });
  try {
    const url = cluster.urls[0]!;
    // Refused at the upgrade request: it never gets a WebSocket, so never a frame.
    const refused = [
      ["a forged token", await tokenUrl(url, 1, 0, "a-guess-at-the-secret-000")],
      ["no token", url],
      ["a token signed an hour ago", await tokenUrl(url, 1, 0, SECRET, Date.now() - 3_600_000)],
    ];
    for (const [what, target] of refused) {
      const client = new RawClient(target!);
      await client.closed;
      assert.deepEqual(client.wasOpened, false, `${what}: the upgrade succeeded`);
    }

    // A valid token (which takes the secret) gets the challenge; one that never answers is
    // closed at the deadline.
    const silent = new RawClient(await tokenUrl(url, 1, 0, SECRET));
    await silent.challenge();
    assert.deepEqual((await silent.closed).code, 4008, "a client that never answers the challenge");

    const plain = await fetch(url.replace("ws:", "http:"));
    assert.deepEqual(plain.status, 426);
    await plain.body?.cancel();
    const broken = await fetch(url.replace("ws:", "http:"), {
      headers: { upgrade: "websocket" }, // no key, no version
    });
    assert.deepEqual(broken.status, 400);
    await broken.body?.cancel();

    assert.deepEqual(cluster.transports[0]!.stats.refusedUpgrades, 5);
    assert.deepEqual(cluster.transports[0]!.stats.refusedHandshakes, 1);
    assert.ok(
      cluster.logs[0]!.some((line) => line.includes("failed to prove the cluster secret")),
      cluster.logs[0]!.join("\n"),
    );
    assert.deepEqual(cluster.handlers[0]!.served.length, 0);
    assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
  } finally {
    await cluster.close();
  }
});

Deno.test(
  "malformed, oversized and wrong-type frames close the connection; the peer keeps serving",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { maxMessageBytes: 4096 });
    try {
      const request = { v: 1, type: "request", id: 1, method: "Echo", args: 1 };
      const bad: [string, string | Uint8Array][] = [
        ["not JSON", "{nope"],
        ["binary", new Uint8Array([1, 2, 3])],
        ["oversized", JSON.stringify({ ...request, args: "x".repeat(5000) })],
        ["wrong version", JSON.stringify({ ...request, v: 2 })],
        ["unknown type", JSON.stringify({ v: 1, type: "gossip" })],
        ["request before the handshake", JSON.stringify(request)],
        ["hello with a bad peer index", JSON.stringify({ v: 1, type: "hello", from: -1, to: 0 })],
      ];
      for (const [what, frame] of bad) {
        const client = new RawClient(await tokenUrl(cluster.urls[0]!, 1, 0, SECRET));
        await client.challenge();
        client.socket.send(frame);
        assert.deepEqual((await client.closed).code, 4008, `${what} should close the connection`);
      }
      // After a valid handshake, a dialer may not write at all: it only reads.
      const insider = new RawClient(await tokenUrl(cluster.urls[0]!, 1, 0, SECRET));
      await insider.authenticate(1, 0, SECRET);
      await waitFor("the welcome", () => insider.received.length === 2);
      insider.socket.send(JSON.stringify(request));
      assert.deepEqual((await insider.closed).code, 4008, "a request from a dialer");

      const stats = cluster.transports[0]!.stats;
      assert.deepEqual(stats.refusedHandshakes + stats.refusedFrames, bad.length + 1);
      assert.deepEqual(cluster.handlers[0]!.served.length, 0, "no bad frame reached the handler");
      // A dialer may send only its handshake, so its frames are limited to 2 KiB, whatever
      // maxMessageBytes says (that limit is for the frames a dialer receives).
      assert.ok(cluster.logs[0]!.some((line) => line.includes("over the limit of 2048")));
      // The insider displaced peer 1's link; peer 1 redials and the cluster serves on.
      await waitFor(
        "calls from peer 1 to succeed again",
        async () => await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 0) !== undefined,
      );
      assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
      assert.deepEqual(await cluster.transports[0]!.clientEnds()[1]!.call("Echo", 2), { echo: 2 });
    } finally {
      await cluster.close();
    }
  },
);

Deno.test("a message over maxMessageBytes is dropped, not sent", sanitized, async () => {
  const cluster = await startTransports(2, { maxMessageBytes: 1000 });
  try {
    const end = cluster.transports[0]!.clientEnds()[1]!;
    assert.deepEqual(await end.call("Echo", "x".repeat(2000)), undefined);
    assert.deepEqual(cluster.transports[0]!.stats.droppedSends, 1);
    assert.deepEqual(cluster.handlers[1]!.served.length, 0);
    assert.deepEqual(await end.call("Echo", "small"), { echo: "small" });
  } finally {
    await cluster.close();
  }
});

Deno.test("options are checked", sanitized, async () => {
  const urls = ["ws://127.0.0.1:1", "ws://127.0.0.1:2"];
  const rejects = async (
    options: Parameters<typeof WebSocketTransport.create>[0],
    text: string,
  ) => {
    let error: unknown;
    try {
      await WebSocketTransport.create(options);
    } catch (caught) {
      error = caught;
    }
    assert.ok(error instanceof RangeError, `expected a RangeError for ${text}, got ${error}`);
    assert.ok(error.message.includes(text), `expected "${text}" in "${error.message}"`);
  };
  await rejects({ me: 2, peers: urls, secret: SECRET }, "got 2");
  await rejects({ me: 0, peers: ["http://x:1", urls[1]!], secret: SECRET }, "http://x:1");
  await rejects({ me: 0, peers: urls, secret: "short" }, "at least 16 bytes");
  await rejects({ me: 0, peers: urls, secret: SECRET, callTimeoutMs: -1 }, "callTimeoutMs");
  // Its own URL goes into every hello it sends, where quotes are refused.
  await rejects({ me: 0, peers: ['ws://a"b:1', urls[1]!], secret: SECRET }, "Own peer URL");
});

Deno.test(
  "a stalled peer costs bounded memory: sends past the mark drop and calls resolve undefined",
  sanitized,
  async () => {
    const urls = freePorts(2).map((port) => `ws://127.0.0.1:${port}`);
    const peer = await spawnEchoPeer(1, urls);
    const maxBufferedBytes = 1 << 20;
    const transport = await WebSocketTransport.create({
      me: 0,
      peers: urls,
      secret: SECRET,
      callTimeoutMs: 300,
      maxBufferedBytes,
      log: () => {},
    });
    try {
      const end = transport.clientEnds()[1]!;
      await waitFor("the link to the peer process", () => transport.connectedPeers().length === 1);
      assert.deepEqual(await end.call("Echo", "before"), "before");
      Deno.kill(peer.pid, "SIGSTOP");
      const chunk = "x".repeat(256 * 1024);
      let peakQueued = 0;
      const calls: Promise<unknown>[] = [];
      // 64 MB in all: far more than the kernel's socket buffers can absorb.
      for (let i = 0; i < 256 && transport.stats.droppedSends === 0; i++) {
        calls.push(end.call("Echo", chunk));
        await new Promise((resolve) => setTimeout(resolve, 1));
        peakQueued = Math.max(peakQueued, transport.stats.queuedBytes);
      }
      assert.ok(
        transport.stats.droppedSends > 0,
        "expected sends to be dropped once the queue filled",
      );
      assert.ok(
        peakQueued > maxBufferedBytes / 2,
        `expected the queue to fill, peak ${peakQueued}`,
      );
      assert.ok(
        peakQueued <= maxBufferedBytes,
        `queued ${peakQueued} bytes, over the mark of ${maxBufferedBytes}`,
      );
      assert.deepEqual(await end.call("Echo", chunk), undefined, "a call past the mark");
      assert.ok((await Promise.all(calls)).every((reply) => reply === undefined));
      Deno.kill(peer.pid, "SIGCONT");
      await waitFor(
        "calls to succeed once the peer resumes",
        async () => await end.call("Echo", "after") === "after",
      );
    } finally {
      Deno.kill(peer.pid, "SIGCONT");
      await transport.close();
      peer.kill("SIGKILL");
      await peer.status;
    }
  },
);

Deno.test("wss:// works with a certificate and key, trusting a given CA", sanitized, async () => {
  const fixtures = new URL("./fixtures/", import.meta.url);
  const cert = await Deno.readTextFile(new URL("tls_cert.pem", fixtures));
  const key = await Deno.readTextFile(new URL("tls_key.pem", fixtures));
  const ca = await Deno.readTextFile(new URL("tls_ca.pem", fixtures));
  const cluster = await startTransports(2, { tls: { cert, key }, caCerts: [ca], scheme: "wss" });
  try {
    assert.deepEqual(await cluster.transports[0]!.clientEnds()[1]!.call("Echo", "secure"), {
      echo: "secure",
    });
    assert.ok(cluster.urls.every((url) => url.startsWith("wss://")));
  } finally {
    await cluster.close();
  }
});

Deno.test("a dialer refuses a server that cannot prove the secret", sanitized, async () => {
  const [fakePort, realPort] = freePorts(2);
  const welcomes: string[] = [];
  // Squats on peer 1's address and answers every hello with a forged welcome.
  const fake = Deno.serve(
    { hostname: "127.0.0.1", port: fakePort!, onListen: () => {} },
    (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request);
      socket.onopen = () => socket.send(JSON.stringify({ v: 1, type: "challenge", nonce: "AAAA" }));
      socket.onmessage = () => {
        const forged = JSON.stringify({ v: 1, type: "welcome", proof: "Zm9yZ2Vk" });
        welcomes.push(forged);
        socket.send(forged);
      };
      return response;
    },
  );
  const log: string[] = [];
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: [`ws://127.0.0.1:${realPort}`, `ws://127.0.0.1:${fakePort}`],
    secret: SECRET,
    log: (line) => log.push(line),
  });
  try {
    await waitFor("the forged welcome to be refused", () => transport.stats.refusedHandshakes > 0);
    assert.ok(welcomes.length > 0, "the fake server never got a hello");
    assert.ok(
      log.some((line) => line.includes("failed to prove the cluster secret")),
      `expected a refusal in the log, got ${JSON.stringify(log)}`,
    );
    assert.deepEqual(transport.connectedPeers(), []);
  } finally {
    await transport.close();
    await fake.shutdown();
  }
});

Deno.test(
  "a reply to a caller that restarted meanwhile does not settle the new process's call",
  sanitized,
  async () => {
    // Both lives of peer 0 draw the same first request id, as processes that restart with a
    // counter at 1 did: only the server's check of the connection keeps the old reply out.
    const random = () => 0;
    const cluster = await startTransports(2, { random, reconnectMaxDelayMs: 100 });
    let restarted: WebSocketTransport | undefined;
    try {
      const old = cluster.transports[0]!.clientEnds()[1]!.call("Hang", null);
      await waitFor("peer 1 to start serving", () => cluster.handlers[1]!.served.length === 1);
      await cluster.transports[0]!.close();
      assert.deepEqual(await old, undefined);
      restarted = await WebSocketTransport.create({
        me: 0,
        peers: cluster.urls,
        secret: SECRET,
        random,
        log: () => {},
      });
      await waitFor("the link to come back", () => restarted!.connectedPeers().length === 1);
      await waitFor("peer 1 to see it", () => cluster.transports[1]!.connectedPeers().length === 1);
      const fresh = restarted.clientEnds()[1]!.call("Delay", 200);
      await waitFor("peer 1 to serve the new call", () => cluster.handlers[1]!.served.length === 2);
      cluster.handlers[1]!.release(); // the old call's handler answers now, with null
      assert.deepEqual(await fresh, { echo: 200 });
    } finally {
      await restarted?.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "a request sent right behind the welcome is served, not refused",
  sanitized,
  async () => {
    const [realPort, fakePort] = freePorts(2);
    const urls = [`ws://127.0.0.1:${realPort}`, `ws://127.0.0.1:${fakePort}`];
    const transport = await WebSocketTransport.create({
      me: 0,
      peers: urls,
      secret: SECRET,
      log: () => {},
    });
    transport.setHandler(new FakeHandler());
    // Peer 1's dialed connection into peer 0, on which peer 0 writes its reply.
    const insider = new RawClient(await tokenUrl(urls[0]!, 1, 0, SECRET));
    let fake: HandshakingServer | undefined;
    try {
      await insider.authenticate(1, 0, SECRET);
      await waitFor("the welcome", () => insider.received.length === 2);
      // Only now, with the connection for replies in place, peer 1's server comes up. It sends
      // its first request in the same breath as its welcome, while peer 0 is still verifying the
      // welcome's proof.
      fake = new HandshakingServer(fakePort!, SECRET, (socket) =>
        socket.send(
          encodeFrame({ v: 1, type: "request", id: 7, method: "Echo", args: "early" }),
        ));
      await waitFor("a reply to the early request", () =>
        insider.received.some((data) => {
          const frame = parseFrame(data, 1 << 20);
          return !isRefusal(frame) && frame.type === "reply" && frame.id === 7;
        }));
      assert.deepEqual(transport.stats.refusedFrames, 0);
      assert.deepEqual(transport.stats.refusedHandshakes, 0);
    } finally {
      await transport.close();
      await insider.close();
      await fake?.shutdown();
    }
  },
);

Deno.test(
  "a peer that restarts after its host vanished silently gets a fresh connection both ways",
  sanitized,
  async () => {
    const [portA, portB] = freePorts(2);
    const urls = [`ws://127.0.0.1:${portA}`, `ws://127.0.0.1:${portB}`];
    // Peer 0 reaches peer 1 through a proxy that can freeze, as a crashed host would.
    const proxy = new FreezableProxy(portB!);
    const options = { secret: SECRET, handshakeTimeoutMs: 300, reconnectMaxDelayMs: 100 };
    const a = await WebSocketTransport.create({
      me: 0,
      peers: [urls[0]!, proxy.url],
      log: () => {},
      ...options,
    });
    a.setHandler(new FakeHandler());
    const oldB = await WebSocketTransport.create({ me: 1, peers: urls, log: () => {}, ...options });
    let newB: WebSocketTransport | undefined;
    try {
      await waitFor("the link", () => a.connectedPeers().length === 1);
      await waitFor("the link", () => oldB.connectedPeers().length === 1);
      // Precondition, not an assertion: peer 0's connection must be older than a handshake.
      await new Promise((resolve) => setTimeout(resolve, 400));
      proxy.freeze();
      await oldB.close();
      newB = await WebSocketTransport.create({ me: 1, peers: urls, log: () => {}, ...options });
      const end = newB.clientEnds()[0]!;
      await waitFor(
        "calls from the new peer 1 to succeed",
        async () => await end.call("Echo", "hi") !== undefined,
      );
      assert.deepEqual(await end.call("Echo", 1), { echo: 1 });
    } finally {
      await proxy.close();
      await newB?.close();
      await oldB.close();
      await a.close();
    }
  },
);

/** Opens a raw TCP connection, sends a WebSocket upgrade request and returns the status. */
async function rawUpgrade(
  port: number,
  target = "/",
): Promise<{ conn: Deno.Conn; status: number }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  await conn.write(
    new TextEncoder().encode(
      `GET ${target} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n` +
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
    ),
  );
  const buffer = new Uint8Array(4096);
  const count = await conn.read(buffer);
  const head = new TextDecoder().decode(buffer.subarray(0, count ?? 0));
  return { conn, status: Number(head.split(" ")[1]) };
}

/** Whether the server has closed `conn` (a read sees the end). */
async function closedByServer(conn: Deno.Conn): Promise<boolean> {
  try {
    return await conn.read(new Uint8Array(64)) === null;
  } catch {
    return true;
  }
}

Deno.test(
  "silent unauthenticated clients hold a bounded number of connections, oldest evicted first",
  sanitized,
  async () => {
    const cluster = await startTransports(2);
    const port = Number(new URL(cluster.urls[0]!).port);
    const silent: Deno.Conn[] = [];
    try {
      // Every client comes from 127.0.0.1, so the per-address cap (16 by default) applies.
      for (let i = 0; i < 16; i++) silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      await waitFor("16 pending", () => cluster.transports[0]!.stats.pendingHandshakes === 16);
      // The 17th takes the place of the oldest, which is closed.
      silent.push(await Deno.connect({ hostname: "127.0.0.1", port }));
      assert.ok(await closedByServer(silent[0]!), "the oldest silent connection was closed");
      assert.deepEqual(cluster.transports[0]!.stats.pendingHandshakes, 16);
      assert.deepEqual(cluster.transports[0]!.stats.evictedConnections, 1);
      // An upgrade without a token is answered at once, and takes no slot.
      const anonymous = await rawUpgrade(port);
      silent.push(anonymous.conn);
      assert.deepEqual(anonymous.status, 401);
      assert.ok(await closedByServer(anonymous.conn));
      // Authenticated links do not count: the cluster keeps serving meanwhile.
      assert.deepEqual(await cluster.transports[1]!.clientEnds()[0]!.call("Echo", 1), { echo: 1 });

      for (const conn of silent.splice(0)) conn.close();
      await waitFor(
        "the slots to free",
        () => cluster.transports[0]!.stats.pendingHandshakes === 0,
      );
      const honest = new RawClient(await tokenUrl(cluster.urls[0]!, 1, 0, SECRET));
      await honest.authenticate(1, 0, SECRET);
      await waitFor("the welcome", () => honest.received.length === 2);
      await honest.close();
    } finally {
      for (const conn of silent) conn.close();
      await cluster.close();
    }
  },
);

Deno.test("a failed dial backs off", sanitized, async () => {
  const clock = new ManualClock();
  // Peer 1 accepts connections and closes them at once, so every dial fails.
  const refuser = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let dials = 0;
  const refusing = (async () => {
    for await (const conn of refuser) {
      dials++;
      conn.close();
    }
  })();
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: [`ws://127.0.0.1:${freePorts(1)[0]}`, `ws://127.0.0.1:${refuser.addr.port}`],
    secret: SECRET,
    clock,
    random: () => 0, // each redial waits half its ceiling: 50, 100, 200, 400, then 500 ms
    log: () => {},
  });
  try {
    // Virtual time moves in 10 ms steps, with real time for each dial's I/O in between.
    for (let elapsed = 0; elapsed < 1000; elapsed += 10) {
      await new Promise((resolve) => setTimeout(resolve, 5));
      clock.advance(10);
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
    assert.deepEqual(dials, 5, "dials in the first second, at about 0, 50, 150, 350 and 750 ms");
  } finally {
    await transport.close();
    refuser.close();
    await refusing.catch(() => undefined);
  }
});

Deno.test(
  "requests past maxRequestsInProgress from one peer are dropped unanswered",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { maxRequestsInProgress: 8, callTimeoutMs: 300 });
    try {
      const end = cluster.transports[1]!.clientEnds()[0]!;
      const hanging = Array.from({ length: 8 }, () => end.call("Hang", null));
      await waitFor("8 requests in progress", () => cluster.handlers[0]!.served.length === 8);
      assert.deepEqual(await end.call("Echo", 1), undefined, "a call past the cap");
      assert.deepEqual(cluster.transports[0]!.stats.droppedRequests, 1);
      assert.deepEqual(cluster.handlers[0]!.served.length, 8, "the handler never saw it");
      cluster.handlers[0]!.release();
      await Promise.all(hanging);
      assert.deepEqual(await end.call("Echo", 2), { echo: 2 }, "served again once they finish");
    } finally {
      await cluster.close();
    }
  },
);

Deno.test(
  "a dialed connection that brings nothing, not even keepalives, is given up and redialed",
  sanitized,
  async () => {
    const [portA, portB] = freePorts(2);
    const urls = [`ws://127.0.0.1:${portA}`, `ws://127.0.0.1:${portB}`];
    const proxy = new FreezableProxy(portB!);
    const options = { secret: SECRET, keepaliveMs: 100, reconnectMaxDelayMs: 100 };
    const log: string[] = [];
    // Peer 0 reaches peer 1 through the proxy; peer 1 reaches peer 0 directly.
    const a = await WebSocketTransport.create({
      me: 0,
      peers: [urls[0]!, proxy.url],
      log: (line) => log.push(line),
      ...options,
    });
    a.setHandler(new FakeHandler());
    const b = await WebSocketTransport.create({ me: 1, peers: urls, log: () => {}, ...options });
    try {
      await waitFor("the link", () => a.connectedPeers().length === 1);
      await waitFor("the link", () => b.connectedPeers().length === 1);
      // Peer 1 loses the connection peer 0 dialed; peer 0's end stays open and hears nothing.
      proxy.freeze();
      await waitFor("peer 1 to notice", () => b.connectedPeers().length === 0);
      const end = b.clientEnds()[0]!;
      await waitFor(
        "calls from peer 1 to succeed again",
        async () => await end.call("Echo", "hi") !== undefined,
      );
      assert.ok(log.some((line) => line.includes("Peer 1 sent nothing for")), log.join("\n"));
    } finally {
      await proxy.close();
      await b.close();
      await a.close();
    }
  },
);

Deno.test("a keepalive frame is parsed, and refused with extra fields", () => {
  assert.deepEqual(parseFrame('{"v":1,"type":"keepalive"}', 100), { v: 1, type: "keepalive" });
  const padded = parseFrame('{"v":1,"type":"keepalive","pad":"x"}', 100);
  assert.ok(isRefusal(padded) && padded.refused.includes("extra fields"));
});

Deno.test(
  "a dial whose handshake times out is redialed, even if the peer never closes it",
  sanitized,
  async () => {
    const [realPort] = freePorts(1);
    // Squats on peer 1's address: completes the WebSocket upgrade, then says nothing, and never
    // answers a close frame (as a frozen process would).
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const connections: Deno.Conn[] = [];
    const accepting = (async () => {
      for await (const conn of listener) {
        connections.push(conn);
        const buffer = new Uint8Array(4096);
        const read = await conn.read(buffer);
        const request = new TextDecoder().decode(buffer.subarray(0, read ?? 0));
        const key = request.match(/sec-websocket-key: *(\S+)/i)?.[1] ?? "";
        const digest = await crypto.subtle.digest(
          "SHA-1",
          new TextEncoder().encode(key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"),
        );
        const accept = btoa(String.fromCharCode(...new Uint8Array(digest)));
        await conn.write(new TextEncoder().encode(
          "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n" +
            `Sec-WebSocket-Accept: ${accept}\r\n\r\n`,
        ));
      }
    })();
    const transport = await WebSocketTransport.create({
      me: 0,
      peers: [`ws://127.0.0.1:${realPort}`, `ws://127.0.0.1:${listener.addr.port}`],
      secret: SECRET,
      handshakeTimeoutMs: 200,
      reconnectMinDelayMs: 20,
      reconnectMaxDelayMs: 100,
      log: () => {},
    });
    try {
      await waitFor("a third dial after two handshake timeouts", () => connections.length >= 3);
      assert.ok(transport.stats.refusedHandshakes >= 2);
    } finally {
      for (const conn of connections) conn.close();
      listener.close();
      await accepting.catch(() => undefined);
      await transport.close();
    }
  },
);

Deno.test(
  "a hello carries the dialer's address, and its proof covers the address",
  sanitized,
  async () => {
    const cluster = await startTransports(2);
    try {
      const url = cluster.urls[0]!;
      const elsewhere = "ws://127.0.0.1:9/elsewhere";
      // A proof for one address, sent with another: refused like a wrong secret.
      const tampered = new RawClient(await tokenUrl(url, 1, 0, SECRET));
      await tampered.authenticate(1, 0, SECRET, elsewhere, UNREACHABLE_ADDRESS);
      assert.deepEqual((await tampered.closed).code, 4008);
      assert.ok(
        cluster.logs[0]!.some((line) => line.includes("peer 1 failed to prove the cluster secret")),
        `expected a refusal in peer 0's log, got ${JSON.stringify(cluster.logs[0])}`,
      );
      const honest = new RawClient(await tokenUrl(url, 1, 0, SECRET));
      await honest.authenticate(1, 0, SECRET, elsewhere);
      await waitFor("the welcome", () => honest.received.length === 2);
      await honest.close();
    } finally {
      await cluster.close();
    }
  },
);

Deno.test("a hello needs a printable address; peer ids are any non-negative safe integer", async () => {
  const hello = (fields: Record<string, unknown>) =>
    JSON.stringify({
      v: 1,
      type: "hello",
      from: 1,
      to: 0,
      nonce: "AAAA",
      proof: "AAAA",
      address: "ws://h:1/",
      ...fields,
    });
  const refusal = (text: string) => {
    const frame = parseFrame(text, 4096);
    return isRefusal(frame) ? frame.refused : "";
  };
  assert.deepEqual(refusal(hello({})), "");
  assert.deepEqual(refusal(hello({ from: Number.MAX_SAFE_INTEGER, to: 2 ** 20 })), "");
  assert.match(refusal(hello({ from: 2 ** 53 })), /invalid peer ids/);
  assert.match(refusal(hello({ address: undefined })), /invalid address/);
  assert.match(refusal(hello({ address: 'ws://a"b/' })), /invalid address/);
  assert.match(refusal(hello({ address: "ws://h/\\x" })), /invalid address/);
  assert.match(refusal(hello({ address: "ws://h/é" })), /invalid address/);
  assert.deepEqual(
    refusal(hello({ address: "ws://h/" + "a".repeat(1017) })),
    "",
    "1024 characters",
  );
  assert.match(refusal(hello({ address: "ws://h/" + "a".repeat(1018) })), /invalid address/);

  const key = await importSecret(SECRET);
  const target = (from: number) => withUpgradeToken("ws://h:1", { ...token, from }).search;
  const token = await signUpgrade(key, 1, 0);
  const largest = parseUpgradeToken(target(Number.MAX_SAFE_INTEGER));
  assert.ok(typeof largest !== "string" && largest.from === Number.MAX_SAFE_INTEGER);
  assert.match(String(parseUpgradeToken(target(2 ** 53))), /malformed numbers/);
});

Deno.test("a frame nested deeper than 128 levels is refused before it is parsed", () => {
  const nested = (depth: number) => "[".repeat(depth) + "]".repeat(depth);
  const frame = (args: string) => `{"v":1,"type":"request","id":1,"method":"M","args":${args}}`;
  assert.ok(!isRefusal(parseFrame(frame(nested(127)), 1 << 20)), "127 levels in args, 128 in all");
  const deep = parseFrame(frame(nested(128)), 1 << 20);
  assert.ok(isRefusal(deep) && deep.refused.includes("more than 128 levels"));
  // Brackets inside strings do not count.
  assert.ok(!isRefusal(parseFrame(frame(JSON.stringify(nested(500))), 1 << 20)));
  const escaped = JSON.stringify(`\\"${nested(500)}`);
  assert.ok(!isRefusal(parseFrame(frame(escaped), 1 << 20)), "escapes before a quote");
  // 4 MiB of "[" is refused without building anything (JSON.parse took 0.5 s and 145 MB).
  const flood = parseFrame(nested(2 << 20), 4 << 20);
  assert.ok(isRefusal(flood) && flood.refused.includes("more than 128 levels"));
});

Deno.test("an upgrade token is good once, and only near this peer's clock", async () => {
  const key = await importSecret(SECRET);
  const now = Date.now();
  const guard = new UpgradeReplayGuard(60_000, 2);
  const [a, b, c] = [
    await signUpgrade(key, 1, 0, now - 3),
    await signUpgrade(key, 1, 0, now - 2),
    await signUpgrade(key, 1, 0, now - 1),
  ];
  assert.deepEqual(guard.admit(a!, now), null);
  assert.match(guard.admit(a!, now) ?? "", /used before/);
  assert.match(guard.admit(await signUpgrade(key, 1, 0, now - 61_000), now) ?? "", /61 s away/);
  assert.match(guard.admit(await signUpgrade(key, 1, 0, now + 61_000), now) ?? "", /61 s away/);
  assert.deepEqual(guard.admit(b!, now), null);
  // Past 2 remembered tokens the oldest (a) is forgotten, and nothing as old is taken any more.
  assert.deepEqual(guard.admit(c!, now), null);
  assert.match(guard.admit(a!, now) ?? "", /used before/);
  assert.deepEqual(guard.admit(await signUpgrade(key, 1, 0, now), now), null);
  assert.deepEqual(guard.admit(await signUpgrade(key, 2, 0, now - 3), now), null, "another peer");
});

Deno.test("a recorded upgrade request cannot be replayed", sanitized, async () => {
  const cluster = await startTransports(2);
  try {
    const url = await tokenUrl(cluster.urls[0]!, 1, 0, SECRET);
    const first = new RawClient(url);
    await first.challenge();
    const replay = new RawClient(url);
    await replay.closed;
    assert.deepEqual(replay.wasOpened, false, "the replayed token was accepted");
    assert.ok(cluster.logs[0]!.some((line) => line.includes("used before")));
    await first.close();
  } finally {
    await cluster.close();
  }
});

Deno.test("disconnect() drops a link, and both sides redial", sanitized, async () => {
  const cluster = await startTransports(2);
  try {
    const [a, b] = cluster.transports;
    a!.disconnect(1);
    assert.deepEqual(a!.connectedPeers(), [], "the link is down at once");
    await waitFor(
      "the link to come back",
      () => a!.connectedPeers().length === 1 && b!.connectedPeers().length === 1,
    );
    assert.deepEqual(await a!.clientEnds()[1]!.call("Echo", 1), { echo: 1 });
    assert.deepEqual(await b!.clientEnds()[0]!.call("Echo", 2), { echo: 2 });
  } finally {
    await cluster.close();
  }
});

Deno.test("await using closes a transport at the end of its scope", sanitized, async () => {
  const [port] = freePorts(1);
  let closedPort: number;
  {
    await using transport = await WebSocketTransport.create({
      me: 0,
      peers: [`ws://127.0.0.1:${port}`],
      secret: SECRET,
    });
    closedPort = transport.port;
  }
  // The server is gone: the port can be listened on again.
  const listener = Deno.listen({ hostname: "127.0.0.1", port: closedPort });
  listener.close();
});

// ---- Membership: peers added and removed at run time. ----

Deno.test(
  "addPeer grows three transports to four, and calls work both ways",
  sanitized,
  async () => {
    const cluster = await startTransports(3, { reconnectMaxDelayMs: 100 });
    const url = `ws://127.0.0.1:${freePorts(1)[0]}`;
    let newcomer: WebSocketTransport | undefined;
    try {
      // The old peers add peer 3 before it runs: they dial it, and keep redialing.
      const ends = cluster.transports.map((transport) => transport.addPeer(3, url));
      for (const transport of cluster.transports) {
        assert.deepEqual(transport.addressOf(3), url);
        assert.ok(!transport.connectedPeers().includes(3));
      }
      assert.deepEqual(await ends[0]!.call("Echo", 0), undefined, "a call before peer 3 runs");

      newcomer = await WebSocketTransport.create({
        me: 3,
        peers: [...cluster.urls, url],
        secret: SECRET,
        reconnectMaxDelayMs: 100,
        log: () => {},
      });
      const handler = new FakeHandler();
      newcomer.setHandler(handler);
      const joined = newcomer;
      await waitFor(
        "every link to peer 3",
        () =>
          joined.connectedPeers().length === 3 &&
          cluster.transports.every((transport) => transport.connectedPeers().includes(3)),
      );
      for (let peer = 0; peer < 3; peer++) {
        assert.deepEqual(await ends[peer]!.call("Echo", peer), { echo: peer });
        assert.deepEqual(await newcomer.clientEnds()[peer]!.call("Echo", `to ${peer}`), {
          echo: `to ${peer}`,
        });
      }
      assert.deepEqual(handler.served.length, 3);
      assert.deepEqual(cluster.transports[0]!.connectedPeers(), [1, 2, 3]);
      assert.deepEqual(cluster.transports[0]!.clientEnds().length, 3, "as many as create() got");
      assert.deepEqual(
        await cluster.transports[0]!.clientEnd(3).call("Echo", "end"),
        { echo: "end" },
      );

      // The same URL again (the same once serialized) changes nothing.
      const again = cluster.transports[0]!.addPeer(3, `${url}/`);
      assert.deepEqual(cluster.transports[0]!.connectedPeers(), [1, 2, 3], "the link stayed up");
      assert.deepEqual(cluster.transports[0]!.addressOf(3), url);
      assert.deepEqual(await again.call("Echo", "again"), { echo: "again" });
    } finally {
      await newcomer?.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "addPeer at another URL closes the link, fails its calls and dials the new URL",
  sanitized,
  async () => {
    // Calls wait up to 10 s for a reply: one that resolves sooner was failed by the transport.
    const cluster = await startTransports(2, { callTimeoutMs: 10_000, reconnectMaxDelayMs: 100 });
    try {
      const [a, b] = cluster.transports;
      const hanging = a!.clientEnd(1).call("Hang", null);
      await waitFor("peer 1 to start serving", () => cluster.handlers[1]!.served.length === 1);
      const started = performance.now();
      a!.addPeer(1, UNREACHABLE_ADDRESS);
      assert.deepEqual(a!.connectedPeers(), [], "the link is down at once");
      assert.deepEqual(await hanging, undefined);
      assert.ok(performance.now() - started < 1000, "the call was failed, not timed out");
      assert.deepEqual(a!.addressOf(1), UNREACHABLE_ADDRESS);
      assert.deepEqual(await a!.clientEnd(1).call("Echo", 1), undefined);
      await waitFor("peer 1 to see the link down", () => b!.connectedPeers().length === 0);

      a!.addPeer(1, cluster.urls[1]!);
      await waitFor(
        "the link at the right URL",
        () => a!.connectedPeers().length === 1 && b!.connectedPeers().length === 1,
      );
      assert.deepEqual(await a!.clientEnd(1).call("Echo", 2), { echo: 2 });
      assert.deepEqual(await b!.clientEnd(0).call("Echo", 3), { echo: 3 });
    } finally {
      await cluster.close();
    }
  },
);

Deno.test(
  "removePeer fails calls at once, closes both connections and stops redialing",
  sanitized,
  async () => {
    const cluster = await startTransports(3, { callTimeoutMs: 10_000, reconnectMaxDelayMs: 100 });
    try {
      const [a, b, c] = cluster.transports;
      const end = a!.clientEnds()[2]!;
      const hanging = end.call("Hang", null);
      await waitFor("peer 2 to start serving", () => cluster.handlers[2]!.served.length === 1);
      const started = performance.now();
      a!.removePeer(2);
      assert.deepEqual(a!.connectedPeers(), [1], "the link is gone at once");
      assert.deepEqual(await hanging, undefined);
      assert.ok(performance.now() - started < 1000, "the call was failed, not timed out");
      assert.deepEqual(a!.addressOf(2), undefined);
      assert.deepEqual(
        await end.call("Echo", 1),
        undefined,
        "a call on an end of the removed peer",
      );

      // Peer 2 sees both connections close. It keeps redialing peer 0, which refuses it.
      await waitFor("peer 2 to see the link down", () => !c!.connectedPeers().includes(0));
      const refused = a!.stats.refusedUpgrades;
      await waitFor("two more redials refused", () => a!.stats.refusedUpgrades >= refused + 2);
      assert.deepEqual(a!.connectedPeers(), [1]);
      assert.deepEqual(c!.connectedPeers(), [1]);
      assert.deepEqual(await c!.clientEnd(0).call("Echo", 1), undefined);
      assert.deepEqual(cluster.handlers[0]!.served, [], "peer 0 served nothing from peer 2");
      // The rest of the cluster is untouched.
      assert.deepEqual(await a!.clientEnd(1).call("Echo", 2), { echo: 2 });
      assert.deepEqual(await c!.clientEnd(1).call("Echo", 3), { echo: 3 });
      assert.deepEqual(b!.connectedPeers(), [0, 2]);

      a!.removePeer(2); // again: nothing to do
      a!.removePeer(7); // never known
      for (const id of [0, -1, 1.5, 2 ** 53]) {
        assert.throws(() => a!.removePeer(id), RangeError, `removePeer(${id})`);
      }

      // Added back, the peer links again.
      a!.addPeer(2, cluster.urls[2]!);
      await waitFor(
        "the link to come back",
        () => a!.connectedPeers().includes(2) && c!.connectedPeers().includes(0),
      );
      assert.deepEqual(await end.call("Echo", 4), { echo: 4 }, "the old end works again");
      assert.deepEqual(await c!.clientEnd(0).call("Echo", 5), { echo: 5 });
    } finally {
      await cluster.close();
    }
  },
);

Deno.test("removePeer closes both connections of the link", sanitized, async () => {
  const [realPort, fakePort] = freePorts(2);
  const urls = [`ws://127.0.0.1:${realPort}`, `ws://127.0.0.1:${fakePort}`];
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: urls,
    secret: SECRET,
    reconnectMaxDelayMs: 100,
    log: () => {},
  });
  // Peer 1 by hand: its server, which peer 0 dials, and its dial into peer 0.
  const fake = new HandshakingServer(fakePort!, SECRET);
  const dialer = new RawClient(await tokenUrl(urls[0]!, 1, 0, SECRET));
  try {
    await dialer.authenticate(1, 0, SECRET);
    await waitFor("the link", () => transport.connectedPeers().length === 1);
    assert.deepEqual(fake.connections.length, 1);
    transport.removePeer(1);
    await waitFor(
      "the connection peer 1 dialed to close",
      () => dialer.socket.readyState === WebSocket.CLOSED,
    );
    await waitFor("the connection peer 0 dialed to close", () => fake.connections[0]!.closed);
    assert.deepEqual(fake.connections.length, 1, "no redial");
  } finally {
    await dialer.close();
    await transport.close();
    await fake.shutdown();
  }
});

Deno.test("removePeer stops redialing a peer that never answered", sanitized, async () => {
  // Peer 1 accepts connections and closes them at once, so every dial fails and is retried.
  const refuser = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let dials = 0;
  const refusing = (async () => {
    for await (const conn of refuser) {
      dials++;
      conn.close();
    }
  })();
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: [`ws://127.0.0.1:${freePorts(1)[0]}`, `ws://127.0.0.1:${refuser.addr.port}`],
    secret: SECRET,
    reconnectMinDelayMs: 10,
    reconnectMaxDelayMs: 20,
    log: () => {},
  });
  try {
    await waitFor("a few dials", () => dials >= 3);
    transport.removePeer(1);
    const removedAt = dials;
    // Redials come every 10-20 ms: ten would arrive meanwhile.
    await new Promise((resolve) => setTimeout(resolve, 200));
    assert.ok(dials <= removedAt + 1, `${dials - removedAt} dials after the removal`);
  } finally {
    await transport.close();
    refuser.close();
    await refusing.catch(() => undefined);
  }
});

Deno.test("addPeer, clientEnd and addressOf check their arguments", sanitized, async () => {
  const [port] = freePorts(1);
  const own = `ws://127.0.0.1:${port}`;
  const transport = await WebSocketTransport.create({
    me: 0,
    peers: [own],
    secret: SECRET,
    log: () => {},
  });
  try {
    const bad: [number, string, string][] = [
      [-1, "ws://127.0.0.1:1", "non-negative safe integer"],
      [1.5, "ws://127.0.0.1:1", "non-negative safe integer"],
      [2 ** 53, "ws://127.0.0.1:1", "non-negative safe integer"],
      [0, "ws://127.0.0.1:1", "it is this peer"],
      [1, "http://127.0.0.1:1", "ws:// or wss://"],
      [1, "ws://127.0.0.1:1/#x", "without a fragment"],
      [1, "not a url", "ws:// or wss://"],
    ];
    for (const [id, url, text] of bad) {
      assert.throws(() => transport.addPeer(id, url), RangeError, text);
      assert.deepEqual(transport.addressOf(id), id === 0 ? own : undefined, "nothing was added");
    }
    assert.throws(() => transport.clientEnd(-1), RangeError);
    assert.deepEqual(await transport.clientEnd(0).call("Echo", 1), undefined, "this peer");
    assert.deepEqual(await transport.clientEnd(99).call("Echo", 1), undefined, "an unknown peer");
    assert.deepEqual(transport.addressOf(99), undefined);
    assert.deepEqual(transport.addressOf(0), own);
  } finally {
    await transport.close();
  }
});

// ---- Peers that were never added, known from their handshakes. ----

Deno.test(
  "a peer that was never added reaches the others by proving the secret, and is dialed back",
  sanitized,
  async () => {
    const cluster = await startTransports(3, { reconnectMaxDelayMs: 100 });
    const url = `ws://127.0.0.1:${freePorts(1)[0]}`;
    // Peer 3 knows everyone; peers 0-2 were never told of it.
    const newcomer = await WebSocketTransport.create({
      me: 3,
      peers: [...cluster.urls, url],
      secret: SECRET,
      reconnectMaxDelayMs: 100,
      log: () => {},
    });
    const handler = new FakeHandler();
    newcomer.setHandler(handler);
    try {
      await waitFor("peer 3's link to peer 0", () => newcomer.connectedPeers().includes(0));
      assert.deepEqual(await newcomer.clientEnds()[0]!.call("Echo", "hi"), { echo: "hi" });
      const [a] = cluster.transports;
      assert.deepEqual(await a!.clientEnd(3).call("Echo", "back"), { echo: "back" });
      assert.deepEqual(handler.served, [{ method: "Echo", args: "back" }]);
      assert.deepEqual(a!.addressOf(3), `${url}/`, "as peer 3 advertised it");
      assert.ok(
        cluster.logs[0]!.some((line) => line.includes("Peer 3 proved the cluster secret")),
        JSON.stringify(cluster.logs[0]),
      );
      await waitFor(
        "every link to peer 3",
        () =>
          newcomer.connectedPeers().length === 3 &&
          cluster.transports.every((transport) => transport.connectedPeers().includes(3)),
      );
      assert.deepEqual(a!.clientEnds().length, 3, "clientEnds() keeps to the peers of create()");
    } finally {
      await newcomer.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "a server joining with the URLs of only some peers links to those, and the rest by addPeer",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { reconnectMaxDelayMs: 100 });
    const url = `ws://127.0.0.1:${freePorts(1)[0]}`;
    // Server 5 knows only server 0 (and itself): the other entries are holes.
    const peers: string[] = [cluster.urls[0]!];
    peers[5] = url;
    const newcomer = await WebSocketTransport.create({
      me: 5,
      peers,
      secret: SECRET,
      reconnectMaxDelayMs: 100,
      log: () => {},
    });
    newcomer.setHandler(new FakeHandler());
    try {
      const [a, b] = cluster.transports;
      await waitFor("the link to server 0", () => newcomer.connectedPeers().includes(0));
      assert.deepEqual(newcomer.clientEnds().length, 6);
      assert.deepEqual(await newcomer.clientEnds()[0]!.call("Echo", 1), { echo: 1 });
      assert.deepEqual(await a!.clientEnd(5).call("Echo", 2), { echo: 2 });
      assert.deepEqual(await newcomer.clientEnds()[1]!.call("Echo", 3), undefined);
      assert.deepEqual(newcomer.addressOf(1), undefined);
      assert.deepEqual(b!.addressOf(5), undefined, "server 1 never heard of server 5");

      newcomer.addPeer(1, cluster.urls[1]!);
      await waitFor("the link to server 1", () => newcomer.connectedPeers().includes(1));
      assert.deepEqual(await newcomer.clientEnd(1).call("Echo", 4), { echo: 4 });
      assert.deepEqual(await b!.clientEnd(5).call("Echo", 5), { echo: 5 });
    } finally {
      await newcomer.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "a removed peer is refused, secret or not, until it is added again",
  sanitized,
  async () => {
    const cluster = await startTransports(3, { reconnectMaxDelayMs: 100 });
    const url = `ws://127.0.0.1:${freePorts(1)[0]}`;
    const newcomer = await WebSocketTransport.create({
      me: 3,
      peers: [...cluster.urls, url],
      secret: SECRET,
      reconnectMaxDelayMs: 100,
      log: () => {},
    });
    newcomer.setHandler(new FakeHandler());
    // A handshake that is past its upgrade when the peer is removed.
    let late: RawClient | undefined;
    try {
      const [a] = cluster.transports;
      await waitFor("the link from peer 0 to peer 3", () => a!.connectedPeers().includes(3));
      late = new RawClient(await tokenUrl(cluster.urls[0]!, 3, 0, SECRET));
      await late.challenge();

      a!.removePeer(3);
      assert.deepEqual(a!.connectedPeers(), [1, 2]);
      await late.authenticate(3, 0, SECRET, `${url}/`);
      assert.deepEqual((await late.closed).code, 4008, "the handshake under way");
      // Peer 3 keeps redialing, and is refused at its upgrade request each time.
      await waitFor("peer 3 to see the link down", () => !newcomer.connectedPeers().includes(0));
      const refused = a!.stats.refusedUpgrades;
      await waitFor("two more redials refused", () => a!.stats.refusedUpgrades >= refused + 2);
      assert.deepEqual(a!.connectedPeers(), [1, 2]);
      assert.deepEqual(a!.addressOf(3), undefined);
      assert.deepEqual(await newcomer.clientEnds()[0]!.call("Echo", 1), undefined);
      assert.ok(
        cluster.logs[0]!.some((line) => line.includes("Peer 3 was removed")),
        JSON.stringify(cluster.logs[0]),
      );
      // The others, which never removed it, still talk to it.
      assert.deepEqual(await cluster.transports[1]!.clientEnd(3).call("Echo", 2), { echo: 2 });

      a!.addPeer(3, url);
      await waitFor("the link to come back", () => a!.connectedPeers().includes(3));
      assert.deepEqual(await a!.clientEnd(3).call("Echo", 3), { echo: 3 });
      await waitFor("peer 3 to see it", () => newcomer.connectedPeers().includes(0));
      assert.deepEqual(await newcomer.clientEnds()[0]!.call("Echo", 4), { echo: 4 });
    } finally {
      await late?.close();
      await newcomer.close();
      await cluster.close();
    }
  },
);

Deno.test(
  "a dialer without the secret creates no link and is not dialed back",
  sanitized,
  async () => {
    const cluster = await startTransports(2);
    const [a] = cluster.transports;
    // Where the strangers say they listen: a plain listener that counts dials back.
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const address = `ws://127.0.0.1:${listener.addr.port}/`;
    let dialsBack = 0;
    const counting = (async () => {
      for await (const conn of listener) {
        dialsBack++;
        conn.close();
      }
    })();
    const intruder = await WebSocketTransport.create({
      me: 2,
      peers: [...cluster.urls, address],
      secret: "not-the-cluster-secret",
      listen: { port: 0 },
      log: () => {},
    });
    const clients: RawClient[] = [];
    try {
      // A transport with the wrong secret is refused at its upgrade request.
      await waitFor("peer 0 to refuse the intruder", () => a!.stats.refusedUpgrades > 0);
      // A client with a valid token (seen on the wire, say) but not the secret gets as far as
      // the challenge, and no further.
      const eavesdropper = new RawClient(await tokenUrl(cluster.urls[0]!, 5, 0, SECRET));
      clients.push(eavesdropper);
      await eavesdropper.authenticate(5, 0, "not-the-cluster-secret", address);
      assert.deepEqual((await eavesdropper.closed).code, 4008);
      await new Promise((resolve) => setTimeout(resolve, 200));
      for (const id of [2, 5]) assert.deepEqual(a!.addressOf(id), undefined, `peer ${id}`);
      assert.deepEqual(a!.connectedPeers(), [1]);
      assert.deepEqual(dialsBack, 0, "peer 0 dialed a stranger back");

      // With the secret, the same stranger is linked and dialed back.
      const member = new RawClient(await tokenUrl(cluster.urls[0]!, 5, 0, SECRET));
      clients.push(member);
      await member.authenticate(5, 0, SECRET, address);
      await waitFor("the dial back", () => dialsBack > 0);
      assert.deepEqual(a!.addressOf(5), address);
    } finally {
      for (const client of clients) await client.close();
      await intruder.close();
      await cluster.close();
      listener.close();
      await counting.catch(() => undefined);
    }
  },
);

Deno.test(
  "peers are taken in from handshakes only up to maxPeers links; added ones always",
  sanitized,
  async () => {
    const cluster = await startTransports(2, { maxPeers: 2 });
    const [a] = cluster.transports;
    const clients: RawClient[] = [];
    const join = async (id: number, address = UNREACHABLE_ADDRESS): Promise<RawClient> => {
      const client = new RawClient(await tokenUrl(cluster.urls[0]!, id, 0, SECRET));
      clients.push(client);
      await client.authenticate(id, 0, SECRET, address);
      return client;
    };
    try {
      const second = await join(2);
      await waitFor("peer 2's welcome", () => second.received.length === 2);
      assert.deepEqual(a!.addressOf(2), UNREACHABLE_ADDRESS);
      // Two links now: peer 3 is refused at its upgrade request, before any WebSocket.
      const third = new RawClient(await tokenUrl(cluster.urls[0]!, 3, 0, SECRET));
      clients.push(third);
      await third.closed;
      assert.deepEqual(third.wasOpened, false);
      assert.deepEqual(a!.addressOf(3), undefined);
      assert.ok(cluster.logs[0]!.some((line) => line.includes("(maxPeers 2)")));
      // The transport's owner is not limited.
      a!.addPeer(4, "ws://127.0.0.1:9/four");
      assert.deepEqual(a!.addressOf(4), "ws://127.0.0.1:9/four");

      // A learned peer's URL follows its later hellos; an added peer's does not.
      const moved = "ws://127.0.0.1:9/moved";
      const again = await join(2, moved);
      await waitFor("peer 2's welcome", () => again.received.length === 2);
      assert.deepEqual(a!.addressOf(2), moved);
      // An address that is no peer URL is not taken (and does not break the handshake).
      for (const address of ["http://127.0.0.1:9/", "not-a-url"]) {
        const unusable = await join(2, address);
        await waitFor("peer 2's welcome", () => unusable.received.length === 2);
        assert.deepEqual(a!.addressOf(2), moved, address);
      }
      const impostor = await join(1, moved);
      await waitFor("peer 1's welcome", () => impostor.received.length === 2);
      assert.deepEqual(a!.addressOf(1), cluster.urls[1]);
      a!.addPeer(2, moved); // now the owner vouches for it
      const vouched = await join(2, UNREACHABLE_ADDRESS);
      await waitFor("peer 2's welcome", () => vouched.received.length === 2);
      assert.deepEqual(a!.addressOf(2), moved);
    } finally {
      for (const client of clients) await client.close();
      await cluster.close();
    }
  },
);

Deno.test("the replay guard tracks strangers only up to its limit, within the window", async () => {
  const key = await importSecret(SECRET);
  const now = Date.now();
  const guard = new UpgradeReplayGuard(60_000, 4, 2);
  assert.deepEqual(guard.admit(await signUpgrade(key, 1, 0, now), now, true), null);
  assert.deepEqual(guard.admit(await signUpgrade(key, 2, 0, now), now, true), null);
  assert.match(guard.admit(await signUpgrade(key, 3, 0, now), now, true) ?? "", /unknown/);
  assert.deepEqual(guard.admit(await signUpgrade(key, 3, 0, now), now), null, "a known peer");
  assert.deepEqual(guard.trackedPeers, 3);
  // Once every token it remembers is out of the window, a stranger's entry goes.
  const later = now + 61_000;
  assert.deepEqual(guard.admit(await signUpgrade(key, 4, 0, later), later, true), null);
  assert.deepEqual(guard.trackedPeers, 1);
});
