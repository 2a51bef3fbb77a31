/**
 * Runs a local cluster of key/value peers, each a separate `deno run` process on loopback ports
 * with its own data directory.
 *
 *   deno task cluster            # 3 peers, data under a new data/cluster-* directory
 *   deno task cluster --peers 5 --data data/mine
 *   deno task cluster --web      # and a live view in the browser, with controls (docs/web.md)
 *
 * It prints each peer's addresses and the `deno task kv` line that talks to them
 * (`examples/kv/cli.ts`). The peers' shared secret is `RAFT_SECRET` if set (`deno task kv members`
 * needs it), else a random one.
 *
 * Ctrl-C stops the peers and removes the run's directory, unless it was given with `--data`.
 *
 * Permissions, as `deno task cluster` grants them: `--allow-net=127.0.0.1` (the peers' ports),
 * `--allow-write=data` (the run's directory, made under `data/` in the working directory, with
 * the peers' logs), `--allow-read=examples/web/page` (the page `--web` serves),
 * `--allow-run=deno` (each peer is a `deno run` process) and `--allow-env=RAFT_SECRET`
 * (optional). Each peer runs with `--allow-net=127.0.0.1`, read and write access to its own data
 * directory only, and `--allow-env=RAFT_SECRET` (and `RAFT_FAULT_TOKEN` with `--web`). A `--data`
 * directory outside `data/` needs `deno run` with write access to it:
 *
 *   deno run --allow-net=127.0.0.1 --allow-write=/srv/raft --allow-run=deno \
 *     examples/cluster.ts --data /srv/raft
 *
 * The {@linkcode LocalCluster} class is what the demo and the multi-process tests use.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import type { TransportStats } from "../mod.ts";
import { Dashboard } from "./web/dashboard.ts";
import {
  denoCommand,
  localPath,
  net,
  read,
  requirePermissions,
  runDeno,
  write,
} from "./_permissions.ts";

/** Options for {@linkcode LocalCluster.start}. */
export interface LocalClusterOptions {
  /** Number of peers. Default 3: the smallest cluster that survives a failure. */
  peers?: number;
  /** Parent directory of the peers' data directories. Default: a new temporary directory. */
  dataDir?: string;
  /** Let `POST /admin/cut-off` and `/admin/heal` isolate a peer (tests only). Default false. */
  faultInjection?: boolean;
  /** The cluster's shared secret. Default: 24 random bytes, in hex. */
  secret?: string;
  /**
   * Peers not started, whose slots a test fills with processes of its own (e.g. a hostile peer
   * that holds the secret). Default: none.
   */
  absent?: number[];
  /** Extra command-line arguments for every peer (e.g. `["--snapshot-every", "2000"]`). */
  serverArgs?: string[];
  /**
   * How many of the peers form the cluster at first: they know only each other. The others are
   * slots for servers added later (`startPeer` starts them with `--join` and every address), as
   * when a machine is replaced or the cluster grows. Default: all of them.
   */
  initialPeers?: number;
  /**
   * Open-file limit (`ulimit -n`) for each peer process, to see how a peer behaves when it runs
   * out of file descriptors. Default: the launcher's own limit.
   */
  maxOpenFiles?: number;
  /**
   * V8 flags for every peer process (`deno run --v8-flags=...`). Default
   * {@linkcode PEER_V8_FLAGS}: each semi-space of V8's young generation at most 8 MB, which keeps
   * a busy peer's memory well under what V8 grows it to by default, at no throughput cost we could
   * measure (docs/performance.md). `[]` runs the peers with V8's defaults.
   */
  v8Flags?: readonly string[];
}

/**
 * The V8 flags {@linkcode LocalCluster} gives its peers by default. V8 sizes a process's young
 * generation by the machine's memory, and a peer under steady load fills it with short-lived
 * objects (RPCs, requests, log entries on their way to disk): with V8's defaults a busy leader's
 * RSS settles near 185 MB, with these near 140 MB, for the same writes per second
 * (`deno task bench:hostile`, docs/performance.md).
 */
export const PEER_V8_FLAGS: readonly string[] = ["--max-semi-space-size=8"];

