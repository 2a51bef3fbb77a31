/**
 * A client of the key/value service as a Jepsen run drives it: one operation at a time on a
 * small set of keys, with per-attempt timeouts, retries that follow the peers' 421 hints, and a
 * session (`X-Client-Id`, `X-Request-Seq`) so that a retried write keeps its number and applies
 * at most once. Every operation goes into a {@linkcode HistoryRecorder} from its first send to
 * its final answer, settled with what the client can know:
 *
 * - 200 (or 404 for a read): `ok`, with the value read;
 * - a read that got no answer: `fail` (a read changes nothing);
 * - a write or delete refused on every attempt before taking effect (400, 409, 421, connection
 *   refused): `fail`;
 * - a write or delete with an attempt that may have been proposed (a timeout, a dropped
 *   connection, a 503, the run ending; a 409 after such an attempt): `unknown`.
 *
 * `PUT` and `DELETE` answer the previous value; the checker's register has no swap, so they are
 * recorded as a plain write and delete and the previous value is not checked.
 *
 * @module
 */

import type { HistoryRecorder } from "../../src/linearizability/mod.ts";
import type { RandomSource } from "../../src/clock.ts";
import { sleep } from "./cluster.ts";

/** How a read is served: by the leader after ReadIndex, by any peer (follower read), on lease. */
export type ReadMode = "leader" | "follower" | "lease";

/** The operations clients issue, as counted in the figures: reads by how they are served. */
export type OperationLabel = "read" | "read (follower)" | "read (lease)" | "write" | "delete";

/** Every operation label, in the order the figures print them. */
export const OPERATION_LABELS: readonly OperationLabel[] = [
  "read",
  "read (follower)",
  "read (lease)",
  "write",
  "delete",
];

/** How an operation ended, from the client's point of view. */
export type Outcome = "ok" | "fail" | "unknown";

/** Counts of operations by label and outcome, and the times of the successful ones. */
export class OperationStats {
  /** `counts[label][outcome]`. */
  readonly counts: Record<OperationLabel, Record<Outcome, number>> = Object.fromEntries(
    OPERATION_LABELS.map((label) => [label, { ok: 0, fail: 0, unknown: 0 }]),
  ) as Record<OperationLabel, Record<Outcome, number>>;
  /** Return times (the recorder's clock) of operations that succeeded, in completion order. */
  readonly successTimes: number[] = [];
  /** Attempts answered by status code or error name, e.g. `"421"`, `"timeout"`, `"refused"`. */
  readonly attempts: Record<string, number> = {};

  /** Counts one finished operation; `at` is its return time if it succeeded. */
  record(label: OperationLabel, outcome: Outcome, at: number): void {
    this.counts[label][outcome]++;
    if (outcome === "ok") this.successTimes.push(at);
  }
}

/** What a client does; see {@linkcode JepsenClient}. */
export interface JepsenClientOptions {
  /** The client's number in the history. */
  id: number;
  /** Each peer's HTTP address. */
  httpUrls: readonly string[];
  /** Where operations are recorded; shared by every client of a run, for one clock. */
  recorder: HistoryRecorder;
  /** Where counts go; may be shared. */
  stats: OperationStats;
  /** The recorder's clock, for the times of successful operations in `stats`. */
  now: () => number;
  /** The client's own random source (operations, keys, peers, pauses). */
  random: RandomSource;
  /** The keys it works on. */
  keys: readonly string[];
  /** Fraction of operations that are reads (the rest: 70% writes, 30% deletes). */
  readFraction: number;
  /** Fraction of reads sent to a random peer with `?consistent=follower`. */
  followerReadFraction: number;
  /**
   * How the other reads go to the leader: a plain `GET` (ReadIndex), or `?consistent=lease`
   * (the peers need `--lease-reads`).
   */
  leaderReads: "leader" | "lease";
  /**
   * How long one HTTP attempt may take, in ms. A long one lets an answer from a peer that was
   * paused mid-request come back; a short one finds a new leader sooner.
   */
  attemptTimeoutMs: number;
  /** How long one operation may take, retries included, in ms. */
  operationTimeoutMs: number;
  /** A prefix for session ids, unique to the run. */
  sessionPrefix: string;
  /** Called after each attempt, for a trace of the run. Default: nothing. */
  onAttempt?: (event: AttemptEvent) => void;
}

