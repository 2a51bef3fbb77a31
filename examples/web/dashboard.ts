/**
 * The web view of a {@linkcode LocalCluster}: serves a page on 127.0.0.1 that shows every peer
 * live and lets a person kill, restart, pause, resume, cut off and heal peers and send writes at
 * a chosen rate. `deno task cluster --web` and `deno task demo --web` start one; see docs/web.md.
 *
 * The launcher reads each peer's `GET /events` stream ({@linkcode PeerWatch}), keeps the
 * picture and the timeline ({@linkcode ClusterView}), and sends every change to the open pages
 * over server-sent events. Only the launcher controls the peers: the control endpoints live
 * here, bind to 127.0.0.1, and obey only requests with the right `Host`, no foreign `Origin`,
 * and this run's token in the `X-Launcher-Token` header (the printed URL carries it in its
 * fragment, which the browser never sends to a server).
 *
 * @module
 */

import type { LocalCluster } from "../cluster.ts";
import { ClusterView, type ViewChange } from "./cluster_view.ts";
import { PeerWatch } from "./peer_watch.ts";
import { MAX_WRITE_RATE, WriteLoad, type WriteStats } from "./write_load.ts";

/** Options for {@linkcode Dashboard.start}. */
export interface DashboardOptions {
  /** The port to serve on, on 127.0.0.1. Default 0: any free port. */
  port?: number;
  /**
   * The most time between two snapshots of a peer, in ms (50 to 10000). Default 250: four
   * updates a second per peer look live, and cost the peers next to nothing (docs/web.md).
   */
  intervalMs?: number;
}

/** What a person can do to a peer from the page. */
export type PeerAction = "kill" | "restart" | "pause" | "resume" | "cut-off" | "heal";

const ACTIONS: readonly PeerAction[] = ["kill", "restart", "pause", "resume", "cut-off", "heal"];
/** Pages open at once; more get 503. */
const MAX_PAGES = 16;
/** A page that fell this many messages behind is dropped rather than buffered. */
const MAX_BACKLOG = 256;

const SECURITY_HEADERS = {
  "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; " +
    "connect-src 'self'; img-src 'self'; base-uri 'none'; form-action 'none'; " +
    "frame-ancestors 'none'",
  "x-content-type-options": "nosniff",
  "referrer-policy": "no-referrer",
  "cache-control": "no-store",
};

const PAGE_FILES: Record<string, [string, string]> = {
  "/": ["index.html", "text/html; charset=utf-8"],
  "/page.js": ["page.js", "text/javascript; charset=utf-8"],
  "/page.css": ["page.css", "text/css; charset=utf-8"],
};

/** The web view's server; {@linkcode Dashboard.close} stops it (not the cluster). */
export class Dashboard {
  /** The page's address, with this run's token in its fragment: open this one. */
  readonly url: string;
  readonly #cluster: LocalCluster;
  readonly #token: string;
  readonly #port: number;
  readonly #files: Map<string, [Uint8Array<ArrayBuffer>, string]>;
  readonly #view: ClusterView;
  readonly #watches: PeerWatch[];
  readonly #writes: WriteLoad;
  readonly #pages = new Set<ReadableStreamDefaultController<Uint8Array>>();
  readonly #busy = new Set<number>();
  readonly #encoder = new TextEncoder();
  readonly #onPeer: (event: Event) => void;
  #server: Deno.HttpServer<Deno.NetAddr> | null = null;
  #writeStats: WriteStats | null = null;
  #lastLeader: number | null = null;
  #pageArrived: (() => void) | null = null;

