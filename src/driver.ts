/**
 * The driver: wires the I/O-free {@linkcode RaftCore} to a clock, a transport and a persister, and
 * implements the lab interface ({@linkcode make}, `start`, `getState`, `kill`).
 *
 * @module
 */

import { type CancelTimer, type Clock, realClock } from "./clock.ts";
import { FatalError, type FatalReason } from "./errors.ts";
import { type Outgoing, RaftCore, type Ready } from "./raft/core.ts";
import { InvariantError } from "./raft/invariants.ts";
import {
  AppendEntries,
  InstallSnapshot,
  parseAppendEntriesArgs,
  parseAppendEntriesReply,
  parseInstallSnapshotArgs,
  parseInstallSnapshotReply,
  parseReadIndexArgs,
  parseReadIndexReply,
  parseRequestVoteArgs,
  parseRequestVoteReply,
  parseTimeoutNowArgs,
  parseTimeoutNowReply,
  ReadIndex,
  RequestVote,
  type RpcErrorReply,
  TimeoutNow,
} from "./raft/messages.ts";
import {
  checkCommand,
  type CommandLimits,
  DEFAULT_MAX_COMMAND_BYTES,
  DEFAULT_MAX_COMMAND_DEPTH,
  MAX_TERM,
  precheckCommand,
} from "./raft/limits.ts";
import { traceFromEnvironment } from "./trace.ts";
import { parseConfiguration } from "./raft/membership.ts";
import type {
  ApplyMsg,
  ClientEnd,
  Configuration,
  LogEntry,
  PersistentState,
  Persister,
  Raft,
  RaftOptions,
  RaftStatus,
  Snapshot,
  TraceSink,
} from "./types.ts";

const defaults = {
  heartbeatIntervalMs: 250,
  commitNotifyDelayMs: 25,
  electionTimeoutMinMs: 700,
  electionTimeoutMaxMs: 1100,
  maxEntriesPerAppend: 256,
  maxAppendBytes: 64 * 1024,
  maxInflightAppends: 16,
};

/**
 * Creates a Raft peer. Resolves once its persistent state is loaded; its timers run from then on.
 *
 * @param peers `peers[i]` reaches peer i (`peers[me]` is this peer itself and is never called).
 * @param me This peer's index in `peers`.
 * @param persister Where term, vote and log are saved; its saved state is loaded first.
 * @param applyCh Called once per committed entry, in index order, one at a time.
 * @param options Optional tuning; see {@linkcode RaftOptions}.
 * @throws {TypeError} or {RangeError} for bad arguments, and rejects if the persister's state is
 * malformed.
 *
 * @example A single-peer cluster commits on its own
 * ```ts
 * import { make, MemoryPersister } from "@denoraft/raft";
 * const raft = await make([{ call: () => Promise.resolve(undefined) }], 0, new MemoryPersister(),
 *   (msg) => console.log("applied", msg.commandIndex, msg.command));
 * // After an election timeout, raft.start("hello") returns { index: 1, term: 1, isLeader: true }.
 * raft.kill();
 * ```
 */
export function make(
  peers: ClientEnd[],
  me: number,
  persister: Persister,
  applyCh: (msg: ApplyMsg) => void | Promise<void>,
  options: RaftOptions = {},
): Promise<Raft> {
  return startPeer(peers, me, persister, applyCh, options, null);
}

/**
 * What a service layer built on the driver (`RaftNode`) observes of a running peer. Each call
 * comes after the step it reports; none may throw.
 */
export interface PeerObserver {
  /** The core handed back `ready`, about to be carried out. */
  ready(ready: Ready): void;
  /** A save resolved `ms` after it started. */
  saved(ms: number): void;
  /** An RPC request went out (`out`) or came in (`in`); `reply` is undefined when none came. */
  rpc(direction: "in" | "out", method: string, args: unknown, reply: unknown): void;
}

/**
 * {@linkcode make}, for a service layer: the running peer itself, with its core in view, and an
 * observer of what it does.
 */
