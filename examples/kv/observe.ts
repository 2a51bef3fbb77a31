/**
 * A peer's live status for the web view (`examples/web/`), read-only: `GET /events` streams
 * server-sent events, each a JSON {@linkcode PeerSnapshot} of the peer (term, role, leader,
 * indexes, each follower's progress while it leads, the tail of its log, messages per second by
 * kind, persister latency, and the leader, role and fatal events since the last snapshot).
 *
 * It reads a peer through {@linkcode ObservedNode}, the part of `RaftNode`'s surface it needs
 * (`status()`, `metrics()`, `addEventListener`), so a `RaftNode` plugs in as it is. Neither
 * interface exposes the terms of log entries, so the log tail comes from a {@linkcode LogTail}
 * that watches the peer's persister.
 *
 * Cost: nothing runs while nobody watches. While at least one stream is open, one timer samples
 * the peer every `interval` ms (the smallest asked for by an open stream; 250 by default) and
 * sends the snapshot to every stream if it changed, or if a second passed since the last one.
 *
 * @module
 */

import { type Clock, realClock } from "../../mod.ts";
import type {
  FatalError,
  FollowerStatus,
  LeaderChange,
  NodeStatus,
  PersistChange,
  PersistentState,
  Persister,
  Role,
  RoleChange,
} from "../../mod.ts";

/** What {@linkcode ObserveEndpoint} reads of a peer: a `RaftNode` has all of it. */
export interface ObservedNode {
  /** Term, role, leader, indexes, and each follower's progress while leading. */
  status(): NodeStatus;
  /** Metrics in the Prometheus text format; the endpoint reads `raft_rpcs_total`,
   * `raft_save_duration_seconds` and the election counters. */
  metrics(): string;
  /** Where `leaderchange`, `rolechange` and `fatal` events are heard. */
  addEventListener(
    type: "leaderchange" | "rolechange" | "fatal",
    listener: (event: Event) => void,
  ): void;
}

/** One entry of a log's tail: where it is and the term that wrote it. */
export interface LogTailEntry {
  /** The entry's log index. */
  index: number;
  /** The term of the leader that appended it. */
  term: number;
  /** Present (true) for the no-op entry a new leader appends (thesis §6.4). */
  noop?: true;
}

/** A leader, role or fatal event, as a snapshot carries it. */
export type ObservedEvent =
  | { type: "leaderchange"; leaderId: number | null; term: number }
  | { type: "rolechange"; role: Role; previous: Role; term: number }
  | { type: "fatal"; message: string };

/** What one server-sent event of `GET /events` holds. */
export interface PeerSnapshot {
  /** The peer's id. */
  id: number;
  /** The peer's process id. */
  pid: number;
  /** Term, role, leader, indexes and followers, as the node's `status()` gave them. */
  status: NodeStatus;
  /** The last entries of the log, oldest first (empty without a {@linkcode LogTail}). */
  log: LogTailEntry[];
  /** Pre-votes and elections this peer started, and elections it won, since it started. */
  elections: { preVotesStarted: number; started: number; won: number };
  /**
   * RPCs per second, averaged over about the last second (exponentially weighted), by kind: the
   * method and `sent` or `answered`, as `"AppendEntries sent"` or `"RequestVote answered"`
   * (pre-votes are RequestVotes; InstallSnapshot, TimeoutNow and ReadIndex too). A kind never seen
   * is absent.
   */
  messagesPerSecond: Record<string, number>;
  /**
   * Saves per second, averaged as messages are; their mean latency, and an upper bound of the
   * 99th percentile (a histogram bucket's bound), in ms, or null without saves.
   */
  saves: { perSecond: number; meanMs: number | null; p99Ms: number | null };
  /** Events since the previous snapshot on this stream, oldest first. */
  events: ObservedEvent[];
}

/** Options for {@linkcode ObserveEndpoint}. */
export interface ObserveOptions {
  /** Where the log tail comes from. Default: none (snapshots carry an empty `log`). */
  logTail?: LogTail;
  /** The process id to report. Default `Deno.pid`. */
  pid?: number;
  /**
   * Most streams open at once; more get 503. Default 8: the launcher opens one per peer, and a
   * few more leave room for a second launcher or a `curl`, not for a crowd.
   */
  maxStreams?: number;
  /** Time for the sampling timer and the rates. Default: the real clock (tests pass their own). */
  clock?: Clock;
}

