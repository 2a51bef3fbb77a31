/**
 * {@linkcode RaftNode}: the service API on top of the same core and driver as the lab interface.
 * Proposals resolve with the state machine's result once committed and applied here, and reject
 * with typed errors; leader and role changes are events; status and Prometheus metrics are one
 * call away; `close()` shuts everything down in order.
 *
 * @module
 */

import { type Clock, realClock } from "../clock.ts";
import { type PeerObserver, prepareCommand, type RaftPeer, startPeer } from "../driver.ts";
import type { FatalError } from "../errors.ts";
import type { Ready } from "../raft/core.ts";
import type { ApplyMsg, Configuration, Role } from "../raft/types.ts";
import { sameConfiguration } from "../raft/membership.ts";
import {
  type ChangeOptions,
  MembershipChanges,
  promoted,
  withLearner,
  without,
} from "./membership_changes.ts";
import type { ClientEnd, Persister, RaftOptions, RpcHandler } from "../types.ts";
import {
  NodeClosedError,
  NotLeaderError,
  OverloadedError,
  ProposalDroppedError,
  ProposalOutcomeUnknownError,
} from "./errors.ts";
import { checkJsonData } from "./json_data.ts";
import { Histogram, SeriesFamily } from "./metrics.ts";

/**
 * The service's state machine: what a committed command does.
 *
 * @typeParam C The commands it takes (JSON data).
 * @typeParam R What applying one returns to the proposer.
 */
export interface StateMachine<C, R> {
  /**
   * Applies a committed command, at log index `index`. Called once per committed command, in
   * index order, one at a time: a returned promise is awaited before the next. A throw (or a
   * rejection) stops the node with a fatal error, since applying later commands without this one
   * would corrupt the state.
   */
  apply(command: C, index: number): R | Promise<R>;
  /**
   * Optional: the whole state as bytes, for a snapshot (§7). The node calls it between two
   * applies, when its snapshot policy says so, and then compacts its log through the last index
   * applied. Without it (or without `restore`), the log grows for ever.
   */
  snapshot?(): Uint8Array | Promise<Uint8Array>;
  /**
   * Optional: replaces the whole state with a snapshot's, through log index `index`: one this
   * node saved before a restart, or one the leader sent because this node lagged behind what it
   * compacted. The next command applied has index `index + 1`.
   */
  restore?(data: Uint8Array, index: number): void | Promise<void>;
}

/**
 * Something that carries RPCs between peers and owns their connections, such as the
 * `WebSocketTransport`: a node given one registers itself as its handler and closes it on close.
 */
export interface Transport {
  /** `clientEnds()[i]` reaches peer i. */
  clientEnds(): ClientEnd[];
  /** Where incoming requests go. */
  setHandler(handler: RpcHandler): void;
  /** Closes every connection and the server. */
  close(): Promise<void>;
  /**
   * Optional, for membership changes: starts reaching server `id` at `address` (a member
   * added at run time) and returns its end. Without it, the node reaches only its `clientEnds()`.
   */
  addPeer?(id: number, address: string): ClientEnd;
  /** Optional, for membership changes: stops reaching server `id` (removed from the cluster). */
  removePeer?(id: number): void;
  /** Optional: the address the transport reaches server `id` at, for the first configuration. */
  addressOf?(id: number): string | undefined;
}

/** Options for {@linkcode RaftNode.create}: the node's place in the cluster, and Raft's tuning. */
export interface RaftNodeOptions<C, R> extends Omit<RaftOptions, "noopOnElection"> {
  /** This peer's id: its index in `peers`. */
  id: number;
  /**
   * How to reach the other peers: one `ClientEnd` per peer (`peers[id]` is never called), or a
   * {@linkcode Transport}, which the node then owns: it registers as the transport's handler and
   * closes it on close. With `ClientEnd`s, route incoming requests to the node's `handleRpc`.
   */
  peers: readonly ClientEnd[] | Transport;
  /** Where term, vote and log are kept. The node owns it and closes it on close, if it can. */
  persister: Persister;
  /** What committed commands do. */
  stateMachine: StateMachine<C, R>;
  /**
   * Each peer's address as clients should see it (say, its HTTP URL), for
   * {@linkcode NotLeaderError.leaderAddress}. Default: none.
   */
  addresses?: readonly string[];
  /**
   * Most bytes of uncommitted entries (as messages size them) a leader holds before
   * {@linkcode RaftNode.propose} rejects with {@linkcode OverloadedError}. Default 64 MiB: far
   * above what a healthy cluster holds (a few round trips of traffic), low enough that a leader
   * whose followers stopped answering cannot exhaust its memory.
   */
  maxUncommittedBytes?: number;
  /**
   * Take a snapshot (with the state machine's `snapshot()`) once this many entries were applied
   * since the last one. Default 10 000: restarts replay at most that many commands, and a
   * snapshot every 10 000 commands costs little next to them.
   */
  snapshotEveryEntries?: number;
  /**
   * Take a snapshot once the commands applied since the last one add up to this many bytes of
   * JSON. Default 16 MiB: with large commands, the log on disk and in memory stays bounded by
   * about this much.
   */
  snapshotEveryBytes?: number;
  /**
   * Allow `read({ consistency: "lease" })` (thesis §6.4.1): a leader serves reads without a
   * heartbeat round while its lease holds, `electionTimeoutMinMs / (1 + clockDriftBound)` from
   * the start of the latest round a quorum answered. Safe only if no clock runs faster than
   * another by more than `clockDriftBound`, and only with pre-vote (which, with check-quorum,
   * keeps a majority from electing anyone else while it hears from the leader): `create()`
   * refuses `leaseReads` with `preVote: false`. Default false.
   */
  leaseReads?: boolean;
  /**
   * This node joins a running cluster (a server added with {@linkcode RaftNode.addLearner} or
   * {@linkcode RaftNode.addVoter} on the leader): it starts outside the configuration, never
   * campaigns, and waits for the leader, from whose log or snapshot it learns the cluster.
   * Ignored once its persister holds a configuration. Default false: the peers in `peers` are
   * the cluster's first voters (or those of the option `configuration`).
   */
  join?: boolean;
  /** Aborting it closes the node. */
  signal?: AbortSignal;
}

/** The detail of a `configurationchange` event. */
export interface ConfigurationChange {
  /** The configuration now in effect on this node (thesis §4.1: from its log, maybe uncommitted). */
  configuration: Configuration;
  /** The log index of its entry (0, or a snapshot's last index, for the first one). */
  index: number;
}