export async function startPeer(
  peers: ClientEnd[],
  me: number,
  persister: Persister,
  applyCh: (msg: ApplyMsg) => void | Promise<void>,
  options: RaftOptions,
  observer: PeerObserver | null,
  anyPeerId = false,
): Promise<RaftPeer> {
  if (!Array.isArray(peers) || peers.length === 0) {
    throw new TypeError(`Peers must be a non-empty array of ClientEnd, got ${String(peers)}`);
  }
  peers.forEach((end, i) => {
    if (typeof end?.call !== "function") {
      throw new TypeError(
        `Peers[${i}] must be a ClientEnd with a call() method, got ${String(end)}`,
      );
    }
  });
  if (!Number.isInteger(me) || me < 0 || me >= peers.length) {
    throw new RangeError(`Me must be an index into peers (0..${peers.length - 1}), got ${me}`);
  }
  if (typeof persister?.load !== "function" || typeof persister?.save !== "function") {
    throw new TypeError(`Persister must have load() and save(), got ${String(persister)}`);
  }
  if (typeof applyCh !== "function") {
    throw new TypeError(`ApplyCh must be a function, got ${String(applyCh)}`);
  }
  const settings = { ...defaults };
  for (const key of Object.keys(defaults) as (keyof typeof defaults)[]) {
    const value = options[key];
    if (value === undefined) continue;
    if (typeof value !== "number" || !Number.isFinite(value) || value <= 0) {
      throw new RangeError(`Option ${key} must be a positive number, got ${String(value)}`);
    }
    settings[key] = value;
  }
  if (settings.electionTimeoutMinMs > settings.electionTimeoutMaxMs) {
    throw new RangeError(
      `Option electionTimeoutMinMs (${settings.electionTimeoutMinMs}) must not exceed electionTimeoutMaxMs (${settings.electionTimeoutMaxMs})`,
    );
  }
  if (settings.heartbeatIntervalMs >= settings.electionTimeoutMinMs) {
    throw new RangeError(
      `Option heartbeatIntervalMs (${settings.heartbeatIntervalMs}) must be below electionTimeoutMinMs (${settings.electionTimeoutMinMs}), or followers would start elections under a live leader`,
    );
  }
  for (const key of ["maxEntriesPerAppend", "maxAppendBytes", "maxInflightAppends"] as const) {
    if (!Number.isInteger(settings[key])) {
      throw new RangeError(`Option ${key} must be a positive integer, got ${settings[key]}`);
    }
  }
  const preVote = options.preVote ?? true;
  if (typeof preVote !== "boolean") {
    throw new TypeError(`Option preVote must be a boolean, got ${String(preVote)}`);
  }
  const limits = commandLimits(options, persister);
  const clockDriftBound = options.clockDriftBound ?? 0.1;
  if (typeof clockDriftBound !== "number" || !(clockDriftBound >= 0 && clockDriftBound < 1)) {
    throw new RangeError(
      `Option clockDriftBound must be a number in [0, 1), got ${String(clockDriftBound)}`,
    );
  }
  const noopOnElection = options.noopOnElection ?? false;
  if (typeof noopOnElection !== "boolean") {
    throw new TypeError(`Option noopOnElection must be a boolean, got ${String(noopOnElection)}`);
  }
  const onFatal = options.onFatal ?? null;
  if (onFatal !== null && typeof onFatal !== "function") {
    throw new TypeError(`Option onFatal must be a function, got ${String(onFatal)}`);
  }
  let configuration: Configuration | undefined;
  if (options.configuration !== undefined) {
    const parsed = parseConfiguration(options.configuration);
    if (typeof parsed === "string") throw new TypeError(`Option configuration: ${parsed}`);
    const outside = [...parsed.voters, ...parsed.learners].find((member) =>
      member.id >= peers.length
    );
    if (outside !== undefined) {
      throw new RangeError(
        `Option configuration: member ${outside.id} is not an index into peers (0..${
          peers.length - 1
        })`,
      );
    }
    configuration = parsed;
  }
  // Peer ids are indexes into `peers`, unless the service layer's transport vouches for members
  // added at run time, whose ids may be anything.
  const idLimit = anyPeerId ? Number.MAX_SAFE_INTEGER : peers.length;
  const state = checkLoadedState(await persister.load(), idLimit, limits);
  const clock = options.clock ?? realClock;
  const trace = options.trace === undefined ? traceFromEnvironment() : options.trace;
  const core = new RaftCore(
    {
      me,
      peerCount: peers.length,
      ...settings,
      random: options.random ?? Math.random,
      trace,
      preVote,
      noopOnElection,
      clockDriftBound,
      ...(configuration !== undefined ? { configuration } : {}),
    },
    state,
    clock.now(),
  );
  return new RaftPeer(
    core,
    peers,
    me,
    persister,
    applyCh,
    clock,
    trace,
    onFatal,
    observer,
    settings.maxAppendBytes,
    limits,
    idLimit,
  );
}