/** Sampling interval when a stream asks for none, in ms: four updates a second. */
const DEFAULT_INTERVAL_MS = 250;
/** Bounds of the `interval` a stream may ask for, in ms. */
const MIN_INTERVAL_MS = 50;
const MAX_INTERVAL_MS = 10000;
/** An unchanged snapshot is still sent this often, so a watcher can tell a stalled peer. */
const KEEPALIVE_MS = 1000;
/** Rates are averaged with this time constant. */
const RATE_WINDOW_MS = 1000;
/** A stream whose reader fell this many frames behind is closed rather than buffered. */
const MAX_BACKLOG_FRAMES = 32;
/** Events kept for the next snapshot; older ones are dropped if nobody samples. */
const MAX_PENDING_EVENTS = 64;

/**
 * Records the last entries of a peer's log, index and term, by watching what its persister
 * loads and saves. Bounded: it keeps `capacity` entries.
 */
export class LogTail {
  readonly #capacity: number;
  #entries: LogTailEntry[] = [];
  #listener: (() => void) | null = null;

  /** A tail of at most `capacity` entries (default 24: a row of them fits a phone's width twice). */
  constructor(capacity = 24) {
    if (!Number.isInteger(capacity) || capacity < 1) {
      throw new RangeError(`Log tail capacity must be a positive integer, got ${capacity}`);
    }
    this.#capacity = capacity;
  }

  /** A persister that does what `persister` does and tells this tail about the log. */
  watch(persister: Persister): Persister {
    const watched: Persister = {
      load: async () => {
        const state = await persister.load();
        this.#loaded(state);
        return state;
      },
      save: (change) => {
        this.#saved(change);
        return persister.save(change);
      },
    };
    if (persister.close !== undefined) watched.close = () => persister.close!();
    if (persister.maxCommandBytes !== undefined) {
      Object.defineProperty(watched, "maxCommandBytes", { value: persister.maxCommandBytes });
    }
    return watched;
  }

  /** The tail, oldest first (a copy). */
  entries(): LogTailEntry[] {
    return this.#entries.slice();
  }

  /** Calls `listener` after each change of the log (one listener; the endpoint's). */
  onChange(listener: () => void): void {
    this.#listener = listener;
  }

  #loaded(state: PersistentState): void {
    const first = (state.snapshot?.index ?? 0) + 1;
    const from = Math.max(0, state.log.length - this.#capacity);
    this.#entries = state.log.slice(from).map((entry, i) =>
      tailEntry(first + from + i, entry.term, entry.type)
    );
    this.#listener?.();
  }

  #saved(change: PersistChange): void {
    const { snapshot, log } = change;
    if (snapshot === undefined && log === undefined) return;
    let entries = this.#entries;
    if (snapshot !== undefined) entries = entries.filter((entry) => entry.index > snapshot.index);
    if (log !== undefined) {
      entries = entries.filter((entry) => entry.index < log.from);
      const skip = Math.max(0, log.entries.length - this.#capacity);
      for (let i = skip; i < log.entries.length; i++) {
        const entry = log.entries[i]!;
        entries.push(tailEntry(log.from + i, entry.term, entry.type));
      }
    }
    this.#entries = entries.slice(-this.#capacity);
    this.#listener?.();
  }
}

function tailEntry(index: number, term: number, type: string | undefined): LogTailEntry {
  return type === "noop" ? { index, term, noop: true } : { index, term };
}

/**
 * Per-second rates of counters, exponentially weighted with a time constant of a second (as a
 * load average is): each sample moves a rate toward the latest one by `1 - e^(-dt / 1 s)`.
 * It keeps one number per counter and changes them in place, so sampling 20 times a second
 * leaves nothing behind for the garbage collector to promote (a window of samples did, and
 * the peers' memory grew by a MiB a minute between full collections).
 */
class Rates {
  readonly #last = new Map<string, number>();
  readonly #rates = new Map<string, number>();
  #lastAt = NaN;