/** One HTTP attempt, as {@linkcode JepsenClientOptions.onAttempt} sees it. */
export interface AttemptEvent {
  /** The client. */
  client: number;
  /** When it was sent, by the recorder's clock. */
  sent: number;
  /** When it ended, by the recorder's clock. */
  ended: number;
  /** The peer it went to. */
  peer: number;
  /** The HTTP method. */
  method: string;
  /** The key. */
  key: string;
  /** The query string, e.g. `?consistent=follower`, or empty. */
  query: string;
  /** The status, or what went wrong: `"timeout"`, `"connection refused"`, ... */
  answer: string;
  /** The value read or written, if any. */
  value: string | null | undefined;
}

/** What one attempt learned. */
type Attempt =
  | { kind: "answer"; status: number; body: Record<string, unknown> }
  /** The request was never sent: the connection was refused. */
  | { kind: "refused" }
  /** The request may have been received: a timeout, a reset, a body cut short. */
  | { kind: "lost"; reason: string }
  /** The run stopped this client. */
  | { kind: "stopped" };

/** One simulated user of the service. */
export class JepsenClient {
  readonly #options: JepsenClientOptions;
  readonly #http = Deno.createHttpClient({});
  #leader = 0;
  #session = 0;
  #seq = 0;
  #written = 0;

  /** A client that starts by sending to peer 0, with a fresh session. */
  constructor(options: JepsenClientOptions) {
    this.#options = options;
    this.#leader = Math.floor(options.random() * options.httpUrls.length);
    this.#newSession();
  }

  /** Issues operations one after another until `stop` aborts; the one in flight then ends. */
  async run(stop: AbortSignal): Promise<void> {
    try {
      while (!stop.aborted) {
        await this.#operation(stop);
        // A short, random think time, so clients do not move in lockstep.
        await sleep(Math.floor(this.#options.random() * 10));
      }
    } finally {
      this.#http.close();
    }
  }

  #newSession(): void {
    this.#session++;
    this.#seq = 0;
  }

  get #clientId(): string {
    return `${this.#options.sessionPrefix}-c${this.#options.id}-s${this.#session}`;
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#options.random() * items.length)]!;
  }

