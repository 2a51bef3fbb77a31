/**
 * A small HTTP/1.1 server with bounds, in place of `Deno.serve` (which hides its accept loop and
 * has no deadline for a connection that never sends a request): connections that have not sent a
 * complete request head are capped and closed at a deadline, the accept loop survives running out
 * of file descriptors ({@linkcode GuardedListener}), every read on a connection has a deadline,
 * and request bodies are read only as the handler consumes them. Handlers see the web's
 * `Request` and return a `Response`, as with `Deno.serve`. The key/value example serves its API
 * with it.
 *
 * @module
 */

import { type Clock, realClock } from "../clock.ts";
import { ByteReader, type ByteSource } from "./_byte_reader.ts";
import { closeQuietly } from "./_close_quietly.ts";
import { GuardedListener, type PendingConnection } from "./_guarded_listener.ts";
import {
  bodyFraming,
  bodyStream,
  concat,
  encodeResponseHead,
  type HeaderFields,
  MAX_HEAD_BYTES,
  parseRequestHead,
  respondClosing,
  writeAll,
} from "./_http1.ts";
import { RateLimitedLog } from "./_rate_limited_log.ts";

/** Options for {@linkcode HttpServer.listen}. */
export interface HttpServerOptions {
  /** Address to listen on. */
  hostname: string;
  /** Port to listen on; 0 picks a free one. */
  port: number;
  /**
   * Most connections that have not yet sent a complete request head; past it the oldest is
   * closed. Default 256, as the WebSocket transport's `maxPendingHandshakes` and for the same
   * reason: a client's request is read long before 256 newer connections push it out.
   */
  maxPendingConnections?: number;
  /** The same cap per remote address. Default 16. */
  maxPendingConnectionsPerAddress?: number;
  /**
   * How long a connection may take to send its first request head, and how long any later read
   * (the next request on a kept-alive connection, a piece of a body) may wait, in ms; checked
   * every quarter of it, so a silent connection is closed within 1.25 times this. Default 5000:
   * clients send their request at once.
   */
  readTimeoutMs?: number;
  /** Where refusals and accept errors go, rate-limited. Default: `console.error`. */
  log?: (line: string) => void;
  /** Timers. Default: the real clock. */
  clock?: Clock;
}

/** What an {@linkcode HttpServer} has refused or closed so far. */
export interface HttpServerStats {
  /** Connections that have not yet sent a complete request head. */
  pendingConnections: number;
  /** Of those, closed to make room for newer ones. */
  evictedConnections: number;
  /** Connections closed because a read took longer than `readTimeoutMs`. */
  timedOutConnections: number;
  /** Failed accepts, e.g. out of file descriptors; each is retried. */
  acceptErrors: number;
  /** Requests answered 400 or 431 before reaching the handler. */
  malformedRequests: number;
  /** Log lines left out by the rate limit. */
  suppressedLogLines: number;
}

/** Handles one request; what `Deno.serve` calls a handler. */
export type HttpHandler = (request: Request) => Response | Promise<Response>;

interface ConnectionState {
  /** Between a request head and its response. */
  busy: boolean;
  /** When the read in progress started (clock time), if one is. */
  readingSince: number | undefined;
}

/** First buffer for a connection's request heads; it grows to at most `MAX_HEAD_BYTES`. */
const INITIAL_HEAD_BUFFER_BYTES = 2048;

const DEFAULTS = {
  maxPendingConnections: 256,
  maxPendingConnectionsPerAddress: 16,
  readTimeoutMs: 5000,
};

/** See the module documentation. */
export class HttpServer {
  readonly #listener: GuardedListener;
  readonly #handler: HttpHandler;
  readonly #log: RateLimitedLog;
  readonly #clock: Clock;
  readonly #readTimeoutMs: number;
  /**
   * Connections past their first request head: whether each is busy with a request, and when its
   * read in progress started (clock time), if any.
   */
  readonly #connections = new Map<Deno.Conn, ConnectionState>();
  readonly #finished = new Set<Promise<void>>();
  #timedOut = 0;
  #malformed = 0;
  #closing = false;
  #cancelSweep: (() => void) | undefined;