/**
 * The command bounds from the options, checked: the persister's `maxCommandBytes` caps the
 * option, since a command it cannot save would stop the peer.
 */
function commandLimits(options: RaftOptions, persister: Persister): CommandLimits {
  const limits: CommandLimits = {
    maxCommandDepth: options.maxCommandDepth ?? DEFAULT_MAX_COMMAND_DEPTH,
    maxCommandBytes: options.maxCommandBytes ?? DEFAULT_MAX_COMMAND_BYTES,
  };
  for (const key of ["maxCommandDepth", "maxCommandBytes"] as const) {
    const value = limits[key];
    if (!Number.isSafeInteger(value) || value < 1) {
      throw new RangeError(`Option ${key} must be a positive integer, got ${String(value)}`);
    }
  }
  const persisterLimit = persister.maxCommandBytes;
  if (persisterLimit !== undefined) {
    if (!Number.isSafeInteger(persisterLimit) || persisterLimit < 1) {
      throw new RangeError(
        `Persister.maxCommandBytes must be a positive integer, got ${String(persisterLimit)}`,
      );
    }
    limits.maxCommandBytes = Math.min(limits.maxCommandBytes, persisterLimit);
  }
  return limits;
}

/**
 * Checks that `command` is a JSON value within `limits` (depth, and bytes of its JSON text), and
 * returns the copy the log keeps (the caller may reuse its object; a string cannot change) and
 * the length of its JSON text, which sizes messages.
 *
 * @throws {TypeError} If `command` is not a JSON value.
 * @throws {RangeError} If it is nested deeper or its JSON text is larger than `limits` allow.
 */
export function prepareCommand(
  command: unknown,
  limits: CommandLimits,
): { copy: unknown; length: number } {
  const limit = limits.maxCommandBytes;
  if (typeof command === "string" && command.length * 6 + 2 <= limit) {
    // A string needs no copy, and its JSON text has at most 6 bytes per code unit (a \uXXXX
    // escape) plus the quotes: only a long one must be encoded to check the limit. The length
    // only sizes messages, so escapes may be left out of it.
    return { copy: command, length: command.length + 2 };
  }
  // Before serializing: a command nested a million deep costs JSON.stringify most of a second.
  const tooLarge = precheckCommand(command, limits);
  if (tooLarge !== null) throw new RangeError(tooLarge);
  let text: string | undefined;
  try {
    text = JSON.stringify(command);
  } catch (error) {
    // E.g. a string too long for V8 ("Invalid string length").
    if (error instanceof RangeError) {
      throw new RangeError(`Command is too large to serialize: ${error.message}`);
    }
    throw new TypeError(`Command must be a JSON value: ${(error as Error).message}`);
  }
  if (text === undefined) {
    throw new TypeError(`Command must be a JSON value, got ${String(command)}`);
  }
  if (text.length > limit / 3) {
    const bytes = new TextEncoder().encode(text).length;
    if (bytes > limit) {
      throw new RangeError(
        `Command is ${bytes} bytes of JSON, more than the limit of ${limit} bytes`,
      );
    }
  }
  const copy = typeof command === "string" ? command : JSON.parse(text);
  // The copy is plain JSON: its depth is what every peer will see.
  const refused = checkCommand(copy, limits);
  if (refused !== null) throw new RangeError(refused);
  return { copy, length: text.length };
}

/** A short description of a value for an error message. */
function describeValue(value: unknown): string {
  if (value === null || typeof value !== "object") return String(value);
  return Object.getPrototypeOf(value)?.constructor?.name ?? "an object";
}

/**
 * Rejects what a persister returned unless it is a well-formed {@linkcode PersistentState}: a
 * snapshot (or `null`; a persister written before snapshots, which returns none, counts as
 * `null`) whose term is at most the current term, then log entries whose terms never decrease,
 * starting at the snapshot's term or later, and never pass the current term.
 */
