/**
 * An in-memory network for tests, after the lab's `labrpc`: named client ends and servers,
 * connect and disconnect per end, crashes (a deleted server answers nothing), unreliable
 * delivery, long delays and long reordering, and RPC and byte counts. Every message is copied
 * through JSON, as a real transport would.
 *
 * @module
 */

import { type CancelTimer, type Clock, randomInt, type RandomSource, realClock } from "../clock.ts";
import type { ClientEnd, RpcHandler } from "../types.ts";

/** Options for {@linkcode MemoryNetwork}. */
export interface MemoryNetworkOptions {
  /** Time source for delays. Default: the real clock. */
  clock?: Clock;
  /** Random source for delays and losses. Default: `Math.random`. */
  random?: RandomSource;
  /**
   * Called with one line for each request as it reaches a server and each reply as it reaches the
   * caller, naming the end and carrying the JSON text; a simulator feeds these lines to its trace
   * digest. Default: none.
   */
  record?: (event: string) => void;
}

/**
 * Faults on one client end, for fault-injection runs such as the simulator's explorer; the lab's
 * tests never set them. Requests travel through the end to its server and replies travel back
 * through it, so a one-way cut from peer a to peer b is lost requests on a's end to b plus lost
 * replies on b's end to a. Every field defaults to no fault.
 */
export interface EndFaults {
  /** Probability that a request is lost on its way to the server. Default 0. */
  requestLoss?: number;
  /** Probability that a reply is lost on its way back. Default 0. */
  replyLoss?: number;
  /**
   * Probability that a request is delivered a second time, a little later; the caller sees the
   * first reply only. Default 0.
   */
  duplication?: number;
  /** Each request and each reply waits a further 0 to `maxDelayMs` ms, so they reorder. Default 0. */
  maxDelayMs?: number;
  /** Requests wait, neither delivered nor failed, until the end is unclogged. Default false. */
  requestsClogged?: boolean;
  /** Replies wait, neither delivered nor failed, until the end is unclogged. Default false. */
  repliesClogged?: boolean;
}

/** An end's faults, with what its clogs hold back. */
interface FaultState {
  faults: Required<EndFaults>;
  /** Messages held by a clog: each re-enters the fault path when released. */
  held: (() => void)[];
}

const noFaults: Required<EndFaults> = {
  requestLoss: 0,
  replyLoss: 0,
  duplication: 0,
  maxDelayMs: 0,
  requestsClogged: false,
  repliesClogged: false,
};

interface ServerRecord {
  handler: RpcHandler;
  /** Requests delivered to this server. */
  count: number;
}

interface EndRecord {
  serverName: string | null;
  enabled: boolean;
}

/** A call that has not resolved yet; `server` is set once it was delivered. */
interface PendingCall {
  resolve: (reply: unknown) => void;
  server: ServerRecord | null;
  cancelTimer: CancelTimer | null;
}

/**
 * The lab's simulated network. Ends are made with {@linkcode MemoryNetwork.makeEnd}, servers
 * added with {@linkcode MemoryNetwork.addServer}, and an end reaches a server once
 * {@linkcode MemoryNetwork.connect}ed and {@linkcode MemoryNetwork.enable}d.
 *
 * Unreliable mode delays each request 0-26 ms and loses 10% of requests and 10% of replies.
 * A request to a disabled end or a missing server gets no reply after 0-99 ms (0-6999 ms with
 * long delays). With long reordering, about 2/3 of replies are delayed by 200-2200 ms.
 *
 * Beyond the lab, {@linkcode MemoryNetwork.setEndFaults} gives one end its own faults (one-way
 * loss, clogs, duplication, long delays) for fault-injection runs, and the `record` option reports
 * every delivered message, for a simulator's trace digest. Neither changes the lab's behaviour.
 *
 * @example
 * ```ts
 * import { MemoryNetwork } from "@denoraft/raft";
 * const network = new MemoryNetwork();
 * network.addServer("echo", { handleRpc: (_method, args) => Promise.resolve(args) });
 * const end = network.makeEnd("client");
 * network.connect("client", "echo");
 * network.enable("client", true);
 * console.log(await end.call("Echo", { hello: 1 })); // { hello: 1 }
 * network.close();
 * ```
 */
