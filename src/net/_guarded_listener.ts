/**
 * A TCP (or TLS) listener whose accept loop survives running out of file descriptors, and which
 * bounds the connections that have not yet proven anything: at most so many at once, and from one
 * address, each closed if it is still unproven after a deadline. When a cap is reached, the
 * oldest such connection is closed to make room, so a flood of silent sockets slows newcomers
 * down by no more than its own rate of opening them, and cannot lock them out.
 *
 * `Deno.serve` hides its accept loop: a few hundred silent sockets under a low `ulimit -n` made it
 * fail with "Too many open files", and it never accepted again. `Deno.listen`'s `accept()` throws
 * the same error, but can be called again.
 *
 * @module
 */

import type { Clock } from "../clock.ts";
import { closeQuietly } from "./_close_quietly.ts";

/** Options for {@linkcode GuardedListener.listen}. */
export interface GuardedListenerOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /** PEM certificate chain and key: the listener speaks TLS. */
  tls?: { cert: string; key: string } | undefined;
  /** Most connections pending at once; past it, the oldest is closed to make room. */
  maxPending: number;
  /** Most pending connections from one address; past it, that address's oldest is closed. */
  maxPendingPerAddress: number;
  /**
   * A connection still pending this long after it was accepted is closed, in ms (checked every
   * quarter of it, so within 1.25 times it).
   */
  pendingTimeoutMs: number;
  /** Timers for deadlines and accept retries. */
  clock: Clock;
  /** Where to report closed connections and accept errors (the caller rate-limits it). */
  log: (line: string) => void;
}

/** A connection accepted and not yet admitted by its handler. */
export interface PendingConnection {
  /** The connection. */
  readonly conn: Deno.Conn;
  /** The remote IP address. */
  readonly address: string;
  /**
   * Ends the pending period: the connection no longer counts against the caps and no deadline
   * applies, and (over TCP) Nagle's algorithm is turned off for it. Returns `false` if the
   * listener already closed it (evicted or timed out).
   */
  admit(): boolean;
  /** Closes the connection, pending or not. */
  close(): void;
}

/** What a {@linkcode GuardedListener} has done so far. */
export interface GuardedListenerStats {
  /** Connections accepted and still pending. */
  pendingConnections: number;
  /** Pending connections closed to make room for newer ones. */
  evictedConnections: number;
  /** Pending connections closed at their deadline. */
  timedOutConnections: number;
  /** Failed `accept()` calls, e.g. out of file descriptors; each is retried. */
  acceptErrors: number;
}

/** First pause after a failed accept, in ms; it doubles up to the maximum. */
const ACCEPT_RETRY_MIN_MS = 10;
/** Longest pause between accept attempts after failures, in ms. */
const ACCEPT_RETRY_MAX_MS = 500;

interface Entry extends PendingConnection {
  /** When it was accepted (clock time). */
  acceptedAt: number;
  /** Admitted, or closed by the listener or its owner; no longer counted. */
  done: boolean;
  /**
   * The connection was closed through the listener (`close()`, eviction, deadline). Closing it
   * again would only throw, and under a flood those exceptions cost more than the close.
   */
  closed: boolean;
}

/**
 * How often pending connections are checked against their deadline, as a fraction of the
 * deadline: one timer for all of them, rather than one per connection, which a flood of
 * thousands of connections a second would pay for.
 */
const SWEEPS_PER_DEADLINE = 4;

/** See the module documentation. */
export class GuardedListener {
  readonly #listener: Deno.Listener;
  readonly #options: GuardedListenerOptions;
  readonly #onConnection: (connection: PendingConnection) => void;
  /** Pending connections, oldest first (a Set keeps insertion order). */
  readonly #pending = new Set<Entry>();
  readonly #pendingByAddress = new Map<string, Set<Entry>>();
  readonly #stats = { evictedConnections: 0, timedOutConnections: 0, acceptErrors: 0 };
  readonly #accepting: Promise<void>;
  #closed = false;
  #cancelRetry: (() => void) | undefined;
  #wakeRetry: (() => void) | undefined;
  #cancelSweep: (() => void) | undefined;

  private constructor(
    listener: Deno.Listener,
    options: GuardedListenerOptions,
    onConnection: (connection: PendingConnection) => void,
  ) {
    this.#listener = listener;
    this.#options = options;
    this.#onConnection = onConnection;
    this.#accepting = this.#acceptLoop();
  }

  /**
   * Listens on `options.hostname`:`options.port` and hands each accepted connection, pending, to
   * `onConnection`. Throws what `Deno.listen` throws (e.g. the port is taken).
   */
  static listen(
    options: GuardedListenerOptions,
    onConnection: (connection: PendingConnection) => void,
  ): GuardedListener {
    const { hostname, port, tls } = options;
    const listener = tls === undefined
      ? Deno.listen({ hostname, port })
      : Deno.listenTls({ hostname, port, cert: tls.cert, key: tls.key });
    return new GuardedListener(listener, options, onConnection);
  }

