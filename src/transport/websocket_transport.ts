/**
 * A transport that connects Raft peers running as separate processes (or machines) over
 * WebSockets, with a shared-secret handshake, bounded send queues and reconnection.
 *
 * ## Which side writes
 *
 * Deno's WebSocket client (`new WebSocket()`) leaves Nagle's algorithm on and writes a frame's
 * header and payload separately, so a lone client frame over about 1 KB waits some 40 ms for the
 * receiver's delayed ACK (see `bench/websocket_latency.ts`). This transport frames WebSockets
 * itself (`_websocket_connection.ts`), but keeps the design that avoided that stall: every peer
 * dials every other peer, and each link is a pair of connections: peer A sends its requests and
 * its replies to B only on the connection that B dialed into A's server, where A is the accepting
 * side. A dialing side writes only the small handshake frames; anything else it receives from a
 * dialer is a protocol violation.
 *
 * ## Peers that come and go
 *
 * Links are kept by peer id. `addPeer()` and `removePeer()` follow membership changes; a peer
 * that was never added but proves the secret in its handshake is linked to at the address it
 * advertises there, and dialed back, so that a server that missed the entry adding a peer still
 * hears from it (unless it removed that peer, or has `maxPeers` links).
 *
 * ## Hostile clients
 *
 * A client must prove the secret in its upgrade request, before any WebSocket exists; until then
 * it holds at most 8 KiB of request head, in one of `maxPendingHandshakes` slots that are closed
 * at `handshakeTimeoutMs` and given to newer connections oldest first. The accept loop survives
 * running out of file descriptors. Frame lengths are checked in their headers. Refusals are
 * logged at a bounded rate and counted in {@linkcode TransportStats}.
 *
 * @module
 */

import { type Clock, type RandomSource, realClock } from "../clock.ts";
import type { ClientEnd, RpcHandler } from "../types.ts";
import { ByteReader } from "../net/_byte_reader.ts";
import { GuardedListener, type PendingConnection } from "../net/_guarded_listener.ts";
import { MAX_HEAD_BYTES, parseRequestHead, respondClosing } from "../net/_http1.ts";
import { RateLimitedLog } from "../net/_rate_limited_log.ts";
import { WebSocketConnection } from "./_websocket_connection.ts";
import {
  encodeFrame,
  type Frame,
  isAdvertisedAddress,
  isRefusal,
  MAX_ADVERTISED_ADDRESS_LENGTH,
  parseFrame,
} from "./_websocket_envelope.ts";
import {
  importSecret,
  newNonce,
  parseUpgradeToken,
  signTranscript,
  signUpgrade,
  UpgradeReplayGuard,
  verifyTranscript,
  verifyUpgrade,
  withUpgradeToken,
} from "./_websocket_handshake.ts";
import { checkUpgradeRequest, dialWebSocket, switchProtocols } from "./_websocket_upgrade.ts";

/** Where a transport's log lines go: refused connections and frames, dropped sends. */
export type TransportLog = (line: string) => void;

/** Options for {@linkcode WebSocketTransport.create}. */
export interface WebSocketTransportOptions {
  /** This peer's index into `peers`. */
  me: number;
  /**
   * Every peer's URL, `ws://host:port` or `wss://host:port`, indexed by peer; `peers[me]` is this
   * peer's own address, where the others reach it. All peers of a cluster started together must
   * be given the same list. A peer joining a running cluster may leave out the peers it does not
   * know (holes in the array: `peers[5] = url` on a shorter one); others are added with
   * {@linkcode WebSocketTransport.addPeer}.
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
   * the connection when received, as soon as its header announces its length (its payload is
   * never read). Only the dialing side receives such frames: a dialer may send nothing but its
   * handshake, so the accepting side refuses any frame over 2 KiB.
   */
  maxMessageBytes?: number;
  /**
   * High-water mark of a connection's send queue, in bytes. Past it a send is dropped and the
   * call resolves `undefined`, as if the peer were unreachable. Default 8 MiB: two maximal
   * frames, so one large message never trips it, while a stalled peer costs at most this much
   * memory per connection.
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
   * How long a new connection may take to authenticate, in ms, counted from when it was accepted
   * (or dialed); after it the connection is closed, at the TCP level, whatever the other side
   * does. Default 2000: ample on any network (the whole exchange is three round trips), and
   * short enough that a stalled dial is soon retried.
   */
  handshakeTimeoutMs?: number;
  /**
   * Most server connections that have not yet shown a valid upgrade token, and separately most
   * that have but not yet finished the challenge-response; past either cap, the oldest such
   * connection is closed to make room for the newest. Default 256: a peer's connection is closed
   * only if 256 newer ones arrive before its request is read, which at the 2,500 connections a
   * second one attacking process opened on the development machine leaves it 100 ms, far more
   * than it needs; yet the sockets and memory clients without the secret can hold stay bounded
   * (256 descriptors and at most 8 KiB of request head each).
   */
  maxPendingHandshakes?: number;
  /**
   * The same caps per remote address (IP). Default 16: one host cannot take every slot, nor
   * evict the connections of peers on other hosts.
   */
  maxPendingHandshakesPerAddress?: number;
  /**
   * How far apart the peers' wall clocks may be, in ms: an upgrade token signed further from
   * this peer's clock is refused, and tokens are remembered this long (at most 256 per peer) so
   * that none is used twice. Default 60000: hosts kept in sync by NTP are within milliseconds,
   * and a minute also covers one whose clock stepped.
   */
  maxClockSkewMs?: number;
  /**
   * Most other peers this transport links to through handshakes: a peer with no link that
   * proves the secret (see {@linkcode WebSocketTransport.addPeer}) is taken in only while fewer
   * links exist, and only while fewer such peers than this have dialed within `maxClockSkewMs`
   * (their tokens are remembered that long). Peers given to `create()` or `addPeer()` are never
   * refused by it. Default 1000: the most members a Raft configuration of this library may have,
   * while what a holder of the secret claiming ever new peer ids can make this peer hold stays
   * bounded.
   */
  maxPeers?: number;
  /**
   * Most requests from one peer that the handler may be serving at once; further requests from
   * that peer are dropped unanswered (their calls time out) until some finish. Default 1024: far
   * above what Raft keeps in flight to one peer, low enough that a flood cannot pile up handler
   * calls without bound.
   */
  maxRequestsInProgress?: number;
  /**
   * How long an accepted connection may go without a frame before the server sends a keepalive
   * (and a WebSocket ping) on it, in ms; the dialing side, which only reads, gives up a
   * connection that brought nothing for 3 times this (its peer vanished without closing it: a
   * crash or a partition) and redials, and the accepting side closes one that answered nothing,
   * not even a ping, for 10 times this. Default 1000: a dead peer is noticed within about 3 s,
   * while a busy link (a Raft leader heartbeats every 250 ms by default) never needs one and an
   * idle link costs one tiny frame a second. Give every peer the same value.
   */
  keepaliveMs?: number;
  /**
   * Where log lines go. Default: `console.error`. Pass `() => {}` to silence them. Lines about
   * refused connections, upgrades and frames, which clients can cause at will, are limited to a
   * burst of 20 and then 2 a second; the rest are counted in `stats.suppressedLogLines`.
   */
  log?: TransportLog;
  /** Timers for call timeouts and redials. Default: the real clock. */
  clock?: Clock;
  /** Random numbers for redial jitter and the first request id. Default: `Math.random`. */
  random?: RandomSource;
}