function checkLoadedState(
  state: unknown,
  idLimit: number,
  limits: CommandLimits,
): PersistentState {
  const fail = (what: string): never => {
    throw new TypeError(`Persister.load() returned a malformed state: ${what}`);
  };
  if (typeof state !== "object" || state === null) return fail(`not an object (${String(state)})`);
  const { term, votedFor, snapshot, log } = state as Record<string, unknown>;
  if (!Number.isSafeInteger(term) || (term as number) < 0) return fail(`term ${String(term)}`);
  if ((term as number) > MAX_TERM) {
    return fail(`term ${term} is above ${MAX_TERM}, which leaves too little room for elections`);
  }
  if (
    votedFor !== null &&
    (!Number.isSafeInteger(votedFor) || (votedFor as number) < 0 || (votedFor as number) >= idLimit)
  ) {
    return fail(`votedFor ${String(votedFor)}`);
  }
  let checkedSnapshot: Snapshot | null = null;
  if (snapshot !== null && snapshot !== undefined) {
    if (typeof snapshot !== "object") {
      return fail(`snapshot is not an object (${String(snapshot)})`);
    }
    const { index, term: snapshotTerm, data } = snapshot as Record<string, unknown>;
    if (!Number.isSafeInteger(index) || (index as number) < 0) {
      return fail(`snapshot index ${String(index)}`);
    }
    if (
      !Number.isSafeInteger(snapshotTerm) || (snapshotTerm as number) < 0 ||
      (snapshotTerm as number) > (term as number)
    ) {
      return fail(`snapshot term ${String(snapshotTerm)} (current term ${term})`);
    }
    if (!(data instanceof Uint8Array)) return fail(`snapshot data is not a Uint8Array`);
    checkedSnapshot = { index: index as number, term: snapshotTerm as number, data };
    const stored = (snapshot as Record<string, unknown>).configuration;
    if (stored !== undefined) {
      const configuration = parseConfiguration(stored);
      if (typeof configuration === "string") {
        return fail(`snapshot configuration: ${configuration}`);
      }
      checkedSnapshot.configuration = configuration;
    }
  }
  if (!Array.isArray(log)) return fail(`log is not an array`);
  const firstIndex = (checkedSnapshot?.index ?? 0) + 1;
  let previousTerm = checkedSnapshot?.term ?? 0;
  const entries: LogEntry[] = log.map((entry: unknown, i) => {
    const entryTerm = (entry as LogEntry | null)?.term;
    if (
      !Number.isSafeInteger(entryTerm) || entryTerm! < Math.max(1, previousTerm) ||
      entryTerm! > (term as number)
    ) {
      return fail(`entry at index ${firstIndex + i} has term ${String(entryTerm)}`);
    }
    const { command, type } = entry as LogEntry;
    if (command === undefined) return fail(`entry at index ${firstIndex + i} has no command`);
    if (type === "config") {
      const configuration = parseConfiguration(command);
      if (typeof configuration === "string") {
        return fail(`entry at index ${firstIndex + i}: ${configuration}`);
      }
      previousTerm = entryTerm!;
      return { term: entryTerm!, command: configuration, type };
    }
    if (type !== undefined && (type !== "noop" || command !== null)) {
      return fail(`entry at index ${firstIndex + i} has type ${JSON.stringify(type)}`);
    }
    const refused = checkCommand(command, limits);
    if (refused !== null) return fail(`entry at index ${firstIndex + i}: ${refused}`);
    previousTerm = entryTerm!;
    return type === "noop" ? { term: entryTerm!, command, type } : { term: entryTerm!, command };
  });
  return {
    term: term as number,
    votedFor: votedFor as number | null,
    snapshot: checkedSnapshot,
    log: entries,
  };
}

/** One running peer: the core plus its timer, its save queue and its apply queue. */
export class RaftPeer implements Raft {
  readonly #core: RaftCore;
  /** How to reach each peer, by id; a service layer adds members as they join. */
  readonly #peers: Map<number, ClientEnd>;
  /**
   * Peer ids accepted from the wire (and the disk) are below this: the peer list's length, or
   * any safe integer when members can be added at run time (a leader added after this peer last
   * heard of the configuration must still reach it).
   */
  readonly #idLimit: number;
  readonly #me: number;
  readonly #persister: Persister;
  readonly #applyCh: (msg: ApplyMsg) => void | Promise<void>;
  readonly #clock: Clock;
  readonly #trace: TraceSink | null;
  readonly #onFatal: ((error: FatalError) => void) | null;
  readonly #observer: PeerObserver | null;