  /** Takes the counters' values at time `at` (ms). */
  update(at: number, counters: Iterable<[string, number]>): void {
    const seconds = (at - this.#lastAt) / 1000;
    const weight = seconds > 0 ? 1 - Math.exp(-seconds / (RATE_WINDOW_MS / 1000)) : 0;
    for (const [key, value] of counters) {
      const last = this.#last.get(key);
      this.#last.set(key, value);
      // A counter seen for the first time, or that went back (a restarted peer), has no rate yet.
      const rate = last === undefined || weight === 0 ? 0 : Math.max(0, value - last) / seconds;
      this.#rates.set(key, (this.#rates.get(key) ?? 0) * (1 - weight) + rate * weight);
    }
    this.#lastAt = at;
  }

  /** The rate of `key`, per second (0 if never seen). */
  rate(key: string): number {
    return this.#rates.get(key) ?? 0;
  }

  /** Forgets everything (nobody watches any more). */
  clear(): void {
    this.#last.clear();
    this.#rates.clear();
    this.#lastAt = NaN;
  }
}

interface Stream {
  controller: ReadableStreamDefaultController<Uint8Array>;
  intervalMs: number;
}

/**
 * The `GET /events` endpoint of one peer. Route the requests for it to
 * {@linkcode ObserveEndpoint.serve}; it answers nothing else.
 *
 * @example Wiring it into a peer's HTTP server
 * ```ts ignore
 * const events = new ObserveEndpoint(node, { logTail });
 * Deno.serve((request) =>
 *   new URL(request.url).pathname === "/events" ? events.serve(request) : otherRoutes(request)
 * );
 * ```
 */
export class ObserveEndpoint {
  readonly #node: ObservedNode;
  readonly #logTail: LogTail | null;
  readonly #pid: number;
  readonly #maxStreams: number;
  readonly #clock: Clock;
  readonly #streams = new Set<Stream>();
  readonly #encoder = new TextEncoder();
  #pending: ObservedEvent[] = [];
  readonly #rates = new Rates();
  /** The kinds of message seen, and the save latency buckets' bounds (seconds), ascending. */
  #messageKinds: string[] = [];
  #saveBounds: number[] = [];
  /** Cancels the armed sampling timer, or null when none is armed. */
  #timer: (() => void) | null = null;
  #timerAt = Infinity;
  #lastFrame = "";
  #lastSentAt = -Infinity;
  #changed = false;

