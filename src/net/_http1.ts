/**
 * The parts of HTTP/1.1 (RFC 9112) that the WebSocket transport and the key/value example's server
 * need, with every length bounded: request and response heads, and request bodies (fixed length
 * or chunked) read only as fast as the handler consumes them.
 *
 * @module
 */

import type { ByteReader } from "./_byte_reader.ts";

/** Longest request or response head accepted, in bytes: request line (or status line) and headers. */
export const MAX_HEAD_BYTES = 8 * 1024;

/**
 * Header fields as received, names in lower case and in order. Cheaper than `Headers`, which
 * validates on every call; a server hands `pairs` to `new Request()`, which validates once.
 */
export class HeaderFields {
  /** `[name, value]` in the order received; names in lower case. */
  readonly pairs: [string, string][] = [];

  /** The field's value (repeated fields joined by ", "), or `null` if absent. */
  get(name: string): string | null {
    let value: string | null = null;
    for (const [field, text] of this.pairs) {
      if (field === name) value = value === null ? text : `${value}, ${text}`;
    }
    return value;
  }

  /** Whether the field is present. */
  has(name: string): boolean {
    return this.pairs.some(([field]) => field === name);
  }
}

/** A parsed request line and headers. */
export interface RequestHead {
  /** E.g. `GET`. */
  method: string;
  /** The request target as sent, e.g. `/kv/a?x=1`. */
  target: string;
  /** 0 for HTTP/1.0, 1 for HTTP/1.1. */
  minorVersion: number;
  /** The header fields. */
  headers: HeaderFields;
}