/** Counters of what a transport refused or dropped, for tests and monitoring. */
export interface TransportStats {
  /**
   * Connections closed because their handshake (token or challenge-response) failed or did not
   * finish within `handshakeTimeoutMs`.
   */
  refusedHandshakes: number;
  /** Connections closed because of a malformed, oversized or unexpected frame. */
  refusedFrames: number;
  /** Messages not sent: send queue past its mark, frame too large, or link down. */
  droppedSends: number;
  /** Bytes queued for sending right now, over all connections. */
  queuedBytes: number;
  /** Requests dropped unanswered because `maxRequestsInProgress` were being served. */
  droppedRequests: number;
  /** Server connections open now that have not (yet) authenticated. */
  pendingHandshakes: number;
  /**
   * Requests answered with an HTTP error instead of an upgrade: not a WebSocket upgrade (426),
   * malformed (400, 431), without a valid, fresh token (401), from a removed peer or a new one
   * past `maxPeers` (403), or while shutting down (503).
   */
  refusedUpgrades: number;
  /** Unauthenticated connections closed to make room for newer ones (`maxPendingHandshakes`). */
  evictedConnections: number;
  /** Failed accepts, e.g. out of file descriptors; the server retries, closing its oldest
   * unauthenticated connection to get a descriptor back. */
  acceptErrors: number;
  /** Log lines about refusals left out by the rate limit (see `log`). */
  suppressedLogLines: number;
}

interface PendingCall {
  resolve(reply: unknown | undefined): void;
  cancelTimeout(): void;
}

/** What this peer knows of one other peer. */
interface Link {
  /** Where we dial the peer. */
  url: string;
  /**
   * Whether the link was made for a peer that proved the secret without being added: then a
   * later hello from it may move `url`, since its hello is where `url` came from.
   */
  learned: boolean;
  /** Our authenticated connection to the peer's server: we only read from it. */
  dialed: WebSocketConnection | undefined;
  /** The peer's authenticated connection to our server: we write requests and replies on it. */
  accepted: WebSocketConnection | undefined;
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
  /**
   * Set once the link is removed or replaced: it dials no more, and its connections are closed.
   */
  retired: boolean;
  /** Stops the dial in progress, or closes the dialed connection, without redialing. */
  stopDialing: (() => void) | undefined;
}

/** A link to the peer at `url`, with no connection yet. */
function newLink(url: string, learned = false): Link {
  return {
    url,
    learned,
    dialed: undefined,
    accepted: undefined,
    dialedAt: 0,
    abandonDialed: undefined,
    requestsInProgress: 0,
    dialedLastReceived: 0,
    acceptedLastSent: 0,
    failedDials: 0,
    cancelRedial: undefined,
    pending: new Map(),
    cutOff: false,
    retired: false,
    stopDialing: undefined,
  };
}

/** A server connection whose token was valid, in its challenge-response. */
interface Handshake {
  readonly socket: WebSocketConnection;
  readonly address: string;
  /** Closes it and stops counting it. */
  drop(reason: string): void;
}

/** Close code for a refused handshake or frame (in the range for applications). */
const PROTOCOL_VIOLATION = 4008;

/** How long `close()` waits for sockets to finish closing. */
const CLOSE_WAIT_MS = 2000;

/** Request ids start below this (2^48): far from `Number.MAX_SAFE_INTEGER`, so they never wrap. */
const FIRST_REQUEST_ID_RANGE = 2 ** 48;

/**
 * Largest frame the accepting side takes from a dialer: its hello is about 250 bytes plus its
 * address (at most 1024 characters that JSON does not escape), and it may send nothing else.
 */
