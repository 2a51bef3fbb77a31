/**
 * WebSocket framing (RFC 6455 §5) over a `Deno.Conn`, for both ends of a link. The transport does
 * its own framing rather than use `Deno.upgradeWebSocket` and `new WebSocket()` because those read
 * a whole message, up to Deno's 64 MiB, before anyone can look at its size: here a frame's length
 * is checked in its header, and a frame over the limit is refused before its payload is read.
 * Closing does not depend on the other side either: after a close frame it gets a short grace to
 * answer, then the TCP connection is closed regardless.
 *
 * @module
 */

import type { Clock } from "../clock.ts";
import type { ByteReader } from "../net/_byte_reader.ts";
import { closeQuietly } from "../net/_close_quietly.ts";
import { concat, writeAll } from "../net/_http1.ts";

/** Which end of the connection this is: a client masks what it sends, a server does not. */
export type WebSocketRole = "client" | "server";

/** Options for {@linkcode WebSocketConnection}. */
export interface WebSocketConnectionOptions {
  /** Client or server end. */
  role: WebSocketRole;
  /** Largest message accepted, in bytes of payload; a frame that would exceed it is refused. */
  maxMessageBytes: number;
  /** For `lastReceivedAt` and the closing grace. */
  clock: Clock;
}

/** How long a closing connection waits for the other side's close before it drops it, in ms. */
export const CLOSE_GRACE_MS = 1000;

/** Close code when the other end vanished without a close frame (never sent on the wire). */
export const ABNORMAL_CLOSURE = 1006;

const OPCODE = { continuation: 0, text: 1, binary: 2, close: 8, ping: 9, pong: 10 } as const;

/** A WebSocket over a connection whose opening handshake is done. */
export class WebSocketConnection {
  /** A complete text (string) or binary (bytes) message arrived. */
  onmessage: (data: string | Uint8Array) => void = () => {};
  /**
   * The other end broke the protocol or sent a message over the limit; the reason is a sentence.
   * The connection stops reading; the handler should close it (with a code of its choice).
   */
  onrefused: (reason: string) => void = () => this.close(1002);
  /** The TCP connection is closed; `code` is the close frame's code, or 1006 if none came. */
  onclose: (code: number) => void = () => {};
  /** Largest message accepted from now on, in bytes; may be changed at any time. */
  maxMessageBytes: number;
  /** When the last frame of any kind arrived (clock time). */
  lastReceivedAt: number;

  readonly #conn: Deno.Conn;
  readonly #reader: ByteReader;
  readonly #role: WebSocketRole;
  readonly #clock: Clock;
  readonly #closed: Promise<void>;
  #resolveClosed!: () => void;
  #state: "open" | "closing" | "closed" = "open";
  #closeCode = ABNORMAL_CLOSURE;
  #queue: Uint8Array[] = [];
  #queuedBytes = 0;
  #writing = false;
  #cancelGrace: (() => void) | undefined;