  #dead = false;
  /** Settles once every save asked for so far is durable and handled, in order; never rejects. */
  #saveChain: Promise<void> = Promise.resolve();
  #cancelTimer: CancelTimer | null = null;
  #timerAt = Infinity;
  #driveScheduled = false;
  #applyQueue: ApplyMsg[] = [];
  #applyHead = 0;
  #applying = false;
  /** Settles when the applier's current run ends; never rejects. */
  #applierDone: Promise<void> = Promise.resolve();
  #lastApplied = 0;
  /** The index of the message applyCh was last handed (it may still be working on it). */
  #delivering = 0;
  /** Most bytes of a snapshot chunk accepted from the wire. */
  readonly #maxChunkBytes: number;
  /** How deep and large commands may be, from `start()`, the wire or the disk. */
  readonly #limits: CommandLimits;
  /** Reads asked of the core, by id: each resolves with its read index, or null. */
  readonly #reads = new Map<number, (index: number | null) => void>();
  #nextReadId = 1;

  constructor(
    core: RaftCore,
    peers: ClientEnd[],
    me: number,
    persister: Persister,
    applyCh: (msg: ApplyMsg) => void | Promise<void>,
    clock: Clock,
    trace: TraceSink | null,
    onFatal: ((error: FatalError) => void) | null,
    observer: PeerObserver | null,
    maxChunkBytes: number,
    limits: CommandLimits,
    idLimit: number,
  ) {
    this.#core = core;
    this.#peers = new Map(peers.map((end, id) => [id, end]));
    this.#idLimit = idLimit;
    this.#me = me;
    this.#persister = persister;
    this.#applyCh = applyCh;
    this.#clock = clock;
    this.#trace = trace;
    this.#onFatal = onFatal;
    this.#observer = observer;
    this.#maxChunkBytes = maxChunkBytes;
    this.#limits = limits;
    this.#armTimer();
    // A snapshot loaded from disk goes to the service right away, before any command.
    this.#scheduleDrive();
  }

