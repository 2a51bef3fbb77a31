/**
 * The driver: wires the I/O-free {@linkcode RaftCore} to a clock, a transport and a persister, and
 * implements the lab interface ({@linkcode make}, `start`, `getState`, `kill`).
 *
 * @module
 */

import { type CancelTimer, type Clock, realClock } from "./clock.ts";
import { type Outgoing, RaftCore, type Ready } from "./raft/core.ts";
import {
  AppendEntries,
  parseAppendEntriesArgs,
  parseAppendEntriesReply,
  parseRequestVoteArgs,
  parseRequestVoteReply,
  RequestVote,
  type RpcErrorReply,
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
import type {
  ApplyMsg,
  ClientEnd,
  LogEntry,
  PersistentState,
  Persister,
  Raft,
  RaftOptions,
  RaftStatus,
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
 * import { make, MemoryPersister } from "../mod.ts";
 * const raft = await make([{ call: () => Promise.resolve(undefined) }], 0, new MemoryPersister(),
 *   (msg) => console.log("applied", msg.commandIndex, msg.command));
 * // After an election timeout, raft.start("hello") returns { index: 1, term: 1, isLeader: true }.
 * raft.kill();
 * ```
 */
export async function make(
  peers: ClientEnd[],
  me: number,
  persister: Persister,
  applyCh: (msg: ApplyMsg) => void | Promise<void>,
  options: RaftOptions = {},
): Promise<Raft> {
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
  const limits = commandLimits(options, persister);
  const preVote = options.preVote ?? true;
  if (typeof preVote !== "boolean") {
    throw new TypeError(`Option preVote must be a boolean, got ${String(preVote)}`);
  }
  const state = checkLoadedState(await persister.load(), peers.length, limits);
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
    },
    state,
    clock.now(),
  );
  return new RaftPeer(core, peers, me, persister, applyCh, clock, trace, limits);
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

/** Rejects what a persister returned unless it is a well-formed {@linkcode PersistentState}. */
function checkLoadedState(
  state: unknown,
  peerCount: number,
  limits: CommandLimits,
): PersistentState {
  const fail = (what: string): never => {
    throw new TypeError(`Persister.load() returned a malformed state: ${what}`);
  };
  if (typeof state !== "object" || state === null) return fail(`not an object (${String(state)})`);
  const { term, votedFor, log } = state as Record<string, unknown>;
  if (!Number.isSafeInteger(term) || (term as number) < 0) return fail(`term ${String(term)}`);
  if ((term as number) > MAX_TERM) {
    return fail(`term ${term} is above ${MAX_TERM}, which leaves too little room for elections`);
  }
  if (
    votedFor !== null &&
    (!Number.isInteger(votedFor) || (votedFor as number) < 0 || (votedFor as number) >= peerCount)
  ) {
    return fail(`votedFor ${String(votedFor)}`);
  }
  if (!Array.isArray(log)) return fail(`log is not an array`);
  let previousTerm = 0;
  const entries: LogEntry[] = log.map((entry: unknown, i) => {
    const entryTerm = (entry as LogEntry | null)?.term;
    if (
      !Number.isSafeInteger(entryTerm) || entryTerm! < Math.max(1, previousTerm) ||
      entryTerm! > (term as number)
    ) {
      return fail(`entry at index ${i + 1} has term ${String(entryTerm)}`);
    }
    if ((entry as LogEntry).command === undefined) {
      return fail(`entry at index ${i + 1} has no command`);
    }
    const refused = checkCommand((entry as LogEntry).command, limits);
    if (refused !== null) return fail(`entry at index ${i + 1}: ${refused}`);
    previousTerm = entryTerm!;
    return { term: entryTerm!, command: (entry as LogEntry).command };
  });
  return { term: term as number, votedFor: votedFor as number | null, log: entries };
}

/** One running peer: the core plus its timer, its save queue and its apply queue. */
class RaftPeer implements Raft {
  readonly #core: RaftCore;
  readonly #peers: ClientEnd[];
  readonly #me: number;
  readonly #persister: Persister;
  readonly #applyCh: (msg: ApplyMsg) => void | Promise<void>;
  readonly #clock: Clock;
  readonly #trace: TraceSink | null;
  readonly #limits: CommandLimits;

  #dead = false;
  /** Settles once every save asked for so far is durable and handled, in order; never rejects. */
  #saveChain: Promise<void> = Promise.resolve();
  #cancelTimer: CancelTimer | null = null;
  #timerAt = Infinity;
  #driveScheduled = false;
  #applyQueue: ApplyMsg[] = [];
  #applyHead = 0;
  #applying = false;
  #lastApplied = 0;

  constructor(
    core: RaftCore,
    peers: ClientEnd[],
    me: number,
    persister: Persister,
    applyCh: (msg: ApplyMsg) => void | Promise<void>,
    clock: Clock,
    trace: TraceSink | null,
    limits: CommandLimits,
  ) {
    this.#core = core;
    this.#limits = limits;
    this.#peers = peers;
    this.#me = me;
    this.#persister = persister;
    this.#applyCh = applyCh;
    this.#clock = clock;
    this.#trace = trace;
    this.#armTimer();
  }

  start(command: unknown): { index: number; term: number; isLeader: boolean } {
    const limit = this.#limits.maxCommandBytes;
    let copy: unknown;
    let length: number;
    if (typeof command === "string" && command.length * 6 + 2 <= limit) {
      // A string needs no copy, and its JSON text has at most 6 bytes per code unit (a \uXXXX
      // escape) plus the quotes: only a long one must be encoded to check the limit. The length
      // only sizes messages, so escapes may be left out of it.
      copy = command;
      length = command.length + 2;
    } else {
      // Before serializing: a command nested a million deep costs JSON.stringify most of a second.
      const tooLarge = precheckCommand(command, this.#limits);
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
      // The log keeps its own copy, so the caller may reuse its object; a string cannot change.
      copy = typeof command === "string" ? command : JSON.parse(text);
      // The copy is plain JSON: its depth is what every peer will see.
      const refused = checkCommand(copy, this.#limits);
      if (refused !== null) throw new RangeError(refused);
      length = text.length;
    }
    if (this.#dead) return { index: -1, term: this.#core.currentTerm, isLeader: false };
    const result = this.#core.propose(copy, length);
    if (result.isLeader) this.#scheduleDrive();
    return result;
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
  }

  killed(): boolean {
    return this.#dead;
  }

  async handleRpc(method: string, args: unknown): Promise<unknown> {
    if (this.#dead) return undefined;
    const limits = {
      ...this.#limits,
      peerCount: this.#peers.length,
      currentTerm: this.#core.currentTerm,
    };
    const now = this.#clock.now();
    let reply: unknown;
    if (method === RequestVote) {
      const parsed = parseRequestVoteArgs(args, limits);
      if (!parsed.ok) return this.#refuse(parsed.error);
      reply = this.#core.handleRequestVote(parsed.value, now);
    } else if (method === AppendEntries) {
      const parsed = parseAppendEntriesArgs(args, limits);
      if (!parsed.ok) return this.#refuse(parsed.error);
      reply = this.#core.handleAppendEntries(parsed.value, now);
    } else {
      return this.#refuse(`Unknown RPC method ${JSON.stringify(method) ?? String(method)}`);
    }
    this.#drive();
    // Figure 2: respond only after the state the reply depends on is on stable storage.
    await this.#saveChain;
    return this.#dead ? undefined : reply;
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
    const ready = this.#core.takeReady(this.#clock.now());
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
    try {
      written = this.#persister.save(change).then(() => null, (error: unknown) => ({ error }));
    } catch (error) {
      written = Promise.resolve({ error });
    }
    const previous = this.#saveChain;
    this.#saveChain = (async () => {
      await previous;
      const failure = await written;
      if (this.#dead) return;
      if (failure !== null) {
        this.#fail("save failed", failure.error);
        return;
      }
      this.#core.onSaved(saveMark, this.#clock.now());
      this.#scheduleDrive();
    })();
    return this.#saveChain;
  }

  #send(request: Outgoing): void {
    if (this.#dead) return;
    let call: Promise<unknown>;
    try {
      call = this.#peers[request.to]!.call(request.method, request.args);
    } catch {
      call = Promise.resolve(undefined);
    }
    call.catch(() => undefined).then((reply) => {
      if (this.#dead) return;
      const now = this.#clock.now();
      if (request.method === RequestVote) {
        this.#core.handleRequestVoteReply(
          request.to,
          request.args,
          parseRequestVoteReply(reply, this.#core.currentTerm),
          now,
        );
      } else {
        this.#core.handleAppendEntriesReply(
          request.to,
          request.args,
          parseAppendEntriesReply(reply, this.#core.currentTerm),
          now,
        );
      }
      this.#drive();
    });
  }

  /** Hands committed entries to the service one at a time, awaiting each returned promise. */
  async #runApplier(): Promise<void> {
    if (this.#applying) return;
    this.#applying = true;
    while (!this.#dead && this.#applyHead < this.#applyQueue.length) {
      const msg = this.#applyQueue[this.#applyHead++]!;
      // The log keeps its own command: a service that changes what it was handed must not
      // change what this peer replicates.
      if (typeof msg.command === "object" && msg.command !== null) {
        msg.command = structuredClone(msg.command);
      }
      try {
        const result = this.#applyCh(msg);
        if (result instanceof Promise) await result;
      } catch (error) {
        // Applying later entries without this one would corrupt the service's state.
        this.#fail(`applyCh threw at index ${msg.commandIndex}`, error);
        break;
      }
      if (this.#dead) break;
      this.#lastApplied = msg.commandIndex;
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
      this.#core.tick(this.#clock.now());
      this.#drive();
    });
  }

  #fail(what: string, error: unknown): void {
    console.error(`Raft peer ${this.#me} stops: ${what}:`, error);
    this.kill();
  }
}