export class MemoryNetwork {
  readonly #clock: Clock;
  readonly #random: RandomSource;
  readonly #record: ((event: string) => void) | null;
  readonly #faults = new Map<string, FaultState>();
  readonly #ends = new Map<string, EndRecord>();
  readonly #servers = new Map<string, ServerRecord>();
  readonly #pending = new Set<PendingCall>();
  /** Timers that release clogged messages; cancelled by close(). */
  readonly #releaseTimers = new Set<CancelTimer>();
  #reliable = true;
  #longDelays = false;
  #longReordering = false;
  #totalCount = 0;
  #totalBytes = 0;
  #closed = false;

  /** Creates an empty, reliable network. */
  constructor(options: MemoryNetworkOptions = {}) {
    this.#clock = options.clock ?? realClock;
    this.#random = options.random ?? Math.random;
    this.#record = options.record ?? null;
  }

  /** Creates a client end named `endName`, initially unconnected and disabled. */
  makeEnd(endName: string): ClientEnd {
    if (this.#ends.has(endName)) {
      throw new RangeError(`End ${JSON.stringify(endName)} already exists`);
    }
    this.#ends.set(endName, { serverName: null, enabled: false });
    return { call: (method, args) => this.#call(endName, method, args) };
  }

  /** Forgets an end; later calls through it get no reply. */
  deleteEnd(endName: string): void {
    this.#ends.delete(endName);
    this.#faults.delete(endName);
  }

  /** Adds (or replaces) the server `serverName`, answering with `handler`. */
  addServer(serverName: string, handler: RpcHandler): void {
    this.deleteServer(serverName);
    this.#servers.set(serverName, { handler, count: 0 });
  }

  /** Removes a server, as if it crashed: calls in flight to it and later calls get no reply. */
  deleteServer(serverName: string): void {
    const server = this.#servers.get(serverName);
    if (server === undefined) return;
    this.#servers.delete(serverName);
    for (const call of this.#pending) {
      if (call.server === server) this.#finish(call, undefined);
    }
  }

  /** Makes `endName` reach `serverName` (while enabled). */
  connect(endName: string, serverName: string): void {
    this.#endRecord(endName).serverName = serverName;
  }

  /** Enables or disables an end: a disabled end's calls get no reply. */
  enable(endName: string, enabled: boolean): void {
    this.#endRecord(endName).enabled = enabled;
  }

  /** Reliable (default) or unreliable delivery: short delays and 10% loss each way. */
  setReliable(reliable: boolean): void {
    this.#reliable = reliable;
  }

  /** Long delays (0-7 s instead of 0-100 ms) before a call to an unreachable server fails. */
  setLongDelays(longDelays: boolean): void {
    this.#longDelays = longDelays;
  }

  /** Long reordering: about 2/3 of replies are delayed by 200-2200 ms. */
  setLongReordering(longReordering: boolean): void {
    this.#longReordering = longReordering;
  }

  /**
   * Sets the faults of `endName`, replacing any earlier ones (`{}` clears them). Messages a clog
   * held back go on when it is lifted, each after a random delay of up to `maxDelayMs` (at least
   * 20 ms), so they arrive in random order.
   *
   * @throws {RangeError} If the end does not exist or a probability is outside [0, 1].
   */
  setEndFaults(endName: string, faults: EndFaults): void {
    this.#endRecord(endName);
    const full: Required<EndFaults> = { ...noFaults, ...faults };
    for (const key of ["requestLoss", "replyLoss", "duplication"] as const) {
      if (!(full[key] >= 0 && full[key] <= 1)) {
        throw new RangeError(`Fault ${key} must be a probability in [0, 1], got ${full[key]}`);
      }
    }
    if (!(full.maxDelayMs >= 0 && Number.isFinite(full.maxDelayMs))) {
      throw new RangeError(
        `Fault maxDelayMs must be a non-negative number, got ${full.maxDelayMs}`,
      );
    }
    const held = this.#faults.get(endName)?.held ?? [];
    this.#faults.set(endName, { faults: full, held: [] });
    const spread = Math.max(20, full.maxDelayMs);
    for (const release of held) {
      const cancel = this.#clock.schedule(randomInt(this.#random, 0, spread), () => {
        this.#releaseTimers.delete(cancel);
        release();
      });
      this.#releaseTimers.add(cancel);
    }
  }

  /** Requests delivered to the server `serverName` since it was added. */
  getCount(serverName: string): number {
    return this.#servers.get(serverName)?.count ?? 0;
  }

  /** Requests sent through any end, delivered or not. */
  getTotalCount(): number {
    return this.#totalCount;
  }

  /** Bytes sent: the JSON length of every request's args plus every delivered reply. */
  getTotalBytes(): number {
    return this.#totalBytes;
  }

  /** Stops the network: pending calls resolve to `undefined`, timers are cancelled. */
  close(): void {
    this.#closed = true;
    for (const call of this.#pending) this.#finish(call, undefined);
    for (const cancel of this.#releaseTimers) cancel();
    this.#releaseTimers.clear();
    this.#faults.clear();
  }

  #endRecord(endName: string): EndRecord {
    const end = this.#ends.get(endName);
    if (end === undefined) throw new RangeError(`No end named ${JSON.stringify(endName)}`);
    return end;
  }

  /** Is `end` still enabled and its server still `server`? The lab drops replies otherwise. */
  #reachable(endName: string, server: ServerRecord): boolean {
    const end = this.#ends.get(endName);
    return end !== undefined && end.enabled && end.serverName !== null &&
      this.#servers.get(end.serverName) === server;
  }

  #call(endName: string, method: string, args: unknown): Promise<unknown> {
    if (this.#closed) return Promise.resolve(undefined);
    let argsText: string | undefined;
    try {
      argsText = JSON.stringify(args);
    } catch {
      return Promise.resolve(undefined); // not JSON: it could never cross a real wire
    }
    this.#totalCount++;
    this.#totalBytes += argsText?.length ?? 0;
    const end = this.#ends.get(endName);
    const server = end?.enabled && end.serverName !== null
      ? this.#servers.get(end.serverName)
      : undefined;
    return new Promise((resolve) => {
      const call: PendingCall = { resolve, server: null, cancelTimer: null };
      this.#pending.add(call);
      if (server === undefined) {
        // Simulate no reply and an eventual timeout.
        const ms = this.#longDelays
          ? randomInt(this.#random, 0, 6999)
          : randomInt(this.#random, 0, 99);
        this.#after(call, ms, () => this.#finish(call, undefined));
        return;
      }
      const reliable = this.#reliable;
      const delay = reliable ? 0 : randomInt(this.#random, 0, 26);
      this.#after(call, delay, () => {
        if (!reliable && this.#random() < 0.1) {
          this.#finish(call, undefined); // request lost
          return;
        }
        this.#throughFaults(call, endName, "request", () => {
          if (!this.#reachable(endName, server)) {
            this.#finish(call, undefined);
            return;
          }
          this.#deliverRequest(call, endName, server, method, argsText).then(
            (reply) => this.#deliverReply(call, endName, server, reliable, reply),
            () => this.#finish(call, undefined),
          );
          const duplication = this.#faults.get(endName)?.faults.duplication ?? 0;
          if (duplication > 0 && this.#random() < duplication) {
            this.#duplicate(endName, server, method, argsText);
          }
        });
      });
    });
  }

  /** Hands a request to `server`; the promise resolves to the reply. */
  #deliverRequest(
    call: PendingCall,
    endName: string,
    server: ServerRecord,
    method: string,
    argsText: string | undefined,
  ): Promise<unknown> {
    server.count++;
    call.server = server;
    this.#record?.(`${endName} request ${method} ${argsText}`);
    try {
      return server.handler.handleRpc(
        method,
        argsText === undefined ? undefined : JSON.parse(argsText),
      );
    } catch {
      return Promise.resolve(undefined);
    }
  }

  /** Delivers a copy of a request a little later; nobody waits for its reply. */
  #duplicate(
    endName: string,
    server: ServerRecord,
    method: string,
    argsText: string | undefined,
  ): void {
    const copy: PendingCall = { resolve: () => {}, server: null, cancelTimer: null };
    this.#pending.add(copy);
    const spread = Math.max(20, this.#faults.get(endName)?.faults.maxDelayMs ?? 0);
    this.#after(copy, randomInt(this.#random, 1, spread), () => {
      if (!this.#reachable(endName, server)) {
        this.#finish(copy, undefined);
        return;
      }
      this.#deliverRequest(copy, endName + " (duplicate)", server, method, argsText).then(
        () => this.#finish(copy, undefined),
        () => this.#finish(copy, undefined),
      );
    });
  }

  /**
   * Passes a message through `endName`'s faults, then calls `next`: at once when the end has
   * none; later when a clog holds it or a delay applies; never when it is lost.
   */
  #throughFaults(
    call: PendingCall,
    endName: string,
    direction: "request" | "reply",
    next: () => void,
  ): void {
    const state = this.#faults.get(endName);
    if (state === undefined) {
      next();
      return;
    }
    const { faults } = state;
    if (direction === "request" ? faults.requestsClogged : faults.repliesClogged) {
      state.held.push(() => {
        if (this.#pending.has(call)) this.#throughFaults(call, endName, direction, next);
      });
      return;
    }
    const loss = direction === "request" ? faults.requestLoss : faults.replyLoss;
    if (loss > 0 && this.#random() < loss) {
      this.#finish(call, undefined);
      return;
    }
    const delay = faults.maxDelayMs > 0 ? randomInt(this.#random, 0, faults.maxDelayMs) : 0;
    if (delay > 0) this.#after(call, delay, next);
    else next();
  }

  #deliverReply(
    call: PendingCall,
    endName: string,
    server: ServerRecord,
    reliable: boolean,
    reply: unknown,
  ): void {
    if (!this.#pending.has(call)) return; // already answered: crash or close
    let replyText: string | undefined;
    try {
      replyText = JSON.stringify(reply);
    } catch {
      replyText = undefined;
    }
    if (replyText === undefined || !this.#reachable(endName, server)) {
      this.#finish(call, undefined);
      return;
    }
    if (!reliable && this.#random() < 0.1) {
      this.#finish(call, undefined); // reply lost
      return;
    }
    const text = replyText;
    const deliver = () =>
      this.#throughFaults(call, endName, "reply", () => {
        this.#totalBytes += text.length;
        this.#record?.(`${endName} reply ${text}`);
        this.#finish(call, JSON.parse(text));
      });
    if (this.#longReordering && randomInt(this.#random, 0, 899) < 600) {
      // Delay the reply by 200 ms plus a random amount skewed towards short delays.
      const ms = 200 + randomInt(this.#random, 0, randomInt(this.#random, 0, 2000));
      this.#after(call, ms, deliver);
    } else {
      deliver();
    }
  }

  /** Runs `action` after `ms`, or in a microtask when `ms` is 0. */
  #after(call: PendingCall, ms: number, action: () => void): void {
    if (ms <= 0) {
      queueMicrotask(() => {
        if (this.#pending.has(call)) action();
      });
      return;
    }
    call.cancelTimer = this.#clock.schedule(ms, () => {
      call.cancelTimer = null;
      if (this.#pending.has(call)) action();
    });
  }

  #finish(call: PendingCall, reply: unknown): void {
    if (!this.#pending.delete(call)) return;
    call.cancelTimer?.();
    call.cancelTimer = null;
    call.resolve(reply);
  }
}