  /**
   * Takes over `conn`, whose opening handshake is done; `reader` holds any bytes already read past
   * it. Starts reading at once.
   */
  constructor(conn: Deno.Conn, reader: ByteReader, options: WebSocketConnectionOptions) {
    this.#conn = conn;
    this.#reader = reader;
    this.#role = options.role;
    this.#clock = options.clock;
    this.maxMessageBytes = options.maxMessageBytes;
    this.lastReceivedAt = options.clock.now();
    this.#closed = new Promise((resolve) => this.#resolveClosed = resolve);
    // After the constructor returns, so the owner's handlers are in place.
    queueMicrotask(() => void this.#readFrames());
  }

  /** Whether messages can still be sent. */
  get open(): boolean {
    return this.#state === "open";
  }

  /** Bytes queued for sending and not yet written to the connection. */
  get bufferedAmount(): number {
    return this.#queuedBytes;
  }

  /** Resolves once the TCP connection is closed. */
  get closed(): Promise<void> {
    return this.#closed;
  }

  /** Sends `text` as one text message; does nothing once closing. */
  send(text: string): void {
    if (this.#state !== "open") return;
    this.#enqueue(this.#frame(OPCODE.text, new TextEncoder().encode(text)));
  }

  /** Sends a ping, which the other end answers with a pong. */
  ping(): void {
    if (this.#state !== "open") return;
    this.#enqueue(this.#frame(OPCODE.ping, new Uint8Array(0)));
  }

  /**
   * Starts the closing handshake with `code`: sends a close frame after what is queued, then waits
   * up to {@linkcode CLOSE_GRACE_MS} for the other end to close, then closes the connection.
   */
  close(code = 1000): void {
    if (this.#state !== "open") return;
    this.#state = "closing";
    this.#closeCode = code;
    const payload = new Uint8Array([code >> 8, code & 0xff]);
    this.#enqueue(this.#frame(OPCODE.close, payload));
    this.#cancelGrace = this.#clock.schedule(CLOSE_GRACE_MS, () => this.#finish());
  }

  /** Closes the TCP connection at once, without a closing handshake. */
  abort(): void {
    this.#finish();
  }

  #frame(opcode: number, payload: Uint8Array): Uint8Array {
    const length = payload.length;
    const extended = length < 126 ? 0 : length < 65536 ? 2 : 8;
    const maskBytes = this.#role === "client" ? 4 : 0;
    const frame = new Uint8Array(2 + extended + maskBytes + length);
    frame[0] = 0x80 | opcode;
    frame[1] = (maskBytes > 0 ? 0x80 : 0) | (extended === 0 ? length : extended === 2 ? 126 : 127);
    const view = new DataView(frame.buffer);
    if (extended === 2) view.setUint16(2, length);
    if (extended === 8) view.setBigUint64(2, BigInt(length));
    const offset = 2 + extended + maskBytes;
    frame.set(payload, offset);
    if (maskBytes > 0) {
      const mask = crypto.getRandomValues(new Uint8Array(4));
      frame.set(mask, 2 + extended);
      for (let i = 0; i < length; i++) frame[offset + i]! ^= mask[i & 3]!;
    }
    return frame;
  }

  #enqueue(frame: Uint8Array): void {
    this.#queue.push(frame);
    this.#queuedBytes += frame.length;
    if (!this.#writing) void this.#writeQueued();
  }

  async #writeQueued(): Promise<void> {
    this.#writing = true;
    try {
      while (this.#queue.length > 0 && this.#state !== "closed") {
        // Small frames queued together go out in one write (and one TCP segment).
        let frame = this.#queue.shift()!;
        while (this.#queue.length > 0 && frame.length + this.#queue[0]!.length <= 64 * 1024) {
          frame = concat(frame, this.#queue.shift()!);
        }
        await writeAll(this.#conn, frame);
        this.#queuedBytes -= frame.length;
      }
      if (this.#state === "closing") {
        // Our close frame is out: tell the other end we send nothing more.
        await this.#conn.closeWrite().catch(() => {});
      }
    } catch {
      this.#finish();
    } finally {
      this.#writing = false;
    }
  }

  async #readFrames(): Promise<void> {
    try {
      await this.#readUntilClose();
    } catch {
      // The connection failed or was closed under the read.
    }
    if (this.#state === "open") {
      this.#finish();
    } else {
      await this.#drain();
    }
  }

  /** Reads frames until the stream ends, a close frame comes, or a frame is refused. */
  async #readUntilClose(): Promise<void> {
    let message: Uint8Array[] = [];
    let messageBytes = 0;
    let messageOpcode = 0;
    while (this.#state === "open") {
      if (!await this.#reader.fill(2)) return;
      const header = this.#reader.peek();
      const fin = (header[0]! & 0x80) !== 0;
      const opcode = header[0]! & 0x0f;
      const masked = (header[1]! & 0x80) !== 0;
      const short = header[1]! & 0x7f;
      if ((header[0]! & 0x70) !== 0) return this.#refuse("Frame has reserved bits set");
      if (masked !== (this.#role === "server")) {
        return this.#refuse(masked ? "Frame from a server is masked" : "Frame is not masked");
      }
      const extended = short === 126 ? 2 : short === 127 ? 8 : 0;
      const headerBytes = 2 + extended + (masked ? 4 : 0);
      if (!await this.#reader.fill(headerBytes)) return;
      const bytes = this.#reader.peek();
      const view = new DataView(bytes.buffer, bytes.byteOffset, headerBytes);
      let length = short;
      if (extended === 2) length = view.getUint16(2);
      // Anything past 2^32 is over any limit; the count stays exact below it.
      if (extended === 8) length = view.getUint32(2) > 0 ? Infinity : view.getUint32(6);
      if (opcode >= 8) {
        if (opcode !== OPCODE.close && opcode !== OPCODE.ping && opcode !== OPCODE.pong) {
          return this.#refuse(`Frame has unknown opcode ${opcode}`);
        }
        if (!fin || length > 125) return this.#refuse("Control frame is fragmented or long");
      } else {
        if (opcode > OPCODE.binary) return this.#refuse(`Frame has unknown opcode ${opcode}`);
        if ((opcode === OPCODE.continuation) !== (messageOpcode !== 0)) {
          return this.#refuse("Frame breaks the fragmentation of a message");
        }
        if (messageBytes + length > this.maxMessageBytes) {
          const size = Number.isFinite(length) ? `${messageBytes + length} bytes` : "over 4 GiB";
          return this.#refuse(`Frame is ${size}, over the limit of ${this.maxMessageBytes}`);
        }
      }
      const mask = masked ? bytes.slice(headerBytes - 4, headerBytes) : undefined;
      this.#reader.consume(headerBytes);
      const payload = await this.#reader.readExactly(length);
      if (payload === null) return;
      if (mask !== undefined) {
        for (let i = 0; i < payload.length; i++) payload[i]! ^= mask[i & 3]!;
      }
      this.lastReceivedAt = this.#clock.now();
      if (opcode === OPCODE.close) return this.#answerClose(payload);
      if (opcode === OPCODE.ping) {
        this.#enqueue(this.#frame(OPCODE.pong, payload));
        continue;
      }
      if (opcode === OPCODE.pong) continue;
      if (opcode !== OPCODE.continuation) messageOpcode = opcode;
      message.push(payload);
      messageBytes += payload.length;
      if (!fin) continue;
      const whole = message.length === 1 ? message[0]! : joinAll(message, messageBytes);
      const kind = messageOpcode;
      message = [];
      messageBytes = 0;
      messageOpcode = 0;
      if (kind === OPCODE.binary) {
        this.onmessage(whole);
        continue;
      }
      let text: string;
      try {
        text = new TextDecoder("utf-8", { fatal: true }).decode(whole);
      } catch {
        return this.#refuse("Text frame is not valid UTF-8");
      }
      this.onmessage(text);
    }
  }

  #refuse(reason: string): void {
    if (this.#state !== "open") return;
    this.onrefused(reason);
    // The frame's payload, if any, is never read: the stream can no longer be parsed.
    if (this.#state === "open") this.close(1002);
  }

  #answerClose(payload: Uint8Array): void {
    const code = payload.length >= 2 ? (payload[0]! << 8) | payload[1]! : 1005;
    if (this.#state === "open") {
      // Echo the code, as RFC 6455 §5.5.1 asks; 1005 may not be sent.
      this.close(code === 1005 ? 1000 : code);
    }
    this.#closeCode = code;
  }

  /** While closing: reads and drops whatever still comes, until the end or the grace runs out. */
  async #drain(): Promise<void> {
    const scratch = new Uint8Array(16 * 1024);
    this.#reader.consume(this.#reader.buffered);
    try {
      while (this.#state === "closing" && await this.#conn.read(scratch) !== null) {
        // Dropped.
      }
    } catch {
      // Closed under the read.
    }
    this.#finish();
  }

  #finish(): void {
    if (this.#state === "closed") return;
    this.#state = "closed";
    this.#cancelGrace?.();
    this.#queue = [];
    this.#queuedBytes = 0;
    closeQuietly(this.#conn);
    this.onclose(this.#closeCode);
    this.#resolveClosed();
  }
}

function joinAll(parts: Uint8Array[], total: number): Uint8Array {
  const bytes = new Uint8Array(total);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}