/** A parsed status line and headers. */
export interface ResponseHead {
  /** The status code. */
  status: number;
  /** The header fields. */
  headers: HeaderFields;
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const REQUEST_LINE = /^([!#$%&'*+\-.^_`|~0-9A-Za-z]+) ([\x21-\x7e]+) HTTP\/1\.([01])$/;
const STATUS_LINE = /^HTTP\/1\.[01] ([0-9]{3})(?: [\t\x20-\x7e\x80-\xff]*)?$/;
const latin1 = new TextDecoder("latin1");

/** Parses a request head (without its final empty line); a string says what is wrong with it. */
export function parseRequestHead(bytes: Uint8Array): RequestHead | string {
  const lines = latin1.decode(bytes).split("\r\n");
  const match = lines[0]!.match(REQUEST_LINE);
  if (match === null) return `Malformed request line ${JSON.stringify(lines[0]!.slice(0, 80))}`;
  const headers = parseFields(lines.slice(1));
  if (typeof headers === "string") return headers;
  return { method: match[1]!, target: match[2]!, minorVersion: Number(match[3]), headers };
}

/** Parses a response head (without its final empty line); a string says what is wrong with it. */
export function parseResponseHead(bytes: Uint8Array): ResponseHead | string {
  const lines = latin1.decode(bytes).split("\r\n");
  const match = lines[0]!.match(STATUS_LINE);
  if (match === null) return `Malformed status line ${JSON.stringify(lines[0]!.slice(0, 80))}`;
  const headers = parseFields(lines.slice(1));
  if (typeof headers === "string") return headers;
  return { status: Number(match[1]), headers };
}

/** Control characters other than tab, which no field value may hold (RFC 9110 §5.5). */
// deno-lint-ignore no-control-regex -- matching them is the point
const CONTROL = /[\x00-\x08\x0a-\x1f\x7f]/;

function parseFields(lines: string[]): HeaderFields | string {
  const headers = new HeaderFields();
  for (const line of lines) {
    const colon = line.indexOf(":");
    const name = line.slice(0, colon);
    // No folded lines (obsolete, RFC 9112 §5.2) and no space before the colon (§5.1).
    if (colon <= 0 || !TOKEN.test(name)) {
      return `Malformed header line ${JSON.stringify(line.slice(0, 80))}`;
    }
    const value = line.slice(colon + 1).trim();
    if (CONTROL.test(value)) return `Malformed value of header ${name}`;
    headers.pairs.push([name.toLowerCase(), value]);
  }
  return headers;
}

/** The head of a response: status line and headers, ending with the empty line. */
export function encodeResponseHead(
  status: number,
  reason: string,
  headers: Iterable<[string, string]>,
): Uint8Array {
  let text = `HTTP/1.1 ${status} ${reason}\r\n`;
  for (const [name, value] of headers) text += `${name}: ${value}\r\n`;
  return new TextEncoder().encode(text + "\r\n");
}

/** Writes all of `bytes` to `conn` (a write may take only part of them). */
export async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let written = 0;
  while (written < bytes.length) written += await conn.write(bytes.subarray(written));
}

/**
 * Writes a short plain-text response that announces `Connection: close`; the caller closes the
 * connection after it (once: closing it twice costs an exception).
 */
export async function respondClosing(
  conn: Deno.Conn,
  status: number,
  reason: string,
  text: string,
  extraHeaders: [string, string][] = [],
): Promise<void> {
  const body = new TextEncoder().encode(text);
  const head = encodeResponseHead(status, reason, [
    ["content-type", "text/plain; charset=utf-8"],
    ["content-length", String(body.length)],
    ["connection", "close"],
    ...extraHeaders,
  ]);
  try {
    await writeAll(conn, concat(head, body));
  } catch {
    // The client went away; nothing to tell it.
  }
}

/** `a` followed by `b`, in one array (one write, so one TCP segment when small). */
export function concat(a: Uint8Array, b: Uint8Array): Uint8Array {
  const bytes = new Uint8Array(a.length + b.length);
  bytes.set(a);
  bytes.set(b, a.length);
  return bytes;
}

/** How a request's body is delimited, from its headers; a string says why it is malformed. */
export type BodyFraming = { kind: "none" } | { kind: "length"; length: number } | {
  kind: "chunked";
};

/**
 * The framing of a request body (RFC 9112 §6.3). Refuses what request smuggling relies on: both
 * `Content-Length` and `Transfer-Encoding`, several lengths, or a coding other than `chunked`.
 */
export function bodyFraming(headers: HeaderFields): BodyFraming | string {
  const coding = headers.get("transfer-encoding");
  const length = headers.get("content-length");
  if (coding !== null) {
    if (length !== null) return "Both Content-Length and Transfer-Encoding";
    if (coding.toLowerCase() !== "chunked") return `Unsupported Transfer-Encoding ${coding}`;
    return { kind: "chunked" };
  }
  if (length === null) return { kind: "none" };
  if (!/^[0-9]{1,15}$/.test(length)) return `Malformed Content-Length ${length.slice(0, 40)}`;
  return { kind: "length", length: Number(length) };
}

/** Longest chunk-size line (with extensions) or trailer line accepted, in bytes. */
const MAX_CHUNK_LINE_BYTES = 1024;

/**
 * The body of a request as a stream that reads from `reader` only when pulled, so a handler that
 * stops reading stops the network reads too. `onEnd` is called with `true` once the body has been
 * read to its end (the connection may then carry another request), or `false` if it failed or was
 * cancelled (the connection must close).
 */
export function bodyStream(
  reader: ByteReader,
  framing: BodyFraming,
  onEnd: (complete: boolean) => void,
): ReadableStream<Uint8Array> | null {
  if (framing.kind === "none" || (framing.kind === "length" && framing.length === 0)) {
    onEnd(true);
    return null;
  }
  let ended = false;
  const end = (complete: boolean) => {
    if (ended) return;
    ended = true;
    onEnd(complete);
  };
  let remaining = framing.kind === "length" ? framing.length : 0;
  let chunkedDone = false;
  return new ReadableStream<Uint8Array>({
    async pull(controller) {
      try {
        if (framing.kind === "length") {
          const piece = await readSome(reader, remaining);
          if (piece === null) throw new Error("The request body ended early");
          remaining -= piece.length;
          controller.enqueue(piece);
          if (remaining === 0) {
            end(true);
            controller.close();
          }
          return;
        }
        if (remaining === 0) {
          const line = await readLine(reader);
          const size = /^([0-9A-Fa-f]{1,8})(?:;.*)?$/.exec(line);
          if (size === null) throw new Error(`Malformed chunk size ${line.slice(0, 40)}`);
          remaining = parseInt(size[1]!, 16);
          if (remaining === 0) {
            // Trailer fields, up to the empty line; ignored.
            while ((await readLine(reader)) !== "") {
              // Skip.
            }
            chunkedDone = true;
            end(true);
            controller.close();
            return;
          }
        }
        const piece = await readSome(reader, remaining);
        if (piece === null) throw new Error("The request body ended early");
        remaining -= piece.length;
        if (remaining === 0 && (await readLine(reader)) !== "") {
          throw new Error("Malformed chunk: no line end after its data");
        }
        controller.enqueue(piece);
      } catch (error) {
        end(false);
        controller.error(error);
      }
    },
    cancel() {
      if (!chunkedDone) end(false);
    },
  }, { highWaterMark: 0 });
}

/** Up to `most` bytes: what is buffered, or else one read's worth; `null` at the end. */
async function readSome(reader: ByteReader, most: number): Promise<Uint8Array | null> {
  if (reader.buffered === 0 && !await reader.fill(1)) return null;
  const view = reader.peek();
  const piece = view.slice(0, Math.min(most, view.length));
  reader.consume(piece.length);
  return piece;
}

async function readLine(reader: ByteReader): Promise<string> {
  for (;;) {
    const view = reader.peek();
    const end = view.indexOf(10);
    if (end >= 0) {
      if (end === 0 || view[end - 1] !== 13) throw new Error("Malformed line end in chunked body");
      const line = latin1.decode(view.subarray(0, end - 1));
      reader.consume(end + 1);
      return line;
    }
    if (view.length >= MAX_CHUNK_LINE_BYTES) throw new Error("Chunk line too long");
    if (!await reader.fill(view.length + 1)) throw new Error("The request body ended early");
  }
}