  async #operation(stop: AbortSignal): Promise<void> {
    const { random, keys, readFraction, followerReadFraction, leaderReads } = this.#options;
    const key = this.#pick(keys);
    const draw = random();
    if (draw < readFraction) {
      const mode = random();
      const readMode: ReadMode = mode < followerReadFraction ? "follower" : leaderReads;
      await this.#read(key, readMode, stop);
    } else if (draw < readFraction + (1 - readFraction) * 0.7) {
      await this.#change(key, "write", `${this.#options.id}.${++this.#written}`, stop);
    } else {
      await this.#change(key, "delete", undefined, stop);
    }
  }

  async #read(key: string, mode: ReadMode, stop: AbortSignal): Promise<void> {
    const { recorder, stats, id, httpUrls } = this.#options;
    const label: OperationLabel = mode === "leader"
      ? "read"
      : mode === "follower"
      ? "read (follower)"
      : "read (lease)";
    const query = mode === "leader" ? "" : `?consistent=${mode}`;
    const operation = recorder.invoke(id, key, "read");
    const deadline = performance.now() + this.#options.operationTimeoutMs;
    // A follower read goes to any peer; the others to the leader as far as this client knows.
    let peer = mode === "follower" ? Math.floor(this.#options.random() * httpUrls.length) : -1;
    while (performance.now() < deadline && !stop.aborted) {
      const target = mode === "follower" ? peer : this.#leader;
      const attempt = await this.#send(target, "GET", key, query, undefined, {}, deadline, stop);
      if (attempt.kind === "answer" && (attempt.status === 200 || attempt.status === 404)) {
        const value = attempt.body.value;
        operation.ok(typeof value === "string" ? value : null);
        stats.record(label, "ok", this.#options.now());
        return;
      }
      if (attempt.kind === "answer" && attempt.status === 400) break;
      if (mode === "follower") {
        // Any peer will do: try the next one. Whether this one failed says nothing about who
        // leads, so the client's idea of the leader stays.
        peer = (peer + 1) % httpUrls.length;
        await this.#backOff();
      } else if (!this.#followHint(attempt, target)) {
        await this.#backOff();
      }
    }
    // A read that got no answer changed nothing.
    operation.fail();
    stats.record(label, "fail", this.#options.now());
  }

  async #change(
    key: string,
    kind: "write" | "delete",
    value: string | undefined,
    stop: AbortSignal,
  ): Promise<void> {
    const { recorder, stats, id } = this.#options;
    const operation = kind === "write"
      ? recorder.invoke(id, key, "write", value!)
      : recorder.invoke(id, key, "delete");
    const seq = ++this.#seq; // kept by every retry of this operation
    const headers = { "x-client-id": this.#clientId, "x-request-seq": String(seq) };
    const method = kind === "write" ? "PUT" : "DELETE";
    const deadline = performance.now() + this.#options.operationTimeoutMs;
    /** Whether some attempt may have reached a peer that proposed it. */
    let mayHaveApplied = false;
    let refused = false;
    while (performance.now() < deadline && !stop.aborted) {
      const target = this.#leader;
      const attempt = await this.#send(target, method, key, "", value, headers, deadline, stop);
      if (attempt.kind === "answer" && attempt.status === 200) {
        operation.ok();
        stats.record(kind, "ok", this.#options.now());
        return;
      }
      if (attempt.kind === "lost" || attempt.kind === "stopped") mayHaveApplied = true;
      if (attempt.kind === "answer") {
        // 503: proposed, and not committed in time (or dropped by a leader change, or refused
        // before proposing: the answer does not say which). Anything unexpected: assume the worst.
        if (![400, 409, 421].includes(attempt.status)) mayHaveApplied = true;
        if (attempt.status === 400 || attempt.status === 409) {
          // 409: this attempt found the session gone; an earlier one may still have applied.
          if (attempt.status === 409) this.#newSession();
          refused = true;
          break;
        }
      }
      if (!this.#followHint(attempt, target)) await this.#backOff();
    }
    const outcome: Outcome = mayHaveApplied ? "unknown" : "fail";
    if (outcome === "unknown") operation.unknown();
    else operation.fail();
    stats.record(kind, outcome, this.#options.now());
    if (refused) {
      stats.attempts["refused operations"] = (stats.attempts["refused operations"] ?? 0) + 1;
    }
  }

  /**
   * After a failed attempt on `peer`: moves to the leader a 421 names and returns true, or moves
   * on to the next peer and returns false.
   */
  #followHint(attempt: Attempt, peer: number): boolean {
    if (attempt.kind === "answer" && attempt.status === 421) {
      const hinted = typeof attempt.body.leader === "string"
        ? this.#options.httpUrls.indexOf(attempt.body.leader)
        : -1;
      if (hinted >= 0 && hinted !== peer) {
        this.#leader = hinted;
        return true;
      }
    }
    if (this.#leader === peer) this.#leader = (peer + 1) % this.#options.httpUrls.length;
    return false;
  }

  /** Waits 50 to 150 ms, so a cluster mid-election is not hammered. */
  #backOff(): Promise<undefined> {
    return sleep(50 + Math.floor(this.#options.random() * 100));
  }

  async #send(
    peer: number,
    method: string,
    key: string,
    query: string,
    body: string | undefined,
    headers: Record<string, string>,
    deadline: number,
    stop: AbortSignal,
  ): Promise<Attempt> {
    const { stats } = this.#options;
    const abort = new AbortController();
    const timeoutMs = Math.max(
      1,
      Math.min(this.#options.attemptTimeoutMs, deadline - performance.now()),
    );
    let timedOut = false;
    const timer = setTimeout(() => {
      timedOut = true;
      abort.abort();
    }, timeoutMs);
    const onStop = () => abort.abort();
    stop.addEventListener("abort", onStop, { once: true });
    const sent = this.#options.now();
    const count = (what: string, value?: string | null) => {
      stats.attempts[what] = (stats.attempts[what] ?? 0) + 1;
      this.#options.onAttempt?.({
        client: this.#options.id,
        sent,
        ended: this.#options.now(),
        peer,
        method,
        key,
        query,
        answer: what,
        value: method === "GET" ? value : body,
      });
    };
    try {
      const response = await fetch(
        `${this.#options.httpUrls[peer]}/kv/${encodeURIComponent(key)}${query}`,
        {
          method,
          headers,
          client: this.#http,
          signal: abort.signal,
          ...(body === undefined ? {} : { body }),
        },
      );
      const parsed: unknown = await response.json();
      const fields = typeof parsed === "object" && parsed !== null ? parsed : {};
      const value = (fields as Record<string, unknown>).value;
      count(String(response.status), typeof value === "string" ? value : null);
      return { kind: "answer", status: response.status, body: fields as Record<string, unknown> };
    } catch (error) {
      if (stop.aborted && !timedOut) return (count("stopped"), { kind: "stopped" });
      if (timedOut) return (count("timeout"), { kind: "lost", reason: "timeout" });
      const message = error instanceof Error ? error.message : String(error);
      // Nothing was sent: the peer is down (killed, or restarting).
      if (/Connection refused|os error 111/.test(message)) {
        return (count("connection refused"), { kind: "refused" });
      }
      count("connection lost");
      return { kind: "lost", reason: message };
    } finally {
      clearTimeout(timer);
      stop.removeEventListener("abort", onStop);
    }
  }
}
