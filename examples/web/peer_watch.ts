/**
 * The launcher's reader of one peer's `GET /events` stream (`examples/kv/observe.ts`): parses
 * and checks each snapshot, says when the peer goes silent or its stream ends, and reconnects
 * with backoff while the peer's process should be running.
 *
 * @module
 */

import { parseSnapshot, type PeerSnapshot } from "../kv/observe.ts";
import type { Reachability } from "./cluster_view.ts";

/** Options for {@linkcode PeerWatch}. */
export interface PeerWatchOptions {
  /** The peer's HTTP address. */
  httpUrl: string;
  /** The most time between snapshots to ask the peer for, in ms. */
  intervalMs: number;
  /** Whether the peer's process should be running: the watch reconnects only then. */
  shouldConnect(): boolean;
  /** Called with each snapshot. */
  onSnapshot(snapshot: PeerSnapshot): void;
  /** Called when the peer is heard again, goes silent, or its stream ends. */
  onReachability(reachability: Reachability, reason: string): void;
}

/** A stream silent for this long makes its peer unresponsive (the peer sends every second). */
const SILENT_MS = 2000;
/** Reconnection backoff bounds, in ms. */
const FIRST_RETRY_MS = 250;
const MAX_RETRY_MS = 2000;
/** A frame longer than this is refused and the stream dropped. */
const MAX_FRAME_CHARS = 1 << 20;

/** Watches one peer until closed. */
export class PeerWatch {
  readonly #options: PeerWatchOptions;
  readonly #http = Deno.createHttpClient({});
  readonly #abort = new AbortController();
  readonly #running: Promise<void>;
  #wake: (() => void) | null = null;

  /** Starts watching at once. */
  constructor(options: PeerWatchOptions) {
    this.#options = options;
    this.#running = this.#run();
  }

  /** Connects now rather than after the backoff (say, the peer was just restarted). */
  connect(): void {
    this.#wake?.();
  }

  /** Stops watching; resolves once nothing is left running. */
  async close(): Promise<void> {
    this.#abort.abort();
    this.#wake?.();
    await this.#running;
    this.#http.close();
  }

  async #run(): Promise<void> {
    let retryMs = FIRST_RETRY_MS;
    while (!this.#abort.signal.aborted) {
      if (!this.#options.shouldConnect()) {
        await this.#sleep(Infinity);
        continue;
      }
      let heard = false;
      let reason: string;
      try {
        heard = await this.#stream();
        reason = "its status stream ended";
      } catch (error) {
        reason = `its status stream failed (${error instanceof Error ? error.message : error})`;
      }
      if (this.#abort.signal.aborted) break;
      this.#options.onReachability("lost", reason);
      retryMs = heard ? FIRST_RETRY_MS : Math.min(MAX_RETRY_MS, retryMs * 2);
      await this.#sleep(retryMs);
    }
  }

  /** Sleeps `ms`, or until woken by connect() or close(). */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const done = () => {
        clearTimeout(timer);
        this.#wake = null;
        resolve();
      };
      if (ms !== Infinity) timer = setTimeout(done, ms);
      this.#wake = done;
    });
  }

  /** Reads one stream until it ends; resolves to whether any snapshot came. */
  async #stream(): Promise<boolean> {
    // The abort stops a fetch still waiting for its headers; once the body flows, close()
    // cancels the reader, which settles its pending read at once whatever the connection does.
    const abort = new AbortController();
    let reader: ReadableStreamDefaultReader<string> | null = null;
    const stop = () => {
      abort.abort();
      reader?.cancel().catch(() => {});
    };
    this.#abort.signal.addEventListener("abort", stop);
    let silence: ReturnType<typeof setTimeout> | undefined;
    const listen = () => {
      clearTimeout(silence);
      silence = setTimeout(
        () => this.#options.onReachability("unresponsive", `no status for ${SILENT_MS / 1000} s`),
        SILENT_MS,
      );
    };
    let heard = false;
    try {
      const response = await fetch(
        `${this.#options.httpUrl}/events?interval=${this.#options.intervalMs}`,
        { client: this.#http, signal: abort.signal },
      );
      if (!response.ok || response.body === null) {
        await response.body?.cancel();
        throw new Error(`HTTP ${response.status}`);
      }
      listen();
      reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (let read = await reader.read(); !read.done; read = await reader.read()) {
        buffer += read.value;
        if (buffer.length > MAX_FRAME_CHARS) {
          throw new Error(`a frame over ${MAX_FRAME_CHARS} characters`);
        }
        let end: number;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const data = block.split("\n").filter((line) => line.startsWith("data:"))
            .map((line) => line.slice(5).trimStart()).join("\n");
          if (data === "") continue;
          const snapshot = parseSnapshot(JSON.parse(data));
          listen();
          this.#options.onSnapshot(snapshot);
          this.#options.onReachability("up", "");
          heard = true;
        }
      }
      return heard;
    } catch (error) {
      if (abort.signal.aborted) return heard;
      throw error;
    } finally {
      clearTimeout(silence);
      this.#abort.signal.removeEventListener("abort", stop);
      await reader?.cancel().catch(() => {});
    }
  }
}
