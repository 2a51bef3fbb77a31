/**
 * A transport that connects Raft peers running as separate processes (or machines) over
 * WebSockets, with a shared-secret handshake, bounded send queues and reconnection.
 *
 * ## Which side writes
 *
 * Deno's WebSocket client (`new WebSocket()`) leaves Nagle's algorithm on and writes a frame's
 * header and payload separately, so a lone client frame over about 1 KB waits some 40 ms for the
 * receiver's delayed ACK; the accepting side of a connection (`Deno.upgradeWebSocket`) has no such
 * stall (see `bench/websocket_latency.ts`). So every peer dials every other peer, and each link is
 * a pair of connections: peer A sends its requests and its replies to B only on the connection
 * that B dialed into A's server, where A is the accepting side. A dialing side writes only the
 * small handshake frames; anything else it receives from a dialer is a protocol violation.
 *
 * @module
 */

import { type Clock, type RandomSource, realClock } from "../clock.ts";
import type { ClientEnd, RpcHandler } from "../types.ts";
import { encodeFrame, type Frame, isRefusal, parseFrame } from "./_websocket_envelope.ts";
import {
  importSecret,
  newNonce,
  signTranscript,
  verifyTranscript,
} from "./_websocket_handshake.ts";

/** Where a transport's log lines go: refused connections and frames, dropped sends. */
export type TransportLog = (line: string) => void;

/** Options for {@linkcode WebSocketTransport.create}. */
export interface WebSocketTransportOptions {
  /** This peer's index into `peers`. */
  me: number;
  /**
   * Every peer's URL, `ws://host:port` or `wss://host:port`, indexed by peer; `peers[me]` is this
   * peer's own address. All peers must be given the same list.
   */
  peers: readonly string[];
  /**
   * The cluster's shared secret, at least 16 bytes. Peers prove they hold it by HMAC when a
   * connection opens; it never crosses the wire.
   */
  secret: string | Uint8Array;
  /**
   * Where the server listens. Default: the host and port of `peers[me]`. Set `hostname` to
   * `"0.0.0.0"` to accept connections on every interface while others reach this peer by the
   * address in `peers[me]`.
   */
  listen?: { hostname?: string; port?: number };
  /**
   * PEM certificate chain and private key: when given, the server speaks `wss://`. Default: none,
   * plain `ws://`, which is fine on loopback or a private network, not on a shared one.
   */
  tls?: { cert: string; key: string };
  /**
   * Extra PEM CA certificates to trust when dialing `wss://` peers (e.g. a private cluster CA).
   * Default: none, only the system's trusted roots.
   */
  caCerts?: string[];
  /**
   * How long `call()` waits for a reply before resolving `undefined`, in ms. Default 1000: longer
   * than any healthy round trip by far, and short enough that a Raft leader with heartbeats of
   * 100-200 ms does not pile up calls to a dead peer.
   */
  callTimeoutMs?: number;
  /**
   * Largest frame sent or accepted, in bytes of UTF-8 JSON. Default 4 MiB: room for a full
   * AppendEntries batch of modest commands; a larger frame is dropped when sending, and closes
   * the connection when received.
   */
  maxMessageBytes?: number;
  /**
   * High-water mark of a connection's send queue (`WebSocket.bufferedAmount`), in bytes. Past it
   * a send is dropped and the call resolves `undefined`, as if the peer were unreachable. Default
   * 8 MiB: two maximal frames, so one large message never trips it, while a stalled peer costs
   * at most this much memory per connection.
   */
  maxBufferedBytes?: number;
  /**
   * First delay before redialing a lost peer, in ms. Default 50: a restarted peer is back within
   * one heartbeat.
   */
  reconnectMinDelayMs?: number;
  /**
   * Cap on the redial delay, which doubles on each failure with random jitter, in ms. Default 1000:
   * a peer that comes back is found within about an election timeout, and a dead one costs one
   * connection attempt a second.
   */
  reconnectMaxDelayMs?: number;
  /**
   * How long a new connection may take to finish the handshake, in ms. Default 2000: ample on any
   * network, and short enough that a silent client cannot hold a connection open.
   */
  handshakeTimeoutMs?: number;
  /**
   * Most connections the server holds that have not finished the handshake; past it, upgrade
   * requests get HTTP 503. A connection counts until it authenticates or its close event: one
   * refused for a timeout waits for the client's close frame, which a hostile client never sends.
   * Default 64: far more than a cluster's honest dials at once, few enough to bound the sockets
   * and memory unauthenticated clients can hold.
   */
  maxPendingHandshakes?: number;
  /**
   * The same cap per remote address (IP). Default 16: one host cannot take every slot, so
   * peers on other hosts can still connect.
   */
  maxPendingHandshakesPerAddress?: number;
  /**
   * Most requests from one peer that the handler may be serving at once; further requests from
   * that peer are dropped unanswered (their calls time out) until some finish. Default 1024: far
   * above what Raft keeps in flight to one peer, low enough that a flood cannot pile up handler
   * calls without bound.
   */
  maxRequestsInProgress?: number;
  /**
   * How long an accepted connection may go without a frame before the server sends a keepalive
   * on it, in ms; the dialing side, which only reads, gives up a connection that brought nothing
   * for 3 times this (its peer vanished without closing it: a crash or a partition) and redials.
   * Default 1000: a dead peer is noticed within about 3 s, while a busy link (a Raft leader
   * heartbeats every 250 ms by default) never needs one and an idle link costs one tiny frame a
   * second. Give every peer the same value.
   */
  keepaliveMs?: number;
  /** Where log lines go. Default: `console.error`. Pass `() => {}` to silence them. */
  log?: TransportLog;
  /** Timers for call timeouts and redials. Default: the real clock. */
  clock?: Clock;
  /** Random numbers for redial jitter and the first request id. Default: `Math.random`. */
  random?: RandomSource;
}

