/**
 * The cluster a Jepsen-style run attacks: key/value peers (`examples/kv/server.ts`), each a
 * `deno run` process with narrow permissions, whose Raft links all go through TCP proxies in
 * this process, one per direction of each pair of peers. Peer `i` is started with a `--peers`
 * list in which its own entry is its real address and entry `j` is the proxy that forwards
 * `i`'s dials to `j`; so cutting proxies partitions the peers, one link or one direction at a
 * time, while clients still reach every peer's HTTP API directly.
 *
 * With the WebSocket transport, each peer sends its requests and replies to another only on
 * the connection that the other dialed: the proxy `i → j` carries what `j` says to `i`. Cutting
 * it alone makes `i` deaf to `j` while `j` still hears `i`.
 *
 * @module
 */

import { join } from "node:path";
import { getJson, PEER_V8_FLAGS, type PeerStatus } from "../../examples/cluster.ts";
import { type CutMode, TcpProxy } from "../../tests/helpers/tcp_proxy.ts";

/** Options for {@linkcode JepsenCluster.start}. */
export interface JepsenClusterOptions {
  /** Number of peers. Default 3. */
  peers?: number;
  /**
   * The checkout whose `examples/kv/server.ts` the peers run: this repository, or a mutant's
   * patched copy. Default: this repository.
   */
  root?: string;
  /** Start the peers with `--lease-reads`. Default false. */
  leaseReads?: boolean;
  /** Where each peer's data directory and stderr log go. Default: a new temporary directory. */
  dataDir?: string;
  /** How long a peer may take to answer `GET /status` after it is started, in ms. Default 20000. */
  startTimeoutMs?: number;
}

/** What one `GET /debug/data` answered: a peer's applied index and its data, sorted by key. */
export interface PeerData {
  /** Highest index the peer's state machine applied. */
  appliedIndex: number;
  /** Every key and value the peer holds. */
  data: [string, string][];
}

interface Running {
  child: Deno.ChildProcess;
  logged: Promise<void>;
  paused: boolean;
}

const SERVER = "examples/kv/server.ts";

/** N key/value peer processes on 127.0.0.1 behind per-direction proxies. */
export class JepsenCluster {
  /** Each peer's HTTP API address, for clients. */
  readonly httpUrls: readonly string[];
  /** Each peer's own Raft listening port. */
  readonly raftPorts: readonly number[];
  /** The directory holding each peer's data directory (`peerN/`) and log (`peerN.log`). */
  readonly dataDir: string;
  readonly #root: string;
  readonly #leaseReads: boolean;
  readonly #startTimeoutMs: number;
  readonly #secret: string;
  /** `#proxies[from][to]`: what `from` dials to reach `to`; undefined on the diagonal. */
  readonly #proxies: (TcpProxy | undefined)[][];
  readonly #processes: (Running | undefined)[];
  readonly #http = Deno.createHttpClient({});

