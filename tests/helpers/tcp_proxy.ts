/**
 * A TCP proxy on 127.0.0.1 that a test can cut and heal, to partition peers that run as separate
 * processes: put one proxy in front of each link (or each peer's listening port), point the peers
 * at the proxies, and have the nemesis call {@linkcode TcpProxy.cut} and
 * {@linkcode TcpProxy.heal}.
 *
 * Two kinds of cut, because a partition looks different to a peer depending on what failed:
 *
 * - `"reset"`: every open connection is closed at once, and new ones are accepted and closed
 *   straight away. The peers learn at once, as when a host is up but its port is firewalled
 *   with REJECT, or the process on it died. (Deno cannot choose to send a TCP RST: the peers see
 *   the stream end, as after a FIN.)
 * - `"blackhole"`: every open connection stays open on both ends and carries nothing more, in
 *   either direction, and an end that closes is not told to the other; new connections are
 *   accepted and held, never forwarded (a client's connect succeeds; its handshake is never
 *   answered). The peers learn nothing until their own timeouts fire, as when packets are
 *   dropped (a cable pulled, DROP rules). The proxy drops what its pending read on each end
 *   returns, at most 64 KiB, and then reads nothing, so a sender's buffers fill and its writes
 *   stall, as they would with no acknowledgements coming back. When the cut heals, the held
 *   connections are closed, as a peer whose connection state expired during the partition would
 *   reset them on the next segment; connections made after the heal are forwarded.
 *
 * Only `Deno.listen` and `Deno.connect` are used; {@linkcode TcpProxy.close} closes every socket
 * and waits for every pending operation, so tests pass Deno's op and resource sanitizers.
 *
 * @module
 */

/** How {@linkcode TcpProxy.cut} treats connections: see the module documentation. */
export type CutMode = "reset" | "blackhole";

/** Counters since the proxy started; see {@linkcode TcpProxy.stats}. */
export interface TcpProxyStats {
  /** Connections accepted from clients, in all. */
  accepted: number;
  /** Connections forwarded: the target accepted the proxy's dial. */
  forwarded: number;
  /** Connections accepted during a `"reset"` cut and closed at once. */
  reset: number;
  /** Connections accepted during a `"blackhole"` cut, held and never forwarded. */
  blackholed: number;
  /** Connections closed at once because the target refused the proxy's dial. */
  targetUnreachable: number;
  /** Connections open now, forwarded or held. */
  open: number;
  /** Bytes written to the target, over all connections. */
  bytesToTarget: number;
  /** Bytes written back to clients, over all connections. */
  bytesFromTarget: number;
}

interface Link {
  client: Deno.TcpConn;
  target: Deno.TcpConn | null;
  state: "dialing" | "forwarding" | "blackholed" | "closed";
  /** How many directions have reached end of stream; at two the link closes. */
  ended: number;
}

const BUFFER_BYTES = 64 * 1024;

/**
 * Forwards every connection made to {@linkcode TcpProxy.port} on 127.0.0.1 to `targetPort` on
 * 127.0.0.1, until cut.
 *
 * @example
 * ```ts ignore
 * const proxy = new TcpProxy(peerPort);
 * // Give the other peers ws://127.0.0.1:${proxy.port} instead of the peer's own port, then:
 * proxy.cut("blackhole"); // the peer is partitioned away
 * proxy.heal();
 * await proxy.close();
 * ```
 */
