/**
 * The public shapes of the library: what a service hands to {@linkcode make} and what it gets
 * back. They mirror the classic Raft lab interface (`Make`, `Start`, `GetState`, `Kill`,
 * `ApplyMsg`), translated to TypeScript.
 *
 * @module
 */

import type { Clock, RandomSource } from "./clock.ts";
import type { FatalError } from "./errors.ts";
import type { Configuration, PersistChange, PersistentState, Role } from "./raft/types.ts";

export type {
  ApplyMsg,
  Configuration,
  LogEntry,
  Member,
  PersistChange,
  PersistentState,
  Role,
  Snapshot,
} from "./raft/types.ts";

/**
 * Stable storage for one peer. Implementations must apply saves atomically and in call order.
 *
 * @example A persister that keeps nothing (for illustration only: it loses everything on restart)
 * ```ts
 * import type { Persister } from "@denoraft/raft";
 * const forgetful: Persister = {
 *   load: () => Promise.resolve({ term: 0, votedFor: null, snapshot: null, log: [] }),
 *   save: () => Promise.resolve(),
 * };
 * ```
 */
export interface Persister {
  /**
   * Reads the saved state; a fresh persister gives
   * `{ term: 0, votedFor: null, snapshot: null, log: [] }`.
   */
  load(): Promise<PersistentState>;
  /** Applies `change` atomically; the change is durable once the promise resolves. */
  save(change: PersistChange): Promise<void>;
  /**
   * Optional: releases what the persister holds (files, locks). `RaftNode.close()` calls it
   * last, once no save is in progress.
   */
  close?(): Promise<void>;
  /**
   * Optional: the largest command, in bytes of its JSON text (UTF-8), that one save can hold.
   * `start()` refuses a larger command with a `RangeError` before appending anything.
   */
  readonly maxCommandBytes?: number;
}

/**
 * One peer's way to reach another peer, as a transport provides it.
 */
export interface ClientEnd {
  /**
   * Sends a request. Resolves to the reply, or to `undefined` when no reply comes (lost request
   * or reply, dead or unreachable peer). Never rejects.
   */
  call(method: string, args: unknown): Promise<unknown | undefined>;
}

/** Something that answers incoming RPCs: a Raft peer, as a transport sees it. */
export interface RpcHandler {
  /** A transport delivers an incoming request here; resolves to the reply. */
  handleRpc(method: string, args: unknown): Promise<unknown>;
}

/** A snapshot of a peer's volatile state, for status pages and tests. */
export interface RaftStatus {
  /** This peer's number. */
  me: number;
  /** Latest term seen. */
  term: number;
  /** Follower, candidate or leader. */
  role: Role;
  /** The leader of the current term, if known. */
  leaderId: number | null;
  /** Highest index known committed. */
  commitIndex: number;
  /** Highest index handed to the service. */
  lastApplied: number;
  /** Index of the last log entry. */
  lastLogIndex: number;
}

/** A running Raft peer, as {@linkcode make} returns it. */
export interface Raft extends RpcHandler {
  /**
   * Proposes `command` (a JSON value) for the replicated log and returns at once. When this peer
   * is the leader, `index` is where the command will appear if it ever commits, and `term` is the
   * current term; otherwise `isLeader` is false and nothing was appended.
   */
  start(command: unknown): { index: number; term: number; isLeader: boolean };
  /** The current term, and whether this peer believes it is the leader. */
  getState(): { term: number; isLeader: boolean };
  /** Stops the peer for good: no more RPCs sent, no more applies, timers cleared. */
  kill(): void;
  /** Whether `kill()` has been called. */
  killed(): boolean;
  /**
   * The service has saved a snapshot of its state through `index` (an index already delivered
   * through applyCh); Raft keeps it, may discard its log through `index`, and sends it to
   * followers that need entries it discarded. Returns at once. It may be called from inside the
   * applyCh callback, before that call returns; a call at or below the current snapshot index
   * is ignored.
   *
   * @throws {RangeError} If `index` is not an integer, or was not delivered through applyCh yet.
   * @throws {TypeError} If `data` is not a `Uint8Array`.
   */
  snapshot(index: number, data: Uint8Array): void;
  /** Term, role, leader and indexes, for status pages and tests. */
  status(): RaftStatus;
  /** A transport delivers an incoming request here; resolves to the reply. */
  handleRpc(method: string, args: unknown): Promise<unknown>;
}

/** Where a peer's debug trace goes; see {@linkcode RaftOptions.trace}. */
export type TraceSink = (line: string) => void;

