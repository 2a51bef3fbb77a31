// The partition proxy: it forwards both ways, cuts by reset or blackhole, heals, and leaves
// nothing open behind it.
import assert from "node:assert/strict";
import { TcpProxy } from "./helpers/tcp_proxy.ts";
import { sanitized } from "./helpers/sanitized.ts";

const encoder = new TextEncoder();

/** A server that keeps every connection it accepts, for the test to use. */
class Target {
  readonly connections: Deno.TcpConn[] = [];
  readonly #listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  readonly #accepting: Promise<void>;

  constructor() {
    this.#accepting = (async () => {
      try {
        for await (const conn of this.#listener) this.connections.push(conn);
      } catch {
        // Closed.
      }
    })();
  }

  get port(): number {
    return this.#listener.addr.port;
  }

  /** The n-th connection accepted (from 0), once it is. */
  async connection(n: number): Promise<Deno.TcpConn> {
    await until(() => this.connections.length > n, `the target to accept connection ${n}`);
    return this.connections[n]!;
  }

  async close(): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const conn of this.connections) closeQuietly(conn);
  }
}

/** Reads a connection to its end in the background, keeping what arrives. */
class Reader {
  readonly chunks: Uint8Array[] = [];
  length = 0;
  /** How the stream ended, once it has. */
  ended: "eof" | "error" | null = null;
  readonly done: Promise<void>;

  constructor(conn: Deno.Conn) {
    this.done = (async () => {
      const buffer = new Uint8Array(64 * 1024);
      try {
        while (true) {
          const count = await conn.read(buffer);
          if (count === null) break;
          this.chunks.push(buffer.slice(0, count));
          this.length += count;
        }
        this.ended = "eof";
      } catch {
        this.ended = "error";
      }
    })();
  }

  text(): string {
    return new TextDecoder().decode(concat(this.chunks));
  }

  async waitForText(text: string): Promise<void> {
    await until(
      () => this.text() === text,
      `to read ${JSON.stringify(text)}, read ${JSON.stringify(this.text())}`,
    );
  }

  async waitForEnd(): Promise<void> {
    await until(() => this.ended !== null, "the connection to end");
  }
}

/** A client of the proxy with a reader on it. */
async function dial(port: number): Promise<{ conn: Deno.TcpConn; reader: Reader }> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  return { conn, reader: new Reader(conn) };
}

async function writeAll(conn: Deno.Conn, data: Uint8Array): Promise<void> {
  let written = 0;
  while (written < data.length) written += await conn.write(data.subarray(written));
}

async function until(condition: () => boolean, what: string, timeoutMs = 3000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await sleep(5);
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function concat(chunks: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(chunks.reduce((sum, chunk) => sum + chunk.length, 0));
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.length;
  }
  return out;
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}

/** Closes the clients, the proxy and the target, and waits for every reader. */
async function shutDown(
  proxy: TcpProxy,
  target: Target,
  clients: { conn: Deno.Conn; reader: Reader }[],
  targetReaders: Reader[] = [],
): Promise<void> {
  for (const { conn } of clients) closeQuietly(conn);
  await proxy.close();
  await target.close();
  await Promise.all([
    ...clients.map(({ reader }) => reader.done),
    ...targetReaders.map((r) => r.done),
  ]);
}

/** A target, a proxy in front of it, and one client connected through the proxy. */
async function forwardedConnection(): Promise<{
  target: Target;
  proxy: TcpProxy;
  client: { conn: Deno.TcpConn; reader: Reader };
  serverConn: Deno.TcpConn;
  server: Reader;
}> {
  const target = new Target();
  const proxy = new TcpProxy(target.port);
  const client = await dial(proxy.port);
  const serverConn = await target.connection(0);
  return { target, proxy, client, serverConn, server: new Reader(serverConn) };
}

/** How long "nothing arrives" is watched for. */
const SILENCE_MS = 200;

