/**
 * Attacks by clients that do not hold the secret (and one by an insider), for
 * `tests/hostile_test.ts` and `bench/hostile.ts`. Every attack is bounded in count and time and
 * stops by itself; all traffic stays on 127.0.0.0/8.
 *
 * @module
 */

import net from "node:net";
import { closeQuietly } from "../../src/net/_close_quietly.ts";

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Resident memory of process `pid` in bytes (Linux: `VmRSS` in `/proc/<pid>/status`). */
export async function rssBytes(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  const kilobytes = Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1] ?? NaN);
  return kilobytes * 1024;
}

/** CPU time used so far by process `pid`, user and system, in seconds (Linux `/proc`). */
export async function cpuSeconds(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  // Fields after the command name (which may hold spaces) start at "state"; utime and stime are
  // the 14th and 15th fields of the line, in clock ticks (100 a second on Linux).
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Samples `pid`'s RSS every 20 ms while `during` runs; resolves to its result and the peak. */
export async function peakRss<T>(
  pid: number,
  during: Promise<T>,
): Promise<{ result: T; peak: number }> {
  let peak = await rssBytes(pid);
  let done = false;
  const sampling = (async () => {
    while (!done) {
      peak = Math.max(peak, await rssBytes(pid).catch(() => 0));
      await sleep(20);
    }
  })();
  try {
    const result = await during;
    return { result, peak };
  } finally {
    done = true;
    await sampling;
  }
}

/** Options for {@linkcode SocketFlood}. */
export interface SocketFloodOptions {
  /** The port attacked on 127.0.0.1. */
  port: number;
  /** Sockets kept open at once: one that the server closes is replaced. */
  sockets: number;
  /** Distinct source addresses, 127.0.x.y from 127.0.1.1 up; 1 means 127.0.0.1 only. */
  addresses: number;
  /**
   * What each socket sends: nothing (`"silent"`); a WebSocket upgrade request without a valid
   * token and then nothing (`"upgrade"`); or a request head that never ends, a header line every
   * 200 ms (`"slowloris"`).
   */
  mode: "silent" | "upgrade" | "slowloris";
  /** The flood stops by itself after this long, in ms. */
  durationMs: number;
  /** ... or after opening this many sockets in all. */
  maxOpened: number;
}

const UPGRADE_REQUEST = "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n" +
  "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n" +
  "Sec-WebSocket-Version: 13\r\n\r\n";

/**
 * Keeps `sockets` connections open to a port from many source addresses, replacing each one the
 * server closes, until stopped or its time or count runs out. Counts what the server did.
 */
export class SocketFlood {
  /** Sockets opened so far. */
  opened = 0;
  /** Sockets the server closed (or refused) while the flood ran. */
  closedByServer = 0;
  /** Connection attempts that failed. */
  failed = 0;
  readonly #options: SocketFloodOptions;
  readonly #open = new Set<net.Socket>();
  readonly #done: Promise<void>;
  #stopped = false;
  #wake: (() => void) | undefined;

  /** Starts the flood at once. */
  constructor(options: SocketFloodOptions) {
    this.#options = options;
    this.#done = this.#run();
  }

  /** Sockets open right now. */
  get openNow(): number {
    return this.#open.size;
  }

  /** Whether the flood still goes on (not stopped, time and count not run out). */
  get running(): boolean {
    return !this.#stopped;
  }

  /** Stops the flood and closes every socket; resolves once they are closed. */
  async stop(): Promise<void> {
    this.#stopped = true;
    this.#wake?.();
    await this.#done;
  }

  async #run(): Promise<void> {
    const { durationMs, maxOpened, sockets } = this.#options;
    const deadline = Date.now() + durationMs;
    while (!this.#stopped && Date.now() < deadline && this.opened < maxOpened) {
      const missing = Math.min(sockets - this.#open.size, maxOpened - this.opened);
      if (missing > 0) {
        await Promise.all(Array.from({ length: missing }, () => this.#openOne()));
      } else {
        // Woken when the server closes one, or every 50 ms.
        await new Promise<void>((resolve) => {
          const timer = setTimeout(resolve, 50);
          this.#wake = () => {
            clearTimeout(timer);
            resolve();
          };
        });
        this.#wake = undefined;
      }
    }
    this.#stopped = true;
    const closing = [...this.#open].map((socket) =>
      new Promise<void>((resolve) => {
        socket.once("close", () => resolve());
        socket.destroy();
      })
    );
    await Promise.all(closing);
  }

  #openOne(): Promise<void> {
    const { port, addresses, mode } = this.#options;
    const n = this.opened++;
    const localAddress = addresses <= 1
      ? "127.0.0.1"
      : `127.0.${1 + Math.floor((n % addresses) / 250)}.${1 + (n % addresses) % 250}`;
    return new Promise((resolve) => {
      const socket = net.connect({ host: "127.0.0.1", port, localAddress });
      let connected = false;
      const timer = setTimeout(() => socket.destroy(), 1000);
      let dribble: ReturnType<typeof setInterval> | undefined;
      socket.on("connect", () => {
        connected = true;
        clearTimeout(timer);
        this.#open.add(socket);
        if (mode === "upgrade") socket.write(UPGRADE_REQUEST);
        if (mode === "slowloris") {
          socket.write("GET / HTTP/1.1\r\n");
          dribble = setInterval(() => socket.write(`X-${n}: ${n}\r\n`), 200);
        }
        resolve();
      });
      socket.on("data", () => {}); // whatever the server answers is read and dropped
      socket.on("error", () => {});
      socket.on("close", () => {
        clearTimeout(timer);
        clearInterval(dribble);
        if (!connected) {
          this.failed++;
          resolve();
          return;
        }
        if (this.#open.delete(socket) && !this.#stopped) {
          this.closedByServer++;
          this.#wake?.();
        }
      });
    });
  }
}

/**
 * Opens `connections` connections to `port` at once; on each sends a WebSocket upgrade request for
 * `target`, then, whatever the answer, a text frame announcing `frameBytes` bytes and as much of
 * its payload as the server takes, in 1 MiB writes, for at most `timeLimitMs`. Resolves to the
 * HTTP statuses seen and the bytes each connection got written.
 */
export async function floodLargeFrames(
  port: number,
  options: { connections: number; frameBytes: number; target: string; timeLimitMs: number },
): Promise<{ statuses: number[]; written: number[] }> {
  const { connections, frameBytes, target, timeLimitMs } = options;
  const results = await Promise.all(Array.from({ length: connections }, async () => {
    let conn: Deno.Conn;
    try {
      conn = await Deno.connect({ hostname: "127.0.0.1", port });
    } catch {
      return { status: 0, written: 0 };
    }
    const timer = setTimeout(() => closeQuietly(conn), timeLimitMs);
    let status = 0;
    let written = 0;
    try {
      await conn.write(
        new TextEncoder().encode(UPGRADE_REQUEST.replace("GET / ", `GET ${target} `)),
      );
      const buffer = new Uint8Array(4096);
      const count = await conn.read(buffer);
      status = Number(new TextDecoder().decode(buffer.subarray(0, count ?? 0)).split(" ")[1]);
      // FIN + text, masked, 64-bit length.
      const header = new Uint8Array(14);
      header[0] = 0x81;
      header[1] = 0x80 | 127;
      new DataView(header.buffer).setBigUint64(2, BigInt(frameBytes));
      await conn.write(header);
      const chunk = new Uint8Array(1 << 20).fill(0x41);
      while (written < frameBytes) {
        written += await conn.write(
          chunk.subarray(0, Math.min(chunk.length, frameBytes - written)),
        );
      }
    } catch {
      // The server closed the connection: the point.
    } finally {
      clearTimeout(timer);
      closeQuietly(conn);
    }
    return { status, written };
  }));
  return {
    statuses: results.map((result) => result.status),
    written: results.map((result) => result.written),
  };
}

/**
 * Sends `PUT path` with a body of `bodyBytes` bytes (`Content-Length`, or chunked), written in
 * 256 KiB pieces for as long as the server takes them, within `timeLimitMs`; resolves to the
 * response's status (0 if none came) and the body bytes written.
 */
export async function putLargeBody(
  port: number,
  path: string,
  options: { bodyBytes: number; chunked: boolean; timeLimitMs: number },
): Promise<{ status: number; written: number }> {
  const { bodyBytes, chunked, timeLimitMs } = options;
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const timer = setTimeout(() => closeQuietly(conn), timeLimitMs);
  let written = 0;
  const response = (async () => {
    const buffer = new Uint8Array(4096);
    const count = await conn.read(buffer).catch(() => null);
    return Number(new TextDecoder().decode(buffer.subarray(0, count ?? 0)).split(" ")[1] ?? 0);
  })();
  try {
    const framing = chunked ? "Transfer-Encoding: chunked" : `Content-Length: ${bodyBytes}`;
    await conn.write(
      new TextEncoder().encode(`PUT ${path} HTTP/1.1\r\nHost: 127.0.0.1\r\n${framing}\r\n\r\n`),
    );
    const piece = new Uint8Array(256 * 1024).fill(0x61);
    const chunkHead = new TextEncoder().encode(`${piece.length.toString(16)}\r\n`);
    const crlf = new TextEncoder().encode("\r\n");
    while (written < bodyBytes) {
      if (chunked) await conn.write(chunkHead);
      let sent = 0;
      while (sent < piece.length) sent += await conn.write(piece.subarray(sent));
      if (chunked) await conn.write(crlf);
      written += piece.length;
    }
  } catch {
    // The server stopped reading and closed: expected once it refused the body.
  }
  const status = await response;
  clearTimeout(timer);
  closeQuietly(conn);
  return { status: Number.isFinite(status) ? status : 0, written };
}

/**
 * Makes `count` upgrade requests for `target` (default `/`, no token; pass a forged token's),
 * `parallel` at a time, each followed (if the server upgrades) by a malformed frame; each waits
 * for the server to close. Stops after `timeLimitMs`. Resolves to how many were made.
 */
export async function floodRefusals(
  port: number,
  options: { count: number; parallel: number; timeLimitMs: number; target?: string },
): Promise<number> {
  const request = new TextEncoder().encode(
    UPGRADE_REQUEST.replace("GET / ", `GET ${options.target ?? "/"} `),
  );
  const deadline = Date.now() + options.timeLimitMs;
  let made = 0;
  const worker = async () => {
    while (made < options.count && Date.now() < deadline) {
      made++;
      let conn: Deno.Conn;
      try {
        conn = await Deno.connect({ hostname: "127.0.0.1", port });
      } catch {
        continue;
      }
      const timer = setTimeout(() => closeQuietly(conn), 2000);
      try {
        await conn.write(request);
        const buffer = new Uint8Array(4096);
        const count = await conn.read(buffer);
        if (new TextDecoder().decode(buffer.subarray(0, count ?? 0)).startsWith("HTTP/1.1 101")) {
          // "{nope", masked with a zero key: not JSON.
          await conn.write(new Uint8Array([0x81, 0x85, 0, 0, 0, 0, 0x7b, 0x6e, 0x6f, 0x70, 0x65]));
        }
        while (await conn.read(buffer) !== null) {
          // Until the server closes.
        }
      } catch {
        // Closed.
      } finally {
        clearTimeout(timer);
        closeQuietly(conn);
      }
    }
  };
  await Promise.all(Array.from({ length: options.parallel }, worker));
  return made;
}