  private constructor(
    cluster: LocalCluster,
    files: Map<string, [Uint8Array<ArrayBuffer>, string]>,
    port: number,
    intervalMs: number,
  ) {
    this.#cluster = cluster;
    this.#files = files;
    this.#port = port;
    this.#token = Array.from(crypto.getRandomValues(new Uint8Array(24)), hex).join("");
    this.url = `http://127.0.0.1:${port}/#token=${this.#token}`;
    this.#view = new ClusterView(cluster.httpUrls, (change) => this.#broadcast(change));
    this.#watches = cluster.httpUrls.map((httpUrl, peer) =>
      new PeerWatch({
        httpUrl,
        intervalMs,
        shouldConnect: () => cluster.isRunning(peer),
        onSnapshot: (snapshot) => this.#view.snapshot(peer, snapshot),
        onReachability: (state, reason) => this.#view.setReachability(peer, state, reason),
      })
    );
    this.#writes = new WriteLoad({
      // The leader on the page, or else the last one while its process runs: a leader whose
      // status is late (a busy machine) still takes writes, and a deposed one answers 421.
      target: () => {
        this.#lastLeader = this.#view.leader?.id ?? this.#lastLeader;
        const id = this.#lastLeader;
        return id === null || !cluster.isRunning(id) ? null : cluster.httpUrls[id]!;
      },
      onStats: (stats) => {
        this.#writeStats = stats;
        this.#send("writes", stats);
      },
    });
    // Peers that a script (the demo) stops and starts, not the page.
    this.#onPeer = (event) => {
      const { peer, cutOff } = (event as CustomEvent<{ peer: number; cutOff: boolean }>).detail;
      if (event.type === "peerstart") {
        this.#view.setProcess(peer, "running", cutOff);
        this.#watches[peer]!.connect();
      } else {
        this.#view.setProcess(peer, "stopped", false);
      }
    };
    cluster.addEventListener("peerstart", this.#onPeer);
    cluster.addEventListener("peerstop", this.#onPeer);
    for (let peer = 0; peer < cluster.httpUrls.length; peer++) {
      if (!cluster.isRunning(peer)) this.#view.setProcess(peer, "stopped");
    }
  }

  /**
   * Serves the view of `cluster` on 127.0.0.1; resolves once it listens.
   *
   * @throws {RangeError} For an interval outside 50 to 10000 ms.
   */
  static async start(cluster: LocalCluster, options: DashboardOptions = {}): Promise<Dashboard> {
    const intervalMs = options.intervalMs ?? 250;
    if (!Number.isInteger(intervalMs) || intervalMs < 50 || intervalMs > 10000) {
      throw new RangeError(
        `Interval must be a whole number of ms from 50 to 10000, got ${intervalMs}`,
      );
    }
    const files = new Map<string, [Uint8Array<ArrayBuffer>, string]>();
    for (const [path, [name, type]] of Object.entries(PAGE_FILES)) {
      files.set(path, [await Deno.readFile(new URL(`./page/${name}`, import.meta.url)), type]);
    }
    let dashboard: Dashboard | null = null;
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: options.port ?? 0, onListen: () => {} },
      (request) =>
        dashboard === null ? new Response(null, { status: 503 }) : dashboard.#serve(request),
    );
    dashboard = new Dashboard(cluster, files, server.addr.port, intervalMs);
    dashboard.#server = server;
    return dashboard;
  }

  /** Pages connected now. */
  get pages(): number {
    return this.#pages.size;
  }

  /** Resolves when a page is connected (at once if one is). */
  pageConnected(): Promise<void> {
    if (this.#pages.size > 0) return Promise.resolve();
    return new Promise((resolve) => (this.#pageArrived = resolve));
  }

  /** Adds a remark to the timeline, such as a step of a script that drives the cluster. */
  note(text: string): void {
    this.#view.note(text);
  }

  /** Records, as an action, something a script is about to do; later entries are timed from it. */
  action(peer: number | null, text: string): void {
    this.#view.action(peer, text);
  }

  /** Stops the writes, the pages' streams, the watches and the server; leaves the cluster be. */
  async close(): Promise<void> {
    this.#cluster.removeEventListener("peerstart", this.#onPeer);
    this.#cluster.removeEventListener("peerstop", this.#onPeer);
    await this.#writes.close();
    for (const page of this.#pages) {
      try {
        page.close();
      } catch {
        // Already closed by the page.
      }
    }
    this.#pages.clear();
    await Promise.all(this.#watches.map((watch) => watch.close()));
    await this.#server?.shutdown();
  }

  async #serve(request: Request): Promise<Response> {
    const url = new URL(request.url);
    // The Host check defeats DNS rebinding: a hostile name that resolves to 127.0.0.1 still
    // carries its own name here.
    const host = request.headers.get("host");
    if (host !== `127.0.0.1:${this.#port}` && host !== `localhost:${this.#port}`) {
      return reply(403, { error: `Unexpected Host header ${JSON.stringify(host)}` });
    }
    const file = this.#files.get(url.pathname);
    if (file !== undefined && request.method === "GET") {
      return new Response(file[0], { headers: { ...SECURITY_HEADERS, "content-type": file[1] } });
    }
    if (url.pathname === "/api/events" && request.method === "GET") return this.#openPage();
    const control = url.pathname.match(/^\/api\/peers\/([0-9]{1,3})\/([a-z-]{1,10})$/);
    if (control === null && url.pathname !== "/api/writes") {
      return reply(404, { error: `Nothing at ${url.pathname}` });
    }
    if (request.method !== "POST") return reply(405, { error: "Controls take POST" });
    const refused = this.#refuseControl(request, host);
    if (refused !== null) return refused;
    if (control !== null) return await this.#act(Number(control[1]), control[2]!);
    return await this.#setWriteRate(request);
  }

  /** Why `request` may not control the cluster, or null if it may. */
  #refuseControl(request: Request, host: string): Response | null {
    const origin = request.headers.get("origin");
    if (origin !== null && origin !== `http://${host}`) {
      return reply(403, { error: `Requests from origin ${origin} may not control this cluster` });
    }
    if (!sameToken(request.headers.get("x-launcher-token") ?? "", this.#token)) {
      return reply(403, {
        error: "Missing or wrong X-Launcher-Token: open the URL the launcher printed",
      });
    }
    return null;
  }

  async #setWriteRate(request: Request): Promise<Response> {
    if (request.headers.get("content-type") !== "application/json") {
      return reply(415, { error: "Send the rate as application/json" });
    }
    let rate: unknown;
    try {
      rate = (JSON.parse((await request.text()).slice(0, 1000)) as { rate?: unknown })?.rate;
    } catch {
      rate = undefined;
    }
    if (!Number.isInteger(rate) || (rate as number) < 0 || (rate as number) > MAX_WRITE_RATE) {
      return reply(400, {
        error: `Rate must be a whole number of writes per second from 0 to ${MAX_WRITE_RATE}, got ${
          JSON.stringify(rate)
        }`,
      });
    }
    if (rate !== this.#writes.rate) {
      this.#view.action(null, rate === 0 ? "Stop writes" : `Write ${rate} times a second`);
      this.#writes.setRate(rate as number);
    }
    return reply(200, { rate });
  }

  async #act(peer: number, action: string): Promise<Response> {
    const view = this.#view.peers[peer];
    if (view === undefined) {
      return reply(404, { error: `No peer ${peer}: the cluster has ${this.#view.peers.length}` });
    }
    if (!(ACTIONS as readonly string[]).includes(action)) {
      return reply(404, {
        error: `No action ${JSON.stringify(action)}; try ${ACTIONS.join(", ")}`,
      });
    }
    const allowed: Record<PeerAction, boolean> = {
      kill: view.process === "running" || view.process === "paused",
      restart: view.process === "stopped",
      pause: view.process === "running",
      resume: view.process === "paused",
      "cut-off": view.process === "running" && !view.cutOff,
      heal: view.process === "running" && view.cutOff,
    };
    if (!allowed[action as PeerAction]) {
      const state = `${view.process}${view.cutOff ? ", cut off" : ""}`;
      return reply(409, { error: `Cannot ${action} peer ${peer} while it is ${state}` });
    }
    if (this.#busy.has(peer)) {
      return reply(409, { error: `Peer ${peer} is still carrying out the last action` });
    }
    this.#busy.add(peer);
    try {
      await this.#carryOut(peer, action as PeerAction);
      return reply(200, { peer, action });
    } catch (error) {
      const message = error instanceof Error ? error.message : String(error);
      this.#view.note(`Could not ${action} peer ${peer}: ${message}`);
      return reply(500, { error: message });
    } finally {
      this.#busy.delete(peer);
    }
  }

  async #carryOut(peer: number, action: PeerAction): Promise<void> {
    const cluster = this.#cluster;
    const pid = this.#view.peers[peer]!.snapshot?.pid;
    switch (action) {
      case "kill":
        this.#view.action(peer, `Kill peer ${peer} (SIGKILL to pid ${pid})`);
        await cluster.kill(peer, "SIGKILL"); // peerstop marks it stopped
        return;
      case "restart":
        this.#view.action(peer, `Restart peer ${peer} on its data directory`);
        this.#view.setProcess(peer, "starting");
        try {
          await cluster.startPeer(peer); // peerstart marks it running
        } catch (error) {
          this.#view.setProcess(peer, "stopped");
          throw error;
        }
        return;
      case "pause":
        this.#view.action(peer, `Pause peer ${peer} (SIGSTOP to pid ${pid})`);
        cluster.signal(peer, "SIGSTOP");
        this.#view.setProcess(peer, "paused");
        return;
      case "resume":
        this.#view.action(peer, `Resume peer ${peer} (SIGCONT to pid ${pid})`);
        cluster.signal(peer, "SIGCONT");
        this.#view.setProcess(peer, "running");
        return;
      case "cut-off":
        this.#view.action(peer, `Cut peer ${peer} off from the others`);
        await cluster.inject(peer, "cut-off");
        this.#view.setCutOff(peer, true);
        return;
      case "heal":
        this.#view.action(peer, `Heal peer ${peer}'s links`);
        await cluster.inject(peer, "heal");
        this.#view.setCutOff(peer, false);
        return;
    }
  }

  #openPage(): Response {
    if (this.#pages.size >= MAX_PAGES) {
      return reply(503, { error: `${MAX_PAGES} pages are open already` });
    }
    let page: ReadableStreamDefaultController<Uint8Array>;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        page = controller;
        this.#pages.add(controller);
        controller.enqueue(this.#encoder.encode(frame("init", {
          peers: this.#view.peers,
          leader: this.#view.leader,
          timeline: this.#view.entries,
          writes: this.#writeStats,
          maxWriteRate: MAX_WRITE_RATE,
        })));
        this.#pageArrived?.();
        this.#pageArrived = null;
      },
      cancel: () => void this.#pages.delete(page),
    });
    return new Response(body, {
      headers: { ...SECURITY_HEADERS, "content-type": "text/event-stream" },
    });
  }

  #broadcast(change: ViewChange): void {
    if (change.type === "peer") this.#send("peer", change.peer);
    else if (change.type === "entry") this.#send("entry", change.entry);
    else this.#send("leader", change.leader);
  }

  #send(event: string, data: unknown): void {
    if (this.#pages.size === 0) return;
    const bytes = this.#encoder.encode(frame(event, data));
    for (const page of this.#pages) {
      try {
        if ((page.desiredSize ?? 0) < -MAX_BACKLOG) throw new Error("page fell behind");
        page.enqueue(bytes);
      } catch {
        this.#pages.delete(page);
        try {
          page.close();
        } catch {
          // Already closed.
        }
      }
    }
  }
}

function frame(event: string, data: unknown): string {
  return `event: ${event}\ndata: ${JSON.stringify(data)}\n\n`;
}

function reply(status: number, body: unknown): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { ...SECURITY_HEADERS, "content-type": "application/json" },
  });
}

/** Compares in time that depends on the length only, not on where the first difference is. */
function sameToken(given: string, expected: string): boolean {
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < given.length; i++) difference |= given.charCodeAt(i) ^ expected.charCodeAt(i);
  return difference === 0;
}

function hex(byte: number): string {
  return byte.toString(16).padStart(2, "0");
}