/** Counters of what a transport refused or dropped, for tests and monitoring. */
export interface TransportStats {
  /** Connections closed because their handshake failed or timed out. */
  refusedHandshakes: number;
  /** Connections closed because of a malformed, oversized or unexpected frame. */
  refusedFrames: number;
  /** Messages not sent: send queue past its mark, frame too large, or link down. */
  droppedSends: number;
  /** Bytes queued for sending right now, over all connections (`bufferedAmount`). */
  queuedBytes: number;
  /** Requests dropped unanswered because `maxRequestsInProgress` were being served. */
  droppedRequests: number;
  /** Server connections open now that have not (yet) authenticated. */
  pendingHandshakes: number;
  /** Upgrade requests answered 503 because of `maxPendingHandshakes(PerAddress)`. */
  refusedUpgrades: number;
}

interface PendingCall {
  resolve(reply: unknown | undefined): void;
  cancelTimeout(): void;
}

/** What this peer knows of one other peer. */
interface Link {
  readonly url: string;
  /** Our authenticated connection to the peer's server: we only read from it. */
  dialed: WebSocket | undefined;
  /** The peer's authenticated connection to our server: we write requests and replies on it. */
  accepted: WebSocket | undefined;
  /** The dial in progress, before authentication. */
  dialing: WebSocket | undefined;
  /** When `dialed` was authenticated (clock time). */
  dialedAt: number;
  /**
   * Gives up `dialed` at once, without waiting for its close event (which may never come from a
   * vanished peer): forgets it, fails the calls awaiting replies on it, closes it and redials.
   */
  abandonDialed: (() => void) | undefined;
  failedDials: number;
  cancelRedial: (() => void) | undefined;
  /** Our requests to this peer awaiting a reply, by id. */
  pending: Map<number, PendingCall>;
  /** When we last received a frame on `dialed` (clock time). */
  dialedLastReceived: number;
  /** When we last sent a frame on `accepted` (clock time). */
  acceptedLastSent: number;
  /** Requests from this peer whose handler has not finished. */
  requestsInProgress: number;
  /** Fault injection: traffic to and from this peer is dropped. */
  cutOff: boolean;
}

/** Close code for a refused handshake or frame (application range: 1008 may not be sent by scripts). */
const PROTOCOL_VIOLATION = 4008;

/** How long `close()` waits for sockets to finish closing. */
const CLOSE_WAIT_MS = 2000;

/** Request ids start below this (2^48): far from `Number.MAX_SAFE_INTEGER`, so they never wrap. */
const FIRST_REQUEST_ID_RANGE = 2 ** 48;