Deno.test("the proxy forwards bytes both ways and counts them", sanitized, async () => {
  const { target, proxy, client, server } = await forwardedConnection();
  await writeAll(client.conn, encoder.encode("hello"));
  await server.waitForText("hello");
  await writeAll(target.connections[0]!, encoder.encode("world!"));
  await client.reader.waitForText("world!");
  assert.deepEqual(proxy.stats, {
    accepted: 1,
    forwarded: 1,
    reset: 0,
    blackholed: 0,
    targetUnreachable: 0,
    open: 1,
    bytesToTarget: 5,
    bytesFromTarget: 6,
  });
  assert.equal(proxy.state, "forwarding");
  await shutDown(proxy, target, [client], [server]);
  assert.equal(proxy.state, "closed");
});

Deno.test("a megabyte crosses each way at once, intact", sanitized, async () => {
  const { target, proxy, client, serverConn, server } = await forwardedConnection();
  const up = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 7) & 255);
  const down = Uint8Array.from({ length: 1 << 20 }, (_, i) => (i * 13 + 5) & 255);
  await Promise.all([writeAll(client.conn, up), writeAll(serverConn, down)]);
  await until(() => server.length === up.length && client.reader.length === down.length, "1 MiB");
  assert.deepEqual(concat(server.chunks), up);
  assert.deepEqual(concat(client.reader.chunks), down);
  assert.equal(proxy.stats.bytesToTarget, up.length);
  assert.equal(proxy.stats.bytesFromTarget, down.length);
  await shutDown(proxy, target, [client], [server]);
});

Deno.test("a half-close passes through, and the other way keeps working", sanitized, async () => {
  const { target, proxy, client, serverConn, server } = await forwardedConnection();
  await writeAll(client.conn, encoder.encode("request"));
  await client.conn.closeWrite();
  await server.waitForEnd();
  assert.equal(server.ended, "eof");
  assert.equal(server.text(), "request");
  await writeAll(serverConn, encoder.encode("response"));
  serverConn.close();
  await client.reader.waitForEnd();
  assert.equal(client.reader.ended, "eof");
  assert.equal(client.reader.text(), "response");
  await until(() => proxy.stats.open === 0, "the proxy to close the finished connection");
  await shutDown(proxy, target, [client], [server]);
});

Deno.test("cut('reset') closes open connections and new ones until heal()", sanitized, async () => {
  const { target, proxy, client: before, server } = await forwardedConnection();
  await writeAll(before.conn, encoder.encode("ping"));
  await server.waitForText("ping");

  proxy.cut("reset");
  assert.equal(proxy.state, "reset");
  await before.reader.waitForEnd();
  await server.waitForEnd();
  const during = await dial(proxy.port);
  await during.reader.waitForEnd();
  assert.equal(during.reader.length, 0);
  await sleep(50);
  assert.equal(target.connections.length, 1, "a connection made during the cut reached the target");
  assert.equal(proxy.stats.reset, 1);
  assert.equal(proxy.stats.open, 0);

  proxy.heal();
  assert.equal(proxy.state, "forwarding");
  const after = await dial(proxy.port);
  const serverAfter = new Reader(await target.connection(1));
  await writeAll(after.conn, encoder.encode("again"));
  await serverAfter.waitForText("again");
  await writeAll(target.connections[1]!, encoder.encode("back"));
  await after.reader.waitForText("back");
  await shutDown(proxy, target, [before, during, after], [server, serverAfter]);
});

Deno.test("cut('blackhole') silences open connections and holds new ones", sanitized, async () => {
  const { target, proxy, client: before, serverConn, server } = await forwardedConnection();
  await writeAll(before.conn, encoder.encode("ping"));
  await server.waitForText("ping");

  proxy.cut("blackhole");
  assert.equal(proxy.state, "blackhole");
  await writeAll(before.conn, encoder.encode("lost"));
  await writeAll(serverConn, encoder.encode("lost too"));
  const during = await dial(proxy.port);
  await writeAll(during.conn, encoder.encode("hello?"));
  await sleep(SILENCE_MS);
  assert.equal(server.text(), "ping", "bytes crossed a blackholed connection to the target");
  assert.equal(before.reader.length, 0, "bytes crossed a blackholed connection to the client");
  assert.equal(before.reader.ended, null, "a blackholed connection was closed");
  assert.equal(server.ended, null, "a blackholed connection was closed on the target's side");
  assert.equal(during.reader.ended, null, "a connection made during the cut was closed");
  assert.equal(target.connections.length, 1, "a connection made during the cut reached the target");
  assert.equal(proxy.stats.blackholed, 1);
  assert.equal(proxy.stats.open, 2);

  proxy.heal();
  await before.reader.waitForEnd();
  await server.waitForEnd();
  await during.reader.waitForEnd();
  assert.equal(during.reader.length, 0);
  assert.equal(proxy.stats.open, 0);
  const after = await dial(proxy.port);
  const serverAfter = new Reader(await target.connection(1));
  await writeAll(after.conn, encoder.encode("again"));
  await serverAfter.waitForText("again");
  await shutDown(proxy, target, [before, during, after], [server, serverAfter]);
});