/** A peer's `GET /status` answer. */
export interface PeerStatus {
  /** The peer's index. */
  me: number;
  /** The peer's process id. */
  pid: number;
  /** The peer's current term. */
  term: number;
  /** `"follower"`, `"candidate"` or `"leader"`. */
  role: string;
  /** The leader the peer knows for its term, or `null`. */
  leader: number | null;
  /** Highest log index the peer knows committed. */
  commitIndex: number;
  /** Highest index the key/value state machine has applied. */
  appliedIndex: number;
  /** Index of the peer's last log entry. */
  lastLogIndex: number;
  /** The last index of the peer's latest snapshot (0 without one). */
  snapshotIndex: number;
  /** The peer's process memory, from `Deno.memoryUsage()`. */
  memory: { rss: number; heapUsed: number };
  /** The peers this one has a working link with (both connections up). */
  links: number[];
  /** The peer's WebSocket transport counters. */
  transport: TransportStats;
}

const SERVER = new URL("./kv/server.ts", import.meta.url).pathname;

/**
 * Makes a new directory for one run of a launcher, `data/<prefix>-<random>` under the working
 * directory, and resolves to its path. There rather than in the system's temporary directory,
 * so that `--allow-write=data` is all the launcher needs. {@linkcode removeRunDirectory} removes
 * it.
 */
export async function makeRunDirectory(prefix: string): Promise<string> {
  for (;;) {
    await Deno.mkdir("data", { recursive: true });
    try {
      return await Deno.makeTempDir({ dir: "data", prefix: `${prefix}-` });
    } catch (error) {
      // Another run's removeRunDirectory took the empty data/ away in between: make it again.
      if (!(error instanceof Deno.errors.NotFound)) throw error;
    }
  }
}

/** Removes a directory made by {@linkcode makeRunDirectory}, and `data/` too if now empty. */
export async function removeRunDirectory(directory: string): Promise<void> {
  await Deno.remove(directory, { recursive: true });
  await Deno.remove("data").catch(() => {}); // fails, as it should, unless empty
}

/**
 * N peer processes on 127.0.0.1, started and stopped together. Dispatches `peerstart` when a
 * peer answers after {@linkcode LocalCluster.startPeer} and `peerstop` when one was stopped by
 * {@linkcode LocalCluster.kill}; the detail of both is `{ peer, cutOff }`.
 */
export class LocalCluster extends EventTarget {
  /** The peers' Raft (WebSocket) addresses. */
  readonly peerUrls: string[];
  /** The peers' HTTP API addresses. */
  readonly httpUrls: string[];
  /** The directory holding each peer's data directory and log file. */
  readonly dataDir: string;
  readonly #secret: string;
  readonly #faultInjection: boolean;
  /** Proves to a peer's fault-injection endpoints that a request comes from this launcher. */
  readonly #faultToken: string;
  readonly #maxOpenFiles: number | undefined;
  readonly #serverArgs: string[];
  readonly #v8Flags: readonly string[];
  readonly #initialPeers: number;
  readonly #processes: ({ child: Deno.ChildProcess; logged: Promise<void> } | undefined)[];
  readonly #http = Deno.createHttpClient({});

  private constructor(dataDir: string, count: number, options: LocalClusterOptions) {
    super();
    this.dataDir = dataDir;
    const ports = freePorts(2 * count);
    this.peerUrls = ports.slice(0, count).map((port) => `ws://127.0.0.1:${port}`);
    this.httpUrls = ports.slice(count).map((port) => `http://127.0.0.1:${port}`);
    this.#secret = options.secret ??
      Array.from(crypto.getRandomValues(new Uint8Array(24)), hex).join("");
    this.#faultToken = Array.from(crypto.getRandomValues(new Uint8Array(24)), hex).join("");
    this.#faultInjection = options.faultInjection ?? false;
    this.#maxOpenFiles = options.maxOpenFiles;
    this.#serverArgs = options.serverArgs ?? [];
    this.#v8Flags = options.v8Flags ?? PEER_V8_FLAGS;
    this.#initialPeers = options.initialPeers ?? count;
    this.#processes = this.peerUrls.map(() => undefined);
  }