export class TcpProxy {
  /** The proxy listens on, and forwards to, this address. */
  readonly hostname = "127.0.0.1";
  readonly #targetPort: number;
  readonly #listener: Deno.TcpListener;
  readonly #accepting: Promise<void>;
  readonly #links = new Set<Link>();
  readonly #tasks = new Set<Promise<void>>();
  readonly #stats = {
    accepted: 0,
    forwarded: 0,
    reset: 0,
    blackholed: 0,
    targetUnreachable: 0,
    bytesToTarget: 0,
    bytesFromTarget: 0,
  };
  #mode: "forwarding" | CutMode = "forwarding";
  #closing: Promise<void> | null = null;

  /**
   * Starts listening on a free port of 127.0.0.1.
   *
   * @throws {RangeError} If `targetPort` is not a port number.
   */
  constructor(targetPort: number) {
    if (!Number.isInteger(targetPort) || targetPort < 1 || targetPort > 65535) {
      throw new RangeError(`The target port must be an integer from 1 to 65535, got ${targetPort}`);
    }
    this.#targetPort = targetPort;
    this.#listener = Deno.listen({ hostname: this.hostname, port: 0 });
    this.#accepting = this.#accept();
  }

  /** The port the proxy listens on. */
  get port(): number {
    return this.#listener.addr.port;
  }

  /** Whether the proxy forwards, is cut (and how), or is closed. */
  get state(): "forwarding" | CutMode | "closed" {
    return this.#closing === null ? this.#mode : "closed";
  }

  /** A copy of the counters. */
  get stats(): TcpProxyStats {
    return { ...this.#stats, open: this.#links.size };
  }

  /**
   * Cuts the proxy: `"reset"` closes every connection and closes new ones at once;
   * `"blackhole"` silences every connection and holds new ones without forwarding them. Cutting
   * a cut proxy switches the mode: a `"reset"` then also closes the held connections. Does
   * nothing once the proxy is closed.
   *
   * @throws {TypeError} If `mode` is neither `"reset"` nor `"blackhole"`.
   */
  cut(mode: CutMode = "reset"): void {
    if (mode !== "reset" && mode !== "blackhole") {
      throw new TypeError(`The cut mode must be "reset" or "blackhole", got ${String(mode)}`);
    }
    if (this.#closing !== null) return;
    this.#mode = mode;
    for (const link of this.#links) {
      if (mode === "reset") this.#drop(link);
      else if (link.state === "dialing" || link.state === "forwarding") link.state = "blackholed";
    }
  }

  /**
   * Ends a cut: connections made from now on are forwarded. Connections held by a `"blackhole"`
   * cut are closed. Does nothing if the proxy is not cut.
   */
  heal(): void {
    if (this.#closing !== null || this.#mode === "forwarding") return;
    this.#mode = "forwarding";
    for (const link of this.#links) if (link.state === "blackholed") this.#drop(link);
  }

  /** Stops listening, closes every connection, and resolves once nothing is left running. */
  close(): Promise<void> {
    this.#closing ??= (async () => {
      this.#listener.close();
      await this.#accepting;
      for (const link of this.#links) this.#drop(link);
      while (this.#tasks.size > 0) await Promise.all(this.#tasks);
    })();
    return this.#closing;
  }

  /** {@linkcode TcpProxy.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #accept(): Promise<void> {
    try {
      for await (const client of this.#listener) this.#admit(client);
    } catch {
      // The listener was closed.
    }
  }

  #admit(client: Deno.TcpConn): void {
    this.#stats.accepted++;
    if (this.#closing !== null || this.#mode === "reset") {
      if (this.#closing === null) this.#stats.reset++;
      closeQuietly(client);
      return;
    }
    const link: Link = { client, target: null, state: "dialing", ended: 0 };
    this.#links.add(link);
    if (this.#mode === "blackhole") {
      link.state = "blackholed";
      this.#stats.blackholed++;
      return;
    }
    this.#track(this.#dial(link));
  }

  async #dial(link: Link): Promise<void> {
    let target: Deno.TcpConn;
    try {
      target = await Deno.connect({ hostname: this.hostname, port: this.#targetPort });
    } catch {
      if (link.state === "dialing") this.#stats.targetUnreachable++;
      this.#drop(link);
      return;
    }
    link.target = target;
    // Cut or closed while dialing: a blackholed link keeps its client end open, silent.
    if (link.state !== "dialing") {
      closeQuietly(target);
      link.target = null;
      return;
    }
    link.state = "forwarding";
    this.#stats.forwarded++;
    this.#track(this.#pump(link, link.client, target, "bytesToTarget"));
    this.#track(this.#pump(link, target, link.client, "bytesFromTarget"));
  }

  /** Copies `from` to `to` while the link forwards; passes on end of stream as a half-close. */
  async #pump(
    link: Link,
    from: Deno.TcpConn,
    to: Deno.TcpConn,
    counter: "bytesToTarget" | "bytesFromTarget",
  ): Promise<void> {
    const buffer = new Uint8Array(BUFFER_BYTES);
    while (true) {
      let count: number | null;
      try {
        count = await from.read(buffer);
      } catch {
        // Reset by the peer, or closed by this proxy. A blackholed link tells the other end
        // nothing.
        if (link.state === "forwarding") this.#drop(link);
        return;
      }
      // Cut while reading: what was read is dropped, and nothing more is read.
      if (link.state !== "forwarding") return;
      if (count === null) {
        try {
          await to.closeWrite();
        } catch {
          this.#drop(link);
          return;
        }
        if (++link.ended === 2) this.#drop(link);
        return;
      }
      let written = 0;
      try {
        while (written < count) {
          const n = await to.write(buffer.subarray(written, count));
          written += n;
          this.#stats[counter] += n;
        }
      } catch {
        this.#drop(link);
        return;
      }
    }
  }

  #drop(link: Link): void {
    if (link.state === "closed") return;
    link.state = "closed";
    this.#links.delete(link);
    closeQuietly(link.client);
    if (link.target !== null) closeQuietly(link.target);
  }

  #track(task: Promise<void>): void {
    this.#tasks.add(task);
    task.finally(() => this.#tasks.delete(task));
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