  private constructor(options: HttpServerOptions, handler: HttpHandler) {
    this.#handler = handler;
    this.#clock = options.clock ?? realClock;
    this.#readTimeoutMs = options.readTimeoutMs ?? DEFAULTS.readTimeoutMs;
    const write = options.log ?? ((line: string) => console.error(line));
    this.#log = new RateLimitedLog(write, { burst: 20, linesPerSecond: 2, clock: this.#clock });
    this.#listener = GuardedListener.listen({
      hostname: options.hostname,
      port: options.port,
      maxPending: options.maxPendingConnections ?? DEFAULTS.maxPendingConnections,
      maxPendingPerAddress: options.maxPendingConnectionsPerAddress ??
        DEFAULTS.maxPendingConnectionsPerAddress,
      pendingTimeoutMs: this.#readTimeoutMs,
      clock: this.#clock,
      log: (line) => this.#log.log(line),
    }, (connection) => {
      const done = this.#serve(connection);
      this.#finished.add(done);
      done.finally(() => this.#finished.delete(done));
    });
  }

  /** Starts serving `handler` on `options.hostname`:`options.port`. */
  static listen(options: HttpServerOptions, handler: HttpHandler): HttpServer {
    for (const name of Object.keys(DEFAULTS) as (keyof typeof DEFAULTS)[]) {
      const value = options[name];
      if (value !== undefined && !(Number.isFinite(value) && value > 0)) {
        throw new RangeError(`Option ${name} must be a positive number, got ${value}`);
      }
    }
    return new HttpServer(options, handler);
  }

  /** The address listened on. */
  get addr(): Deno.NetAddr {
    return this.#listener.addr;
  }

  /** Counters so far. */
  get stats(): HttpServerStats {
    const listener = this.#listener.stats;
    return {
      ...listener,
      timedOutConnections: listener.timedOutConnections + this.#timedOut,
      malformedRequests: this.#malformed,
      suppressedLogLines: this.#log.suppressed,
    };
  }

  /**
   * Stops accepting, closes connections between requests, and resolves once the requests in
   * progress are answered. A request whose body never ends holds this up to `readTimeoutMs`.
   */
  async shutdown(): Promise<void> {
    this.#closing = true;
    this.#cancelSweep?.();
    this.#cancelSweep = undefined;
    await this.#listener.close();
    for (const [conn, { busy }] of this.#connections) if (!busy) closeQuietly(conn);
    await Promise.all([...this.#finished]);
  }

  async #serve(connection: PendingConnection): Promise<void> {
    const { conn } = connection;
    const state: ConnectionState = { busy: false, readingSince: undefined };
    const reader = new ByteReader(this.#timedReads(conn, state), INITIAL_HEAD_BUFFER_BYTES);
    let admitted = false;
    try {
      for (;;) {
        let bytes: Uint8Array | "too large" | null;
        try {
          bytes = await reader.readHead(MAX_HEAD_BYTES);
        } catch {
          return; // closed under the read: evicted, timed out, shutting down
        }
        if (bytes === null) return;
        if (!admitted) {
          if (!connection.admit()) return;
          admitted = true;
          this.#connections.set(conn, state);
          this.#scheduleSweep();
        }
        if (bytes === "too large") {
          return await this.#refuse(conn, 431, "Request Header Fields Too Large", "head too large");
        }
        const head = parseRequestHead(bytes);
        if (typeof head === "string") return await this.#refuse(conn, 400, "Bad Request", head);
        const framing = bodyFraming(head.headers);
        if (typeof framing === "string") {
          return await this.#refuse(conn, 400, "Bad Request", framing);
        }
        if (!head.target.startsWith("/")) {
          return await this.#refuse(conn, 400, "Bad Request", "request target not a path");
        }
        state.busy = true;
        let bodyComplete = false;
        const body = bodyStream(reader, framing, (complete) => bodyComplete = complete);
        let request: Request;
        try {
          request = new Request(`http://${this.#host(head.headers)}${head.target}`, {
            method: head.method,
            headers: head.headers.pairs,
            ...(body === null ? {} : { body }),
          });
        } catch (error) {
          return await this.#refuse(conn, 400, "Bad Request", describe(error));
        }
        let response: Response;
        try {
          response = await this.#handler(request);
        } catch (error) {
          this.#log.log(`Handler failed on ${head.method} ${head.target}: ${describe(error)}`);
          response = new Response("Internal error.\n", { status: 500 });
        }
        // A body left unread cannot be skipped safely: the connection closes after the answer.
        const keepAlive = !this.#closing && bodyComplete && head.minorVersion === 1 &&
          head.headers.get("connection")?.toLowerCase() !== "close";
        if (!bodyComplete) await body?.cancel().catch(() => {});
        await this.#respond(conn, response, keepAlive);
        state.busy = false;
        if (!keepAlive) return;
      }
    } catch {
      // The client went away mid-response.
    } finally {
      this.#connections.delete(conn);
      connection.close();
    }
  }

  /**
   * `conn` as a byte source that notes when each read starts, so that the sweep can close a
   * connection whose read has waited longer than `readTimeoutMs`. (The first request head is
   * bounded by the listener's deadline instead.)
   */
  #timedReads(conn: Deno.Conn, state: ConnectionState): ByteSource {
    return {
      read: async (buffer) => {
        state.readingSince = this.#clock.now();
        try {
          return await conn.read(buffer);
        } finally {
          state.readingSince = undefined;
        }
      },
    };
  }

  /** One timer for every admitted connection's reads, every quarter of `readTimeoutMs`. */
  #scheduleSweep(): void {
    if (this.#cancelSweep !== undefined || this.#closing) return;
    this.#cancelSweep = this.#clock.schedule(this.#readTimeoutMs / 4, () => {
      this.#cancelSweep = undefined;
      const now = this.#clock.now();
      for (const [conn, state] of this.#connections) {
        if (state.readingSince !== undefined && now - state.readingSince >= this.#readTimeoutMs) {
          this.#timedOut++;
          closeQuietly(conn);
        }
      }
      if (this.#connections.size > 0) this.#scheduleSweep();
    });
  }

  #host(headers: HeaderFields): string {
    const host = headers.get("host");
    return host !== null && /^[A-Za-z0-9.:[\]-]{1,255}$/.test(host)
      ? host
      : `${this.addr.hostname}:${this.addr.port}`;
  }

  async #refuse(conn: Deno.Conn, status: number, reason: string, why: string): Promise<void> {
    this.#malformed++;
    this.#log.log(`Refused a request (${status}): ${why}`);
    await respondClosing(conn, status, reason, `${reason}: ${why}\n`);
  }

  /**
   * Writes `response`: whole, with a `Content-Length`, or for an event stream
   * (`text/event-stream`, which does not end until the handler ends it), chunk by chunk as the
   * handler produces them (`Transfer-Encoding: chunked`). A client that goes away ends the
   * stream: the handler's body is cancelled.
   */
  async #respond(conn: Deno.Conn, response: Response, keepAlive: boolean): Promise<void> {
    const headers: [string, string][] = [];
    response.headers.forEach((value, name) => {
      if (name !== "content-length" && name !== "connection" && name !== "transfer-encoding") {
        headers.push([name, value]);
      }
    });
    const reason = response.statusText || REASONS[response.status] || "Status";
    const streamed = response.body !== null &&
      (response.headers.get("content-type") ?? "").startsWith("text/event-stream");
    if (streamed) {
      headers.push(["transfer-encoding", "chunked"]);
      headers.push(["connection", keepAlive ? "keep-alive" : "close"]);
      await writeAll(conn, encodeResponseHead(response.status, reason, headers));
      const reader = response.body!.getReader();
      const encoder = new TextEncoder();
      try {
        for (;;) {
          const { done, value } = await reader.read();
          if (done) break;
          if (value.length === 0) continue;
          const size = encoder.encode(`${value.length.toString(16)}\r\n`);
          await writeAll(conn, concat(concat(size, value), encoder.encode("\r\n")));
        }
      } catch (error) {
        await reader.cancel().catch(() => {});
        throw error;
      }
      await writeAll(conn, encoder.encode("0\r\n\r\n"));
      return;
    }
    const body = new Uint8Array(await response.arrayBuffer());
    headers.push(["content-length", String(body.length)]);
    headers.push(["connection", keepAlive ? "keep-alive" : "close"]);
    const head = encodeResponseHead(response.status, reason, headers);
    await writeAll(conn, concat(head, body));
  }
}

/** Reason phrases for the statuses a handler is likely to use; others get a generic one. */
const REASONS: Record<number, string> = {
  200: "OK",
  201: "Created",
  204: "No Content",
  400: "Bad Request",
  404: "Not Found",
  405: "Method Not Allowed",
  413: "Content Too Large",
  421: "Misdirected Request",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

function describe(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
