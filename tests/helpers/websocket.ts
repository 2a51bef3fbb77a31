/**
 * Shared helpers for the WebSocket transport tests: free ports, a fake RPC handler, clusters of
 * transports in one process, and a raw client that speaks the wire protocol by hand.
 */

export { freePorts } from "../../examples/cluster.ts";
import { freePorts } from "../../examples/cluster.ts";
import type { RpcHandler } from "../../src/types.ts";
import {
  WebSocketTransport,
  type WebSocketTransportOptions,
} from "../../src/transport/websocket_transport.ts";
import { encodeFrame, isRefusal, parseFrame } from "../../src/transport/_websocket_envelope.ts";
import {
  importSecret,
  newNonce,
  signTranscript,
  signUpgrade,
  withUpgradeToken,
} from "../../src/transport/_websocket_handshake.ts";

export const SECRET = "test-secret-0123456789abcdef";

/**
 * What a {@linkcode RawClient} advertises by default: nothing listens on port 9 (discard) of
 * loopback in the tests, so a server that dials it back gets nowhere.
 */
export const UNREACHABLE_ADDRESS = "ws://127.0.0.1:9/";

/** A handler that echoes, records what it served, and can be told to hang or delay. */
export class FakeHandler implements RpcHandler {
  readonly served: { method: string; args: unknown }[] = [];
  #hangs: (() => void)[] = [];

