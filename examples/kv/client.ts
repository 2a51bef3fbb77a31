/**
 * A client for the replicated key/value service: finds the leader by following the peers'
 * hints, and retries with the same request id, so a write applies once even when a retry
 * repeats a request that did commit. It always sends its session (client id and request number):
 * a client that never retries can still have a request sent twice, since `fetch` silently sends
 * a request again when a pooled keep-alive connection dies as it is sent, and without a session
 * the service would apply such a write twice.
 *
 * @module
 */

/** Options for {@linkcode KvClient}. */
export interface KvClientOptions {
  /** This client's id for duplicate detection. Default: a random UUID. */
  clientId?: string;
  /** How long one operation may take, retries included, in ms. Default 15000. */
  deadlineMs?: number;
  /** How long one HTTP attempt may take, in ms. Default 4000: longer than a peer's commit wait. */
  attemptTimeoutMs?: number;
  /** Called on each failed attempt, for a progress display. Default: nothing. */
  onRetry?: (peer: number, reason: string) => void;
}

/** What a `get` found. */
export type KvValue = string | null;

/** Talks to the peers at `httpUrls`; one request at a time. */
export class KvClient {
  readonly #httpUrls: readonly string[];
  #clientId: string;
  readonly #deadlineMs: number;
  readonly #attemptTimeoutMs: number;
  readonly #onRetry: (peer: number, reason: string) => void;
  readonly #http = Deno.createHttpClient({});
  #seq = 0;
  #leader = 0;

  /** A client for the peers whose HTTP addresses are `httpUrls`. */
  constructor(httpUrls: readonly string[], options: KvClientOptions = {}) {
    this.#httpUrls = httpUrls;
    this.#clientId = options.clientId ?? crypto.randomUUID();
    this.#deadlineMs = options.deadlineMs ?? 15000;
    this.#attemptTimeoutMs = options.attemptTimeoutMs ?? 4000;
    this.#onRetry = options.onRetry ?? (() => {});
  }

  /** The peer this client last found leading. */
  get leader(): number {
    return this.#leader;
  }

  /** Sets `key` to `value`; resolves to the previous value. */
  async put(key: string, value: string): Promise<KvValue> {
    return (await this.#request("PUT", key, value)).previous ?? null;
  }

  /**
   * The value of `key`, or `null`; linearizable. With `consistent: "follower"`, any peer may
   * serve it (it asks the leader for a read index); with `"lease"`, the leader serves it on its
   * lease (if the peers run with `--lease-reads`).
   */
  async get(key: string, options: { consistent?: "follower" | "lease" } = {}): Promise<KvValue> {
    const query = options.consistent === undefined ? "" : `?consistent=${options.consistent}`;
    return (await this.#request("GET", key, undefined, query)).value ?? null;
  }

  /** Deletes `key`; resolves to the previous value. */
  async delete(key: string): Promise<KvValue> {
    return (await this.#request("DELETE", key)).previous ?? null;
  }

  /** Releases the client's connections. */
  close(): void {
    this.#http.close();
  }

  async #request(
    method: string,
    key: string,
    body?: string,
    query = "",
  ): Promise<{ value?: KvValue; previous?: KvValue }> {
    const seq = ++this.#seq; // the same seq on every retry of this request
    const deadline = Date.now() + this.#deadlineMs;
    let lastReason = "no attempt";
    while (Date.now() < deadline) {
      const peer = this.#leader;
      let response: Response;
      try {
        response = await fetch(`${this.#httpUrls[peer]}/kv/${encodeURIComponent(key)}${query}`, {
          method,
          ...(body === undefined ? {} : { body }),
          headers: { "x-client-id": this.#clientId, "x-request-seq": String(seq) },
          client: this.#http,
          signal: AbortSignal.timeout(this.#attemptTimeoutMs),
        });
      } catch (error) {
        lastReason = `peer ${peer} unreachable (${error instanceof Error ? error.name : error})`;
        await this.#next(peer, lastReason);
        continue;
      }
      const reply: unknown = await response.json().catch(() => undefined);
      const fields = (typeof reply === "object" && reply !== null ? reply : {}) as Record<
        string,
        unknown
      >;
      if (response.status === 200 || (response.status === 404 && method === "GET")) {
        return fields as { value?: KvValue; previous?: KvValue };
      }
      if (response.status === 409) {
        // The session expired (idle longer than the service keeps sessions): start a new one.
        // Only this request's retries could be applied twice, and the session outlived them.
        this.#clientId = crypto.randomUUID();
        this.#seq = 0;
        return await this.#request(method, key, body, query);
      }
      if (response.status === 421 && typeof fields.leader === "string") {
        const hinted = this.#httpUrls.indexOf(fields.leader);
        if (hinted >= 0 && hinted !== peer) {
          this.#leader = hinted;
          continue;
        }
      }
      lastReason = `peer ${peer} answered ${response.status} ${JSON.stringify(fields.error)}`;
      await this.#next(peer, lastReason);
    }
    throw new Error(`${method} ${key} failed for ${this.#deadlineMs} ms; last: ${lastReason}`);
  }

  /** Moves on to the next peer after a short pause, so a cluster mid-election is not hammered. */
  async #next(peer: number, reason: string): Promise<void> {
    this.#onRetry(peer, reason);
    this.#leader = (peer + 1) % this.#httpUrls.length;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
}
