/**
 * Buffered reading from a connection with bounds: an HTTP head up to a byte limit, and exact byte
 * counts for WebSocket frames. Nothing here grows a buffer past what the caller allowed.
 *
 * @module
 */

/** What a {@linkcode ByteReader} reads from: a `Deno.Conn`, or anything with its `read`. */
export interface ByteSource {
  /** Reads into `buffer`; resolves to the count read, or `null` at the end of the stream. */
  read(buffer: Uint8Array): Promise<number | null>;
}

/** Bytes of the buffer for small reads; larger payloads get their own array. */
const CHUNK_BYTES = 16 * 1024;

/** The end of an HTTP head. */
const HEAD_END = [13, 10, 13, 10];

/** Reads a connection through a buffer of its own. */
export class ByteReader {
  readonly #source: ByteSource;
  #buffer: Uint8Array;
  #start = 0;
  #end = 0;

  /**
   * Reads `source` through a buffer of `capacity` bytes (default 16 KiB); it grows, by doubling,
   * only when a caller asks for more at once.
   */
  constructor(source: ByteSource, capacity: number = CHUNK_BYTES) {
    this.#source = source;
    this.#buffer = new Uint8Array(capacity);
  }

  /** Bytes read from the source and not yet consumed. */
  get buffered(): number {
    return this.#end - this.#start;
  }

  /** The buffered bytes, as a view valid until the next read. */
  peek(): Uint8Array {
    return this.#buffer.subarray(this.#start, this.#end);
  }

  /** Drops the first `count` buffered bytes. */
  consume(count: number): void {
    this.#start += count;
    if (this.#start === this.#end) this.#start = this.#end = 0;
  }

  /**
   * Reads until at least `count` bytes are buffered; resolves `false` if the stream ends first.
   * The caller bounds `count`: the buffer grows to hold it, to at most twice its size.
   */
  async fill(count: number): Promise<boolean> {
    while (this.buffered < count) {
      if (count > this.#buffer.length) {
        const grown = new Uint8Array(Math.max(count, 2 * this.#buffer.length));
        grown.set(this.peek());
        this.#end -= this.#start;
        this.#start = 0;
        this.#buffer = grown;
      } else if (this.#buffer.length - this.#start < count) {
        this.#buffer.copyWithin(0, this.#start, this.#end);
        this.#end -= this.#start;
        this.#start = 0;
      }
      const read = await this.#source.read(this.#buffer.subarray(this.#end));
      if (read === null) return false;
      this.#end += read;
    }
    return true;
  }

  /**
   * Reads exactly `count` bytes into an array of their own (a frame's payload); resolves `null`
   * if the stream ends first. The caller bounds `count`.
   */
  async readExactly(count: number): Promise<Uint8Array | null> {
    const bytes = new Uint8Array(count);
    const fromBuffer = Math.min(count, this.buffered);
    bytes.set(this.#buffer.subarray(this.#start, this.#start + fromBuffer));
    this.consume(fromBuffer);
    let filled = fromBuffer;
    while (filled < count) {
      const read = await this.#source.read(bytes.subarray(filled));
      if (read === null) return null;
      filled += read;
    }
    return bytes;
  }

  /**
   * Reads an HTTP head: the bytes up to the first empty line, which are consumed with it.
   * Resolves `"too large"` once the head would exceed `maxBytes`, and `null` if the stream ends
   * first.
   */
  async readHead(maxBytes: number): Promise<Uint8Array | "too large" | null> {
    let searchFrom = 0;
    for (;;) {
      const view = this.peek();
      const end = indexOfHeadEnd(view, searchFrom);
      if (end >= 0) {
        if (end + HEAD_END.length > maxBytes) return "too large";
        const head = view.slice(0, end);
        this.consume(end + HEAD_END.length);
        return head;
      }
      if (view.length >= maxBytes) return "too large";
      searchFrom = Math.max(0, view.length - HEAD_END.length + 1);
      if (!await this.fill(Math.min(maxBytes, view.length + 1))) return null;
    }
  }

  /** Takes every buffered byte out of the reader (e.g. to hand the connection on). */
  takeBuffered(): Uint8Array {
    const rest = this.peek().slice();
    this.consume(rest.length);
    return rest;
  }
}

function indexOfHeadEnd(bytes: Uint8Array, from: number): number {
  for (let i = from; i + HEAD_END.length <= bytes.length; i++) {
    if (
      bytes[i] === 13 && bytes[i + 1] === 10 && bytes[i + 2] === 13 && bytes[i + 3] === 10
    ) {
      return i;
    }
  }
  return -1;
}