const DEFAULTS = {
  callTimeoutMs: 1000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxBufferedBytes: 8 * 1024 * 1024,
  reconnectMinDelayMs: 50,
  reconnectMaxDelayMs: 1000,
  handshakeTimeoutMs: 2000,
  maxPendingHandshakes: 64,
  maxPendingHandshakesPerAddress: 16,
  maxRequestsInProgress: 1024,
  keepaliveMs: 1000,
};

/**
 * Connects this peer to the others over WebSockets: serves their requests to an
 * {@linkcode RpcHandler}, and gives one {@linkcode ClientEnd} per peer for outgoing calls.
 *
 * @example Three peers on one machine (each line runs in its own process)
 * ```ts ignore
 * import { make, MemoryPersister, WebSocketTransport } from "@denoraft/raft";
 * const peers = ["ws://127.0.0.1:7001", "ws://127.0.0.1:7002", "ws://127.0.0.1:7003"];
 * const me = Number(Deno.args[0]);
 * const transport = await WebSocketTransport.create({ me, peers, secret: Deno.env.get("RAFT_SECRET")! });
 * const raft = await make(transport.clientEnds(), me, new MemoryPersister(), (msg) => console.log(msg));
 * transport.setHandler(raft);
 * ```
 */
export class WebSocketTransport {
  readonly #me: number;
  readonly #links: (Link | undefined)[];
  readonly #key: CryptoKey;
  readonly #options: typeof DEFAULTS;
  readonly #log: TransportLog;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #httpClient: Deno.HttpClient | undefined;
  readonly #sockets = new Map<WebSocket, Promise<void>>();
  readonly #stats = {
    refusedHandshakes: 0,
    refusedFrames: 0,
    droppedSends: 0,
    refusedUpgrades: 0,
    droppedRequests: 0,
  };
  /** Unauthenticated server connections, by remote address. */
  readonly #pendingByAddress = new Map<string, number>();
  #pendingHandshakes = 0;
  #server: Deno.HttpServer<Deno.NetAddr> | undefined;
  #handler: RpcHandler | undefined;
  /**
   * Starts at a random point so that a restarted process (same peer index) does not reuse the ids
   * of its previous life, whose late replies could otherwise settle its new calls.
   */
  #nextRequestId: number;
  #cancelKeepalive: (() => void) | undefined;
  #closed = false;

  private constructor(options: WebSocketTransportOptions, key: CryptoKey) {
    this.#me = options.me;
    this.#key = key;
    this.#options = {
      callTimeoutMs: options.callTimeoutMs ?? DEFAULTS.callTimeoutMs,
      maxMessageBytes: options.maxMessageBytes ?? DEFAULTS.maxMessageBytes,
      maxBufferedBytes: options.maxBufferedBytes ?? DEFAULTS.maxBufferedBytes,
      reconnectMinDelayMs: options.reconnectMinDelayMs ?? DEFAULTS.reconnectMinDelayMs,
      reconnectMaxDelayMs: options.reconnectMaxDelayMs ?? DEFAULTS.reconnectMaxDelayMs,
      handshakeTimeoutMs: options.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
      maxPendingHandshakes: options.maxPendingHandshakes ?? DEFAULTS.maxPendingHandshakes,
      maxPendingHandshakesPerAddress: options.maxPendingHandshakesPerAddress ??
        DEFAULTS.maxPendingHandshakesPerAddress,
      maxRequestsInProgress: options.maxRequestsInProgress ?? DEFAULTS.maxRequestsInProgress,
      keepaliveMs: options.keepaliveMs ?? DEFAULTS.keepaliveMs,
    };
    const prefix = `[ws peer ${options.me}] `;
    const log = options.log ?? ((line: string) => console.error(line));
    this.#log = (line) => log(prefix + line);
    this.#clock = options.clock ?? realClock;
    this.#random = options.random ?? Math.random;
    this.#nextRequestId = Math.floor(this.#random() * FIRST_REQUEST_ID_RANGE);
    this.#httpClient = options.caCerts === undefined
      ? undefined
      : Deno.createHttpClient({ caCerts: options.caCerts });
    this.#links = options.peers.map((url, peer) =>
      peer === options.me ? undefined : {
        url,
        dialed: undefined,
        accepted: undefined,
        dialing: undefined,
        dialedAt: 0,
        abandonDialed: undefined,
        requestsInProgress: 0,
        dialedLastReceived: 0,
        acceptedLastSent: 0,
        failedDials: 0,
        cancelRedial: undefined,
        pending: new Map(),
        cutOff: false,
      }
    );
  }

  /**
   * Starts the server and begins dialing every other peer. Resolves once the server listens;
   * links come up in the background as peers start. Throws a `RangeError` for a bad `me`, peer
   * URL or secret.
   */
  static async create(options: WebSocketTransportOptions): Promise<WebSocketTransport> {
    const { me, peers } = options;
    if (!Number.isInteger(me) || me < 0 || me >= peers.length) {
      throw new RangeError(`Peer index must be within 0..${peers.length - 1}, got ${me}`);
    }
    const urls = peers.map((text) => {
      const url = URL.parse(text);
      if (url === null || (url.protocol !== "ws:" && url.protocol !== "wss:")) {
        throw new RangeError(`Peer URL must be ws:// or wss://, got "${text}"`);
      }
      return url;
    });
    for (const name of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      const value = options[name];
      if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
        throw new RangeError(`Option ${name} must be a positive number, got ${value}`);
      }
    }
    const key = await importSecret(options.secret);
    const transport = new WebSocketTransport(options, key);
    const own = urls[me]!;
    const hostname = options.listen?.hostname ?? own.hostname.replace(/^\[|\]$/g, "");
    const port = options.listen?.port ?? Number(own.port || (own.protocol === "wss:" ? 443 : 80));
    transport.#server = Deno.serve(
      {
        hostname,
        port,
        onListen: () => {},
        ...(options.tls === undefined ? {} : { cert: options.tls.cert, key: options.tls.key }),
      },
      (request, info) => transport.#accept(request, info.remoteAddr.hostname),
    );
    transport.#links.forEach((link, peer) => {
      if (link !== undefined) transport.#dial(peer, link);
    });
    transport.#scheduleKeepalive();
    return transport;
  }

  /** The port the server listens on (useful with `listen: { port: 0 }`). */
  get port(): number {
    return this.#server!.addr.port;
  }

  /** Counters of refused connections and frames and of dropped sends. */
  get stats(): TransportStats {
    let queuedBytes = 0;
    for (const socket of this.#sockets.keys()) queuedBytes += socket.bufferedAmount;
    return { ...this.#stats, queuedBytes, pendingHandshakes: this.#pendingHandshakes };
  }

  /** Where incoming requests go. Until it is set, incoming requests get no reply. */
  setHandler(handler: RpcHandler): void {
    this.#handler = handler;
  }

  /**
   * One {@linkcode ClientEnd} per peer, indexed like `peers`, as `make()` expects. Calls to this
   * peer's own entry resolve `undefined`.
   */
  clientEnds(): ClientEnd[] {
    return this.#links.map((_, peer) => ({
      call: (method: string, args: unknown) => this.#call(peer, method, args),
    }));
  }

  /** The peers with both connections of their link authenticated and open. */
  connectedPeers(): number[] {
    const peers: number[] = [];
    this.#links.forEach((link, peer) => {
      if (link?.dialed !== undefined && link.accepted !== undefined) peers.push(peer);
    });
    return peers;
  }

  /**
   * Fault injection: drops all traffic to and from `peer` (every peer when omitted) while keeping
   * the connections open, as a network partition would. Calls resolve `undefined` at once.
   */
  cutOff(peer?: number): void {
    for (const link of this.#selectLinks(peer)) {
      link.cutOff = true;
      this.#failPending(link);
    }
  }

  /** Undoes {@linkcode WebSocketTransport.cutOff} for `peer` (every peer when omitted). */
  heal(peer?: number): void {
    for (const link of this.#selectLinks(peer)) link.cutOff = false;
  }

  /**
   * Shuts down the server, closes every connection, stops redialing and resolves every call in
   * flight to `undefined`. Resolves once all sockets have closed.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelKeepalive?.();
    for (const link of this.#links) {
      if (link === undefined) continue;
      link.cancelRedial?.();
      link.cancelRedial = undefined;
      this.#failPending(link);
    }
    for (const socket of this.#sockets.keys()) closeQuietly(socket);
    // A peer that stopped reading (SIGSTOP) never finishes the closing handshake: do not hang.
    let cancelWait = () => {};
    await Promise.race([
      Promise.all(this.#sockets.values()),
      new Promise<void>((resolve) => cancelWait = this.#clock.schedule(CLOSE_WAIT_MS, resolve)),
    ]);
    cancelWait();
    await this.#server?.shutdown();
    this.#httpClient?.close();
  }

  #selectLinks(peer: number | undefined): Link[] {
    if (peer === undefined) return this.#links.filter((link) => link !== undefined);
    const link = this.#links[peer];
    if (link === undefined) throw new RangeError(`No link to peer ${peer}`);
    return [link];
  }

  #call(peer: number, method: string, args: unknown): Promise<unknown | undefined> {
    const link = this.#links[peer];
    if (this.#closed || link === undefined || link.cutOff) return Promise.resolve(undefined);
    // A reply can only come back on the connection we dialed.
    if (link.dialed === undefined || link.accepted === undefined) return Promise.resolve(undefined);
    const id = this.#nextRequestId++;
    const frame: Frame = { v: 1, type: "request", id, method, args };
    if (!this.#send(link.accepted, frame, peer)) return Promise.resolve(undefined);
    return new Promise((resolve) => {
      const cancelTimeout = this.#clock.schedule(this.#options.callTimeoutMs, () => {
        link.pending.delete(id);
        resolve(undefined);
      });
      link.pending.set(id, { resolve, cancelTimeout });
    });
  }

  /** Sends `frame`, or drops it (returning false) when it is too large or the queue is full. */
  #send(socket: WebSocket, frame: Frame, peer: number): boolean {
    if (socket.readyState !== WebSocket.OPEN) {
      this.#stats.droppedSends++;
      return false;
    }
    let text: string;
    try {
      text = encodeFrame(frame);
    } catch (error) {
      this.#stats.droppedSends++;
      this.#log(`Dropped a ${frame.type} to peer ${peer}: not JSON (${error})`);
      return false;
    }
    // Length in UTF-16 units bounds the UTF-8 size from below; count exactly only near the limit.
    const bytes = text.length * 3 > this.#options.maxMessageBytes
      ? new TextEncoder().encode(text).length
      : text.length;
    if (bytes > this.#options.maxMessageBytes) {
      this.#stats.droppedSends++;
      this.#log(
        `Dropped a ${frame.type} of ${bytes} bytes to peer ${peer}: over maxMessageBytes ` +
          `(${this.#options.maxMessageBytes})`,
      );
      return false;
    }
    // WebSocket.send never pushes back, so a stalled peer would grow this queue without bound.
    if (socket.bufferedAmount + bytes > this.#options.maxBufferedBytes) {
      this.#stats.droppedSends++;
      return false;
    }
    socket.send(text);
    const link = this.#links[peer];
    if (link !== undefined && link.accepted === socket) link.acceptedLastSent = this.#clock.now();
    return true;
  }

  /**
   * One timer for the whole transport, every half `keepaliveMs`: sends a keepalive on each
   * accepted connection that has been quiet for `keepaliveMs`, and gives up each dialed one that
   * brought nothing for 3 times that.
   */
  #scheduleKeepalive(): void {
    const { keepaliveMs } = this.#options;
    this.#cancelKeepalive = this.#clock.schedule(keepaliveMs / 2, () => {
      if (this.#closed) return;
      const now = this.#clock.now();
      this.#links.forEach((link, peer) => {
        if (link === undefined) return;
        if (link.accepted !== undefined && now - link.acceptedLastSent >= keepaliveMs) {
          this.#send(link.accepted, { v: 1, type: "keepalive" }, peer);
        }
        if (link.abandonDialed !== undefined && now - link.dialedLastReceived > 3 * keepaliveMs) {
          this.#log(`Peer ${peer} sent nothing for ${now - link.dialedLastReceived} ms: redialing`);
          link.abandonDialed();
        }
      });
      this.#scheduleKeepalive();
    });
  }

  #failPending(link: Link): void {
    const calls = [...link.pending.values()];
    link.pending.clear();
    for (const call of calls) {
      call.cancelTimeout();
      call.resolve(undefined);
    }
  }

  /** Registers `socket` so that `close()` can close it and wait; returns the close promise. */
  #track(socket: WebSocket): void {
    this.#sockets.set(
      socket,
      new Promise((resolve) => {
        socket.addEventListener("close", () => {
          this.#sockets.delete(socket);
          resolve();
        });
      }),
    );
  }

  /** Closes `socket` for a protocol violation, after logging why. */
  #refuse(socket: WebSocket, reason: string, counter: "refusedHandshakes" | "refusedFrames"): void {
    this.#stats[counter]++;
    this.#log(`Closing connection: ${reason}`);
    closeQuietly(socket, PROTOCOL_VIOLATION);
  }

  // ---- The dialing side: authenticate, then read the peer's requests and replies. ----

  #dial(peer: number, link: Link): void {
    if (this.#closed) return;
    link.cancelRedial = undefined;
    let socket: WebSocket;
    try {
      socket = this.#httpClient === undefined
        ? new WebSocket(link.url)
        : new WebSocket(link.url, { client: this.#httpClient });
    } catch (error) {
      this.#log(`Cannot dial peer ${peer} at ${link.url}: ${error}`);
      link.failedDials++; // back off as for any failed dial, or this retries and logs every 50 ms
      this.#scheduleRedial(peer, link);
      return;
    }
    this.#track(socket);
    link.dialing = socket;
    let state: "challenge" | "signing" | "welcome" | "verifying" | "open" = "challenge";
    let dialerNonce = "";
    let abandoned = false;
    let serverNonce = "";
    /**
     * Refuses this connection and gives it up at once: its close event may never come (a peer
     * that went silent never answers the close frame), so the bookkeeping and the redial, with
     * backoff, happen here.
     */
    const drop = (reason: string, counter: "refusedHandshakes" | "refusedFrames"): void => {
      if (abandoned) return;
      abandoned = true;
      cancelHandshakeTimeout();
      this.#refuse(socket, reason, counter);
      if (link.dialing === socket) link.dialing = undefined;
      this.#forgetDialed(link, socket);
      link.failedDials++;
      this.#scheduleRedial(peer, link);
    };
    const cancelHandshakeTimeout = this.#clock.schedule(this.#options.handshakeTimeoutMs, () => {
      if (state !== "open") drop(`peer ${peer} did not finish the handshake`, "refusedHandshakes");
    });

    const receive = async (event: MessageEvent): Promise<void> => {
      if (abandoned) return;
      const frame = parseFrame(event.data, this.#options.maxMessageBytes);
      if (isRefusal(frame)) {
        const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
        return drop(`from peer ${peer}: ${frame.refused}`, counter);
      }
      if (state === "open") link.dialedLastReceived = this.#clock.now();
      if (state === "open" && frame.type === "keepalive") return;
      if (state === "open" && (frame.type === "request" || frame.type === "reply")) {
        if (link.cutOff) return;
        if (frame.type === "reply") return this.#settle(link, frame.id, frame.result);
        // Not awaited: requests are served concurrently, only the handshake steps are ordered.
        return void this.#serve(peer, link, socket, frame.id, frame.method, frame.args);
      }
      if (state === "challenge" && frame.type === "challenge") {
        state = "signing";
        serverNonce = frame.nonce;
        dialerNonce = newNonce();
        const transcript = { from: this.#me, to: peer, serverNonce, dialerNonce };
        const proof = await signTranscript(this.#key, "dialer", transcript);
        if (socket.readyState !== WebSocket.OPEN) return;
        socket.send(encodeFrame({
          v: 1,
          type: "hello",
          from: this.#me,
          to: peer,
          nonce: dialerNonce,
          proof,
        }));
        state = "welcome";
        return;
      }
      if (state === "welcome" && frame.type === "welcome") {
        state = "verifying";
        const transcript = { from: this.#me, to: peer, serverNonce, dialerNonce };
        if (!await verifyTranscript(this.#key, "server", transcript, frame.proof)) {
          return drop(
            `peer ${peer} at ${link.url} failed to prove the cluster secret`,
            "refusedHandshakes",
          );
        }
        if (socket.readyState !== WebSocket.OPEN) return;
        state = "open";
        cancelHandshakeTimeout();
        link.dialing = undefined;
        link.dialed = socket;
        link.dialedAt = this.#clock.now();
        link.dialedLastReceived = link.dialedAt;
        link.abandonDialed = () => {
          abandoned = true;
          this.#forgetDialed(link, socket);
          closeQuietly(socket);
          link.cancelRedial?.();
          this.#dial(peer, link);
        };
        link.failedDials = 0;
        return;
      }
      const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
      drop(`from peer ${peer}: unexpected ${frame.type} frame`, counter);
    };
    // The server may send requests right after its welcome, while we still verify its proof:
    // handle each frame only after the previous one, so none finds the handshake half done.
    let received = Promise.resolve();
    socket.onmessage = (event) => {
      received = received.then(() => receive(event)).catch((error) => {
        drop(`failed on a frame from peer ${peer}: ${error}`, "refusedFrames");
      });
    };
    socket.onclose = () => {
      cancelHandshakeTimeout();
      if (abandoned) return; // abandonDialed did the bookkeeping and redialed
      if (link.dialing === socket) link.dialing = undefined;
      if (link.dialed === socket) {
        this.#forgetDialed(link, socket);
      } else {
        link.failedDials++;
      }
      this.#scheduleRedial(peer, link);
    };
    // An error is always followed by a close event, which does the work.
    socket.onerror = (event) => event.preventDefault();
  }

  #forgetDialed(link: Link, socket: WebSocket): void {
    if (link.dialed !== socket) return;
    link.dialed = undefined;
    link.abandonDialed = undefined;
    this.#failPending(link); // their replies can no longer arrive
  }

  #scheduleRedial(peer: number, link: Link): void {
    if (this.#closed || link.cancelRedial !== undefined) return;
    const { reconnectMinDelayMs, reconnectMaxDelayMs } = this.#options;
    const ceiling = Math.min(
      reconnectMaxDelayMs,
      reconnectMinDelayMs * 2 ** Math.min(link.failedDials, 20),
    );
    // Full jitter over the upper half keeps restarted peers from redialing in lockstep.
    const delay = ceiling / 2 + this.#random() * ceiling / 2;
    link.cancelRedial = this.#clock.schedule(delay, () => this.#dial(peer, link));
  }

  #settle(link: Link, id: number, result: unknown): void {
    const call = link.pending.get(id);
    if (call === undefined) return; // a reply after its call timed out
    link.pending.delete(id);
    call.cancelTimeout();
    call.resolve(result);
  }

  /**
   * Runs the handler for a request that arrived on `dialed`, and replies on the accepted
   * connection of that moment. If either connection was replaced meanwhile (the caller restarted,
   * or the link dropped), the reply is dropped: it would reach a process that never made the call.
   */
  async #serve(
    peer: number,
    link: Link,
    dialed: WebSocket,
    id: number,
    method: string,
    args: unknown,
  ): Promise<void> {
    const handler = this.#handler;
    const accepted = link.accepted;
    if (handler === undefined || accepted === undefined) return;
    if (link.requestsInProgress >= this.#options.maxRequestsInProgress) {
      this.#stats.droppedRequests++;
      return;
    }
    let result: unknown;
    link.requestsInProgress++;
    try {
      result = await handler.handleRpc(method, args);
    } catch (error) {
      this.#log(`Handler failed on ${method} from peer ${peer}: ${error}`);
      return;
    } finally {
      link.requestsInProgress--;
    }
    if (this.#closed || link.cutOff || link.accepted !== accepted || link.dialed !== dialed) return;
    this.#send(accepted, { v: 1, type: "reply", id, result: result ?? null }, peer);
  }

  // ---- The accepting side: challenge the dialer, then write to it; it may not write back. ----

  #accept(request: Request, address: string): Response {
    if (request.headers.get("upgrade")?.toLowerCase() !== "websocket") {
      return new Response("This is a Raft peer: it speaks WebSocket only.\n", { status: 426 });
    }
    if (this.#closed) return new Response("Shutting down.\n", { status: 503 });
    const fromAddress = this.#pendingByAddress.get(address) ?? 0;
    if (
      this.#pendingHandshakes >= this.#options.maxPendingHandshakes ||
      fromAddress >= this.#options.maxPendingHandshakesPerAddress
    ) {
      this.#stats.refusedUpgrades++;
      return new Response("Too many connections are opening.\n", { status: 503 });
    }
    let upgrade: Deno.WebSocketUpgrade;
    try {
      upgrade = Deno.upgradeWebSocket(request, { idleTimeout: 10 });
    } catch (error) {
      this.#log(`Refused a malformed WebSocket upgrade: ${error}`);
      return new Response("Malformed WebSocket upgrade.\n", { status: 400 });
    }
    const { socket, response } = upgrade;
    this.#track(socket);
    this.#pendingHandshakes++;
    this.#pendingByAddress.set(address, fromAddress + 1);
    let pending = true;
    const settleHandshake = () => {
      if (!pending) return;
      pending = false;
      this.#pendingHandshakes--;
      const left = this.#pendingByAddress.get(address)! - 1;
      if (left === 0) this.#pendingByAddress.delete(address);
      else this.#pendingByAddress.set(address, left);
    };
    let state: "hello" | "verifying" | "open" = "hello";
    const serverNonce = newNonce();
    let peer = -1;
    const cancelHandshakeTimeout = this.#clock.schedule(this.#options.handshakeTimeoutMs, () => {
      if (state !== "open") {
        this.#refuse(socket, "client did not finish the handshake", "refusedHandshakes");
      }
    });
    socket.onopen = () => {
      socket.send(encodeFrame({ v: 1, type: "challenge", nonce: serverNonce }));
    };
    socket.onmessage = async (event) => {
      const frame = parseFrame(event.data, this.#options.maxMessageBytes);
      const who = peer < 0 ? "unauthenticated client" : `peer ${peer}`;
      if (isRefusal(frame)) {
        const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
        return this.#refuse(socket, `from ${who}: ${frame.refused}`, counter);
      }
      if (state !== "hello" || frame.type !== "hello") {
        const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
        return this.#refuse(socket, `from ${who}: unexpected ${frame.type} frame`, counter);
      }
      state = "verifying";
      const link = this.#links[frame.from];
      if (frame.to !== this.#me || link === undefined) {
        return this.#refuse(
          socket,
          `client claims to be peer ${frame.from} dialing peer ${frame.to}, but this is peer ` +
            `${this.#me} of ${this.#links.length}`,
          "refusedHandshakes",
        );
      }
      const transcript = { from: frame.from, to: this.#me, serverNonce, dialerNonce: frame.nonce };
      if (!await verifyTranscript(this.#key, "dialer", transcript, frame.proof)) {
        return this.#refuse(
          socket,
          `client claiming to be peer ${frame.from} failed to prove the cluster secret`,
          "refusedHandshakes",
        );
      }
      const proof = await signTranscript(this.#key, "server", transcript);
      if (socket.readyState !== WebSocket.OPEN || this.#closed) return;
      socket.send(encodeFrame({ v: 1, type: "welcome", proof }));
      state = "open";
      peer = frame.from;
      cancelHandshakeTimeout();
      settleHandshake();
      // A peer that restarted dials again before we notice its old connection died.
      const previous = link.accepted;
      link.accepted = socket;
      link.acceptedLastSent = this.#clock.now(); // the welcome
      if (previous !== undefined) closeQuietly(previous);
      // The peer dialed us anew. If our own connection to it is older than a handshake takes,
      // the peer may have restarted on a host that vanished without closing it: that connection
      // would then read nothing forever, while the new process can only write to a connection
      // we dial into it. Dial a fresh one. A connection the peer dialed in reaction to our own
      // redial arrives within a handshake timeout of it, so two peers never redial in a loop.
      if (
        link.abandonDialed !== undefined &&
        this.#clock.now() - link.dialedAt > this.#options.handshakeTimeoutMs
      ) {
        this.#log(`Peer ${peer} connected again: redialing it`);
        link.abandonDialed();
      }
    };
    socket.onclose = () => {
      cancelHandshakeTimeout();
      settleHandshake();
      const link = peer < 0 ? undefined : this.#links[peer];
      if (link !== undefined && link.accepted === socket) {
        link.accepted = undefined;
        this.#failPending(link); // requests queued on it are lost
      }
    };
    socket.onerror = (event) => event.preventDefault();
    return response;
  }
}

function closeQuietly(socket: WebSocket, code?: number): void {
  try {
    if (socket.readyState === WebSocket.CONNECTING || socket.readyState === WebSocket.OPEN) {
      socket.close(code);
    }
  } catch {
    // Already closing.
  }
}