/** Optional tuning for {@linkcode make}. Every field has a default that meets the lab's rules. */
export interface RaftOptions {
  /**
   * Interval between a leader's heartbeats to each follower, in ms. Default 250: the lab allows
   * at most 10 heartbeats a second, and 4 a second keeps the lab's RPC counts at or below its
   * reference solution's.
   */
  heartbeatIntervalMs?: number;
  /**
   * How long a leader waits before telling idle followers of a new commit index, in ms. Default
   * 25: followers apply within a few tens of ms, while a busy leader's next AppendEntries
   * (sent at once on `start()`) usually carries the news for free.
   */
  commitNotifyDelayMs?: number;
  /**
   * Lower bound of the randomized election timeout, in ms. Default 700: nearly three heartbeat
   * intervals, so that a follower starts an election only after three heartbeats in a row were
   * lost (0.1% on the lab's unreliable network).
   */
  electionTimeoutMinMs?: number;
  /**
   * Upper bound of the randomized election timeout, in ms. Default 1100: a spread of 400 ms makes
   * split votes rare, and a failed leader is replaced well within the lab's 5 seconds.
   */
  electionTimeoutMaxMs?: number;
  /**
   * Most entries one AppendEntries carries. Default 256: large enough for quick catch-up, small
   * enough that one message stays well under a transport's size limit for modest commands.
   */
  maxEntriesPerAppend?: number;
  /**
   * Most bytes of entries one AppendEntries carries, counting each entry as the length of its
   * JSON text plus a little framing; a single larger entry still goes out alone. Default 64 KiB:
   * large enough that per-message costs vanish next to the entries' (256 entries of 100-byte
   * commands fit), small enough that a message never holds up the link for long.
   */
  maxAppendBytes?: number;
  /**
   * Most AppendEntries a leader sends to one follower before it has replies to them: a follower
   * whose log is known to match gets new entries while earlier ones are still on the wire or
   * being saved. Default 16: enough to keep a follower's disk and the link busy, and with
   * `maxAppendBytes` it bounds what a slow follower costs the leader to 1 MiB. Only full messages
   * (cut by `maxEntriesPerAppend` or `maxAppendBytes`) follow one in flight; a partial batch waits
   * for the replies, so a light load sends no more messages than without pipelining. After a
   * rejection or a lost request the leader sends one at a time until a reply shows where logs
   * match.
   */
  maxInflightAppends?: number;
  /**
   * Most levels of nested arrays and objects in a command (`"a"` has depth 0, `{"a": [1]}` depth
   * 2). `start()` throws a `RangeError` for a deeper command, and an AppendEntries carrying one is
   * refused with an `{ error }` reply, so that no peer ever has to apply it. Give every peer the
   * same value. Default 64: services build commands a few levels deep, while handing a command
   * to the service (`structuredClone`) fails somewhere between 1,000 and 5,000 levels.
   */
  maxCommandDepth?: number;
  /**
   * Most bytes of a command's JSON text (UTF-8), enforced like `maxCommandDepth`; the persister's
   * own `maxCommandBytes`, if lower, wins. Give every peer the same value. Default 1 MiB: a
   * quarter of the WebSocket transport's default `maxMessageBytes`, so the largest command still
   * fits one AppendEntries.
   */
  maxCommandBytes?: number;
  /** Time source and timers. Default: the real clock. A simulator passes a virtual one. */
  clock?: Clock;
  /** Uniform random numbers in [0, 1). Default: `Math.random`. A simulator passes a seeded one. */
  random?: RandomSource;
  /**
   * Run a pre-vote before each election (Ongaro's thesis §9.6): a peer whose election timer fires
   * first asks the others whether they would vote for it, and starts a real election, raising its
   * term, only if a majority would. Peers refuse while they hear from a live leader. Default true:
   * without it, a peer that can send but not hear, or whose log is the most up to date while it
   * cannot reach a majority, keeps raising terms and can keep a healthy majority from ever
   * electing a leader (the simulator's explorer found this).
   */
  preVote?: boolean;
  /**
   * Where debug trace lines go. Default: `console.error` when the environment variable
   * `RAFT_DEBUG` is set (and readable), otherwise no trace.
   */
  trace?: TraceSink | null;
  /**
   * How much faster than another peer's clock this peer's may run, as a ratio (thesis §6.4.1):
   * a leader's lease (for `RaftNode`'s lease reads) lasts `electionTimeoutMinMs / (1 +
   * clockDriftBound)`. Default 0.1: ordinary clocks drift by parts per million; 10% leaves room
   * for virtual machines that stall.
   */
  clockDriftBound?: number;
  /**
   * When elected, append a no-op entry at once (thesis §6.4). A new leader may commit entries of
   * earlier terms only together with one of its own term (§5.4.2), so without it a restarted
   * cluster applies nothing that was committed before until a client proposes something. The
   * no-op reaches `applyCh` as a message with `commandValid: false` and `command: null`, at its own
   * index. Default false, because the lab's tests count log indexes; `RaftNode` always sets it.
   */
  noopOnElection?: boolean;
  /**
   * Called once if the peer stops for good because going on could lose or corrupt data: a save
   * failed, `applyCh` threw, or a protocol invariant broke. The peer is already killed when this
   * is called. Default: none, and the error goes to `console.error`.
   */
  onFatal?: (error: FatalError) => void;
  /**
   * The cluster's configuration to start from (thesis chapter 4) when the persister holds none,
   * in neither its snapshot nor its log: which of the peers vote and which are learners, which
   * receive the log without voting. Every member's id must be an index into `peers`; peers in
   * no role are spares, which stay quiet until a configuration change adds them. Default: every
   * peer a voter. Changes are made with `RaftNode`'s membership methods; the lab interface
   * itself never changes the configuration.
   */
  configuration?: Configuration;
}