  start(command: unknown): { index: number; term: number; isLeader: boolean } {
    const { copy, length } = prepareCommand(command, this.#limits);
    return this.proposePrepared(copy, length);
  }

  /**
   * Proposes a command already checked and copied by {@linkcode prepareCommand}; `length` is
   * its JSON text's length.
   */
  proposePrepared(
    copy: unknown,
    length: number,
  ): { index: number; term: number; isLeader: boolean } {
    if (this.#dead) return { index: -1, term: this.#core.currentTerm, isLeader: false };
    const result = this.#core.propose(copy, length);
    if (result.isLeader) this.#scheduleDrive();
    return result;
  }

  /**
   * ReadIndex (thesis §6.4): resolves with the index this peer's state machine must have applied
   * before a read of it is linearizable, once a heartbeat round confirmed this peer leads; null if
   * it does not lead (or stops leading first).
   */
  readIndex(): Promise<number | null> {
    if (this.#dead) return Promise.resolve(null);
    const id = this.#nextReadId++;
    let started: boolean;
    try {
      started = this.#core.requestRead(id);
    } catch (error) {
      this.#coreFailed(error);
      return Promise.resolve(null);
    }
    if (!started) return Promise.resolve(null);
    this.#scheduleDrive();
    return new Promise((resolve) => this.#reads.set(id, resolve));
  }

  /** A lease read (thesis §6.4.1): the read index if this leader's lease holds, else null. */
  leaseRead(): number | null {
    return this.#dead ? null : this.#core.leaseRead(this.#clock.now());
  }

  /**
   * A follower read: asks the leader for a read index (the `ReadIndex` RPC). Null when no leader
   * is known, or it answered none.
   */
  async askLeaderForReadIndex(): Promise<number | null> {
    const leader = this.#core.leaderId;
    if (this.#dead || leader === null || leader === this.#me) return null;
    let reply: unknown;
    try {
      const end = this.#peers.get(leader);
      if (end === undefined) return null;
      reply = await end.call(ReadIndex, {});
    } catch {
      return null;
    }
    return parseReadIndexReply(reply, this.#core.currentTerm)?.index ?? null;
  }

  /**
   * Starts handing leadership over to `target` (thesis §3.10); returns why it cannot start, or
   * null.
   */
  transferLeadership(target: number): "not leader" | "not a voter" | "self" | null {
    if (this.#dead) return "not leader";
    let refusal: "not leader" | "not a voter" | "self" | null;
    try {
      refusal = this.#core.transferLeadership(target, this.#clock.now());
    } catch (error) {
      this.#coreFailed(error);
      return "not leader";
    }
    if (refusal === null) this.#drive();
    return refusal;
  }

  /**
   * Proposes a change of the cluster's configuration (thesis chapter 4); see
   * `RaftCore.proposeConfiguration` for when it is refused.
   */
  proposeConfiguration(
    next: Configuration,
  ): ReturnType<RaftCore["proposeConfiguration"]> {
    if (this.#dead) {
      return { ok: false, reason: "not leader", message: `peer ${this.#me} was killed` };
    }
    let result: ReturnType<RaftCore["proposeConfiguration"]>;
    try {
      result = this.#core.proposeConfiguration(next, this.#clock.now());
    } catch (error) {
      this.#coreFailed(error);
      return { ok: false, reason: "not leader", message: `peer ${this.#me} stopped` };
    }
    if (result.ok) this.#scheduleDrive();
    return result;
  }

  /** Sets how this peer reaches peer `id` (a member added at run time), or forgets it (`null`). */
  setEnd(id: number, end: ClientEnd | null): void {
    if (end === null) this.#peers.delete(id);
    else this.#peers.set(id, end);
  }

  /** How deep and large commands may be, for a service layer's own checks. */
  get limits(): CommandLimits {
    return this.#limits;
  }

  /** The protocol core, for a service layer's status and metrics (read only). */
  get core(): RaftCore {
    return this.#core;
  }

  /**
   * Resolves once nothing of this peer runs any more: it was killed, and the apply in progress
   * and every save it started have settled.
   */
  async settled(): Promise<void> {
    await this.#saveChain;
    await this.#applierDone;
  }

  snapshot(index: number, data: Uint8Array): void {
    if (!Number.isSafeInteger(index) || index < 0) {
      throw new RangeError(`Snapshot index must be a non-negative integer, got ${String(index)}`);
    }
    if (!(data instanceof Uint8Array)) {
      throw new TypeError(`Snapshot data must be a Uint8Array, got ${describeValue(data)}`);
    }
    if (this.#dead || index <= this.#core.snapshotIndex) return;
    const delivered = Math.max(this.#lastApplied, this.#delivering);
    if (index > delivered) {
      throw new RangeError(
        `Snapshot index ${index} has not been applied yet: the last index handed to applyCh is ${delivered}`,
      );
    }
    // The core keeps its own copy: the service may reuse its buffer.
    if (this.#core.compact(index, data.slice())) this.#scheduleDrive();
  }

  getState(): { term: number; isLeader: boolean } {
    return { term: this.#core.currentTerm, isLeader: this.#core.role === "leader" };
  }

  status(): RaftStatus {
    return {
      me: this.#me,
      term: this.#core.currentTerm,
      role: this.#core.role,
      leaderId: this.#core.leaderId,
      commitIndex: this.#core.commitIndex,
      lastApplied: this.#lastApplied,
      lastLogIndex: this.#core.lastIndex,
    };
  }

  kill(): void {
    if (this.#dead) return;
    this.#dead = true;
    this.#cancelTimer?.();
    this.#cancelTimer = null;
    this.#applyQueue = [];
    this.#applyHead = 0;
    for (const resolve of this.#reads.values()) resolve(null);
    this.#reads.clear();
  }

  killed(): boolean {
    return this.#dead;
  }

  async handleRpc(method: string, args: unknown): Promise<unknown> {
    if (this.#dead) return undefined;
    const limits = {
      ...this.#limits,
      peerCount: this.#idLimit,
      currentTerm: this.#core.currentTerm,
    };
    const now = this.#clock.now();
    let reply: unknown;
    try {
      if (method === RequestVote) {
        const parsed = parseRequestVoteArgs(args, limits);
        if (!parsed.ok) return this.#refuse(parsed.error);
        reply = this.#core.step({ type: RequestVote, args: parsed.value }, now);
      } else if (method === AppendEntries) {
        const parsed = parseAppendEntriesArgs(args, limits);
        if (!parsed.ok) return this.#refuse(parsed.error);
        reply = this.#core.step({ type: AppendEntries, args: parsed.value }, now);
      } else if (method === InstallSnapshot) {
        const parsed = parseInstallSnapshotArgs(args, limits, this.#maxChunkBytes);
        if (!parsed.ok) return this.#refuse(parsed.error);
        reply = this.#core.step({ type: InstallSnapshot, ...parsed.value }, now);
      } else if (method === TimeoutNow) {
        const parsed = parseTimeoutNowArgs(args, limits);
        if (!parsed.ok) return this.#refuse(parsed.error);
        reply = this.#core.step({ type: TimeoutNow, args: parsed.value }, now);
      } else if (method === ReadIndex) {
        const parsed = parseReadIndexArgs(args);
        if (!parsed.ok) return this.#refuse(parsed.error);
        const index = await this.readIndex();
        if (this.#dead) return undefined;
        this.#observer?.rpc("in", method, args, { index });
        return { term: this.#core.currentTerm, index };
      } else {
        return this.#refuse(`Unknown RPC method ${JSON.stringify(method) ?? String(method)}`);
      }
    } catch (error) {
      this.#coreFailed(error);
      return undefined;
    }
    this.#drive();
    // Figure 2: respond only after the state the reply depends on is on stable storage.
    await this.#saveChain;
    if (this.#dead) return undefined;
    this.#observer?.rpc("in", method, args, reply);
    return reply;
  }

  #refuse(error: string): RpcErrorReply {
    this.#trace?.(`[peer ${this.#me}] refused request: ${error}`);
    return { error };
  }

  #scheduleDrive(): void {
    if (this.#driveScheduled) return;
    this.#driveScheduled = true;
    queueMicrotask(() => {
      this.#driveScheduled = false;
      this.#drive();
    });
  }

  /** Carries out what the core asks for: saves, sends, applies; then re-arms the timer. */
  #drive(): void {
    if (this.#dead) return;
    let ready: Ready;
    try {
      ready = this.#core.takeReady(this.#clock.now());
    } catch (error) {
      this.#coreFailed(error);
      return;
    }
    this.#observer?.ready(ready);
    for (const { id, index } of ready.reads) {
      this.#reads.get(id)?.(index);
      this.#reads.delete(id);
    }
    const saved = this.#save(ready);
    for (const request of ready.send) this.#send(request);
    if (ready.sendAfterSave.length > 0) {
      saved.then(() => {
        for (const request of ready.sendAfterSave) this.#send(request);
      });
    }
    if (ready.apply.length > 0) {
      // Not push(...apply): a restarted peer may apply more entries at once than a call takes
      // arguments.
      if (this.#applyHead === this.#applyQueue.length) {
        this.#applyQueue = ready.apply;
        this.#applyHead = 0;
      } else {
        for (const msg of ready.apply) this.#applyQueue.push(msg);
      }
      this.#runApplier();
    }
    this.#armTimer();
  }

  #save(ready: Ready): Promise<void> {
    const { save: change, saveMark } = ready;
    if (change === null || saveMark === null) return this.#saveChain;
    // The save starts at once, without waiting for earlier ones: persisters apply saves in call
    // order, and a slow disk then serves many at a time. Waiting for each before starting the
    // next would let saves pile up faster than one disk round trip each can clear them, and
    // every reply waits for the whole pile. Only their completions are handled in order.
    let written: Promise<{ error: unknown } | null>;
    const startedAt = this.#clock.now();
    try {
      written = this.#persister.save(change).then(() => {
        this.#observer?.saved(this.#clock.now() - startedAt);
        return null;
      }, (error: unknown) => ({ error }));
    } catch (error) {
      written = Promise.resolve({ error });
    }
    const previous = this.#saveChain;
    this.#saveChain = (async () => {
      await previous;
      const failure = await written;
      if (this.#dead) return;
      if (failure !== null) {
        this.#fail("save", "a save to its persister failed", failure.error);
        return;
      }
      try {
        this.#core.onSaved(saveMark, this.#clock.now());
      } catch (error) {
        this.#coreFailed(error);
        return;
      }
      this.#scheduleDrive();
    })();
    return this.#saveChain;
  }

  #send(request: Outgoing): void {
    if (this.#dead) return;
    let call: Promise<unknown>;
    try {
      const end = this.#peers.get(request.to);
      call = end === undefined
        ? Promise.resolve(undefined)
        : end.call(request.method, request.args);
    } catch {
      call = Promise.resolve(undefined);
    }
    call.catch(() => undefined).then((reply) => {
      if (this.#dead) return;
      this.#observer?.rpc("out", request.method, request.args, reply);
      const now = this.#clock.now();
      try {
        if (request.method === RequestVote) {
          this.#core.step({
            type: "RequestVoteReply",
            from: request.to,
            args: request.args,
            reply: parseRequestVoteReply(reply, this.#core.currentTerm),
          }, now);
        } else if (request.method === AppendEntries) {
          this.#core.step({
            type: "AppendEntriesReply",
            from: request.to,
            args: request.args,
            reply: parseAppendEntriesReply(reply, this.#core.currentTerm),
          }, now);
        } else if (request.method === InstallSnapshot) {
          this.#core.step({
            type: "InstallSnapshotReply",
            from: request.to,
            args: request.args,
            reply: parseInstallSnapshotReply(reply, this.#core.currentTerm),
          }, now);
        } else {
          this.#core.step({
            type: "TimeoutNowReply",
            from: request.to,
            args: request.args,
            reply: parseTimeoutNowReply(reply, this.#core.currentTerm),
          }, now);
        }
      } catch (error) {
        this.#coreFailed(error);
        return;
      }
      this.#drive();
    });
  }

  /** Hands committed entries to the service one at a time, awaiting each returned promise. */
  #runApplier(): void {
    if (this.#applying) return;
    this.#applierDone = this.#applyAll();
  }

  async #applyAll(): Promise<void> {
    this.#applying = true;
    while (!this.#dead && this.#applyHead < this.#applyQueue.length) {
      const msg = this.#applyQueue[this.#applyHead++]!;
      const index = msg.snapshotValid ? msg.snapshotIndex : msg.commandIndex;
      try {
        // The log keeps its own command and snapshot: a service that changes what it was
        // handed must not change what this peer replicates.
        if (typeof msg.command === "object" && msg.command !== null) {
          msg.command = structuredClone(msg.command);
        }
        if (msg.snapshot !== null) msg.snapshot = msg.snapshot.slice();
        this.#delivering = index;
        const result = this.#applyCh(msg);
        if (result instanceof Promise) await result;
      } catch (error) {
        // Applying later entries without this one would corrupt the service's state.
        const what = msg.snapshotValid ? `the snapshot through ${index}` : `index ${index}`;
        this.#fail("apply", `applyCh failed at ${what}`, error);
        break;
      }
      if (this.#dead) break;
      this.#lastApplied = index;
    }
    if (this.#applyHead === this.#applyQueue.length) {
      this.#applyQueue = [];
      this.#applyHead = 0;
    }
    this.#applying = false;
  }

  #armTimer(): void {
    if (this.#dead) return;
    const deadline = this.#core.nextDeadline();
    // A timer that fires early is harmless (tick does nothing yet and re-arms), so only a
    // deadline earlier than the armed one needs a new timer.
    if (deadline >= this.#timerAt) return;
    this.#cancelTimer?.();
    this.#timerAt = deadline;
    this.#cancelTimer = this.#clock.schedule(deadline - this.#clock.now(), () => {
      this.#cancelTimer = null;
      this.#timerAt = Infinity;
      if (this.#dead) return;
      try {
        this.#core.tick(this.#clock.now());
      } catch (error) {
        this.#coreFailed(error);
        return;
      }
      this.#drive();
    });
  }

  /** The core threw: an invariant broke (or a bug threw); nothing it holds can be trusted. */
  #coreFailed(error: unknown): void {
    if (error instanceof InvariantError) {
      this.#fail("invariant", `a protocol invariant broke: ${error.message}`, error);
    } else {
      this.#fail("invariant", `the protocol core threw`, error);
    }
  }

  /** Stops the peer for good and tells the service why: through onFatal, else the console. */
  #fail(reason: FatalReason, what: string, error: unknown): void {
    if (this.#dead) return;
    this.kill();
    const fatal = new FatalError(reason, `Raft peer ${this.#me} stopped: ${what}`, {
      cause: error,
    });
    this.#trace?.(`[peer ${this.#me}] ${fatal.message}: ${String(error)}`);
    if (this.#onFatal === null) {
      console.error(fatal.message, error);
      return;
    }
    try {
      this.#onFatal(fatal);
    } catch (callbackError) {
      console.error(`Raft peer ${this.#me}: onFatal threw`, callbackError);
    }
  }
}
