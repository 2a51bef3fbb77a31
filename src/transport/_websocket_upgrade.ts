/**
 * The WebSocket opening handshake (RFC 6455 §4) on both ends: the client's upgrade request and
 * its check of the `101` answer, and the server's check of the request. The transport's own
 * authentication rides in the request's query; see `_websocket_handshake.ts`.
 *
 * @module
 */

import type { Clock } from "../clock.ts";
import { ByteReader } from "../net/_byte_reader.ts";
import { closeQuietly } from "../net/_close_quietly.ts";
import {
  encodeResponseHead,
  MAX_HEAD_BYTES,
  parseResponseHead,
  type RequestHead,
  writeAll,
} from "../net/_http1.ts";
import { encodeBase64 } from "./_base64.ts";
import { WebSocketConnection } from "./_websocket_connection.ts";

const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/** `Sec-WebSocket-Accept` for a request's `Sec-WebSocket-Key`. */
async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", new TextEncoder().encode(key + ACCEPT_GUID));
  return encodeBase64(new Uint8Array(digest));
}

/** Why a server refuses an upgrade request: an HTTP status and a line of text. */
export interface UpgradeRefusal {
  /** HTTP status. */
  status: number;
  /** Its reason phrase. */
  reason: string;
  /** A sentence for the client and the log. */
  text: string;
}

/**
 * Checks that `head` asks for a WebSocket (RFC 6455 §4.2.1); returns its key, or why not: 426 for
 * a plain HTTP request, 400 for a malformed upgrade.
 */
export function checkUpgradeRequest(head: RequestHead): { key: string } | UpgradeRefusal {
  const upgrade = head.headers.get("upgrade")?.toLowerCase();
  if (upgrade !== "websocket") {
    return {
      status: 426,
      reason: "Upgrade Required",
      text: "This is a Raft peer: it speaks WebSocket only.",
    };
  }
  const key = head.headers.get("sec-websocket-key") ?? "";
  const connection = head.headers.get("connection")?.toLowerCase() ?? "";
  if (
    head.method !== "GET" || head.minorVersion !== 1 ||
    !connection.split(",").some((token) => token.trim() === "upgrade") ||
    head.headers.get("sec-websocket-version") !== "13" ||
    !/^[A-Za-z0-9+/]{22}==$/.test(key) || head.headers.has("content-length") ||
    head.headers.has("transfer-encoding")
  ) {
    return { status: 400, reason: "Bad Request", text: "Malformed WebSocket upgrade." };
  }
  return { key };
}

/** Writes the `101 Switching Protocols` answer to an upgrade request with `key`. */
export async function switchProtocols(conn: Deno.Conn, key: string): Promise<void> {
  await writeAll(
    conn,
    encodeResponseHead(101, "Switching Protocols", [
      ["upgrade", "websocket"],
      ["connection", "Upgrade"],
      ["sec-websocket-accept", await acceptFor(key)],
    ]),
  );
}

/** Options for {@linkcode dialWebSocket}. */
export interface DialOptions {
  /** Extra PEM CA certificates for `wss://`. */
  caCerts?: string[] | undefined;
  /** Largest message accepted on the new connection, in bytes. */
  maxMessageBytes: number;
  /** For the connection's timestamps and closing grace. */
  clock: Clock;
  /** Aborts the dial: the connection, if any, is closed. */
  signal: AbortSignal;
}

/**
 * Connects to `url` (`ws://` or `wss://`, query included) and performs the opening handshake.
 * Rejects if the connection fails, the signal aborts, or the server does not answer `101` with
 * the right `Sec-WebSocket-Accept` (its status is in the message).
 */
export async function dialWebSocket(url: URL, options: DialOptions): Promise<WebSocketConnection> {
  const hostname = url.hostname.replace(/^\[|\]$/g, "");
  const port = Number(url.port || (url.protocol === "wss:" ? 443 : 80));
  let conn: Deno.Conn = await Deno.connect({ hostname, port, signal: options.signal });
  const abort = () => closeQuietly(conn);
  options.signal.addEventListener("abort", abort, { once: true });
  try {
    (conn as Deno.TcpConn).setNoDelay(true);
    if (url.protocol === "wss:") {
      conn = await Deno.startTls(conn as Deno.TcpConn, {
        hostname,
        ...(options.caCerts === undefined ? {} : { caCerts: options.caCerts }),
      });
    }
    const key = encodeBase64(crypto.getRandomValues(new Uint8Array(16)));
    const request = `GET ${url.pathname}${url.search} HTTP/1.1\r\nHost: ${url.host}\r\n` +
      `Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${key}\r\n` +
      `Sec-WebSocket-Version: 13\r\n\r\n`;
    await writeAll(conn, new TextEncoder().encode(request));
    const reader = new ByteReader(conn);
    const bytes = await reader.readHead(MAX_HEAD_BYTES);
    if (bytes === null || bytes === "too large") {
      throw new Error(`No valid answer to the upgrade request from ${url.host}`);
    }
    const head = parseResponseHead(bytes);
    if (typeof head === "string") throw new Error(`${head} from ${url.host}`);
    if (head.status !== 101) {
      throw new Error(`Upgrade refused by ${url.host}: HTTP ${head.status}`);
    }
    if (head.headers.get("sec-websocket-accept") !== await acceptFor(key)) {
      throw new Error(`Upgrade answered by ${url.host} without the right Sec-WebSocket-Accept`);
    }
    options.signal.throwIfAborted();
    options.signal.removeEventListener("abort", abort);
    return new WebSocketConnection(conn, reader, {
      role: "client",
      maxMessageBytes: options.maxMessageBytes,
      clock: options.clock,
    });
  } catch (error) {
    options.signal.removeEventListener("abort", abort);
    abort();
    throw error;
  }
}