/** How a read is made linearizable. */
export type ReadConsistency = "linearizable" | "lease";

/** Options for one {@linkcode RaftNode.read}. */
export interface ReadOptions {
  /**
   * `"linearizable"` (default): ReadIndex, one heartbeat round shared with concurrent reads (on
   * a follower: the leader's read index, asked over the network). `"lease"`: on a leader whose
   * lease holds, no round at all; needs the node option `leaseReads`.
   */
  consistency?: ReadConsistency;
  /** Stops waiting when aborted: the read rejects with the signal's reason. */
  signal?: AbortSignal;
  /** Stops waiting after this many milliseconds: the read rejects with a `TimeoutError`. */
  timeoutMs?: number;
}

/** Options for one {@linkcode RaftNode.propose}. */
export interface ProposeOptions {
  /**
   * Stops waiting when aborted: the proposal rejects with the signal's reason (an `AbortError`
   * by default). The command may still commit: the outcome is unknown.
   */
  signal?: AbortSignal;
  /**
   * Stops waiting after this many milliseconds: the proposal rejects with a `TimeoutError`. The
   * command may still commit: the outcome is unknown. Default: no limit.
   */
  timeoutMs?: number;
}

/** One follower's replication state, as its leader sees it. */
export interface FollowerStatus {
  /** The follower's id. */
  id: number;
  /** Figure 2's `matchIndex`: the highest index known replicated there. */
  matchIndex: number;
  /** Figure 2's `nextIndex`: the next index to send. */
  nextIndex: number;
  /**
   * `probe` (finding where the logs match), `replicate` (pipelining) or `snapshot` (sending the
   * snapshot, since the follower needs entries compacted away).
   */
  state: "probe" | "replicate" | "snapshot";
  /** AppendEntries awaiting replies. */
  inflight: number;
}

/** A node's state, as {@linkcode RaftNode.status} reports it. */
export interface NodeStatus {
  /** This peer's id. */
  id: number;
  /** Latest term seen. */
  term: number;
  /** Follower, pre-candidate, candidate or leader. */
  role: Role;
  /** The leader of the current term, if known. */
  leaderId: number | null;
  /** Highest index known committed. */
  commitIndex: number;
  /** Highest index applied to the state machine. */
  lastApplied: number;
  /** Index of the last log entry. */
  lastLogIndex: number;
  /** The last index the latest snapshot covers (0 without one): the log holds what follows. */
  snapshotIndex: number;
  /** While this peer leads, each follower's progress; empty otherwise. */
  followers: FollowerStatus[];
  /** Whether the node was closed (or stopped by a fatal error). */
  closed: boolean;
}

/** The detail of a `leaderchange` event. */
export interface LeaderChange {
  /** The new leader, or null when this peer knows of none. */
  leaderId: number | null;
  /** The term it leads. */
  term: number;
}

/** The detail of a `rolechange` event. */
export interface RoleChange {
  /** The new role. */
  role: Role;
  /** The role before. */
  previous: Role;
  /** The current term. */
  term: number;
}

/** The events a {@linkcode RaftNode} dispatches. */
export interface RaftNodeEventMap {
  /** The leader this peer knows of changed (including to none). */
  leaderchange: CustomEvent<LeaderChange>;
  /** This peer's role changed. */
  rolechange: CustomEvent<RoleChange>;
  /** The node stopped for good: a save or an apply failed, or an invariant broke. */
  fatal: CustomEvent<FatalError>;
  /**
   * The configuration in effect here changed: an entry appended (or truncated away), or a
   * snapshot installed. A server removed from the cluster sees one without itself.
   */
  configurationchange: CustomEvent<ConfigurationChange>;
}

interface Pending {
  term: number;
  resolve(result: unknown): void;
  reject(error: unknown): void;
}

const defaultMaxUncommittedBytes = 64 * 1024 * 1024;
const defaultSnapshotEveryEntries = 10_000;
const defaultSnapshotEveryBytes = 16 * 1024 * 1024;

/** Buckets of the save latency histogram, in seconds: 50 us to 2.5 s. */
const saveBuckets = [
  0.00005,
  0.0001,
  0.00025,
  0.0005,
  0.001,
  0.0025,
  0.005,
  0.01,
  0.025,
  0.05,
  0.1,
  0.25,
  0.5,
  1,
  2.5,
];

function isTransport(peers: unknown): peers is Transport {
  return typeof (peers as Transport | null)?.clientEnds === "function" &&
    typeof (peers as Transport).setHandler === "function" &&
    typeof (peers as Transport).close === "function";
}

/**
 * A Raft peer for services: {@linkcode RaftNode.propose} resolves with the state machine's
 * result once the command is committed and applied on this peer, or rejects with
 * {@linkcode NotLeaderError}, {@linkcode ProposalDroppedError}, {@linkcode OverloadedError},
 * {@linkcode NodeClosedError}, or the standard `AbortError` and `TimeoutError`. A proposal never
 * resolves for an entry that another leader overwrote. A new leader appends a no-op entry at the
 * start of its term (thesis §6.4), so a restarted cluster applies what was committed without
 * waiting for a client.
 *
 * Events (`leaderchange`, `rolechange`, `fatal`) are dispatched after the step that caused them,
 * never inside it: the peer never waits for a listener, and a listener that throws is reported
 * on the console without harming the node.
 *
 * @typeParam C The commands (JSON data; anything JSON would change is refused with a `TypeError`).
 * @typeParam R What the state machine returns for a command.
 *
 * @example A counter on a single-peer cluster
 * ```ts
 * import { MemoryPersister, RaftNode } from "@denoraft/raft";
 *
 * let total = 0;
 * await using node = await RaftNode.create<number, number>({
 *   id: 0,
 *   peers: [{ call: () => Promise.resolve(undefined) }],
 *   persister: new MemoryPersister(),
 *   stateMachine: { apply: (amount) => (total += amount) },
 *   electionTimeoutMinMs: 50,
 *   electionTimeoutMaxMs: 100,
 *   heartbeatIntervalMs: 20,
 * });
 * await new Promise((resolve) => node.addEventListener("leaderchange", resolve, { once: true }));
 * console.log(await node.propose(5)); // 5
 * ```
 */