  handleRpc(method: string, args: unknown): Promise<unknown> {
    this.served.push({ method, args });
    if (method === "Hang") {
      // Never answers until release() (so tests can end without a leaked timer).
      return new Promise((resolve) => this.#hangs.push(() => resolve(null)));
    }
    if (method === "Delay" && typeof args === "number") {
      return new Promise((resolve) => setTimeout(() => resolve({ echo: args }), args));
    }
    if (method === "Throw") return Promise.reject(new Error("handler failed"));
    return Promise.resolve({ echo: args });
  }

  release(): void {
    for (const resolve of this.#hangs.splice(0)) resolve();
  }
}

/** A cluster of transports in this process, each with a {@linkcode FakeHandler}. */
export interface TransportCluster {
  urls: string[];
  transports: WebSocketTransport[];
  handlers: FakeHandler[];
  logs: string[][];
  close(): Promise<void>;
}

/** Starts `count` transports on loopback and waits until every link is up. */
export async function startTransports(
  count: number,
  options: Partial<WebSocketTransportOptions> & { scheme?: "ws" | "wss" } = {},
): Promise<TransportCluster> {
  const { scheme = "ws", ...transportOptions } = options;
  const urls = freePorts(count).map((port) => `${scheme}://127.0.0.1:${port}`);
  const logs: string[][] = urls.map(() => []);
  const handlers = urls.map(() => new FakeHandler());
  const transports: WebSocketTransport[] = [];
  for (let me = 0; me < count; me++) {
    const transport = await WebSocketTransport.create({
      me,
      peers: urls,
      secret: SECRET,
      log: (line) => logs[me]!.push(line),
      ...transportOptions,
    });
    transport.setHandler(handlers[me]!);
    transports.push(transport);
  }
  await waitFor(
    "every link up",
    () => transports.every((transport) => transport.connectedPeers().length === count - 1),
  );
  return {
    urls,
    transports,
    handlers,
    logs,
    close: async () => {
      for (const handler of handlers) handler.release();
      await Promise.all(transports.map((transport) => transport.close()));
    },
  };
}

/** Polls `condition` every 10 ms until it holds; throws naming `what` after `timeoutMs`. */
export async function waitFor(
  what: string,
  condition: () => boolean | Promise<boolean>,
  timeoutMs = 5000,
): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await condition())) {
    if (performance.now() > deadline) {
      throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

/**
 * `url` with an upgrade token in its query, as peer `from` dialing peer `to` would send it, signed
 * with `secret` at `time` (default: now).
 */
export async function tokenUrl(
  url: string,
  from: number,
  to: number,
  secret: string,
  time?: number,
): Promise<string> {
  const token = await signUpgrade(await importSecret(secret), from, to, time);
  return withUpgradeToken(url, token).href;
}

/**
 * A hand-driven client connection to a transport's server (Deno's own WebSocket client), for
 * feeding it bad frames. It records every frame received and how the connection closed. Give it
 * a {@linkcode tokenUrl} to get past the upgrade.
 */
export class RawClient {
  readonly socket: WebSocket;
  readonly received: unknown[] = [];
  readonly closed: Promise<{ code: number }>;
  readonly opened: Promise<void>;
  /** Whether the upgrade succeeded (the socket opened) at some point. */
  wasOpened = false;

  constructor(url: string) {
    this.socket = new WebSocket(url);
    this.socket.onmessage = (event) => this.received.push(event.data);
    this.socket.onerror = (event) => event.preventDefault();
    this.opened = new Promise((resolve) =>
      this.socket.addEventListener("open", () => {
        this.wasOpened = true;
        resolve();
      })
    );
    this.closed = new Promise((resolve) =>
      this.socket.addEventListener("close", (event) => resolve({ code: event.code }))
    );
  }

  /** Waits for the server's challenge and returns its nonce. */
  async challenge(): Promise<string> {
    await waitFor("a challenge", () => this.received.length > 0);
    const frame = parseFrame(this.received[0], 1 << 20);
    if (isRefusal(frame) || frame.type !== "challenge") {
      throw new Error(`Expected a challenge, got ${String(this.received[0])}`);
    }
    return frame.nonce;
  }

  /**
   * Completes the handshake as peer `from` dialing peer `to`, proving `secret`, and advertising
   * `address` as its own (signing `signedAddress`, by default the same).
   */
  async authenticate(
    from: number,
    to: number,
    secret: string,
    address = UNREACHABLE_ADDRESS,
    signedAddress = address,
  ): Promise<void> {
    const serverNonce = await this.challenge();
    const dialerNonce = newNonce();
    const proof = await signTranscript(await importSecret(secret), "dialer", {
      from,
      to,
      serverNonce,
      dialerNonce,
      dialerAddress: signedAddress,
    });
    this.socket.send(
      encodeFrame({ v: 1, type: "hello", from, to, nonce: dialerNonce, address, proof }),
    );
  }

  /** Closes the connection (if still open) and waits until it has closed. */
  async close(): Promise<{ code: number }> {
    if (this.socket.readyState <= WebSocket.OPEN) this.socket.close();
    return await this.closed;
  }
}

/**
 * A peer's server played by hand (`Deno.serve`): it challenges each dialer and answers its hello
 * with a valid welcome for `secret`, without checking the dialer's proof. It records each
 * connection it welcomed and whether it has closed; `afterWelcome` may send on it.
 */
export class HandshakingServer {
  /** The connections welcomed, oldest first. */
  readonly connections: { socket: WebSocket; closed: boolean }[] = [];
  readonly #server: Deno.HttpServer;

  constructor(port: number, secret: string, afterWelcome: (socket: WebSocket) => void = () => {}) {
    const key = importSecret(secret);
    this.#server = Deno.serve({ hostname: "127.0.0.1", port, onListen: () => {} }, (request) => {
      const { socket, response } = Deno.upgradeWebSocket(request);
      const serverNonce = newNonce();
      const connection = { socket, closed: false };
      socket.onopen = () =>
        socket.send(encodeFrame({ v: 1, type: "challenge", nonce: serverNonce }));
      socket.onmessage = async (event) => {
        const hello = parseFrame(event.data, 1 << 20);
        if (isRefusal(hello) || hello.type !== "hello") return;
        const proof = await signTranscript(await key, "server", {
          from: hello.from,
          to: hello.to,
          serverNonce,
          dialerNonce: hello.nonce,
          dialerAddress: hello.address,
        });
        socket.send(encodeFrame({ v: 1, type: "welcome", proof }));
        this.connections.push(connection);
        afterWelcome(socket);
      };
      socket.onclose = () => connection.closed = true;
      socket.onerror = (event) => event.preventDefault();
      return response;
    });
  }

  /** Stops serving and closes every connection. */
  shutdown(): Promise<void> {
    return this.#server.shutdown();
  }
}

/** Starts `tests/helpers/echo_peer.ts` as peer `me` in its own process; resolves once it listens. */
export async function spawnEchoPeer(me: number, urls: string[]): Promise<Deno.ChildProcess> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      new URL("./echo_peer.ts", import.meta.url).pathname,
      String(me),
      JSON.stringify(urls),
      SECRET,
    ],
    stdout: "piped",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  const { value } = await reader.read();
  await reader.cancel();
  if (!value?.includes("ready")) throw new Error(`Peer ${me} did not start; it printed ${value}`);
  return child;
}