  /** The address listened on. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr as Deno.NetAddr;
  }

  /** Counters so far, and the connections pending now. */
  get stats(): GuardedListenerStats {
    return { ...this.#stats, pendingConnections: this.#pending.size };
  }

  /** Stops accepting and closes every pending connection; resolves once the loop has ended. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#cancelSweep?.();
    this.#cancelSweep = undefined;
    this.#cancelRetry?.();
    this.#wakeRetry?.();
    try {
      this.#listener.close();
    } catch {
      // Already closed.
    }
    for (const entry of [...this.#pending]) this.#drop(entry);
    await this.#accepting;
  }

  async #acceptLoop(): Promise<void> {
    let retryMs = ACCEPT_RETRY_MIN_MS;
    while (!this.#closed) {
      let conn: Deno.Conn;
      try {
        conn = await this.#listener.accept();
      } catch (error) {
        if (this.#closed || error instanceof Deno.errors.BadResource) return;
        this.#stats.acceptErrors++;
        this.#options.log(
          `Cannot accept a connection (${describe(error)}); ${this.#pending.size} pending, ` +
            `retrying in ${retryMs} ms`,
        );
        // Out of file descriptors, most likely: a pending connection's is the one to give back.
        const oldest = this.#pending.values().next().value;
        if (oldest !== undefined) {
          this.#stats.evictedConnections++;
          this.#drop(oldest);
        }
        await new Promise<void>((resolve) => {
          this.#wakeRetry = resolve;
          this.#cancelRetry = this.#options.clock.schedule(retryMs, resolve);
        });
        this.#cancelRetry = this.#wakeRetry = undefined;
        retryMs = Math.min(ACCEPT_RETRY_MAX_MS, retryMs * 2);
        continue;
      }
      retryMs = ACCEPT_RETRY_MIN_MS;
      if (this.#closed) {
        closeQuietly(conn);
        return;
      }
      this.#register(conn);
    }
  }

  #register(conn: Deno.Conn): void {
    const { maxPending, maxPendingPerAddress, clock } = this.#options;
    const address = (conn.remoteAddr as Deno.NetAddr).hostname;
    let fromAddress = this.#pendingByAddress.get(address);
    if (fromAddress !== undefined && fromAddress.size >= maxPendingPerAddress) {
      this.#evict(fromAddress.values().next().value!, `${maxPendingPerAddress} from ${address}`);
    }
    if (this.#pending.size >= maxPending) {
      this.#evict(this.#pending.values().next().value!, `${maxPending} in all`);
    }
    const entry: Entry = {
      conn,
      address,
      acceptedAt: clock.now(),
      done: false,
      closed: false,
      admit: () => {
        if (entry.done) return false;
        this.#forget(entry);
        // Only now: most pending connections never get this far, and this costs a system call.
        if ("setNoDelay" in conn) (conn as Deno.TcpConn).setNoDelay(true);
        return true;
      },
      close: () => this.#drop(entry),
    };
    this.#pending.add(entry);
    this.#scheduleSweep();
    fromAddress = this.#pendingByAddress.get(address) ?? new Set();
    fromAddress.add(entry);
    this.#pendingByAddress.set(address, fromAddress);
    this.#onConnection(entry);
  }

  /**
   * Closes the pending connections past their deadline, every quarter of it while any are
   * pending: each is closed between its deadline and a quarter deadline later.
   */
  #scheduleSweep(): void {
    if (this.#cancelSweep !== undefined || this.#closed) return;
    const { pendingTimeoutMs, clock, log } = this.#options;
    this.#cancelSweep = clock.schedule(pendingTimeoutMs / SWEEPS_PER_DEADLINE, () => {
      this.#cancelSweep = undefined;
      const now = clock.now();
      // Oldest first: the sweep stops at the first one still within its deadline.
      for (const entry of this.#pending) {
        if (now - entry.acceptedAt < pendingTimeoutMs) break;
        this.#stats.timedOutConnections++;
        log(
          `Closed a connection from ${entry.address}: nothing proven within ${pendingTimeoutMs} ms`,
        );
        this.#drop(entry);
      }
      if (this.#pending.size > 0) this.#scheduleSweep();
    });
  }

  #evict(entry: Entry, cap: string): void {
    this.#stats.evictedConnections++;
    this.#options.log(
      `Closed the oldest pending connection, from ${entry.address}, to make room (cap: ${cap})`,
    );
    this.#drop(entry);
  }

  #drop(entry: Entry): void {
    this.#forget(entry);
    if (entry.closed) return;
    entry.closed = true;
    closeQuietly(entry.conn);
  }

  #forget(entry: Entry): void {
    if (entry.done) return;
    entry.done = true;
    this.#pending.delete(entry);
    const fromAddress = this.#pendingByAddress.get(entry.address);
    fromAddress?.delete(entry);
    if (fromAddress?.size === 0) this.#pendingByAddress.delete(entry.address);
  }
}

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