const DIALER_FRAME_BYTES = 2048;

/** First buffer for a request head: a peer's upgrade request, token included, is about 600 bytes. */
const INITIAL_HEAD_BUFFER_BYTES = 1024;

/** Upgrade tokens remembered per peer within `maxClockSkewMs`, against replays. */
const REMEMBERED_TOKENS_PER_PEER = 256;

/** An accepted connection silent for this many `keepaliveMs` (not even a pong) is closed. */
const ACCEPTED_SILENCE_KEEPALIVES = 10;

/** Refusal log lines written at once, then per second. */
const REFUSAL_LOG_BURST = 20;
const REFUSAL_LOG_PER_SECOND = 2;

const DEFAULTS = {
  callTimeoutMs: 1000,
  maxMessageBytes: 4 * 1024 * 1024,
  maxBufferedBytes: 8 * 1024 * 1024,
  reconnectMinDelayMs: 50,
  reconnectMaxDelayMs: 1000,
  handshakeTimeoutMs: 2000,
  maxPendingHandshakes: 256,
  maxPendingHandshakesPerAddress: 16,
  maxClockSkewMs: 60_000,
  maxRequestsInProgress: 1024,
  keepaliveMs: 1000,
  maxPeers: 1000,
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
  /** `peers[me]` as given. */
  readonly #ownUrl: string;
  /** Where other peers dial this one: `peers[me]`, serialized, as the hello advertises it. */
  readonly #address: string;
  /** How many peers `create()` was given: the length of `clientEnds()`. */
  readonly #peerCount: number;
  /** Every other peer this one reaches, by id. */
  readonly #links = new Map<number, Link>();
  /** Peers removed and not added since: refused even if they prove the secret. */
  readonly #removed = new Set<number>();
  readonly #key: CryptoKey;
  readonly #options: typeof DEFAULTS;
  readonly #caCerts: string[] | undefined;
  readonly #log: TransportLog;
  readonly #refusalLog: RateLimitedLog;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #replayGuard: UpgradeReplayGuard;
  readonly #sockets = new Set<WebSocketConnection>();
  /** Dials in progress, before their connection exists: aborted by `close()`. */
  readonly #dials = new Set<AbortController>();
  /**
   * Work that network events started (accepting a connection, dialing, a handshake step), for
   * `close()` to wait for: it leaves nothing running behind it.
   */
  readonly #work = new Set<Promise<unknown>>();
  /** Server connections in their challenge-response, oldest first. */
  readonly #handshakes = new Set<Handshake>();
  readonly #stats = {
    refusedHandshakes: 0,
    refusedFrames: 0,
    droppedSends: 0,
    refusedUpgrades: 0,
    droppedRequests: 0,
    evictedConnections: 0,
  };
  #listener: GuardedListener | undefined;
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
    this.#ownUrl = options.peers[options.me]!;
    this.#address = new URL(this.#ownUrl).href;
    this.#peerCount = options.peers.length;
    this.#key = key;
    const settings = { ...DEFAULTS };
    for (const name of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      settings[name] = options[name] ?? DEFAULTS[name];
    }
    this.#options = settings;
    this.#caCerts = options.caCerts;
    const prefix = `[ws peer ${options.me}] `;
    const log = options.log ?? ((line: string) => console.error(line));
    this.#log = (line) => log(prefix + line);
    this.#clock = options.clock ?? realClock;
    this.#refusalLog = new RateLimitedLog(this.#log, {
      burst: REFUSAL_LOG_BURST,
      linesPerSecond: REFUSAL_LOG_PER_SECOND,
      clock: this.#clock,
    });
    this.#random = options.random ?? Math.random;
    this.#replayGuard = new UpgradeReplayGuard(
      settings.maxClockSkewMs,
      REMEMBERED_TOKENS_PER_PEER,
      settings.maxPeers,
    );
    this.#nextRequestId = Math.floor(this.#random() * FIRST_REQUEST_ID_RANGE);
    options.peers.forEach((url, peer) => {
      if (peer !== options.me) this.#links.set(peer, newLink(url));
    });
  }

  /**
   * Starts the server and begins dialing every other peer. Resolves once the server listens;
   * links come up in the background as peers start. Throws a `RangeError` for a bad `me`, peer
   * URL, secret or option.
   */
  static async create(options: WebSocketTransportOptions): Promise<WebSocketTransport> {
    const { me, peers } = options;
    if (!Number.isInteger(me) || me < 0 || me >= peers.length) {
      throw new RangeError(`Peer index must be within 0..${peers.length - 1}, got ${me}`);
    }
    if (peers[me] === undefined) {
      throw new RangeError(`Peers must hold this peer's own URL at index ${me}, got none`);
    }
    const urls = peers.map(checkPeerUrl);
    const advertised = urls[me]!.href;
    if (!isAdvertisedAddress(advertised)) {
      throw new RangeError(
        `Own peer URL must serialize to at most ${MAX_ADVERTISED_ADDRESS_LENGTH} characters of ` +
          `printable ASCII without quotes or backslashes, got "${advertised}"`,
      );
    }
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
    transport.#listener = GuardedListener.listen({
      hostname,
      port,
      tls: options.tls,
      maxPending: transport.#options.maxPendingHandshakes,
      maxPendingPerAddress: transport.#options.maxPendingHandshakesPerAddress,
      pendingTimeoutMs: transport.#options.handshakeTimeoutMs,
      clock: transport.#clock,
      log: (line) => transport.#refusalLog.log(line),
    }, (connection) => transport.#background(transport.#accept(connection)));
    for (const [peer, link] of transport.#links) transport.#dial(peer, link);
    transport.#scheduleKeepalive();
    return transport;
  }

  /** The port the server listens on (useful with `listen: { port: 0 }`). */
  get port(): number {
    return this.#listener!.addr.port;
  }

  /** Counters of refused connections and frames and of dropped sends. */
  get stats(): TransportStats {
    let queuedBytes = 0;
    for (const socket of this.#sockets) queuedBytes += socket.bufferedAmount;
    const listener = this.#listener!.stats;
    return {
      ...this.#stats,
      refusedHandshakes: this.#stats.refusedHandshakes + listener.timedOutConnections,
      evictedConnections: this.#stats.evictedConnections + listener.evictedConnections,
      acceptErrors: listener.acceptErrors,
      queuedBytes,
      pendingHandshakes: listener.pendingConnections + this.#handshakes.size,
      suppressedLogLines: this.#refusalLog.suppressed,
    };
  }

  /** Where incoming requests go. Until it is set, incoming requests get no reply. */
  setHandler(handler: RpcHandler): void {
    this.#handler = handler;
  }

  /**
   * One {@linkcode ClientEnd} per peer of the `peers` given to `create()`, indexed like it, as
   * `make()` expects. Calls to this peer's own entry resolve `undefined`. For peers added since,
   * see {@linkcode WebSocketTransport.clientEnd}.
   */
  clientEnds(): ClientEnd[] {
    return Array.from({ length: this.#peerCount }, (_, peer) => this.clientEnd(peer));
  }

  /**
   * A {@linkcode ClientEnd} for peer `id`, whether this transport reaches it or not: its calls
   * resolve `undefined` while there is no link to `id` (and always for this peer's own id), and
   * go out on the link once there is one. Throws a `RangeError` unless `id` is a non-negative
   * safe integer.
   */
  clientEnd(id: number): ClientEnd {
    checkPeerId(id);
    return { call: (method: string, args: unknown) => this.#call(id, method, args) };
  }

  /**
   * Starts reaching peer `id` at `address` (`ws://` or `wss://`): creates its link, dials it, and
   * returns a {@linkcode ClientEnd} for it. Calls succeed once both connections of the link are
   * up, which takes the peer dialing back too. Adding a peer already reached at the same URL
   * changes nothing; at another URL, its connections are closed (calls in flight resolve
   * `undefined`) and it is dialed at the new one. A removed peer is taken back. Throws a
   * `RangeError` for a bad URL, an id that is not a non-negative safe integer, or this peer's own
   * id.
   *
   * A peer need not be added for it to reach this one: a peer with no link that dials in and
   * proves the cluster secret gets a link at the address its handshake advertises (its own
   * `peers[me]`), and is dialed back, unless it was removed or `maxPeers` links exist. That is
   * how a server that missed the configuration change adding a peer still hears from it.
   *
   * @example A server that joined the cluster
   * ```ts ignore
   * const end = transport.addPeer(3, "ws://10.0.0.4:7000");
   * const reply = await end.call("RequestVote", args); // undefined until the link is up
   * ```
   */
  addPeer(id: number, address: string): ClientEnd {
    this.#checkOtherPeer(id, "add");
    checkPeerUrl(address);
    this.#removed.delete(id);
    const link = this.#links.get(id);
    if (link !== undefined && sameUrl(link.url, address)) {
      link.learned = false;
    } else {
      const fresh = newLink(address);
      if (link !== undefined) {
        fresh.cutOff = link.cutOff;
        this.#retire(link);
      }
      this.#links.set(id, fresh);
      this.#dial(id, fresh);
    }
    return this.clientEnd(id);
  }

  /**
   * Stops reaching peer `id`: stops redialing it, resolves its calls in flight to `undefined`,
   * closes both connections of its link and forgets it. Its ends stay usable, and resolve
   * `undefined`. From then on, its handshakes are refused, secret or not, until it is added
   * again: a removed server that does not know it was removed keeps dialing. Removing a peer
   * this transport does not reach closes nothing, but refuses it too. Throws a `RangeError` for
   * an id that is not a non-negative safe integer, or this peer's own id.
   */
  removePeer(id: number): void {
    this.#checkOtherPeer(id, "remove");
    this.#removed.add(id);
    const link = this.#links.get(id);
    if (link === undefined) return;
    this.#links.delete(id);
    this.#retire(link);
  }

  /**
   * The URL this transport knows for peer `id`: as given to `create()` or `addPeer()`, or as the
   * peer advertised it in its handshake (serialized: `ws://10.0.0.4:7000/`) if it was not added;
   * `peers[me]` for this peer; `undefined` for a peer it does not reach.
   */
  addressOf(id: number): string | undefined {
    return id === this.#me ? this.#ownUrl : this.#links.get(id)?.url;
  }

  /** The peers with both connections of their link authenticated and open, by ascending id. */
  connectedPeers(): number[] {
    const peers: number[] = [];
    for (const [peer, link] of this.#links) {
      if (link.dialed !== undefined && link.accepted !== undefined) peers.push(peer);
    }
    return peers.sort((a, b) => a - b);
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
   * Fault injection: drops both connections of the link to `peer` (every peer when omitted), as
   * a network blip would. Calls in flight resolve `undefined`; this side redials at once, and
   * the peer, seeing its own connection closed, redials too.
   */
  disconnect(peer?: number): void {
    for (const link of this.#selectLinks(peer)) {
      link.accepted?.abort();
      link.abandonDialed?.();
    }
  }

  /** `await using transport = await WebSocketTransport.create(...)` closes it at scope end. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  /**
   * Shuts down the server, closes every connection, stops redialing and resolves every call in
   * flight to `undefined`. Resolves once all sockets have closed.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    // First, so that no connection is accepted meanwhile, and the unauthenticated ones close.
    const listenerClosed = this.#listener?.close();
    this.#cancelKeepalive?.();
    for (const link of this.#links.values()) {
      link.cancelRedial?.();
      link.cancelRedial = undefined;
      this.#failPending(link);
    }
    for (const dial of this.#dials) dial.abort();
    for (const handshake of [...this.#handshakes]) handshake.drop("shutting down");
    for (const socket of this.#sockets) socket.close();
    // Each socket closes within its closing grace, even if the other side never answers; work
    // under way (a proof being checked, a dial being aborted) ends soon after.
    const finished = (async () => {
      await Promise.all([...this.#sockets].map((socket) => socket.closed));
      while (this.#work.size > 0) await Promise.allSettled([...this.#work]);
    })();
    let cancelWait = () => {};
    await Promise.race([
      finished,
      new Promise<void>((resolve) => cancelWait = this.#clock.schedule(CLOSE_WAIT_MS, resolve)),
    ]);
    cancelWait();
    for (const socket of this.#sockets) socket.abort();
    await listenerClosed;
  }

  /** Runs `work`, which `close()` then waits for. */
  #background(work: Promise<unknown>): void {
    this.#work.add(work);
    // Rejections stay unhandled, as they would be without this.
    void work.finally(() => this.#work.delete(work));
  }

  #selectLinks(peer: number | undefined): Link[] {
    if (peer === undefined) return [...this.#links.values()];
    const link = this.#links.get(peer);
    if (link === undefined) throw new RangeError(`No link to peer ${peer}`);
    return [link];
  }

  /**
   * Why a peer with no link, `id`, may not have one now (it was removed, or `maxPeers` links
   * exist), or `undefined` if it may.
   */
  #refusalOfNewPeer(id: number): string | undefined {
    if (this.#removed.has(id)) return `Peer ${id} was removed; it is refused until added again`;
    if (this.#links.size >= this.#options.maxPeers) {
      return `Peer ${id} is not linked yet, and this peer already has ${this.#links.size} ` +
        `links (maxPeers ${this.#options.maxPeers})`;
    }
    return undefined;
  }

  /** Throws a `RangeError` unless `id` could be another peer's id. */
  #checkOtherPeer(id: number, verb: string): void {
    checkPeerId(id);
    if (id === this.#me) throw new RangeError(`Cannot ${verb} peer ${id}: it is this peer`);
  }

  /**
   * Gives up a link that was removed or replaced: no more dials, calls in flight resolve
   * `undefined`, both connections close.
   */
  #retire(link: Link): void {
    link.retired = true;
    link.cancelRedial?.();
    link.cancelRedial = undefined;
    link.stopDialing?.();
    const accepted = link.accepted;
    link.accepted = undefined;
    accepted?.close();
    this.#failPending(link);
  }

  #call(peer: number, method: string, args: unknown): Promise<unknown | undefined> {
    const link = this.#links.get(peer);
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
  #send(socket: WebSocketConnection, frame: Frame, peer: number): boolean {
    if (!socket.open) {
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
    // Sends never push back, so a stalled peer would grow this queue without bound.
    if (socket.bufferedAmount + bytes > this.#options.maxBufferedBytes) {
      this.#stats.droppedSends++;
      return false;
    }
    socket.send(text);
    const link = this.#links.get(peer);
    if (link !== undefined && link.accepted === socket) link.acceptedLastSent = this.#clock.now();
    return true;
  }

  /**
   * One timer for the whole transport, every half `keepaliveMs`: sends a keepalive (and a ping)
   * on each accepted connection that has been quiet for `keepaliveMs`, closes one that has
   * answered nothing for 10 times that, and gives up each dialed one that brought nothing for
   * 3 times that.
   */
  #scheduleKeepalive(): void {
    const { keepaliveMs } = this.#options;
    this.#cancelKeepalive = this.#clock.schedule(keepaliveMs / 2, () => {
      if (this.#closed) return;
      const now = this.#clock.now();
      for (const [peer, link] of this.#links) {
        const accepted = link.accepted;
        if (accepted !== undefined) {
          if (now - accepted.lastReceivedAt > ACCEPTED_SILENCE_KEEPALIVES * keepaliveMs) {
            this.#log(`Peer ${peer} answered nothing for ${now - accepted.lastReceivedAt} ms`);
            accepted.abort();
          } else if (now - link.acceptedLastSent >= keepaliveMs) {
            this.#send(accepted, { v: 1, type: "keepalive" }, peer);
            accepted.ping();
          }
        }
        if (link.abandonDialed !== undefined && now - link.dialedLastReceived > 3 * keepaliveMs) {
          this.#log(`Peer ${peer} sent nothing for ${now - link.dialedLastReceived} ms: redialing`);
          link.abandonDialed();
        }
      }
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

  /** Registers `socket` so that `close()` can close it and wait. */
  #track(socket: WebSocketConnection): void {
    this.#sockets.add(socket);
    socket.closed.then(() => this.#sockets.delete(socket));
  }

  /** Closes `socket` for a protocol violation, after logging why (at a bounded rate). */
  #refuse(
    socket: WebSocketConnection,
    reason: string,
    counter: "refusedHandshakes" | "refusedFrames",
  ): void {
    this.#stats[counter]++;
    this.#refusalLog.log(`Closing connection: ${reason}`);
    socket.close(PROTOCOL_VIOLATION);
  }

  // ---- The dialing side: authenticate, then read the peer's requests and replies. ----

  #dial(peer: number, link: Link): void {
    if (this.#closed || link.retired) return;
    link.cancelRedial = undefined;
    const dial = new AbortController();
    this.#dials.add(dial);
    let socket: WebSocketConnection | undefined;
    let state: "connecting" | "challenge" | "signing" | "welcome" | "verifying" | "open" =
      "connecting";
    let dialerNonce = "";
    let abandoned = false;
    let serverNonce = "";
    /**
     * Refuses this connection and gives it up at once: its close event may come late (a peer that
     * went silent never answers the close frame), so the bookkeeping and the redial, with
     * backoff, happen here.
     */
    const drop = (reason: string, counter: "refusedHandshakes" | "refusedFrames"): void => {
      if (abandoned) return;
      abandoned = true;
      cancelHandshakeTimeout();
      dial.abort();
      this.#dials.delete(dial);
      if (socket === undefined) {
        this.#stats[counter]++;
        this.#refusalLog.log(`Closing connection: ${reason}`);
      } else {
        this.#refuse(socket, reason, counter);
        this.#forgetDialed(link, socket);
      }
      link.failedDials++;
      this.#scheduleRedial(peer, link);
    };
    const cancelHandshakeTimeout = this.#clock.schedule(this.#options.handshakeTimeoutMs, () => {
      if (state !== "open") drop(`peer ${peer} did not finish the handshake`, "refusedHandshakes");
    });
    link.stopDialing = () => {
      if (abandoned) return;
      abandoned = true;
      cancelHandshakeTimeout();
      dial.abort();
      this.#dials.delete(dial);
      if (socket === undefined) return;
      this.#forgetDialed(link, socket);
      socket.close();
    };

    const receive = async (data: string | Uint8Array): Promise<void> => {
      if (abandoned || socket === undefined) return;
      const frame = parseFrame(data, this.#options.maxMessageBytes);
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
        const transcript = {
          from: this.#me,
          to: peer,
          serverNonce,
          dialerNonce,
          dialerAddress: this.#address,
        };
        const proof = await signTranscript(this.#key, "dialer", transcript);
        if (!socket.open) return;
        socket.send(encodeFrame({
          v: 1,
          type: "hello",
          from: this.#me,
          to: peer,
          nonce: dialerNonce,
          address: this.#address,
          proof,
        }));
        state = "welcome";
        return;
      }
      if (state === "welcome" && frame.type === "welcome") {
        state = "verifying";
        const transcript = {
          from: this.#me,
          to: peer,
          serverNonce,
          dialerNonce,
          dialerAddress: this.#address,
        };
        if (!await verifyTranscript(this.#key, "server", transcript, frame.proof)) {
          return drop(
            `peer ${peer} at ${link.url} failed to prove the cluster secret`,
            "refusedHandshakes",
          );
        }
        if (!socket.open || abandoned) return;
        state = "open";
        cancelHandshakeTimeout();
        link.dialed = socket;
        link.dialedAt = this.#clock.now();
        link.dialedLastReceived = link.dialedAt;
        const opened = socket;
        link.abandonDialed = () => {
          abandoned = true;
          this.#forgetDialed(link, opened);
          opened.abort();
          link.cancelRedial?.();
          this.#dial(peer, link);
        };
        link.failedDials = 0;
        return;
      }
      const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
      drop(`from peer ${peer}: unexpected ${frame.type} frame`, counter);
    };

    this.#background((async () => {
      let connected: WebSocketConnection;
      try {
        const token = await signUpgrade(this.#key, this.#me, peer);
        connected = await dialWebSocket(withUpgradeToken(link.url, token), {
          caCerts: this.#caCerts,
          maxMessageBytes: this.#options.maxMessageBytes,
          clock: this.#clock,
          signal: dial.signal,
        });
      } catch (error) {
        this.#dials.delete(dial);
        if (abandoned) return;
        abandoned = true;
        cancelHandshakeTimeout();
        // A refused upgrade means a wrong secret or clock: worth a line. A refused connection
        // is a peer not up yet, the common case.
        if (error instanceof Error && error.message.startsWith("Upgrade refused")) {
          this.#refusalLog.log(`Cannot dial peer ${peer} at ${link.url}: ${error.message}`);
        }
        link.failedDials++;
        this.#scheduleRedial(peer, link);
        return;
      }
      this.#dials.delete(dial);
      if (abandoned || this.#closed) {
        cancelHandshakeTimeout();
        connected.abort();
        return;
      }
      socket = connected;
      state = "challenge";
      this.#track(socket);
      // The server may send requests right after its welcome, while we still verify its proof:
      // handle each frame only after the previous one, so none finds the handshake half done.
      let received = Promise.resolve();
      socket.onmessage = (data) => {
        received = received.then(() => receive(data)).catch((error) => {
          drop(`failed on a frame from peer ${peer}: ${error}`, "refusedFrames");
        });
        this.#background(received);
      };
      socket.onrefused = (reason) => {
        const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
        drop(`from peer ${peer}: ${reason}`, counter);
      };
      socket.onclose = () => {
        cancelHandshakeTimeout();
        if (abandoned) return; // drop() or abandonDialed did the bookkeeping and redialed
        abandoned = true;
        if (link.dialed === connected) {
          this.#forgetDialed(link, connected);
        } else {
          link.failedDials++;
        }
        this.#scheduleRedial(peer, link);
      };
    })());
  }

  #forgetDialed(link: Link, socket: WebSocketConnection): void {
    if (link.dialed !== socket) return;
    link.dialed = undefined;
    link.abandonDialed = undefined;
    this.#failPending(link); // their replies can no longer arrive
  }

  #scheduleRedial(peer: number, link: Link): void {
    if (this.#closed || link.retired || link.cancelRedial !== undefined) return;
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
    dialed: WebSocketConnection,
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

  // ---- The accepting side: check the token, challenge the dialer, then write to it. ----

  /** Refuses an upgrade request with an HTTP error, counted and logged at a bounded rate. */
  #refuseUpgrade(
    connection: PendingConnection,
    status: number,
    reason: string,
    text: string,
  ): Promise<void> {
    this.#stats.refusedUpgrades++;
    this.#refusalLog.log(`Refused an upgrade from ${connection.address} (${status}): ${text}`);
    // Still pending meanwhile: if its slot is needed, the answer is not worth keeping it for.
    return respondClosing(connection.conn, status, reason, `${text}\n`).then(() =>
      connection.close()
    );
  }

  async #accept(connection: PendingConnection): Promise<void> {
    const acceptedAt = this.#clock.now();
    const { conn, address } = connection;
    // Room for a peer's request head, growing to at most MAX_HEAD_BYTES: all an unauthenticated
    // client can make us hold.
    const reader = new ByteReader(conn, INITIAL_HEAD_BUFFER_BYTES);
    let bytes: Uint8Array | "too large" | null;
    try {
      bytes = await reader.readHead(MAX_HEAD_BYTES);
    } catch {
      bytes = null; // closed under the read: evicted, timed out, or shutting down
    }
    if (bytes === null) return connection.close();
    if (bytes === "too large") {
      return this.#refuseUpgrade(
        connection,
        431,
        "Request Header Fields Too Large",
        `Request head over ${MAX_HEAD_BYTES} bytes.`,
      );
    }
    const head = parseRequestHead(bytes);
    if (typeof head === "string") {
      return this.#refuseUpgrade(connection, 400, "Bad Request", `${head}.`);
    }
    const upgrade = checkUpgradeRequest(head);
    if ("status" in upgrade) {
      return this.#refuseUpgrade(connection, upgrade.status, upgrade.reason, upgrade.text);
    }
    if (this.#closed) {
      return this.#refuseUpgrade(connection, 503, "Service Unavailable", "Shutting down.");
    }
    const token = parseUpgradeToken(head.target);
    if (typeof token === "string") {
      return this.#refuseUpgrade(connection, 401, "Unauthorized", `${token}.`);
    }
    if (token.to !== this.#me || token.from === this.#me) {
      return this.#refuseUpgrade(
        connection,
        401,
        "Unauthorized",
        `Client claims to be peer ${token.from} dialing peer ${token.to}, but this is peer ` +
          `${this.#me}.`,
      );
    }
    if (!await verifyUpgrade(this.#key, token)) {
      return this.#refuseUpgrade(
        connection,
        401,
        "Unauthorized",
        `Client claiming to be peer ${token.from} failed to prove the cluster secret.`,
      );
    }
    // Only now, with the secret shown: whom this peer refuses is nobody else's business.
    const newPeer = !this.#links.has(token.from);
    const refusal = newPeer ? this.#refusalOfNewPeer(token.from) : undefined;
    if (refusal !== undefined) {
      return this.#refuseUpgrade(connection, 403, "Forbidden", `${refusal}.`);
    }
    const stale = this.#replayGuard.admit(token, Date.now(), newPeer);
    if (stale !== null) return this.#refuseUpgrade(connection, 401, "Unauthorized", `${stale}.`);
    // Shutting down, evicted or timed out while the proof was checked.
    if (this.#closed) return connection.close();
    if (!connection.admit()) return;
    const handshake = this.#admitHandshake(conn, reader, address, acceptedAt, token.from);
    try {
      await switchProtocols(conn, upgrade.key);
    } catch {
      return handshake.drop("the upgrade could not be answered");
    }
    handshake.socket.send(encodeFrame({ v: 1, type: "challenge", nonce: handshake.nonce }));
  }

  /**
   * Takes a connection whose token was valid into the handshake slots (making room by closing
   * the oldest, if full) and runs its challenge-response. The connection counts until it
   * authenticates, fails, or reaches its deadline, `handshakeTimeoutMs` after it was accepted.
   */
  #admitHandshake(
    conn: Deno.Conn,
    reader: ByteReader,
    address: string,
    acceptedAt: number,
    claimed: number,
  ): Handshake & { nonce: string } {
    const { maxPendingHandshakes, maxPendingHandshakesPerAddress, handshakeTimeoutMs } =
      this.#options;
    const fromAddress = [...this.#handshakes].filter((other) => other.address === address);
    if (fromAddress.length >= maxPendingHandshakesPerAddress) {
      this.#stats.evictedConnections++;
      fromAddress[0]!.drop(`making room for a newer handshake from ${address}`);
    } else if (this.#handshakes.size >= maxPendingHandshakes) {
      this.#stats.evictedConnections++;
      this.#handshakes.values().next().value!.drop("making room for a newer handshake");
    }
    const socket = new WebSocketConnection(conn, reader, {
      role: "server",
      maxMessageBytes: DIALER_FRAME_BYTES,
      clock: this.#clock,
    });
    this.#track(socket);
    const serverNonce = newNonce();
    let state: "hello" | "verifying" | "open" = "hello";
    let peer = -1;
    /** The link this connection became the accepted connection of. */
    let acceptedFor: Link | undefined;
    const settle = () => {
      cancelHandshakeTimeout();
      this.#handshakes.delete(handshake);
    };
    const handshake = {
      socket,
      address,
      nonce: serverNonce,
      drop: (reason: string) => {
        if (!this.#handshakes.has(handshake)) return;
        settle();
        this.#refuse(socket, `from a client at ${address}: ${reason}`, "refusedHandshakes");
      },
    };
    this.#handshakes.add(handshake);
    const cancelHandshakeTimeout = this.#clock.schedule(
      acceptedAt + handshakeTimeoutMs - this.#clock.now(),
      () => handshake.drop("it did not finish the handshake"),
    );
    socket.onrefused = (reason) => {
      const who = peer < 0 ? "unauthenticated client" : `peer ${peer}`;
      const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
      settle();
      this.#refuse(socket, `from ${who}: ${reason}`, counter);
    };
    const receive = async (data: string | Uint8Array): Promise<void> => {
      const frame = parseFrame(data, DIALER_FRAME_BYTES);
      const who = peer < 0 ? "unauthenticated client" : `peer ${peer}`;
      const counter = state === "open" ? "refusedFrames" : "refusedHandshakes";
      if (isRefusal(frame)) {
        settle();
        return this.#refuse(socket, `from ${who}: ${frame.refused}`, counter);
      }
      if (state !== "hello" || frame.type !== "hello") {
        settle();
        return this.#refuse(socket, `from ${who}: unexpected ${frame.type} frame`, counter);
      }
      state = "verifying";
      if (frame.to !== this.#me || frame.from !== claimed) {
        settle();
        return this.#refuse(
          socket,
          `client claims to be peer ${frame.from} dialing peer ${frame.to}, but its token ` +
            `says peer ${claimed} and this is peer ${this.#me}`,
          "refusedHandshakes",
        );
      }
      const transcript = {
        from: frame.from,
        to: this.#me,
        serverNonce,
        dialerNonce: frame.nonce,
        dialerAddress: frame.address,
      };
      if (!await verifyTranscript(this.#key, "dialer", transcript, frame.proof)) {
        settle();
        return this.#refuse(
          socket,
          `client claiming to be peer ${frame.from} failed to prove the cluster secret`,
          "refusedHandshakes",
        );
      }
      const proof = await signTranscript(this.#key, "server", transcript);
      if (!socket.open || this.#closed || !this.#handshakes.has(handshake)) return;
      // Looked up only now: the peer may have been added or removed while the proofs were
      // computed.
      let link = this.#links.get(frame.from);
      const learned = link === undefined;
      if (link === undefined) {
        // A peer that has proved the secret but was never added, e.g. added to the cluster by
        // an entry this server has not received: link to it where it says it listens.
        const refusal = this.#refusalOfNewPeer(frame.from) ?? peerUrlProblem(frame.address);
        if (refusal !== undefined) {
          settle();
          return this.#refuse(socket, `peer ${frame.from}: ${refusal}`, "refusedHandshakes");
        }
        link = newLink(frame.address, true);
        this.#links.set(frame.from, link);
        this.#log(`Peer ${frame.from} proved the cluster secret: linking to it at ${link.url}`);
      } else if (
        link.learned && peerUrlProblem(frame.address) === undefined &&
        !sameUrl(link.url, frame.address)
      ) {
        this.#refusalLog.log(`Peer ${frame.from} moved from ${link.url} to ${frame.address}`);
        link.url = frame.address; // its redials go there
      }
      socket.send(encodeFrame({ v: 1, type: "welcome", proof }));
      state = "open";
      peer = frame.from;
      acceptedFor = link;
      settle();
      // A peer that restarted dials again before we notice its old connection died.
      const previous = link.accepted;
      link.accepted = socket;
      link.acceptedLastSent = this.#clock.now(); // the welcome
      if (previous !== undefined) previous.close();
      if (learned) return this.#dial(peer, link);
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
    socket.onmessage = (data) => this.#background(receive(data));
    socket.onclose = () => {
      settle();
      if (acceptedFor !== undefined && acceptedFor.accepted === socket) {
        acceptedFor.accepted = undefined;
        this.#failPending(acceptedFor); // requests queued on it are lost
      }
    };
    return handshake;
  }
}

/**
 * `text` as a URL if it is a peer URL: `ws://` or `wss://`, without a fragment. Throws a
 * `RangeError` otherwise.
 */
function checkPeerUrl(text: string): URL {
  const problem = peerUrlProblem(text);
  if (problem !== undefined) throw new RangeError(problem);
  return new URL(text);
}

/** Why `text` is not a peer URL, or `undefined` if it is one. */
function peerUrlProblem(text: string): string | undefined {
  const url = URL.parse(text);
  if (url === null || (url.protocol !== "ws:" && url.protocol !== "wss:") || url.hash !== "") {
    return `Peer URL must be ws:// or wss:// without a fragment, got "${text}"`;
  }
  return undefined;
}

/** Throws a `RangeError` unless `id` is a non-negative safe integer. */
function checkPeerId(id: number): void {
  if (!Number.isSafeInteger(id) || id < 0) {
    throw new RangeError(`Peer id must be a non-negative safe integer, got ${id}`);
  }
}

/** Whether two peer URLs are the same once serialized (`ws://h:1` and `ws://h:1/` are). */
function sameUrl(a: string, b: string): boolean {
  return new URL(a).href === new URL(b).href;
}
