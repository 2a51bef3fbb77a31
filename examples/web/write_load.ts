/**
 * Writes to the key/value cluster at a chosen rate, open loop (a write starts on schedule
 * whether or not earlier ones finished, up to a bound), so a person can watch commits flow and
 * see what a failure does to them. Keys cycle over 100 names, so the service's data stays small
 * (its Raft log still grows by one entry per write).
 *
 * @module
 */

/** The highest rate {@linkcode WriteLoad.setRate} takes, in writes per second. */
export const MAX_WRITE_RATE = 1000;

/** Writes in flight at most; past it, scheduled writes are skipped and counted as such. */
const MAX_IN_FLIGHT = 64;
/** How long one write may take before it counts as failed. */
const WRITE_TIMEOUT_MS = 4000;
const TICK_MS = 100;
const REPORT_MS = 1000;

/** What the load did over the last second. */
export interface WriteStats {
  /** The rate asked for, in writes per second. */
  rate: number;
  /** Writes started per second. */
  sentPerSecond: number;
  /** Writes the leader acknowledged (committed) per second. */
  acknowledgedPerSecond: number;
  /** Writes that failed per second (no leader known, refused, timed out), or skipped. */
  failedPerSecond: number;
  /** Median time to acknowledgement, in ms, or null without any. */
  p50Ms: number | null;
  /** Writes in flight now. */
  inFlight: number;
  /** Why the last failed write failed, or null. */
  lastError: string | null;
}

/** Options for {@linkcode WriteLoad}. */
export interface WriteLoadOptions {
  /** The HTTP address of the peer to write to (the leader, if known), or null. */
  target(): string | null;
  /** Called every second while writes run, and once when they stop. */
  onStats(stats: WriteStats): void;
}

/** A write load; rate 0 until {@linkcode WriteLoad.setRate}. */
export class WriteLoad {
  readonly #options: WriteLoadOptions;
  readonly #http = Deno.createHttpClient({});
  readonly #inFlight = new Set<Promise<void>>();
  readonly #abort = new AbortController();
  #rate = 0;
  #credit = 0;
  #sequence = 0;
  #timer: ReturnType<typeof setTimeout> | null = null;
  #lastTickAt = 0;
  #reportAt = 0;
  #window = { sent: 0, acknowledged: 0, failed: 0, latencies: [] as number[] };
  #lastError: string | null = null;

  /** A load that writes through `options.target()`. */
  constructor(options: WriteLoadOptions) {
    this.#options = options;
  }

  /** The rate asked for, in writes per second. */
  get rate(): number {
    return this.#rate;
  }

  /**
   * Writes `perSecond` times a second from now on (0 stops).
   *
   * @throws {RangeError} If `perSecond` is not a whole number from 0 to {@linkcode MAX_WRITE_RATE}.
   */
  setRate(perSecond: number): void {
    if (!Number.isInteger(perSecond) || perSecond < 0 || perSecond > MAX_WRITE_RATE) {
      throw new RangeError(
        `Write rate must be a whole number from 0 to ${MAX_WRITE_RATE} per second, got ${perSecond}`,
      );
    }
    this.#rate = perSecond;
    this.#credit = 0;
    if (this.#timer === null && perSecond > 0) {
      const now = performance.now();
      this.#lastTickAt = now;
      this.#reportAt = now + REPORT_MS;
      this.#timer = setTimeout(() => this.#tick(), 0);
    }
  }

  /** Stops writing and waits for the writes in flight. */
  async close(): Promise<void> {
    this.#rate = 0;
    if (this.#timer !== null) clearTimeout(this.#timer);
    this.#timer = null;
    this.#abort.abort();
    await Promise.all(this.#inFlight);
    this.#http.close();
  }

  #tick(): void {
    const now = performance.now();
    // At most a fifth of a second's writes at once, after a stall of the event loop.
    this.#credit = Math.min(
      this.#credit + this.#rate * (now - this.#lastTickAt) / 1000,
      Math.max(1, this.#rate / 5),
    );
    this.#lastTickAt = now;
    while (this.#credit >= 1) {
      this.#credit--;
      if (this.#inFlight.size >= MAX_IN_FLIGHT) {
        this.#failed(`${MAX_IN_FLIGHT} writes in flight; write skipped`);
        continue;
      }
      this.#start();
    }
    if (now >= this.#reportAt) {
      this.#report(now);
      this.#reportAt = now + REPORT_MS;
    }
    // Keep reporting until the writes in flight are done, then once more, and stop.
    if (this.#rate > 0 || this.#inFlight.size > 0) {
      this.#timer = setTimeout(() => this.#tick(), TICK_MS);
    } else {
      this.#timer = null;
      this.#report(now);
    }
  }

  #report(now: number): void {
    const seconds = Math.max(0.001, (now - (this.#reportAt - REPORT_MS)) / 1000);
    const { sent, acknowledged, failed, latencies } = this.#window;
    latencies.sort((a, b) => a - b);
    this.#options.onStats({
      rate: this.#rate,
      sentPerSecond: Math.round(sent / seconds),
      acknowledgedPerSecond: Math.round(acknowledged / seconds),
      failedPerSecond: Math.round(failed / seconds),
      p50Ms: latencies.length === 0
        ? null
        : Math.round(latencies[latencies.length >> 1]! * 10) / 10,
      inFlight: this.#inFlight.size,
      lastError: this.#lastError,
    });
    this.#window = { sent: 0, acknowledged: 0, failed: 0, latencies: [] };
  }

  #failed(reason: string): void {
    this.#window.failed++;
    this.#lastError = reason;
  }

  #start(): void {
    const target = this.#options.target();
    if (target === null) return this.#failed("no leader known");
    const n = ++this.#sequence;
    this.#window.sent++;
    const write = this.#write(`${target}/kv/web-${n % 100}`, `value ${n}`);
    this.#inFlight.add(write);
    write.finally(() => this.#inFlight.delete(write));
  }

  async #write(url: string, value: string): Promise<void> {
    const startedAt = performance.now();
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), WRITE_TIMEOUT_MS);
    const stop = () => abort.abort();
    this.#abort.signal.addEventListener("abort", stop);
    try {
      const response = await fetch(url, {
        method: "PUT",
        body: value,
        client: this.#http,
        signal: abort.signal,
      });
      await response.body?.cancel();
      if (response.ok) {
        this.#window.acknowledged++;
        this.#window.latencies.push(performance.now() - startedAt);
      } else {
        this.#failed(`HTTP ${response.status} from ${new URL(url).host}`);
      }
    } catch (error) {
      this.#failed(
        abort.signal.aborted
          ? `no answer within ${WRITE_TIMEOUT_MS} ms`
          : `${error instanceof Error ? error.message : error}`,
      );
    } finally {
      clearTimeout(timer);
      this.#abort.signal.removeEventListener("abort", stop);
    }
  }
}