Deno.test("a blackholed client that hangs up is not told to the target", sanitized, async () => {
  const { target, proxy, client, server } = await forwardedConnection();
  proxy.cut("blackhole");
  client.conn.close();
  await client.reader.done;
  await sleep(SILENCE_MS);
  assert.equal(server.ended, null, "the target heard of a hang-up across the blackhole");
  await shutDown(proxy, target, [], [server]);
});

Deno.test(
  "close() closes the sockets of a silenced connection: nothing leaks",
  sanitized,
  async () => {
    // With the target gone and the client not reading, only close() can end the proxy's sockets
    // and its pending read; the sanitizers check that it does, and that nothing runs after it.
    const target = new Target();
    const proxy = new TcpProxy(target.port);
    const client = await Deno.connect({ hostname: "127.0.0.1", port: proxy.port });
    await target.connection(0);
    proxy.cut("blackhole");
    await target.close();
    await proxy.close();
    client.close();
  },
);

Deno.test(
  "a target that refuses the dial: the client is closed, and counted",
  sanitized,
  async () => {
    const gone = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    const port = gone.addr.port;
    gone.close();
    const target = new Target();
    const proxy = new TcpProxy(port);
    const client = await dial(proxy.port);
    await client.reader.waitForEnd();
    assert.equal(proxy.stats.targetUnreachable, 1);
    assert.equal(proxy.stats.open, 0);
    await shutDown(proxy, target, [client]);
  },
);

Deno.test("close() ends connections in every state and frees the port", sanitized, async () => {
  const target = new Target();
  const busy = new TcpProxy(target.port);
  const held = new TcpProxy(target.port);
  // One proxy mid-transfer in both directions, the other with a silenced and a held connection.
  const streaming = await dial(busy.port);
  const streamingServer = await target.connection(0);
  const serverReaders = [new Reader(streamingServer)];
  const silenced = await dial(held.port);
  serverReaders.push(new Reader(await target.connection(1)));
  held.cut("blackhole");
  const waiting = await dial(held.port);
  const big = new Uint8Array(4 << 20);
  const writes = Promise.allSettled([
    writeAll(streaming.conn, big),
    writeAll(streamingServer, big),
  ]);
  await until(() => busy.stats.bytesToTarget > 0 && busy.stats.bytesFromTarget > 0, "traffic");

  await Promise.all([busy.close(), held.close()]);
  await Promise.all([streaming.reader.waitForEnd(), silenced.reader.waitForEnd()]);
  await waiting.reader.waitForEnd();
  assert.equal(busy.stats.open + held.stats.open, 0);
  await assert.rejects(() => Deno.connect({ hostname: "127.0.0.1", port: busy.port }));
  busy.cut();
  busy.heal();
  await busy.close();
  for (const { conn } of [streaming, silenced, waiting]) closeQuietly(conn);
  await target.close();
  await writes;
  await Promise.all([
    ...[streaming, silenced, waiting].map(({ reader }) => reader.done),
    ...serverReaders.map((reader) => reader.done),
  ]);
});

Deno.test("bad arguments throw, quoting the value", sanitized, async () => {
  assert.throws(() => new TcpProxy(70000), RangeError);
  const proxy = new TcpProxy(1);
  try {
    assert.throws(
      () => proxy.cut("drop" as "reset"),
      (error: unknown) => error instanceof TypeError && error.message.includes("got drop"),
    );
  } finally {
    await proxy.close();
  }
});