  /** Starts every peer; resolves once all of them answer `GET /status`. */
  static async start(options: LocalClusterOptions = {}): Promise<LocalCluster> {
    const count = options.peers ?? 3;
    if (!Number.isInteger(count) || count < 1) {
      throw new RangeError(`Peer count must be a positive integer, got ${count}`);
    }
    const dataDir = options.dataDir ?? await Deno.makeTempDir({ prefix: "denoraft-" });
    const maxOpenFiles = options.maxOpenFiles;
    if (maxOpenFiles !== undefined && !(Number.isInteger(maxOpenFiles) && maxOpenFiles > 0)) {
      throw new RangeError(`Open-file limit must be a positive integer, got ${maxOpenFiles}`);
    }
    const cluster = new LocalCluster(dataDir, count, options);
    const absent = options.absent ?? [];
    try {
      await Promise.all(
        cluster.peerUrls.map((_, peer) =>
          absent.includes(peer) ? undefined : cluster.startPeer(peer)
        ),
      );
    } catch (error) {
      await cluster.stop();
      throw error;
    }
    return cluster;
  }

  /** The data directory of `peer`. */
  peerDataDir(peer: number): string {
    return join(this.dataDir, `peer${peer}`);
  }

  /** Whether `peer`'s process is running (as far as this launcher knows). */
  isRunning(peer: number): boolean {
    return this.#processes[peer] !== undefined;
  }