export class RaftNode<C = unknown, R = unknown> extends EventTarget implements RpcHandler {
  readonly #id: number;
  readonly #peer: RaftPeer;
  readonly #persister: Persister;
  readonly #transport: Transport | null;
  readonly #stateMachine: StateMachine<C, R>;
  readonly #addresses: readonly string[] | null;
  readonly #maxUncommittedBytes: number;
  readonly #clock: Clock;
  readonly #userOnFatal: ((error: FatalError) => void) | null;
  readonly #snapshotEveryEntries: number;
  readonly #snapshotEveryBytes: number;
  /** Entries and bytes of commands applied since the last snapshot. */
  #sinceSnapshot = { entries: 0, bytes: 0 };
  readonly #pending = new Map<number, Pending>();
  readonly #listeners = new WeakMap<object, EventListener>();
  #lastApplied = 0;
  /** Reads waiting for the state machine to apply their index, in no order. */
  #applyWaiters: { index: number; resolve(): void }[] = [];
  /** Transfers waiting for leadership to move. */
  #transferWaiters: { resolve(): void; reject(error: unknown): void }[] = [];
  readonly #leaseReads: boolean;
  readonly #electionTimeoutMaxMs: number;
  readonly #membership: MembershipChanges;
  /** The configuration last seen in effect, and whose members have ends. */
  #configuration: Configuration;
  #cancelTransferTimer: (() => void) | null = null;
  #role: Role;
  #leaderId: number | null;
  #closing: Promise<void> | null = null;
  #closedSettle!: { resolve(): void; reject(error: unknown): void };
  /** Settles when the node has closed: resolves on close(), rejects with a fatal error. */
  readonly closed: Promise<void>;