  /** An endpoint reporting on `node`. */
  constructor(node: ObservedNode, options: ObserveOptions = {}) {
    this.#node = node;
    this.#logTail = options.logTail ?? null;
    this.#pid = options.pid ?? Deno.pid;
    this.#maxStreams = options.maxStreams ?? 8;
    this.#clock = options.clock ?? realClock;
    const heard = (event: ObservedEvent) => {
      if (this.#streams.size === 0) return;
      if (this.#pending.length === MAX_PENDING_EVENTS) this.#pending.shift();
      this.#pending.push(event);
      this.#soon();
    };
    node.addEventListener("leaderchange", (event) => {
      const { leaderId, term } = (event as CustomEvent<LeaderChange>).detail;
      heard({ type: "leaderchange", leaderId, term });
    });
    node.addEventListener("rolechange", (event) => {
      const { role, previous, term } = (event as CustomEvent<RoleChange>).detail;
      heard({ type: "rolechange", role, previous, term });
    });
    node.addEventListener("fatal", (event) => {
      heard({ type: "fatal", message: String((event as CustomEvent<FatalError>).detail?.message) });
    });
    this.#logTail?.onChange(() => this.#soon());
  }

  /**
   * Answers `GET /events` (optionally `?interval=MS`, 50 to 10000, the most time between
   * snapshots) with a stream of server-sent events, one {@linkcode PeerSnapshot} each. Refuses
   * other methods (405), requests from browsers (403: they carry `Origin`, and the page reads
   * peers through its launcher, never directly), a bad interval (400) and streams past the
   * limit (503).
   */
  serve(request: Request): Response {
    if (request.method !== "GET") return plain(405, "Only GET is allowed here.\n");
    if (request.headers.has("origin")) {
      return plain(403, "This stream is for the cluster's launcher, not for browsers.\n");
    }
    const asked = new URL(request.url).searchParams.get("interval");
    const intervalMs = asked === null ? DEFAULT_INTERVAL_MS : Number(asked);
    if (
      (asked !== null && !/^[0-9]{1,5}$/.test(asked)) ||
      intervalMs < MIN_INTERVAL_MS || intervalMs > MAX_INTERVAL_MS
    ) {
      return plain(
        400,
        `Interval must be a whole number of ms from ${MIN_INTERVAL_MS} to ${MAX_INTERVAL_MS}, got ${
          JSON.stringify(asked)
        }.\n`,
      );
    }
    if (this.#streams.size >= this.#maxStreams) {
      return plain(503, `Too many streams open (${this.#maxStreams}); try again later.\n`);
    }
    let stream: Stream;
    const body = new ReadableStream<Uint8Array>({
      start: (controller) => {
        stream = { controller, intervalMs };
        this.#streams.add(stream);
        controller.enqueue(this.#encoder.encode(`retry: 1000\n\n`));
        controller.enqueue(this.#encoder.encode(this.#frame(this.#snapshot([]))));
        this.#schedule();
      },
      cancel: () => this.#drop(stream),
    });
    return new Response(body, {
      headers: {
        "content-type": "text/event-stream",
        "cache-control": "no-store",
        "x-content-type-options": "nosniff",
      },
    });
  }

  /** The peer's snapshot now, without the events (for tests and for a stream's first frame). */
  snapshot(): PeerSnapshot {
    return this.#snapshot([]);
  }

  /** Open streams. */
  get streams(): number {
    return this.#streams.size;
  }

  /** Ends every stream and stops sampling. */
  close(): void {
    for (const stream of [...this.#streams]) this.#end(stream);
  }

  /** A change was heard: send a snapshot as soon as the interval allows. */
  #soon(): void {
    this.#changed = true;
    this.#schedule();
  }

  #interval(): number {
    let interval = MAX_INTERVAL_MS;
    for (const stream of this.#streams) interval = Math.min(interval, stream.intervalMs);
    return interval;
  }

  /** Arms the one timer for the next sample, unless an earlier one is armed. */
  #schedule(): void {
    if (this.#streams.size === 0) return;
    const now = this.#clock.now();
    const interval = this.#interval();
    const due = this.#changed ? Math.max(now, this.#lastSentAt + interval) : now + interval;
    if (this.#timer !== null && this.#timerAt <= due) return;
    this.#timer?.();
    this.#timerAt = due;
    this.#timer = this.#clock.schedule(due - now, () => this.#tick());
  }

  #tick(): void {
    this.#timer = null;
    this.#timerAt = Infinity;
    if (this.#streams.size === 0) return;
    const snapshot = this.#snapshot(this.#pending);
    this.#pending = [];
    const frame = this.#frame(snapshot);
    const now = this.#clock.now();
    if (frame !== this.#lastFrame || now - this.#lastSentAt >= KEEPALIVE_MS) {
      this.#lastFrame = frame;
      this.#lastSentAt = now;
      const bytes = this.#encoder.encode(frame);
      for (const stream of [...this.#streams]) this.#send(stream, bytes);
    }
    this.#changed = false;
    // A closed node reports nothing new: its streams end after the snapshot that says so.
    if (snapshot.status.closed) this.close();
    this.#schedule();
  }

  #send(stream: Stream, bytes: Uint8Array): void {
    const { controller } = stream;
    if ((controller.desiredSize ?? 0) < -MAX_BACKLOG_FRAMES) return this.#end(stream);
    try {
      controller.enqueue(bytes);
    } catch {
      this.#drop(stream);
    }
  }

  #end(stream: Stream): void {
    this.#drop(stream);
    try {
      stream.controller.close();
    } catch {
      // Already closed or cancelled.
    }
  }

  #drop(stream: Stream): void {
    this.#streams.delete(stream);
    if (this.#streams.size > 0) return;
    this.#timer?.();
    this.#timer = null;
    this.#timerAt = Infinity;
    this.#pending = [];
    this.#rates.clear();
    this.#lastFrame = "";
  }

  #frame(snapshot: PeerSnapshot): string {
    // JSON.stringify never emits a raw newline, so one data line holds the whole snapshot.
    return `data: ${JSON.stringify(snapshot)}\n\n`;
  }

  /** The counters rates are kept of: messages by kind, and the save histogram. */
  *#counters(metrics: Metrics): Iterable<[string, number]> {
    for (const { labels, value } of metrics.get("raft_rpcs_total") ?? []) {
      const kind = `${labels.method} ${labels.direction === "out" ? "sent" : "answered"}`;
      if (!this.#messageKinds.includes(kind)) this.#messageKinds.push(kind);
      yield [kind, value];
    }
    yield ["saves", metrics.get("raft_save_duration_seconds_count")?.[0]?.value ?? 0];
    yield ["save seconds", metrics.get("raft_save_duration_seconds_sum")?.[0]?.value ?? 0];
    for (const { labels, value } of metrics.get("raft_save_duration_seconds_bucket") ?? []) {
      const bound = parseNumber(labels.le ?? "NaN");
      if (Number.isNaN(bound)) continue;
      if (!this.#saveBounds.includes(bound)) {
        this.#saveBounds.push(bound);
        this.#saveBounds.sort((a, b) => a - b);
      }
      yield [`save bucket ${bound}`, value];
    }
  }

  #saveRates(): PeerSnapshot["saves"] {
    const perSecond = this.#rates.rate("saves");
    // Below one save in 200 seconds, the decayed rate is noise: say there are none.
    if (perSecond < 0.005) return { perSecond: 0, meanMs: null, p99Ms: null };
    let p99Ms: number | null = null;
    for (const bound of this.#saveBounds) {
      if (this.#rates.rate(`save bucket ${bound}`) >= 0.99 * perSecond) {
        p99Ms = bound === Infinity ? null : round(bound * 1000);
        break;
      }
    }
    const meanMs = round(this.#rates.rate("save seconds") / perSecond * 1000);
    return { perSecond: round(perSecond), meanMs, p99Ms };
  }

  #snapshot(events: ObservedEvent[]): PeerSnapshot {
    const status = this.#node.status();
    const metrics = parseMetrics(this.#node.metrics());
    const now = this.#clock.now();
    this.#rates.update(now, this.#counters(metrics));
    const messagesPerSecond: Record<string, number> = {};
    for (const kind of this.#messageKinds) messagesPerSecond[kind] = round(this.#rates.rate(kind));
    const saves = this.#saveRates();
    const counter = (name: string) => metrics.get(name)?.[0]?.value ?? 0;
    return {
      id: status.id,
      pid: this.#pid,
      status,
      log: this.#logTail?.entries() ?? [],
      elections: {
        preVotesStarted: counter("raft_prevotes_started_total"),
        started: counter("raft_elections_started_total"),
        won: counter("raft_elections_won_total"),
      },
      messagesPerSecond,
      saves,
      events,
    };
  }
}

function round(value: number): number {
  return Math.round(value * 100) / 100;
}

/** Series of a Prometheus text exposition, by metric name. */
export type Metrics = Map<string, { labels: Record<string, string>; value: number }[]>;

/** Reads the Prometheus text format (0.0.4): names, labels and values; comments are skipped. */
export function parseMetrics(text: string): Metrics {
  const metrics: Metrics = new Map();
  for (const line of text.split("\n")) {
    const match = line.match(/^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/);
    if (match === null) continue;
    const labels: Record<string, string> = {};
    for (const pair of (match[2] ?? "").matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) {
      labels[pair[1]!] = pair[2]!.replace(/\\(.)/g, (_, c: string) => (c === "n" ? "\n" : c));
    }
    const series = metrics.get(match[1]!) ?? [];
    series.push({ labels, value: parseNumber(match[3]!) });
    metrics.set(match[1]!, series);
  }
  return metrics;
}

function parseNumber(text: string): number {
  if (text === "+Inf") return Infinity;
  if (text === "-Inf") return -Infinity;
  return Number(text);
}

function plain(status: number, text: string): Response {
  return new Response(text, { status, headers: { "content-type": "text/plain; charset=utf-8" } });
}

/**
 * Checks that `value`, read from a peer's stream, is a {@linkcode PeerSnapshot}; returns it, or
 * throws a `TypeError` naming the first field that is not what it should be.
 */
export function parseSnapshot(value: unknown): PeerSnapshot {
  const fail = (what: string, got: unknown): never => {
    throw new TypeError(
      `Peer snapshot field ${what} is malformed: got ${JSON.stringify(got)?.slice(0, 80)}`,
    );
  };
  const object = (what: string, v: unknown): Record<string, unknown> =>
    typeof v === "object" && v !== null && !Array.isArray(v)
      ? v as Record<string, unknown>
      : fail(what, v);
  const count = (what: string, v: unknown): number =>
    Number.isSafeInteger(v) && (v as number) >= 0 ? v as number : fail(what, v);
  const id = (what: string, v: unknown): number | null => v === null ? null : count(what, v);
  const rate = (what: string, v: unknown): number =>
    typeof v === "number" && Number.isFinite(v) && v >= 0 ? v : fail(what, v);
  const list = (what: string, v: unknown): unknown[] => Array.isArray(v) ? v : fail(what, v);
  const role = (what: string, v: unknown): Role =>
    v === "follower" || v === "precandidate" || v === "candidate" || v === "leader"
      ? v
      : fail(what, v);

  const top = object("(the snapshot)", value);
  const s = object("status", top.status);
  const followers: FollowerStatus[] = list("status.followers", s.followers).map((f, i) => {
    const o = object(`status.followers[${i}]`, f);
    const state = o.state === "probe" || o.state === "replicate" || o.state === "snapshot"
      ? o.state
      : fail(`status.followers[${i}].state`, o.state);
    return {
      id: count(`status.followers[${i}].id`, o.id),
      matchIndex: count(`status.followers[${i}].matchIndex`, o.matchIndex),
      nextIndex: count(`status.followers[${i}].nextIndex`, o.nextIndex),
      state,
      inflight: count(`status.followers[${i}].inflight`, o.inflight),
    };
  });
  const status: NodeStatus = {
    id: count("status.id", s.id),
    term: count("status.term", s.term),
    role: role("status.role", s.role),
    leaderId: id("status.leaderId", s.leaderId),
    commitIndex: count("status.commitIndex", s.commitIndex),
    lastApplied: count("status.lastApplied", s.lastApplied),
    lastLogIndex: count("status.lastLogIndex", s.lastLogIndex),
    snapshotIndex: count("status.snapshotIndex", s.snapshotIndex),
    followers,
    closed: typeof s.closed === "boolean" ? s.closed : fail("status.closed", s.closed),
  };
  const log = list("log", top.log).map((e, i): LogTailEntry => {
    const o = object(`log[${i}]`, e);
    const index = count(`log[${i}].index`, o.index);
    const term = count(`log[${i}].term`, o.term);
    return o.noop === true ? { index, term, noop: true } : { index, term };
  });
  const elections = object("elections", top.elections);
  const messages = object("messagesPerSecond", top.messagesPerSecond);
  const messagesPerSecond: Record<string, number> = {};
  for (const [kind, v] of Object.entries(messages)) {
    if (
      !/^(AppendEntries|RequestVote|InstallSnapshot|TimeoutNow|ReadIndex) (sent|answered)$/.test(
        kind,
      )
    ) {
      fail("messagesPerSecond", kind);
    }
    messagesPerSecond[kind] = rate(`messagesPerSecond[${kind}]`, v);
  }
  const saves = object("saves", top.saves);
  const optionalRate = (what: string, v: unknown) => v === null ? null : rate(what, v);
  const events = list("events", top.events).map((e, i): ObservedEvent => {
    const o = object(`events[${i}]`, e);
    switch (o.type) {
      case "leaderchange":
        return {
          type: "leaderchange",
          leaderId: id(`events[${i}].leaderId`, o.leaderId),
          term: count(`events[${i}].term`, o.term),
        };
      case "rolechange":
        return {
          type: "rolechange",
          role: role(`events[${i}].role`, o.role),
          previous: role(`events[${i}].previous`, o.previous),
          term: count(`events[${i}].term`, o.term),
        };
      case "fatal":
        return { type: "fatal", message: String(o.message).slice(0, 500) };
      default:
        return fail(`events[${i}].type`, o.type);
    }
  });
  return {
    id: count("id", top.id),
    pid: count("pid", top.pid),
    status,
    log,
    elections: {
      preVotesStarted: count("elections.preVotesStarted", elections.preVotesStarted),
      started: count("elections.started", elections.started),
      won: count("elections.won", elections.won),
    },
    messagesPerSecond,
    saves: {
      perSecond: rate("saves.perSecond", saves.perSecond),
      meanMs: optionalRate("saves.meanMs", saves.meanMs),
      p99Ms: optionalRate("saves.p99Ms", saves.p99Ms),
    },
    events,
  };
}