  /**
   * Starts (or restarts) `peer`'s process; resolves once it answers `GET /status`. With
   * `cutOff` (needs `faultInjection`), the peer starts cut off from the others.
   */
  async startPeer(peer: number, options: { cutOff?: boolean } = {}): Promise<void> {
    if (this.#processes[peer] !== undefined) throw new Error(`Peer ${peer} is already running`);
    const dataDir = this.peerDataDir(peer);
    await Deno.mkdir(dataDir, { recursive: true });
    const logFile = await Deno.open(join(this.dataDir, `peer${peer}.log`), {
      create: true,
      append: true,
    });
    // The first peers know each other; a peer added later knows everyone, itself included.
    const joining = peer >= this.#initialPeers;
    const known = joining ? this.peerUrls.length : this.#initialPeers;
    const variables = ["RAFT_SECRET", ...(this.#faultInjection ? ["RAFT_FAULT_TOKEN"] : [])];
    // The peer may reach loopback, its own directory and the variables it is given: no more.
    const args = [
      "run",
      "--no-prompt",
      "--unstable-kv",
      ...(this.#v8Flags.length > 0 ? [`--v8-flags=${this.#v8Flags.join(",")}`] : []),
      "--allow-net=127.0.0.1",
      `--allow-read=${dataDir}`,
      `--allow-write=${dataDir}`,
      `--allow-env=${variables.join(",")}`,
      SERVER,
      "--me",
      String(peer),
      "--peers",
      this.peerUrls.slice(0, known).join(","),
      "--http",
      this.httpUrls.slice(0, known).join(","),
      ...(joining ? ["--join"] : []),
      "--data",
      dataDir,
      ...(this.#faultInjection ? ["--fault-injection"] : []),
      ...(options.cutOff ? ["--start-cut-off"] : []),
      ...this.#serverArgs,
    ];
    // `ulimit -n` in a shell that then becomes the peer, so the limit is the peer's alone.
    const deno = denoCommand();
    const limited = this.#maxOpenFiles === undefined ? { command: deno, args } : {
      command: "bash",
      args: [
        "-c",
        `ulimit -n ${this.#maxOpenFiles} && exec "$@"`,
        "bash",
        deno,
        ...args,
      ],
    };
    const child = new Deno.Command(limited.command, {
      args: limited.args,
      env: {
        RAFT_SECRET: this.#secret,
        ...(this.#faultInjection ? { RAFT_FAULT_TOKEN: this.#faultToken } : {}),
      },
      stdin: "null",
      stdout: "null",
      stderr: "piped",
    }).spawn();
    const logged = child.stderr.pipeTo(logFile.writable).catch(() => {});
    this.#processes[peer] = { child, logged };
    const deadline = Date.now() + 15000;
    while (await this.status(peer) === undefined) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const exited = await Promise.race([
        child.status,
        new Promise<undefined>((resolve) => timer = setTimeout(() => resolve(undefined), 50)),
      ]);
      clearTimeout(timer); // a peer that exits leaves no timer behind
      if (exited !== undefined) {
        this.#processes[peer] = undefined;
        await logged;
        throw new Error(
          `Peer ${peer} exited with code ${exited.code} while starting; see ${
            join(this.dataDir, `peer${peer}.log`)
          }`,
        );
      }
      if (Date.now() > deadline) throw new Error(`Peer ${peer} did not start within 15 s`);
    }
    this.#dispatch("peerstart", peer, options.cutOff ?? false);
  }

  /** Sends `signal` to `peer` and waits for the process to exit. */
  async kill(peer: number, signal: Deno.Signal = "SIGKILL"): Promise<void> {
    const running = this.#processes[peer];
    if (running === undefined) return;
    this.#processes[peer] = undefined;
    const { child, logged } = running;
    try {
      child.kill(signal);
    } catch {
      // Already gone.
    }
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timedOut = new Promise<undefined>((resolve) => {
      timer = setTimeout(() => resolve(undefined), 5000);
    });
    const exited = await Promise.race([child.status, timedOut]);
    clearTimeout(timer);
    if (exited === undefined) {
      child.kill("SIGKILL");
      await child.status;
    }
    await logged;
    this.#dispatch("peerstop", peer, false);
  }

  #dispatch(type: "peerstart" | "peerstop", peer: number, cutOff: boolean): void {
    this.dispatchEvent(new CustomEvent(type, { detail: { peer, cutOff } }));
  }

  /** Sends `signal` to `peer` without waiting for anything (see {@linkcode kill} for that). */
  signal(peer: number, signal: Deno.Signal): void {
    this.#processes[peer]?.child.kill(signal);
  }

  /** `peer`'s status, or `undefined` if it does not answer within a second. */
  async status(peer: number): Promise<PeerStatus | undefined> {
    return await this.#get(peer, "/status") as PeerStatus | undefined;
  }

  /** `peer`'s key/value data as applied so far, sorted by key, or `undefined`. */
  async data(peer: number): Promise<[string, string][] | undefined> {
    const reply = await this.#get(peer, "/debug/data") as { data: [string, string][] } | undefined;
    return reply?.data;
  }

  /** The cluster's shared secret (it also authenticates the membership API). */
  get secret(): string {
    return this.#secret;
  }

  /** Sends a fault-injection command (`cut-off`, `heal` or `disconnect`) to `peer`. */
  async inject(peer: number, fault: "cut-off" | "heal" | "disconnect"): Promise<void> {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), 2000);
    try {
      const response = await fetch(`${this.httpUrls[peer]}/admin/${fault}`, {
        method: "POST",
        headers: { "x-fault-token": this.#faultToken },
        client: this.#http,
        signal: abort.signal,
      });
      await response.body?.cancel();
      if (!response.ok) throw new Error(`Peer ${peer} refused ${fault}: ${response.status}`);
    } catch (error) {
      if (abort.signal.aborted) throw new Error(`Peer ${peer} did not answer ${fault} within 2 s`);
      throw error;
    } finally {
      clearTimeout(timer);
    }
  }

  /**
   * Waits until the running peers, except `excluded`, agree on one leader in one term; resolves
   * to its index. Throws after `timeoutMs`.
   */
  async waitForLeader(timeoutMs = 10000, excluded: number[] = []): Promise<number> {
    const deadline = Date.now() + timeoutMs;
    while (Date.now() < deadline) {
      const peers = this.peerUrls.map((_, peer) => peer).filter((peer) =>
        this.isRunning(peer) && !excluded.includes(peer)
      );
      const statuses = await Promise.all(peers.map((peer) => this.status(peer)));
      const leaders = statuses.filter((status) => status?.role === "leader");
      if (leaders.length === 1) {
        const { me, term } = leaders[0]!;
        const agreeing = statuses.filter((status) => status?.term === term && status.leader === me);
        if (2 * agreeing.length > this.peerUrls.length) return me;
      }
      await sleep(50);
    }
    throw new Error(`No single leader within ${timeoutMs} ms`);
  }

  /** Stops every peer (SIGTERM, then SIGKILL after 5 s). Leaves the data directory in place. */
  async stop(): Promise<void> {
    await Promise.all(this.#processes.map((_, peer) => this.kill(peer, "SIGTERM")));
    this.#http.close();
  }

  #get(peer: number, path: string): Promise<unknown> {
    return getJson(this.#http, `${this.httpUrls[peer]}${path}`, 1000);
  }
}

/**
 * GETs `url` with `http` and parses the JSON reply; undefined if it fails, answers other than 2xx,
 * or takes longer than `timeoutMs`.
 */
export async function getJson(
  http: Deno.HttpClient,
  url: string,
  timeoutMs: number,
): Promise<unknown> {
  // A timer of our own rather than AbortSignal.timeout(), so that none outlives the request.
  const abort = new AbortController();
  const timer = setTimeout(() => abort.abort(), timeoutMs);
  try {
    const response = await fetch(url, { client: http, signal: abort.signal });
    if (!response.ok) {
      await response.body?.cancel();
      return undefined;
    }
    return await response.json();
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** `count` distinct ports that were free on 127.0.0.1 a moment ago. */
export function freePorts(count: number): number[] {
  const listeners = Array.from(
    { length: count },
    () => Deno.listen({ hostname: "127.0.0.1", port: 0 }),
  );
  const ports = listeners.map((listener) => listener.addr.port);
  for (const listener of listeners) listener.close();
  return ports;
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}

function sleep(ms: number): Promise<undefined> {
  return new Promise((resolve) => setTimeout(() => resolve(undefined), ms));
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      peers: { type: "string", default: "3" },
      data: { type: "string" },
      web: { type: "boolean", default: false },
    },
  });
  requirePermissions([
    net("127.0.0.1"),
    write(values.data ?? "data"),
    runDeno(),
    ...(values.web ? [read(localPath(new URL("./web/page", import.meta.url)))] : []),
  ], {
    // The task grants write access to data/ only.
    ...(values.data === undefined || /^(\.\/)?data\//.test(values.data)
      ? { task: "deno task cluster" }
      : {}),
  });
  // From here on, Ctrl-C (or SIGTERM) stops the cluster, even while it starts.
  let stopRequested = false;
  const stopping = new Promise<void>((resolve) => {
    for (const signal of ["SIGINT", "SIGTERM"] as const) {
      Deno.addSignalListener(signal, () => {
        stopRequested = true;
        resolve();
      });
    }
  });
  // The operator's own secret, if given: the membership API (`deno task kv members`) needs it.
  const secretReadable =
    Deno.permissions.querySync({ name: "env", variable: "RAFT_SECRET" }).state === "granted";
  const secret = secretReadable ? Deno.env.get("RAFT_SECRET") : undefined;
  if (secret !== undefined && new TextEncoder().encode(secret).length < 16) {
    console.error("RAFT_SECRET must be 16 bytes or more; or unset it for a random secret.");
    Deno.exit(2);
  }
  const temporary = values.data === undefined;
  const dataDir = values.data ?? await makeRunDirectory("cluster");
  let cluster: LocalCluster;
  try {
    cluster = await LocalCluster.start({
      peers: Number(values.peers),
      dataDir,
      faultInjection: values.web, // the page's "cut off" control
      ...(secret === undefined ? {} : { secret }),
    });
  } catch (error) {
    if (stopRequested && temporary) {
      await removeRunDirectory(dataDir);
      Deno.exit(0);
    }
    // The message names the log of the peer that failed: the directory stays.
    console.error(`The cluster did not start: ${error instanceof Error ? error.message : error}`);
    Deno.exit(1);
  }
  cluster.peerUrls.forEach((url, peer) => {
    console.log(`peer ${peer}: raft ${url}  http ${cluster.httpUrls[peer]}`);
  });
  const addresses = cluster.httpUrls.join(",");
  console.log(`client: deno task kv --http ${addresses} put greeting hello`);
  console.log(`        (or export RAFT_HTTP=${addresses}, then: deno task kv get greeting)`);
  console.log(
    secret === undefined
      ? "members: start the cluster with RAFT_SECRET set (16 bytes or more) to use deno task kv members"
      : "members: deno task kv members, with the same RAFT_SECRET in the environment",
  );
  const web = values.web ? await Dashboard.start(cluster) : null;
  if (web !== null) {
    console.log(`live view (keep this address private: it carries the token): ${web.url}`);
  }
  console.log(
    `data and logs under ${dataDir}${
      temporary ? " (removed when the cluster stops)" : ""
    }; Ctrl-C stops the cluster`,
  );
  await stopping;
  await web?.close();
  await cluster.stop();
  if (temporary) {
    await removeRunDirectory(dataDir);
    console.log(`stopped every peer and removed ${dataDir}`);
  } else {
    console.log(`stopped every peer; data and logs left in ${dataDir}`);
  }
  Deno.exit(0);
}