  // Metrics.
  /** The labels of each RPC series, made once: the metrics find a series by its labels object. */
  readonly #rpcLabels = new Map<string, { method: string; direction: string }>();
  readonly #metrics = {
    leaderChanges: new SeriesFamily(
      "raft_leader_changes_total",
      "counter",
      "Times the leader this peer knows of changed.",
    ),
    proposalsCommitted: new SeriesFamily(
      "raft_proposals_committed_total",
      "counter",
      "Proposals made here that committed and were applied.",
    ),
    proposalsRejected: new SeriesFamily(
      "raft_proposals_rejected_total",
      "counter",
      "Proposals made here that were rejected, by reason.",
    ),
    rpcs: new SeriesFamily(
      "raft_rpcs_total",
      "counter",
      "RPC requests sent (out) and answered (in), by method.",
    ),
    rpcBytes: new SeriesFamily(
      "raft_rpc_bytes_total",
      "counter",
      "Bytes of JSON of RPC requests and their replies, sent (out) or answered (in), by method.",
    ),
    snapshots: new SeriesFamily(
      "raft_snapshots_total",
      "counter",
      "Snapshots the state machine took here, and snapshots it was restored from.",
    ),
    saveSeconds: new Histogram(
      "raft_save_duration_seconds",
      "Time from asking the persister to save until it resolved.",
      saveBuckets,
    ),
  };

  private constructor(
    id: number,
    peer: RaftPeer,
    options: RaftNodeOptions<C, R>,
    transport: Transport | null,
    hooks: NodeHooks,
  ) {
    super();
    this.#id = id;
    this.#peer = peer;
    this.#persister = options.persister;
    this.#transport = transport;
    this.#stateMachine = options.stateMachine;
    this.#addresses = options.addresses ?? null;
    this.#maxUncommittedBytes = options.maxUncommittedBytes ?? defaultMaxUncommittedBytes;
    this.#clock = options.clock ?? realClock;
    this.#userOnFatal = options.onFatal ?? null;
    this.#leaseReads = options.leaseReads ?? false;
    this.#electionTimeoutMaxMs = options.electionTimeoutMaxMs ?? 1100;
    this.#snapshotEveryEntries = options.snapshotEveryEntries ?? defaultSnapshotEveryEntries;
    this.#snapshotEveryBytes = options.snapshotEveryBytes ?? defaultSnapshotEveryBytes;
    this.#role = peer.core.role;
    this.#leaderId = peer.core.leaderId;
    this.#membership = new MembershipChanges(
      peer,
      this.#clock,
      this.#electionTimeoutMaxMs,
      () => this.#notLeader(),
    );
    this.#configuration = peer.core.configuration;
    this.#connectMembers(null, this.#configuration);
    this.closed = new Promise((resolve, reject) => {
      this.#closedSettle = { resolve, reject };
    });
    // A rejection nobody awaits must not end the process: the fatal event reports it too.
    this.closed.catch(() => {});
    hooks.ready = (ready) => this.#observeReady(ready);
    hooks.saved = (ms) => this.#metrics.saveSeconds.observe(ms / 1000);
    hooks.rpc = (direction, method, args, reply) =>
      this.#observeRpc(direction, method, args, reply);
    hooks.attach((msg) => this.#apply(msg));
    hooks.fatal = (error) => this.#fatal(error);
    transport?.setHandler(this);
    options.signal?.addEventListener("abort", () => this.close(), { once: true });
  }

  /**
   * Loads the persister's state and starts the node; its timers run from then on.
   *
   * @throws {TypeError} or {RangeError} for bad options (each error names the option and the
   * value), and the signal's reason if `options.signal` is already aborted.
   */
  static async create<C = unknown, R = unknown>(
    options: RaftNodeOptions<C, R>,
  ): Promise<RaftNode<C, R>> {
    if (typeof options !== "object" || options === null) {
      throw new TypeError(`Options must be an object, got ${String(options)}`);
    }
    options.signal?.throwIfAborted();
    const { id, peers, stateMachine } = options;
    if (typeof stateMachine?.apply !== "function") {
      throw new TypeError(
        `Option stateMachine must have an apply(command, index) method, got ${
          String(stateMachine)
        }`,
      );
    }
    const transport = isTransport(peers) ? peers : null;
    const ends = transport !== null ? transport.clientEnds() : peers;
    if (!Array.isArray(ends)) {
      throw new TypeError(
        `Option peers must be an array of ClientEnd or a transport, got ${String(peers)}`,
      );
    }
    if (!Number.isInteger(id) || id < 0 || id >= ends.length) {
      throw new RangeError(
        `Option id must be an index into peers (0..${ends.length - 1}), got ${String(id)}`,
      );
    }
    for (
      const key of ["maxUncommittedBytes", "snapshotEveryEntries", "snapshotEveryBytes"] as const
    ) {
      const value = options[key];
      if (value !== undefined && (!Number.isSafeInteger(value) || value <= 0)) {
        throw new RangeError(`Option ${key} must be a positive integer, got ${String(value)}`);
      }
    }
    if (options.leaseReads !== undefined && typeof options.leaseReads !== "boolean") {
      throw new TypeError(`Option leaseReads must be a boolean, got ${String(options.leaseReads)}`);
    }
    if (options.leaseReads === true && options.preVote === false) {
      throw new RangeError(
        "Option leaseReads needs preVote: without it a peer can be elected while the leader's lease holds",
      );
    }
    const { snapshot, restore } = stateMachine;
    if (
      (snapshot !== undefined && typeof snapshot !== "function") ||
      (restore !== undefined && typeof restore !== "function")
    ) {
      throw new TypeError(`Option stateMachine's snapshot and restore must be methods`);
    }
    const addresses = options.addresses;
    if (
      addresses !== undefined &&
      (!Array.isArray(addresses) || addresses.length !== ends.length ||
        !addresses.every((address) => typeof address === "string"))
    ) {
      throw new TypeError(
        `Option addresses must be ${ends.length} strings, one per peer, got ${String(addresses)}`,
      );
    }
    if (options.join !== undefined && typeof options.join !== "boolean") {
      throw new TypeError(`Option join must be a boolean, got ${String(options.join)}`);
    }
    const hooks = new NodeHooks();
    const peer = await startPeer(
      [...ends],
      id,
      options.persister,
      (msg) => hooks.apply(msg),
      {
        ...options,
        configuration: options.configuration ??
          firstConfiguration(ends.length, id, options, transport),
        noopOnElection: true,
        onFatal: (error) => hooks.fatal(error),
      },
      hooks,
      // Members added at run time have ids beyond the first peers; a transport that can add
      // them vouches for who is who.
      typeof transport?.addPeer === "function",
    );
    return new RaftNode(id, peer, options, transport, hooks);
  }

  /** This peer's id. */
  get id(): number {
    return this.#id;
  }

  /**
   * The cluster's configuration in effect on this node: the latest in its log, committed or not
   * (thesis §4.1). Ask the leader for the configuration that changes start from.
   */
  configuration(): Configuration {
    return structuredClone(this.#peer.core.configuration);
  }

  /**
   * On the leader: adds server `id`, reachable at `address` (in the transport's terms, such as
   * `ws://host:port`), as a learner, which receives the log (or a snapshot) but neither votes nor
   * counts for a majority. Resolves with the new configuration once its entry is committed and
   * applied here. Start the new server with the option `join` first, or soon after.
   *
   * @throws {NotLeaderError} If this node does not lead.
   * @throws {MemberExistsError} If `id` is already a member.
   * @throws {ChangeInProgressError} If another change has not committed yet, or this leader has
   * not yet committed an entry of its term.
   * @throws {ProposalDroppedError} If a new leader's log replaced the change's entry.
   * @throws {NodeClosedError} If the node is or gets closed.
   * @throws {DOMException} `AbortError` (or the signal's reason) and `TimeoutError`.
   */
  addLearner(id: number, address: string, options: ChangeOptions = {}): Promise<Configuration> {
    return this.#change(options, () => withLearner(this.#peer.core.configuration, id, address));
  }

  /**
   * On the leader: makes learner `id` a voter, once it has caught up with the leader's log
   * (thesis §4.2.1: in rounds, until one takes at most an election timeout), so that the new
   * majority does not wait for it. Resolves with the new configuration once committed and
   * applied here. Catching up is given up after `timeoutMs` (default 60 s), with a
   * `TimeoutError`.
   *
   * @throws {UnknownMemberError} If `id` is not a learner.
   * @throws {MemberExistsError} If `id` is already a voter.
   * @throws And as {@linkcode RaftNode.addLearner}.
   */
  promote(id: number, options: ChangeOptions = {}): Promise<Configuration> {
    return this.#change(options, async () => {
      promoted(this.#peer.core.configuration, id); // Fails early for an unknown id.
      const started = this.#clock.now();
      await this.#membership.catchUp(id, options);
      const { timeoutMs } = options;
      return {
        next: promoted(this.#peer.core.configuration, id),
        options: timeoutMs === undefined
          ? options
          : { ...options, timeoutMs: Math.max(1, timeoutMs - (this.#clock.now() - started)) },
      };
    });
  }

  /**
   * On the leader: adds server `id` at `address` as a learner, waits for it to catch up, and
   * makes it a voter; a learner already at `address` is only promoted. Resolves with the final
   * configuration.
   *
   * @throws As {@linkcode RaftNode.addLearner} and {@linkcode RaftNode.promote}.
   */
  async addVoter(id: number, address: string, options: ChangeOptions = {}): Promise<Configuration> {
    const current = this.#peer.core.configuration;
    const learner = current.learners.find((member) => member.id === id);
    if (learner === undefined || learner.address !== address) {
      await this.addLearner(id, address, options);
    }
    return await this.promote(id, options);
  }

  /**
   * On the leader: removes server `id`, voter or learner, from the cluster. Resolves with the new
   * configuration once committed and applied here. A leader that removes itself keeps leading
   * until the change commits, then hands leadership to the most up-to-date voter and steps
   * down; a removed server never campaigns again and can be shut down.
   *
   * @throws {UnknownMemberError} If `id` is not a member.
   * @throws {LastVoterError} If `id` is the last voter.
   * @throws And as {@linkcode RaftNode.addLearner}.
   */
  removeServer(id: number, options: ChangeOptions = {}): Promise<Configuration> {
    return this.#change(options, () => without(this.#peer.core.configuration, id));
  }

  /** Checks the common preconditions, computes the next configuration, and proposes it. */
  async #change(
    options: ChangeOptions,
    next: () =>
      | Configuration
      | Promise<{ next: Configuration; options: ChangeOptions }>,
  ): Promise<Configuration> {
    const { signal, timeoutMs } = options ?? {};
    if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw new RangeError(`Option timeoutMs must be a positive number, got ${String(timeoutMs)}`);
    }
    signal?.throwIfAborted();
    if (this.#peer.core.role !== "leader") throw this.#notLeader();
    const computed = next();
    if (computed instanceof Promise) {
      const { next: configuration, options: remaining } = await computed;
      if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
      return await this.#membership.propose(configuration, remaining);
    }
    return await this.#membership.propose(computed, options);
  }

  /**
   * Gives members new in `next` an end (through the transport), and drops the ends of members
   * gone since `previous`.
   */
  #connectMembers(previous: Configuration | null, next: Configuration): void {
    const members = [...next.voters, ...next.learners];
    const ids = new Set(members.map((member) => member.id));
    if (previous !== null) {
      for (const member of [...previous.voters, ...previous.learners]) {
        if (ids.has(member.id) || member.id === this.#id) continue;
        this.#transport?.removePeer?.(member.id);
        this.#peer.setEnd(member.id, null);
      }
    }
    const known = previous === null ? new Map<number, string>() : new Map(
      [...previous.voters, ...previous.learners].map((member) => [member.id, member.address]),
    );
    for (const member of members) {
      if (member.id === this.#id || typeof this.#transport?.addPeer !== "function") continue;
      if (previous !== null && known.get(member.id) === member.address) continue;
      if (previous === null && this.#transport.addressOf?.(member.id) === member.address) continue;
      if (member.address === "") continue;
      try {
        this.#peer.setEnd(member.id, this.#transport.addPeer(member.id, member.address));
      } catch (error) {
        console.error(
          `Node ${this.#id}: cannot reach member ${member.id} at ${member.address}:`,
          error,
        );
      }
    }
  }

  /**
   * Proposes `command` and resolves with what the state machine returned for it, once it is
   * committed and applied on this peer.
   *
   * @throws {TypeError} If `command` is not JSON data (the message names the part that is not).
   * @throws {RangeError} If its JSON is larger than the persister's `maxCommandBytes`, or
   * `timeoutMs` is not a positive number.
   * @throws {NotLeaderError} If this peer does not lead.
   * @throws {OverloadedError} If the leader holds too many uncommitted entries.
   * @throws {ProposalDroppedError} If another leader's entry took this one's place.
   * @throws {NodeClosedError} If the node is closed, or closes while waiting.
   * @throws {DOMException} `AbortError` (or the signal's reason) and `TimeoutError`.
   */
  propose(command: C, options: ProposeOptions = {}): Promise<R> {
    try {
      return this.#propose(command, options);
    } catch (error) {
      return Promise.reject(error);
    }
  }

  #propose(command: C, options: ProposeOptions): Promise<R> {
    const { signal, timeoutMs } = options;
    if (this.#closing !== null) {
      this.#rejected("closed");
      throw new NodeClosedError(`Node ${this.#id} is closed`);
    }
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw new RangeError(`Option timeoutMs must be a positive number, got ${String(timeoutMs)}`);
    }
    if (signal?.aborted) {
      this.#rejected("aborted");
      throw signal.reason;
    }
    try {
      checkJsonData(command);
    } catch (error) {
      this.#rejected("invalid");
      throw error;
    }
    const { copy, length } = prepareCommand(command, this.#peer.limits);
    const core = this.#peer.core;
    if (core.role !== "leader") {
      this.#rejected("not_leader");
      throw this.#notLeader();
    }
    if (core.uncommittedBytes + length > this.#maxUncommittedBytes) {
      this.#rejected("overloaded");
      throw new OverloadedError(core.uncommittedBytes, this.#maxUncommittedBytes);
    }
    const { index, term, isLeader } = this.#peer.proposePrepared(copy, length);
    if (!isLeader) {
      this.#rejected("not_leader");
      throw this.#notLeader();
    }
    return new Promise<R>((resolve, reject) => {
      let cancelTimer: (() => void) | null = null;
      const onAbort = () => {
        finish();
        this.#rejected("aborted");
        reject(signal!.reason);
      };
      const finish = () => {
        this.#pending.delete(index);
        cancelTimer?.();
        signal?.removeEventListener("abort", onAbort);
      };
      this.#pending.set(index, {
        term,
        resolve: (result) => {
          finish();
          this.#metrics.proposalsCommitted.add(1);
          resolve(result as R);
        },
        reject: (error) => {
          finish();
          reject(error);
        },
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        cancelTimer = this.#clock.schedule(timeoutMs, () => {
          finish();
          this.#rejected("timeout");
          reject(
            new DOMException(
              `The proposal at index ${index} did not commit within ${timeoutMs} ms; it may still commit`,
              "TimeoutError",
            ),
          );
        });
      }
    });
  }

  /**
   * Resolves once this node's state machine reflects every write committed before the call, so
   * that reading its state right after is linearizable (thesis §6.4). On the leader: ReadIndex,
   * with one heartbeat round that concurrent reads share (or, with `consistency: "lease"`, none
   * while the lease holds); it needs an entry of its term committed first, which the no-op of
   * each term provides. On a follower: the leader's read index, asked over the network, then this
   * node's own apply (a follower read). No log entry is written.
   *
   * @throws {RangeError} For an unknown consistency level, a lease read without the node option
   * `leaseReads`, or a bad `timeoutMs`.
   * @throws {NotLeaderError} If no leader could give a read index (none is known, or it stopped
   * leading meanwhile): retry, or ask the leader.
   * @throws {NodeClosedError} If the node is closed.
   * @throws {DOMException} `AbortError` (or the signal's reason) and `TimeoutError`.
   */
  async read(options: ReadOptions = {}): Promise<void> {
    const { consistency = "linearizable", signal, timeoutMs } = options;
    if (consistency !== "linearizable" && consistency !== "lease") {
      throw new RangeError(
        `Consistency must be "linearizable" or "lease", got ${JSON.stringify(consistency)}`,
      );
    }
    if (consistency === "lease" && !this.#leaseReads) {
      throw new RangeError(`Lease reads are off: create the node with leaseReads: true`);
    }
    if (timeoutMs !== undefined && !(typeof timeoutMs === "number" && timeoutMs > 0)) {
      throw new RangeError(`Option timeoutMs must be a positive number, got ${String(timeoutMs)}`);
    }
    if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
    signal?.throwIfAborted();
    await this.#bounded(
      async () => {
        const leader = this.#peer.core.role === "leader";
        let index: number | null = null;
        if (leader && consistency === "lease") index = this.#peer.leaseRead();
        if (index === null) {
          if (leader) index = await this.#peer.readIndex();
          else index = await this.#peer.askLeaderForReadIndex();
        }
        if (index === null) {
          if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
          throw this.#notLeader();
        }
        if (this.#lastApplied >= index) return;
        await new Promise<void>((resolve) => this.#applyWaiters.push({ index, resolve }));
        if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
      },
      signal,
      timeoutMs,
      "read",
    );
  }

  /** Runs `work`, rejecting early on `signal` or after `timeoutMs` (what work does goes on). */
  #bounded(
    work: () => Promise<void>,
    signal: AbortSignal | undefined,
    timeoutMs: number | undefined,
    what: string,
  ): Promise<void> {
    if (signal === undefined && timeoutMs === undefined) return work();
    return new Promise<void>((resolve, reject) => {
      let cancelTimer: (() => void) | null = null;
      const onAbort = () => {
        finish();
        reject(signal!.reason);
      };
      const finish = () => {
        cancelTimer?.();
        signal?.removeEventListener("abort", onAbort);
      };
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        cancelTimer = this.#clock.schedule(timeoutMs, () => {
          finish();
          reject(
            new DOMException(`The ${what} did not complete within ${timeoutMs} ms`, "TimeoutError"),
          );
        });
      }
      work().then((value) => {
        finish();
        resolve(value);
      }, (error) => {
        finish();
        reject(error);
      });
    });
  }

  /** Wakes the reads whose index is applied now (or all of them, once the node closes). */
  #wakeReads(): void {
    if (this.#applyWaiters.length === 0) return;
    const closing = this.#closing !== null;
    this.#applyWaiters = this.#applyWaiters.filter((waiter) => {
      if (!closing && waiter.index > this.#lastApplied) return true;
      waiter.resolve();
      return false;
    });
  }

  /**
   * Hands leadership over to `to` (thesis §3.10), or to the most up-to-date follower: this
   * leader stops taking proposals, brings the target's log up to date, and sends it TimeoutNow,
   * which makes it start an election at once. Resolves once this node sees another leader;
   * rejects with a `TimeoutError` if the transfer does not complete within an election timeout
   * (this node then leads again and takes proposals as before). A planned restart of the leader
   * then costs a round trip instead of an election timeout.
   *
   * @throws {RangeError} If `to` is not another member of the cluster, or there is none.
   * @throws {NotLeaderError} If this node does not lead.
   * @throws {NodeClosedError} If the node is closed.
   */
  async transferLeadership(to?: number): Promise<void> {
    if (this.#closing !== null) throw new NodeClosedError(`Node ${this.#id} is closed`);
    if (to !== undefined) {
      if (!Number.isInteger(to) || to < 0) {
        throw new RangeError(`A transfer target must be a member's id, got ${String(to)}`);
      }
      if (to === this.#id) {
        throw new RangeError(`Node ${this.#id} cannot hand its leadership over to itself`);
      }
    }
    const core = this.#peer.core;
    if (core.role !== "leader") throw this.#notLeader();
    const target = to ?? core.mostUpToDateFollower();
    if (target === null) throw new RangeError(`Node ${this.#id} has no follower to lead instead`);
    const refusal = this.#peer.transferLeadership(target);
    if (refusal === null && this.#cancelTransferTimer === null) {
      // If this leader stepped down but no one won, nothing else ends the wait.
      this.#cancelTransferTimer = this.#clock.schedule(
        2 * this.#electionTimeoutMaxMs,
        () => this.#settleTransfers(false),
      );
    }
    if (refusal === "not a voter") {
      throw new RangeError(`Peer ${target} is not a voting member of this cluster`);
    }
    if (refusal !== null) throw this.#notLeader();
    await new Promise<void>((resolve, reject) => this.#transferWaiters.push({ resolve, reject }));
  }

  /** Transfers end: leadership moved, or it did not (the leader gave up, or no one won). */
  #settleTransfers(handedOver: boolean): void {
    const waiters = this.#transferWaiters;
    this.#transferWaiters = [];
    this.#cancelTransferTimer?.();
    this.#cancelTransferTimer = null;
    for (const waiter of waiters) {
      if (handedOver) waiter.resolve();
      else {
        waiter.reject(
          new DOMException(
            "The leadership transfer did not complete within an election timeout",
            "TimeoutError",
          ),
        );
      }
    }
  }

  #notLeader(): NotLeaderError {
    const leaderId = this.#peer.core.leaderId;
    const address = leaderId === null ? null : (this.#addresses?.[leaderId] ?? null);
    return new NotLeaderError(leaderId === this.#id ? null : leaderId, address);
  }

  #rejected(reason: string): void {
    this.#metrics.proposalsRejected.add(1, { reason });
  }

  /** The applier: a committed entry, in order. */
  async #apply(msg: ApplyMsg): Promise<void> {
    if (msg.snapshotValid) {
      await this.#restore(msg.snapshot!, msg.snapshotIndex);
      return;
    }
    const pending = this.#pending.get(msg.commandIndex);
    if (!msg.commandValid) {
      this.#membership.applied(msg);
      this.#lastApplied = msg.commandIndex;
      this.#wakeReads();
      pending?.reject(new ProposalDroppedError(msg.commandIndex, pending.term));
      return;
    }
    const result = await this.#stateMachine.apply(msg.command as C, msg.commandIndex);
    this.#lastApplied = msg.commandIndex;
    this.#wakeReads();
    if (pending !== undefined) {
      if (pending.term === msg.commandTerm) pending.resolve(result);
      else {
        this.#rejected("dropped");
        pending.reject(new ProposalDroppedError(msg.commandIndex, pending.term));
      }
    }
    const command = msg.command;
    this.#sinceSnapshot.entries++;
    this.#sinceSnapshot.bytes += typeof command === "string"
      ? command.length + 2
      : JSON.stringify(command).length;
    if (
      this.#sinceSnapshot.entries >= this.#snapshotEveryEntries ||
      this.#sinceSnapshot.bytes >= this.#snapshotEveryBytes
    ) {
      await this.#takeSnapshot(msg.commandIndex);
    }
  }

  /** The snapshot policy fired after applying `index`: snapshot the state, compact the log. */
  async #takeSnapshot(index: number): Promise<void> {
    const { snapshot, restore } = this.#stateMachine;
    if (snapshot === undefined || restore === undefined) return;
    const data = await snapshot.call(this.#stateMachine);
    if (!(data instanceof Uint8Array)) {
      throw new TypeError(
        `StateMachine.snapshot() must return a Uint8Array, got ${
          Object.prototype.toString.call(data)
        }`,
      );
    }
    this.#sinceSnapshot = { entries: 0, bytes: 0 };
    this.#metrics.snapshots.add(1, { origin: "taken" });
    this.#peer.snapshot(index, data);
  }

  /** A snapshot replaces the state: saved before a restart, or sent by the leader. */
  async #restore(data: Uint8Array, index: number): Promise<void> {
    const restore = this.#stateMachine.restore;
    if (restore === undefined) {
      throw new TypeError(
        `Received a snapshot through ${index}, but the state machine has no restore() method`,
      );
    }
    await restore.call(this.#stateMachine, data, index);
    this.#membership.restored(index);
    this.#lastApplied = index;
    this.#wakeReads();
    this.#sinceSnapshot = { entries: 0, bytes: 0 };
    this.#metrics.snapshots.add(1, { origin: "restored" });
    // Proposals the snapshot covers may or may not be in it: their outcome is unknown here.
    for (const [at, pending] of this.#pending) {
      if (at > index) continue;
      this.#rejected("unknown");
      pending.reject(
        new ProposalOutcomeUnknownError(
          `The proposal at index ${at} is covered by a snapshot from the leader; whether it was applied is unknown`,
        ),
      );
    }
  }

  /** After each step: settle proposals whose entries were overwritten, and report changes. */
  #observeReady(ready: Ready): void {
    const log = ready.save?.log;
    if (log !== undefined) this.#membership.overwritten(log.from, log.entries);
    if (log !== undefined && this.#pending.size > 0) {
      for (const [index, pending] of this.#pending) {
        if (index < log.from) continue;
        // The save replaces every entry from `log.from` on: this one survives only if the same
        // term's entry is still at its index.
        const entry = log.entries[index - log.from];
        if (entry === undefined || entry.term !== pending.term) {
          this.#rejected("dropped");
          pending.reject(
            new ProposalDroppedError(index, pending.term, "another leader's log replaced it"),
          );
        }
      }
    }
    const core = this.#peer.core;
    if (this.#transferWaiters.length > 0) {
      const handedOver = core.leaderId !== null && core.leaderId !== this.#id;
      const gaveUp = core.role === "leader" && core.transferee === null;
      if (handedOver || gaveUp) this.#settleTransfers(handedOver);
    }
    if (core.role !== this.#role) {
      const previous = this.#role;
      this.#role = core.role;
      this.#dispatch("rolechange", { role: core.role, previous, term: core.currentTerm });
    }
    if (core.leaderId !== this.#leaderId) {
      this.#leaderId = core.leaderId;
      this.#metrics.leaderChanges.add(1);
      this.#dispatch("leaderchange", { leaderId: core.leaderId, term: core.currentTerm });
    }
    const configuration = core.configuration;
    if (configuration !== this.#configuration) {
      const previous = this.#configuration;
      this.#configuration = configuration;
      if (!sameConfiguration(previous, configuration)) {
        this.#connectMembers(previous, configuration);
        this.#dispatch("configurationchange", {
          configuration: structuredClone(configuration),
          index: core.configurationIndex,
        });
      }
    }
    this.#membership.observe();
  }

  /** Records an RPC and its size. */
  #observeRpc(direction: "in" | "out", method: string, args: unknown, reply: unknown): void {
    const key = `${direction} ${method}`;
    let labels = this.#rpcLabels.get(key);
    if (labels === undefined) {
      labels = { method, direction };
      this.#rpcLabels.set(key, labels);
    }
    this.#metrics.rpcs.add(1, labels);
    const bytes = (JSON.stringify(args)?.length ?? 0) + (JSON.stringify(reply)?.length ?? 0);
    this.#metrics.rpcBytes.add(bytes, labels);
  }

  #dispatch<K extends keyof RaftNodeEventMap>(type: K, detail: unknown): void {
    // After the step, never inside it: the peer does not wait for listeners.
    queueMicrotask(() => this.dispatchEvent(new CustomEvent(type, { detail })));
  }

  /**
   * Adds a listener for `leaderchange`, `rolechange` or `fatal` (or any other type). A
   * listener that throws is reported on the console and does not affect the node.
   */
  override addEventListener<K extends keyof RaftNodeEventMap>(
    type: K,
    listener: ((this: RaftNode<C, R>, event: RaftNodeEventMap[K]) => unknown) | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  /** Adds a listener for an event of any other type. */
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | AddEventListenerOptions,
  ): void;
  override addEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | ((event: never) => unknown) | null,
    options?: boolean | AddEventListenerOptions,
  ): void {
    if (listener === null) return;
    let wrapped = this.#listeners.get(listener);
    if (wrapped === undefined) {
      wrapped = (event: Event) => {
        try {
          const result = typeof listener === "function"
            ? (listener as (event: Event) => unknown).call(this, event)
            : listener.handleEvent(event);
          if (result instanceof Promise) result.catch(reportListenerError);
        } catch (error) {
          reportListenerError(error);
        }
      };
      this.#listeners.set(listener, wrapped);
    }
    super.addEventListener(type, wrapped, options);
  }

  /** Removes a listener added with {@linkcode RaftNode.addEventListener}. */
  override removeEventListener<K extends keyof RaftNodeEventMap>(
    type: K,
    listener: ((this: RaftNode<C, R>, event: RaftNodeEventMap[K]) => unknown) | null,
    options?: boolean | EventListenerOptions,
  ): void;
  /** Removes a listener for an event of any other type. */
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | null,
    options?: boolean | EventListenerOptions,
  ): void;
  override removeEventListener(
    type: string,
    listener: EventListenerOrEventListenerObject | ((event: never) => unknown) | null,
    options?: boolean | EventListenerOptions,
  ): void {
    if (listener === null) return;
    const wrapped = this.#listeners.get(listener);
    if (wrapped !== undefined) super.removeEventListener(type, wrapped, options);
  }

  /** Term, role, leader, indexes, and while leading, each follower's progress. */
  status(): NodeStatus {
    const core = this.#peer.core;
    const followers: FollowerStatus[] = core.followers().map((id) => {
      const progress = core.progress(id)!;
      return {
        id,
        matchIndex: progress.matchIndex,
        nextIndex: progress.nextIndex,
        state: progress.state,
        inflight: progress.inflights.count,
      };
    });
    return {
      id: this.#id,
      term: core.currentTerm,
      role: core.role,
      leaderId: core.leaderId,
      commitIndex: core.commitIndex,
      lastApplied: this.#lastApplied,
      lastLogIndex: core.lastIndex,
      snapshotIndex: core.snapshotIndex,
      followers,
      closed: this.#closing !== null,
    };
  }

  /**
   * The node's metrics in the Prometheus text exposition format (version 0.0.4): term, role,
   * leader, leader changes, elections started and won, proposals committed and rejected by
   * reason, commit and applied indexes and the lag between them, RPCs and their bytes by method
   * and direction, snapshots, voters and learners, and a histogram of save latency.
   */
  metrics(): string {
    const core = this.#peer.core;
    const gauge = (name: string, help: string, value: number) => {
      const family = new SeriesFamily(name, "gauge", help);
      family.set(value);
      return family.render();
    };
    const role = new SeriesFamily("raft_role", "gauge", "1 for this peer's current role.");
    for (const name of ["follower", "precandidate", "candidate", "leader"] as const) {
      role.set(core.role === name ? 1 : 0, { role: name });
    }
    const counter = (name: string, help: string, value: number) => {
      const family = new SeriesFamily(name, "counter", help);
      family.set(value);
      return family.render();
    };
    return [
      gauge("raft_term", "Latest term this peer has seen.", core.currentTerm),
      role.render(),
      gauge("raft_leader", "The leader this peer knows of (-1: none).", core.leaderId ?? -1),
      this.#metrics.leaderChanges.render(),
      counter(
        "raft_prevotes_started_total",
        "Pre-votes this peer started.",
        core.counters.preVotesStarted,
      ),
      counter(
        "raft_elections_started_total",
        "Elections this peer started as a candidate.",
        core.counters.electionsStarted,
      ),
      counter("raft_elections_won_total", "Elections this peer won.", core.counters.electionsWon),
      this.#metrics.proposalsCommitted.render(),
      this.#metrics.proposalsRejected.render(),
      gauge("raft_commit_index", "Highest log index known committed.", core.commitIndex),
      gauge("raft_applied_index", "Highest log index applied here.", this.#lastApplied),
      gauge(
        "raft_apply_lag",
        "Committed entries not yet applied here.",
        core.commitIndex - this.#lastApplied,
      ),
      gauge("raft_last_log_index", "Index of the last log entry.", core.lastIndex),
      this.#metrics.rpcs.render(),
      this.#metrics.rpcBytes.render(),
      this.#metrics.snapshots.render(),
      gauge("raft_snapshot_index", "The last index of the latest snapshot.", core.snapshotIndex),
      gauge(
        "raft_voters",
        "Voters in the configuration in effect here.",
        core.configuration.voters.length,
      ),
      gauge(
        "raft_learners",
        "Learners in the configuration in effect here.",
        core.configuration.learners.length,
      ),
      this.#metrics.saveSeconds.render(),
    ].join("\n") + "\n";
  }

  /** Where a transport delivers incoming requests (a closed node answers none). */
  handleRpc(method: string, args: unknown): Promise<unknown> {
    return this.#peer.handleRpc(method, args);
  }

  /**
   * Stops the node: no more RPCs, timers or applies; proposals still waiting reject with
   * {@linkcode NodeClosedError} (their outcome is unknown); then, once the apply and the saves in
   * progress have settled, the transport (if the node was given one) and the persister (if it
   * has `close()`) are closed, in that order. Resolves when nothing is left running; calling it
   * again returns the same promise.
   */
  close(): Promise<void> {
    if (this.#closing === null) this.#closing = this.#shutDown(null);
    return this.#closing;
  }

  /** `await using node = await RaftNode.create(...)` closes the node at the end of the scope. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.close();
  }

  async #shutDown(fatal: FatalError | null): Promise<void> {
    this.#peer.kill();
    const error = fatal ?? new NodeClosedError(
      `Node ${this.#id} closed before the proposal committed; its outcome is unknown`,
    );
    for (const pending of [...this.#pending.values()]) {
      this.#rejected(fatal === null ? "closed" : "fatal");
      pending.reject(error);
    }
    this.#wakeReads();
    this.#cancelTransferTimer?.();
    this.#cancelTransferTimer = null;
    for (const waiter of this.#transferWaiters) waiter.reject(error);
    this.#transferWaiters = [];
    this.#membership.close(error);
    await this.#peer.settled();
    await this.#transport?.close();
    await (this.#persister as { close?: () => Promise<void> }).close?.();
    if (fatal === null) this.#closedSettle.resolve();
    else this.#closedSettle.reject(fatal);
  }

  #fatal(error: FatalError): void {
    this.#dispatch("fatal", error);
    try {
      this.#userOnFatal?.(error);
    } catch (callbackError) {
      reportListenerError(callbackError);
    }
    this.#closing ??= this.#shutDown(error);
  }
}

function reportListenerError(error: unknown): void {
  console.error("A RaftNode event listener threw:", error);
}

/**
 * Connects the peer to the node. The peer starts before the node exists, and may hand it a
 * snapshot loaded from disk at once: applies wait here until the node's constructor attaches.
 * Nothing else can happen before: nothing reaches a peer that no transport knows of yet, and its
 * first timer is a macrotask away.
 */
class NodeHooks implements PeerObserver {
  ready: (ready: Ready) => void = () => {};
  saved: (ms: number) => void = () => {};
  rpc: (direction: "in" | "out", method: string, args: unknown, reply: unknown) => void = () => {};
  fatal: (error: FatalError) => void = () => {};
  #applyTo: ((msg: ApplyMsg) => Promise<void>) | null = null;
  #attach!: () => void;
  readonly #attached = new Promise<void>((resolve) => this.#attach = resolve);

  /** From now on, applies go to `apply`. */
  attach(apply: (msg: ApplyMsg) => Promise<void>): void {
    this.#applyTo = apply;
    this.#attach();
  }

  async apply(msg: ApplyMsg): Promise<void> {
    if (this.#applyTo === null) await this.#attached;
    return this.#applyTo!(msg);
  }
}

/**
 * The configuration a node starts from when its persister holds none: the option's, else every
 * peer a voter (or, when joining, every peer but this one, so that it never campaigns before
 * the leader tells it the cluster), at the addresses the transport knows.
 */
function firstConfiguration<C, R>(
  count: number,
  id: number,
  options: RaftNodeOptions<C, R>,
  transport: Transport | null,
): Configuration {
  const voters = [];
  for (let peer = 0; peer < count; peer++) {
    if (options.join === true && peer === id) continue;
    voters.push({ id: peer, address: transport?.addressOf?.(peer) ?? "" });
  }
  return { voters, learners: [] };
}