  private constructor(dataDir: string, count: number, options: JepsenClusterOptions) {
    this.dataDir = dataDir;
    // Held until the proxies listen, so that none of them is given a peer's port.
    const held = holdPorts(2 * count);
    const ports = held.map((listener) => listener.addr.port);
    this.raftPorts = ports.slice(0, count);
    this.httpUrls = ports.slice(count).map((port) => `http://127.0.0.1:${port}`);
    this.#root = options.root ?? new URL("../../", import.meta.url).pathname;
    this.#leaseReads = options.leaseReads ?? false;
    this.#startTimeoutMs = options.startTimeoutMs ?? 20_000;
    this.#secret = Array.from(
      crypto.getRandomValues(new Uint8Array(24)),
      (byte) => byte.toString(16).padStart(2, "0"),
    ).join("");
    this.#proxies = this.raftPorts.map((_, from) =>
      this.raftPorts.map((port, to) => (from === to ? undefined : new TcpProxy(port)))
    );
    this.#processes = this.raftPorts.map(() => undefined);
    for (const listener of held) listener.close();
  }

  /**
   * Starts `peers` peers; resolves once every one answers `GET /status`. On failure, whatever
   * was started is stopped before the error is thrown.
   *
   * @throws {RangeError} If `peers` is not an integer from 1 to 9.
   */
  static async start(options: JepsenClusterOptions = {}): Promise<JepsenCluster> {
    const count = options.peers ?? 3;
    if (!Number.isInteger(count) || count < 1 || count > 9) {
      throw new RangeError(`Peer count must be an integer from 1 to 9, got ${count}`);
    }
    const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "denoraft-jepsen-" });
    const cluster = new JepsenCluster(dataDir, count, options);
    try {
      await Promise.all(cluster.raftPorts.map((_, peer) => cluster.startPeer(peer)));
    } catch (error) {
      await cluster.close({ keepData: true }); // the error names a peer's log
      throw error;
    }
    return cluster;
  }

  /** Number of peers. */
  get size(): number {
    return this.raftPorts.length;
  }

  /** Whether `peer`'s process runs (paused or not). */
  isRunning(peer: number): boolean {
    return this.#processes[peer] !== undefined;
  }

  /** Whether `peer`'s process is stopped by SIGSTOP. */
  isPaused(peer: number): boolean {
    return this.#processes[peer]?.paused ?? false;
  }

  /** The Raft addresses `peer` is given: its own, and the proxies it dials to reach the others. */
  peerList(peer: number): string[] {
    return this.raftPorts.map((port, other) =>
      `ws://127.0.0.1:${other === peer ? port : this.#proxies[peer]![other]!.port}`
    );
  }

  /**
   * Starts (or restarts, on its data directory) `peer`'s process; resolves once it answers
   * `GET /status`.
   *
   * @throws {Error} If it is already running, exits while starting, or does not answer in time
   *   (it is then killed).
   */
  async startPeer(peer: number): Promise<void> {
    if (this.#processes[peer] !== undefined) throw new Error(`Peer ${peer} is already running`);
    const data = join(this.dataDir, `peer${peer}`);
    await Deno.mkdir(data, { recursive: true });
    const logFile = await Deno.open(join(this.dataDir, `peer${peer}.log`), {
      create: true,
      append: true,
    });
    // Narrow permissions: loopback only, the secret's variable only, its own data directory only.
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "run",
        "--no-prompt",
        "--unstable-kv",
        `--v8-flags=${PEER_V8_FLAGS.join(",")}`, // as LocalCluster runs peers
        "--allow-net=127.0.0.1",
        "--allow-env=RAFT_SECRET",
        `--allow-read=${data}`,
        `--allow-write=${data}`,
        SERVER,
        "--me",
        String(peer),
        "--peers",
        this.peerList(peer).join(","),
        "--http",
        this.httpUrls.join(","),
        "--data",
        data,
        ...(this.#leaseReads ? ["--lease-reads"] : []),
      ],
      cwd: this.#root,
      env: { RAFT_SECRET: this.#secret },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const logged = child.stderr.pipeTo(logFile.writable).catch(() => {});
    this.#processes[peer] = { child, logged, paused: false };
    const deadline = Date.now() + this.#startTimeoutMs;
    while (await this.status(peer) === undefined) {
      const exited = await Promise.race([child.status, sleep(100)]);
      if (exited !== undefined) {
        this.#processes[peer] = undefined;
        await logged;
        throw new Error(
          `Peer ${peer} exited with code ${exited.code} while starting; see ${data}.log`,
        );
      }
      if (Date.now() > deadline) {
        await this.kill(peer);
        throw new Error(`Peer ${peer} did not start within ${this.#startTimeoutMs} ms`);
      }
    }
  }

  /** SIGKILLs `peer` (paused or not) and waits for its process to exit. */
  async kill(peer: number): Promise<void> {
    const running = this.#processes[peer];
    if (running === undefined) return;
    this.#processes[peer] = undefined;
    try {
      running.child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
    await running.child.status;
    await running.logged;
  }

  /** Stops `peer` with SIGSTOP: it keeps its sockets, answers nothing, and its clock runs on. */
  pause(peer: number): void {
    const running = this.#processes[peer];
    if (running === undefined || running.paused) return;
    running.child.kill("SIGSTOP");
    running.paused = true;
  }

  /** Resumes a paused `peer` with SIGCONT. */
  resume(peer: number): void {
    const running = this.#processes[peer];
    if (running === undefined || !running.paused) return;
    running.child.kill("SIGCONT");
    running.paused = false;
  }

  /**
   * Cuts the proxies that carry what `from` hears from `to`: afterwards `from` hears nothing from
   * `to`, while `to` may still hear `from`.
   */
  cutDirection(from: number, to: number, mode: CutMode): void {
    this.#proxies[from]?.[to]?.cut(mode);
  }

  /** Cuts every link between a peer of `side` and a peer outside it, both ways. */
  partition(side: readonly number[], mode: CutMode): void {
    for (const a of side) {
      for (let b = 0; b < this.size; b++) {
        if (side.includes(b)) continue;
        this.cutDirection(a, b, mode);
        this.cutDirection(b, a, mode);
      }
    }
  }

  /** Heals every proxy. */
  heal(): void {
    for (const row of this.#proxies) for (const proxy of row) proxy?.heal();
  }

  /** `peer`'s status, or undefined if it does not answer within `timeoutMs`. */
  async status(peer: number, timeoutMs = 1000): Promise<PeerStatus | undefined> {
    return await this.#get(peer, "/status", timeoutMs) as PeerStatus | undefined;
  }

  /** `peer`'s applied index and data, or undefined if it does not answer within `timeoutMs`. */
  async data(peer: number, timeoutMs = 2000): Promise<PeerData | undefined> {
    return await this.#get(peer, "/debug/data", timeoutMs) as PeerData | undefined;
  }

  /**
   * The peer that says it leads in the highest term, among those running and not paused, or
   * null if none does.
   */
  async leader(): Promise<number | null> {
    const peers = this.raftPorts.map((_, peer) => peer).filter((peer) =>
      this.isRunning(peer) && !this.isPaused(peer)
    );
    const statuses = await Promise.all(peers.map((peer) => this.status(peer, 500)));
    let best: PeerStatus | null = null;
    for (const status of statuses) {
      if (status?.role === "leader" && (best === null || status.term > best.term)) best = status;
    }
    return best?.me ?? null;
  }

  /**
   * Kills every peer (resuming none: SIGKILL ends a stopped process too), closes every proxy,
   * and removes the data directory unless `keepData`.
   */
  async close(options: { keepData?: boolean } = {}): Promise<void> {
    await Promise.all(this.raftPorts.map((_, peer) => this.kill(peer)));
    await Promise.all(this.#proxies.flat().map((proxy) => proxy?.close()));
    this.#http.close();
    if (!options.keepData) await Deno.remove(this.dataDir, { recursive: true }).catch(() => {});
  }

  /** {@linkcode JepsenCluster.close}, for `await using`. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  #get(peer: number, path: string, timeoutMs: number): Promise<unknown> {
    return getJson(this.#http, `${this.httpUrls[peer]}${path}`, timeoutMs);
  }
}

/** Ports below Linux's default range for outgoing connections (32768 to 60999). */
const PORT_RANGE = { first: 10_000, last: 32_767 };

/**
 * Listeners on `count` distinct free ports of 127.0.0.1, drawn at random below the range the
 * kernel takes local ports of outgoing connections from: a peer's port then stays free while the
 * peer restarts, whatever connections the processes on the machine open meanwhile (a port from
 * `port: 0` is in that range, and any connection could take it).
 *
 * @throws {Error} If no free port turns up in 100 tries per port.
 */
function holdPorts(count: number): Deno.TcpListener[] {
  const listeners: Deno.TcpListener[] = [];
  for (let tries = 0; listeners.length < count; tries++) {
    if (tries >= 100 * count) {
      for (const listener of listeners) listener.close();
      throw new Error(`No ${count} free ports from ${PORT_RANGE.first} to ${PORT_RANGE.last}`);
    }
    const port = PORT_RANGE.first +
      Math.floor(Math.random() * (PORT_RANGE.last - PORT_RANGE.first + 1));
    try {
      listeners.push(Deno.listen({ hostname: "127.0.0.1", port }));
    } catch {
      // Taken: draw another.
    }
  }
  return listeners;
}

/** Resolves to undefined after `ms`. */
export function sleep(ms: number): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), ms));
}
