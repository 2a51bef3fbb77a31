/**
 * The Raft protocol of Figure 2 as a state machine that does no I/O. It is stepped by incoming
 * requests and replies ({@linkcode RaftCore.step}), by proposals and by the passage of time, and
 * hands back a {@linkcode Ready}: what to save, what to send, and what to apply. The driver in
 * `../driver.ts` owns the clock, the transport and the persister.
 *
 * {@linkcode RaftCore.step} decides the term rule once for every message (§5.1), then hands the
 * message to the handler of this peer's role: follower, pre-candidate, candidate or leader.
 *
 * @module
 */

import { encodeBase64 } from "./_base64.ts";
import { randomInt, type RandomSource } from "./_random.ts";
import { invariant } from "./invariants.ts";
import { RaftLog } from "./log.ts";
import {
  ConfigurationHistory,
  describeConfiguration,
  fixedConfiguration,
  parseConfiguration,
  sameConfiguration,
  singleServerChange,
} from "./membership.ts";
import {
  AppendEntries,
  type AppendEntriesArgs,
  type AppendEntriesReply,
  InstallSnapshot,
  type InstallSnapshotArgs,
  type InstallSnapshotReply,
  type Message,
  type ReplyMessage,
  RequestVote,
  type RequestVoteArgs,
  type RequestVoteReply,
  type ResponseTo,
  TimeoutNow,
  type TimeoutNowArgs,
  type TimeoutNowReply,
} from "./messages.ts";
import type { Progress } from "./progress.ts";
import { ProgressTracker } from "./tracker.ts";
import type {
  ApplyMsg,
  Configuration,
  PersistChange,
  PersistentState,
  Role,
  Snapshot,
} from "./types.ts";

/** A request the core wants sent to peer `to`. */
export type Outgoing =
  | { to: number; method: typeof RequestVote; args: RequestVoteArgs }
  | { to: number; method: typeof AppendEntries; args: AppendEntriesArgs }
  | { to: number; method: typeof InstallSnapshot; args: InstallSnapshotArgs }
  | { to: number; method: typeof TimeoutNow; args: TimeoutNowArgs };

/**
 * The outcome of a read asked for with {@linkcode RaftCore.requestRead}: the index this peer's
 * state machine must have applied before the read may be served (thesis §6.4), or null when the
 * read failed because this peer no longer leads.
 */
export interface ReadState {
  id: number;
  index: number | null;
}

/** Identifies a save: the term and last log index the core had when it asked for it. */
export interface SaveMark {
  term: number;
  lastIndex: number;
}

/** Everything the core wants done since the last {@linkcode RaftCore.takeReady}. */
export interface Ready {
  /** State to save, or null when nothing changed. */
  save: PersistChange | null;
  /** Pass back to {@linkcode RaftCore.onSaved} once `save` has resolved. */
  saveMark: SaveMark | null;
  /** Requests that may leave at once: a leader's AppendEntries do not depend on unsaved state. */
  send: Outgoing[];
  /**
   * Requests that must wait until `save` (and every earlier save) resolves: a candidate's
   * RequestVote reports a vote for itself, which must be durable before it counts.
   */
  sendAfterSave: Outgoing[];
  /**
   * Newly committed entries that are durable on this peer, in index order, and snapshots
   * received from the leader, in order with them.
   */
  apply: ApplyMsg[];
  /** Reads confirmed (or failed) since the last Ready. */
  reads: ReadState[];
}

/** The core's fixed settings. */
export interface CoreConfig {
  me: number;
  /**
   * Without `configuration`: the cluster's voters are the peers 0..peerCount-1, until a
   * configuration entry says otherwise.
   */
  peerCount: number;
  /**
   * The configuration this peer starts from when neither its snapshot nor its log holds one
   * (thesis chapter 4). A peer that joins a running cluster starts with one that has no
   * voters... of its own choosing: pass the cluster's, with this peer absent or a learner, and it
   * waits for the leader. Default: voters 0..peerCount-1.
   */
  configuration?: Configuration;
  heartbeatIntervalMs: number;
  commitNotifyDelayMs: number;
  electionTimeoutMinMs: number;
  electionTimeoutMaxMs: number;
  maxEntriesPerAppend: number;
  maxAppendBytes: number;
  maxInflightAppends: number;
  random: RandomSource;
  trace: ((line: string) => void) | null;
  /** Run a pre-vote before each election (thesis §9.6). Default false here; `make()` turns it on. */
  preVote?: boolean;
  /** Append a no-op entry when elected (thesis §6.4). Default false. */
  noopOnElection?: boolean;
  /**
   * Most bytes of a snapshot a follower assembles from a leader's chunks; a longer one is
   * refused. Default 1 GiB.
   */
  maxSnapshotBytes?: number;
  /**
   * How much faster than another peer's clock this peer's may run, as a ratio (thesis §6.4.1).
   * A leader's lease lasts `electionTimeoutMinMs / (1 + clockDriftBound)` from the start of the
   * heartbeat round a quorum answered. Default 0.1.
   */
  clockDriftBound?: number;
}

/** What the core answers to a request. */
type AnyReply = RequestVoteReply | AppendEntriesReply | InstallSnapshotReply | TimeoutNowReply;

/** How many heartbeat rounds' start times a leader remembers, for its lease. */
const ROUNDS_KEPT = 64;

/** A snapshot being received from the leader, chunk by chunk (Figure 13). */
interface IncomingSnapshot {
  index: number;
  term: number;
  /** The configuration the snapshot carries, if the leader sent one. */
  configuration: Configuration | undefined;
  /** The leader's term: a new leader's transfer starts over. */
  leaderTerm: number;
  chunks: Uint8Array[];
  length: number;
}

/** Counts of protocol events since the core was made, for metrics. */
export interface CoreCounters {
  /** Pre-votes started (thesis §9.6). */
  preVotesStarted: number;
  /** Elections started: this peer became a candidate. */
  electionsStarted: number;
  /** Elections won: this peer became leader. */
  electionsWon: number;
}

/** A save asked for and not yet reported durable. */
interface PendingSave {
  mark: SaveMark;
  /** The first log index the save changes; Infinity when it changes no entry. */
  from: number;
}

/** Figure 2's state and rules for one peer. */
export class RaftCore {
  readonly #config: CoreConfig;

  // Persistent state on all servers (Figure 2).
  #currentTerm: number;
  #votedFor: number | null;
  readonly #log: RaftLog;

  // Volatile state on all servers.
  #commitIndex = 0;
  #lastApplied = 0;
  #role: Role = "follower";
  #leaderId: number | null = null;
  #electionDeadline = 0;
  /** When this peer last heard from the leader of its term. */
  #leaderContactAt = -Infinity;

  /** The configuration, and while leading, each follower's progress; votes while campaigning. */
  readonly #tracker: ProgressTracker;
  /** When the leader next checks that a quorum still answers it (check-quorum). */
  #quorumCheckAt = Infinity;

  // What the next Ready carries.
  #hardStateChanged = false;
  #unsavedFrom = Infinity;
  #send: Outgoing[] = [];
  #sendAfterSave: Outgoing[] = [];
  #replicationWanted = false;
  /**
   * The log up to here is on disk exactly as it is in memory: every save that wrote it resolved,
   * and nothing changed it since. A leader counts its own log only this far, and a peer applies
   * only this far, so a service never gets ahead of its own disk.
   */
  #stableIndex: number;
  readonly #pendingSaves: PendingSave[] = [];
  /** The save carrying the latest change of term or vote, until it is durable. */
  #hardStateSave: PendingSave | null = null;
  readonly #counters: CoreCounters = { preVotesStarted: 0, electionsStarted: 0, electionsWon: 0 };
  /** While leading: bytes of the entries after the commit index (see uncommittedBytes). */
  #uncommittedBytes = 0;
  /** The latest snapshot (§7), kept to send to followers that need entries it covers. */
  #snapshot: Snapshot | null;
  /** A snapshot the next save must carry. */
  #unsavedSnapshot: Snapshot | null = null;
  /** A snapshot from the leader, to hand to the service before any later entry. */
  #snapshotToApply: Snapshot | null = null;
  /** A follower's snapshot in transfer. */
  #incoming: IncomingSnapshot | null = null;
  /** The configurations of the log (thesis chapter 4): the latest is in effect. */
  readonly #history: ConfigurationHistory;

  // Reads (thesis §6.4) and leadership transfer (§3.10), while leading.
  /** The current heartbeat round: every AppendEntries carries it. */
  #round = 0;
  /** When each of the last rounds started, by round modulo {@linkcode ROUNDS_KEPT}. */
  readonly #roundStartedAt: number[] = new Array(ROUNDS_KEPT).fill(-Infinity);
  /** Reads waiting for a quorum to answer their round (a round started after they came). */
  #reads: { id: number; index: number; round: number }[] = [];
  /** Reads waiting for an entry of this leader's term to commit, before they get an index. */
  #readsAwaitingCommit: number[] = [];
  /** A read asked for a new round: start one at the next Ready. */
  #roundWanted = false;
  #readStates: ReadState[] = [];
  /** The peer this leader hands its leadership to, while it does. */
  #transferee: number | null = null;
  #transferDeadline = Infinity;
  #timeoutNowSent = false;
  /**
   * Whether this leader has sent TimeoutNow in its term: the election it starts makes followers
   * vote although they heard from this leader lately, so no lease holds for the rest of the term,
   * even once the transfer is given up.
   */
  #leaseForfeited = false;

  constructor(config: CoreConfig, state: PersistentState, now: number) {
    this.#config = config;
    this.#currentTerm = state.term;
    this.#votedFor = state.votedFor;
    const snapshot = state.snapshot ?? null;
    this.#log = new RaftLog(state.log, snapshot?.index ?? 0, snapshot?.term ?? 0);
    this.#snapshot = snapshot;
    if (snapshot !== null) {
      // A snapshot covers committed entries only. One with data goes to the service first; an
      // empty one counts as none (the service starts empty), but still numbers the log.
      this.#commitIndex = snapshot.index;
      if (snapshot.data.length > 0) this.#snapshotToApply = snapshot;
      else this.#lastApplied = snapshot.index;
    }
    this.#stableIndex = this.#log.lastIndex;
    this.#history = new ConfigurationHistory(
      snapshot?.configuration ?? config.configuration ?? fixedConfiguration(config.peerCount),
      snapshot?.index ?? 0,
    );
    for (let index = this.#log.firstIndex; index <= this.#log.lastIndex; index++) {
      const entry = this.#log.entryAt(index)!;
      if (entry.type === "config") this.#history.append(index, entry.command as Configuration);
    }
    this.#tracker = new ProgressTracker(config.me, this.#inEffect());
    this.#resetElectionDeadline(now);
  }

  /** Latest term this peer has seen. */
  get currentTerm(): number {
    return this.#currentTerm;
  }

  /** This peer's role. */
  get role(): Role {
    return this.#role;
  }

  /** The peer believed to lead the current term, if known. */
  get leaderId(): number | null {
    return this.#leaderId;
  }

  /** Highest log index known to be committed. */
  get commitIndex(): number {
    return this.#commitIndex;
  }

  /** Index of the last log entry. */
  get lastIndex(): number {
    return this.#log.lastIndex;
  }

  /** Index of the last entry durable on this peer's disk, as far as it matches the log. */
  get stableIndex(): number {
    return this.#stableIndex;
  }

  /** The last index the latest snapshot covers (0 without one). */
  get snapshotIndex(): number {
    return this.#log.snapshotIndex;
  }

  /**
   * The configuration in effect: the one the peer counts votes and acknowledgements by, which is
   * the latest in its log, committed or not (thesis §4.1).
   */
  get configuration(): Configuration {
    return this.#tracker.configuration;
  }

  /** The index of the entry holding {@linkcode configuration} (0 or the snapshot's, if none). */
  get configurationIndex(): number {
    return this.#history.currentIndex;
  }

  /** Whether this peer is a voter of the configuration in effect. */
  get isVoter(): boolean {
    return this.#tracker.isVoter(this.#config.me);
  }

  /** Counts of elections and pre-votes since the core was made. */
  get counters(): Readonly<CoreCounters> {
    return this.#counters;
  }

  /** The followers of this leader, by id (empty unless leading). */
  followers(): number[] {
    const ids: number[] = [];
    this.#tracker.forEachFollower((id) => ids.push(id));
    return ids;
  }

  /** The term of the entry at `index`, if the log holds it (0 for index 0). */
  termAt(index: number): number | undefined {
    return this.#log.termAt(index);
  }

  /**
   * While leading, the bytes of the entries after the commit index, as messages size them: what
   * the leader holds for followers that have not acknowledged them yet. 0 otherwise.
   */
  get uncommittedBytes(): number {
    return this.#role === "leader" ? this.#uncommittedBytes : 0;
  }

  /** While leading, follower `peer`'s progress (read-only use: status pages and tests). */
  progress(peer: number): Readonly<Progress> | undefined {
    return this.#tracker.progress(peer);
  }

  /**
   * Appends `command` if this peer leads; replication starts at the next {@linkcode takeReady}.
   * `commandBytes`, the length of the command's JSON text if the caller knows it, saves the core
   * from computing it to size its messages.
   */
  propose(
    command: unknown,
    commandBytes = -1,
  ): { index: number; term: number; isLeader: boolean } {
    // A leader handing over its leadership takes no more proposals (thesis §3.10).
    if (this.#role !== "leader" || this.#transferee !== null) {
      return { index: -1, term: this.#currentTerm, isLeader: false };
    }
    const index = this.#log.append({ term: this.#currentTerm, command }, commandBytes);
    this.#uncommittedBytes += this.#log.bytesAt(index);
    this.#logChangedFrom(index);
    this.#replicationWanted = true;
    return { index, term: this.#currentTerm, isLeader: true };
  }

  /**
   * Appends a configuration entry that changes the cluster to `next` (thesis chapter 4), if this
   * peer leads; it takes effect here at once, and on each follower as it appends it. Refused,
   * changing nothing: by a peer that does not lead (or hands its leadership over); while an
   * earlier change is not committed, or before this leader has committed an entry of its own term
   * (the fix to the single-server change bug: a change must not start from a configuration a
   * newer leader may not know); and for a configuration that is malformed or changes more than
   * one voter at once.
   */
  proposeConfiguration(
    next: Configuration,
    now: number,
  ):
    | { ok: true; index: number; term: number }
    | { ok: false; reason: "not leader" | "in progress" | "invalid"; message: string } {
    if (this.#role !== "leader" || this.#transferee !== null) {
      return { ok: false, reason: "not leader", message: `peer ${this.#config.me} does not lead` };
    }
    if (this.#history.currentIndex > this.#commitIndex) {
      return {
        ok: false,
        reason: "in progress",
        message:
          `the configuration change at index ${this.#history.currentIndex} has not committed yet`,
      };
    }
    if (this.#log.termAt(this.#commitIndex) !== this.#currentTerm) {
      return {
        ok: false,
        reason: "in progress",
        message: `the leader has not yet committed an entry of its term ${this.#currentTerm}`,
      };
    }
    const parsed = parseConfiguration(next);
    if (typeof parsed === "string") return { ok: false, reason: "invalid", message: parsed };
    const tooMany = singleServerChange(this.#history.current, parsed);
    if (tooMany !== null) return { ok: false, reason: "invalid", message: tooMany };
    const index = this.#log.append({ term: this.#currentTerm, command: parsed, type: "config" });
    this.#uncommittedBytes += this.#log.bytesAt(index);
    this.#logChangedFrom(index);
    this.#history.append(index, parsed);
    this.#configurationChanged(now);
    this.#replicationWanted = true;
    return { ok: true, index, term: this.#currentTerm };
  }

  /**
   * Which configuration is in effect: the latest in the log, committed or not (thesis §4.1). A
   * server that waited for the commit would, for one, keep counting a removed server's votes
   * while the new majority already commits without it.
   */
  #inEffect(): Configuration {
    return this.#history.current;
  }

  /**
   * Whether this peer starts elections: as a voter of the configuration in effect, or of the
   * last one it knows committed while a later one is not (thesis §4.2.2): a server removed by an
   * uncommitted change may still be needed to elect the leader that commits it, and campaigns,
   * though it does not count its own vote. Learners and servers whose removal committed never do.
   */
  #mayCampaign(): boolean {
    const me = this.#config.me;
    if (this.#tracker.isVoter(me)) return true;
    if (this.#history.currentIndex <= this.#commitIndex) return false;
    return this.#history.at(this.#commitIndex).voters.some((member) => member.id === me);
  }

  /** After the commit index moved: the configuration in effect follows, if it depends on it. */
  #refreshConfiguration(now: number): void {
    const next = this.#inEffect();
    const current = this.#tracker.configuration;
    if (next !== current && !sameConfiguration(next, current)) this.#configurationChanged(now);
  }

  /**
   * The configuration in effect changed (an entry appended or truncated away, a snapshot
   * installed): the tracker takes it, a leader starts replicating to new members, and a
   * candidate that is no longer a voter gives up.
   */
  #configurationChanged(now: number): void {
    const configuration = this.#inEffect();
    this.#trace(`takes configuration ${describeConfiguration(configuration)}`);
    const added = this.#tracker.setConfiguration(
      configuration,
      this.#log.lastIndex,
      this.#config.maxInflightAppends,
      now,
    );
    if (this.#role === "leader") {
      // As a new leader does (Figure 2), probe each new member at once: its log is likely empty.
      for (const peer of added) {
        const progress = this.#tracker.progress(peer)!;
        this.#sendAppend(peer, progress, now, progress.nextIndex);
      }
      if (this.#transferee !== null && !this.#tracker.isVoter(this.#transferee)) {
        this.#endTransfer();
      }
      // Fewer voters may make a quorum of what is already replicated.
      this.#maybeCommit(now);
    } else if (this.#role !== "follower" && !this.#tracker.isVoter(this.#config.me)) {
      this.#becomeFollower(this.#currentTerm, now);
    }
  }

  /**
   * The service saved a snapshot of its state through `index` (§7): the log up to there is
   * compacted, the snapshot saved with the next Ready and sent to followers that need entries it
   * covers. Returns false, changing nothing, unless `index` is past the current snapshot and no
   * later than the last index handed out for applying.
   */
  compact(index: number, data: Uint8Array): boolean {
    if (index <= this.#log.snapshotIndex || index > this.#lastApplied) return false;
    const term = this.#log.termAt(index)!;
    this.#log.compact(index, term);
    // Thesis §4.4 (and §5.1): the snapshot carries the latest configuration it covers.
    const configuration = this.#history.at(index);
    this.#history.compact(index);
    this.#snapshot = { index, term, data, configuration };
    this.#unsavedSnapshot = this.#snapshot;
    this.#trace(`compacts its log through ${index} into a snapshot of ${data.length} bytes`);
    return true;
  }

  /**
   * Asks for a linearizable read (thesis §6.4, ReadIndex): once this leader has committed an
   * entry of its term, it takes its commit index as the read index and confirms it still leads
   * with a heartbeat round; a later Ready's `reads` then holds `{ id, index }`, and the read may
   * be served once the state machine has applied `index`. Reads asked for together share a
   * round. Returns false, changing nothing, unless this peer leads.
   */
  requestRead(id: number): boolean {
    if (this.#role !== "leader") return false;
    if (this.#log.termAt(this.#commitIndex) !== this.#currentTerm) {
      // §6.4: the leader's commit index may lag until an entry of its term commits (the no-op).
      this.#readsAwaitingCommit.push(id);
      return true;
    }
    this.#registerRead(id);
    return true;
  }

  #registerRead(id: number): void {
    if (this.#tracker.soleVoter) {
      this.#readStates.push({ id, index: this.#commitIndex });
      return;
    }
    // Only answers to requests sent after the read came confirm it: the next round's.
    this.#reads.push({ id, index: this.#commitIndex, round: this.#round + 1 });
    this.#roundWanted = true;
  }

  /**
   * A lease read (thesis §6.4.1): the commit index, if this leader's lease holds at `now` and it
   * has committed an entry of its term; otherwise null, and the caller falls back to
   * {@linkcode requestRead}. The lease runs from the start of the latest heartbeat round a
   * quorum answered, for `electionTimeoutMinMs / (1 + clockDriftBound)`: no other peer can be
   * elected before then, since pre-vote and check-quorum keep a majority from voting while it
   * hears from this leader. A leader handing over its leadership holds no lease, nor does one
   * that sent TimeoutNow in its term (the election it starts is exempt from that rule).
   */
  leaseRead(now: number): number | null {
    if (this.#role !== "leader" || this.#transferee !== null || this.#leaseForfeited) return null;
    if (this.#log.termAt(this.#commitIndex) !== this.#currentTerm) return null;
    return now < this.#leaseExpiry() ? this.#commitIndex : null;
  }

  #leaseExpiry(): number {
    const round = this.#tracker.quorumAckedRound(this.#round);
    if (round <= 0 || this.#round - round >= ROUNDS_KEPT) return -Infinity;
    const drift = this.#config.clockDriftBound ?? 0.1;
    return this.#roundStartedAt[round % ROUNDS_KEPT]! +
      this.#config.electionTimeoutMinMs / (1 + drift);
  }

  /**
   * Starts handing leadership over to `target` (thesis §3.10): this leader stops taking
   * proposals, brings the target's log up to date, then sends it TimeoutNow, which makes it start
   * an election at once. The transfer is given up after an election timeout. Returns why it
   * cannot start, or null.
   */
  transferLeadership(target: number, now: number): "not leader" | "not a voter" | "self" | null {
    if (this.#role !== "leader") return "not leader";
    if (target === this.#config.me) return "self";
    const progress = this.#tracker.progress(target);
    if (progress === undefined || !this.#tracker.isVoter(target)) return "not a voter";
    this.#transferee = target;
    this.#transferDeadline = now + this.#config.electionTimeoutMaxMs;
    this.#timeoutNowSent = false;
    this.#trace(`hands leadership over to ${target}`);
    this.#maybeSendTimeoutNow(target, progress, now);
    if (!this.#timeoutNowSent) this.#replicate(target, progress, now);
    return null;
  }

  /** The peer this leader is handing its leadership to, or null. */
  get transferee(): number | null {
    return this.#transferee;
  }

  /**
   * The voting follower whose log is the most up to date (the best target for a transfer), or
   * null.
   */
  mostUpToDateFollower(): number | null {
    let best: number | null = null;
    let bestMatch = -1;
    this.#tracker.forEachFollower((id, progress) => {
      if (progress.matchIndex > bestMatch && this.#tracker.isVoter(id)) {
        best = id;
        bestMatch = progress.matchIndex;
      }
    });
    return best;
  }

  #maybeSendTimeoutNow(peer: number, progress: Progress, now: number): void {
    if (this.#transferee !== peer || this.#timeoutNowSent) return;
    if (progress.matchIndex !== this.#log.lastIndex) return;
    this.#timeoutNowSent = true;
    this.#leaseForfeited = true;
    progress.sendAt = now + this.#config.heartbeatIntervalMs;
    this.#trace(`sends TimeoutNow to ${peer}, whose log is up to date`);
    this.#send.push({
      to: peer,
      method: TimeoutNow,
      args: { term: this.#currentTerm, leaderId: this.#config.me },
    });
  }

  /** The time at which {@linkcode tick} next has something to do. */
  nextDeadline(): number {
    if (this.#role !== "leader") return this.#electionDeadline;
    let earliest = Math.min(this.#quorumCheckAt, this.#transferDeadline);
    this.#tracker.forEachFollower((_, progress) => {
      earliest = Math.min(earliest, progress.sendAt);
    });
    return earliest;
  }

  /** Fires whatever timers are due at `now`: heartbeats for a leader, elections otherwise. */
  tick(now: number): void {
    if (this.#role === "leader") {
      if (now >= this.#quorumCheckAt) this.#checkQuorum(now);
    }
    if (this.#role === "leader" && now >= this.#transferDeadline) {
      this.#trace(`gives up handing leadership over to ${this.#transferee}`);
      this.#endTransfer();
    }
    if (this.#role === "leader") {
      let roundStarted = false;
      this.#tracker.forEachFollower((peer, progress) => {
        if (now < progress.sendAt) return;
        // Heartbeats open a new round, so that answers keep the lease fresh.
        if (!roundStarted) this.#startRound(now);
        roundStarted = true;
        this.#heartbeat(peer, progress, now);
      });
    } else if (now >= this.#electionDeadline) {
      if (this.#mayCampaign()) {
        this.#campaign(this.#config.preVote === true ? "preVote" : "election", now);
      } else {
        // A learner, or a server removed from the cluster, never campaigns.
        this.#resetElectionDeadline(now);
      }
    }
    this.#checkInvariants();
  }

  /**
   * Steps an incoming request or a reply to one of this peer's requests, and returns the answer
   * to a request (null for a reply). The answer may be sent only once every save asked for so
   * far is durable (Figure 2: respond after updating stable storage).
   *
   * The term rule of §5.1 lives here, once for every message: a higher term makes this peer a
   * follower of that term, and a message of a lower term is refused (a request) or ignored (a
   * reply). Pre-votes (thesis §9.6) are the exception: they ask about a term nobody is in yet.
   */
  step<M extends Message>(message: M, now: number): ResponseTo<M>;
  step(
    message: Message,
    now: number,
  ): AnyReply | null {
    const term = termOf(message);
    if (
      message.type === RequestVote && term !== null && term > this.#currentTerm &&
      message.args.transfer !== true && this.#role !== "leader" && this.#hearsLeader(now)
    ) {
      // Thesis §4.2.3: within the minimum election timeout of hearing from the leader, a vote
      // request for a later term neither raises this follower's term nor gets its vote. Without
      // this, a voter that granted a pre-vote and then answered the leader's heartbeat (renewing
      // its lease) would still help elect another leader while the lease holds. A candidate the
      // leader handed its leadership to (TimeoutNow) says so, and is heard. (A leader may vote:
      // it steps down as it does, and serves no more lease reads.)
      this.#trace(
        `RequestVote from ${message.args.candidateId} for term ${term}: refused, the leader was heard from within the election timeout`,
      );
      return { term: this.#currentTerm, voteGranted: false };
    }
    if (term !== null && term > this.#currentTerm) {
      this.#becomeFollower(term, now);
    } else if (term !== null && term < this.#currentTerm) {
      return this.#refuseStale(message);
    }
    let response: AnyReply | null;
    if (message.type === RequestVote) {
      // Every role answers votes alike: one vote per term, for an up-to-date log.
      response = message.args.preVote === true
        ? this.#handlePreVote(message.args, now)
        : this.#handleRequestVote(message.args, now);
    } else if (this.#role === "leader") {
      response = this.#stepLeader(message, now);
    } else if (this.#role === "follower") {
      response = this.#stepFollower(message, now);
    } else {
      response = this.#stepCandidate(message, now);
    }
    this.#checkInvariants();
    return response;
  }

  /** §5.1: a request of an older term is refused with this peer's term; a reply is stale. */
  #refuseStale(
    message: Message,
  ): AnyReply | null {
    if (message.type === RequestVote) return { term: this.#currentTerm, voteGranted: false };
    if (message.type === AppendEntries) return this.#rejectAppend(0, 0);
    if (message.type === InstallSnapshot) {
      return { term: this.#currentTerm, offset: 0, installed: false };
    }
    if (message.type === TimeoutNow) return { term: this.#currentTerm };
    return null;
  }

  #stepLeader(
    message: Exclude<Message, { type: typeof RequestVote }>,
    now: number,
  ): AnyReply | null {
    switch (message.type) {
      case AppendEntries:
      case InstallSnapshot:
      case TimeoutNow:
        // Election Safety (§5.2): one leader per term. Another leader of this term means a peer
        // broke the protocol, and going on could lose committed entries.
        invariant(
          false,
          () =>
            `Election Safety: peer ${message.args.leaderId} sent ${message.type} as leader of term ${this.#currentTerm}, which this peer leads`,
        );
        break;
      case "AppendEntriesReply":
        this.#handleAppendEntriesReply(message.from, message.args, message.reply, now);
        break;
      case "InstallSnapshotReply":
        this.#handleInstallSnapshotReply(message.from, message.args, message.reply, now);
        break;
      case "TimeoutNowReply":
      case "RequestVoteReply":
        break; // A late answer to this peer's election, or the transferee's acknowledgement.
    }
    return null;
  }

  #stepCandidate(
    message: Exclude<Message, { type: typeof RequestVote }>,
    now: number,
  ): AnyReply | null {
    switch (message.type) {
      case AppendEntries:
      case InstallSnapshot:
      case TimeoutNow:
        // §5.2: a leader of this term exists, so this election is lost.
        this.#becomeFollower(this.#currentTerm, now);
        return this.#stepFollower(message, now);
      case "RequestVoteReply":
        this.#handleVoteReply(message, now);
        break;
      default:
        break; // A late answer from when this peer led.
    }
    return null;
  }

  #stepFollower(
    message: Exclude<Message, { type: typeof RequestVote }>,
    now: number,
  ): AnyReply | null {
    if (message.type === AppendEntries) return this.#handleAppendEntries(message.args, now);
    if (message.type === InstallSnapshot) {
      return this.#handleInstallSnapshot(message.args, message.data, now);
    }
    if (message.type === TimeoutNow) {
      if (!this.#mayCampaign()) return { term: this.#currentTerm };
      // Thesis §3.10: the leader hands its leadership over; start an election at once, without
      // a pre-vote, which the leader's followers would refuse while they hear from it.
      this.#leaderId = message.args.leaderId;
      this.#trace(`is handed leadership by ${message.args.leaderId}`);
      this.#campaign("election", now, true);
      return { term: this.#currentTerm };
    }
    return null; // Late answers from when this peer campaigned or led.
  }

  /** Figure 2, RequestVote RPC, receiver implementation; the term is already current. */
  #handleRequestVote(args: RequestVoteArgs, now: number): RequestVoteReply {
    // §5.2: one vote per term; §5.4.1: only for a candidate whose log is at least as up-to-date.
    const voteGranted = (this.#votedFor === null || this.#votedFor === args.candidateId) &&
      this.#candidateLogIsUpToDate(args);
    if (voteGranted) {
      if (this.#votedFor !== args.candidateId) {
        this.#votedFor = args.candidateId;
        this.#hardStateChanged = true;
      }
      this.#resetElectionDeadline(now);
    }
    this.#trace(
      `RequestVote from ${args.candidateId} (last ${args.lastLogIndex}@${args.lastLogTerm}): ${
        voteGranted ? "granted" : "refused"
      }`,
    );
    return { term: this.#currentTerm, voteGranted };
  }

  /**
   * Pre-vote (thesis §9.6): would this peer vote for the candidate in `args.term`? It changes
   * neither its term nor its vote, and says no while it hears from a live leader (thesis §4.2.3),
   * so that a peer that cannot hear the leader, or cannot win, cannot raise everyone's term.
   */
  #handlePreVote(args: RequestVoteArgs, now: number): RequestVoteReply {
    const voteGranted = args.term > this.#currentTerm && !this.#hearsLeader(now) &&
      this.#candidateLogIsUpToDate(args);
    this.#trace(
      `pre-vote from ${args.candidateId} for term ${args.term} (last ${args.lastLogIndex}@${args.lastLogTerm}): ${
        voteGranted ? "granted" : "refused"
      }`,
    );
    return { term: voteGranted ? args.term : this.#currentTerm, voteGranted };
  }

  /**
   * Whether this peer leads, or heard from the leader of its term within the minimum election
   * timeout (thesis §4.2.3): it then refuses pre-votes and votes for a later term, so that a
   * peer that cannot hear the leader cannot unseat it, and a leader's lease (§6.4.1) holds.
   */
  #hearsLeader(now: number): boolean {
    return this.#role === "leader" ||
      (this.#leaderId !== null && now - this.#leaderContactAt < this.#config.electionTimeoutMinMs);
  }

  /** §5.4.1: is the candidate's log at least as up-to-date as this peer's? */
  #candidateLogIsUpToDate(args: RequestVoteArgs): boolean {
    return this.#log.isUpToDate(args.lastLogTerm, args.lastLogIndex);
  }

  #rejectAppend(conflictTerm: number, conflictIndex: number): AppendEntriesReply {
    return { term: this.#currentTerm, success: false, conflictTerm, conflictIndex };
  }

  /**
   * Figure 2, AppendEntries RPC, receiver implementation, with the §5.3 backtracking hint. The
   * term is already current and this peer a follower.
   */
  #handleAppendEntries(args: AppendEntriesArgs, now: number): AppendEntriesReply {
    this.#leaderId = args.leaderId;
    this.#leaderContactAt = now;
    this.#resetElectionDeadline(now);

    let { prevLogIndex, prevLogTerm, entries } = args;
    const lastNewIndex = prevLogIndex + entries.length;
    const snapshotIndex = this.#log.snapshotIndex;
    if (prevLogIndex < snapshotIndex) {
      // The entries up to the snapshot's last index are committed and compacted here: they
      // match the leader's (§5.4). Only what follows them needs checking.
      const covered = snapshotIndex - prevLogIndex;
      if (covered <= entries.length) {
        invariant(
          covered === 0 || entries[covered - 1]!.term === this.#log.snapshotTerm,
          () =>
            `leader ${args.leaderId} sent term ${
              entries[covered - 1]!.term
            } at index ${snapshotIndex}, which this peer's snapshot holds in term ${this.#log.snapshotTerm}`,
        );
      }
      entries = entries.slice(Math.min(covered, entries.length));
      prevLogIndex = Math.max(prevLogIndex, Math.min(snapshotIndex, lastNewIndex));
      prevLogTerm = this.#log.termAt(prevLogIndex) ?? prevLogTerm;
      if (prevLogIndex < snapshotIndex) {
        // Everything the request carries is in the snapshot already.
        this.#maybeFollowCommit(args.leaderCommit, lastNewIndex, now);
        return { term: this.#currentTerm, success: true, conflictTerm: 0, conflictIndex: 0 };
      }
    }
    if (prevLogIndex > this.#log.lastIndex) return this.#rejectAppend(0, this.#log.lastIndex + 1);
    const termThere = this.#log.termAt(prevLogIndex)!;
    if (termThere !== prevLogTerm) {
      const firstOfTerm = this.#log.firstIndexOfTerm(termThere);
      return this.#rejectAppend(termThere, firstOfTerm === 0 ? this.#log.firstIndex : firstOfTerm);
    }
    // §5.3: delete an existing entry only if it conflicts; a stale or duplicate request whose
    // entries all match must leave later entries alone.
    for (let i = 0; i < entries.length; i++) {
      const index = prevLogIndex + 1 + i;
      const existingTerm = this.#log.termAt(index);
      if (existingTerm === entries[i]!.term) continue;
      let configurationChanged = false;
      if (existingTerm !== undefined) {
        configurationChanged = this.#truncateFrom(index, args.leaderId);
      }
      for (let j = i; j < entries.length; j++) {
        const appended = this.#log.append(entries[j]!);
        if (entries[j]!.type === "config") {
          // Thesis §4.1: a server uses the latest configuration in its log, committed or not.
          this.#history.append(appended, entries[j]!.command as Configuration);
          configurationChanged = true;
        }
      }
      this.#logChangedFrom(index);
      if (configurationChanged) this.#configurationChanged(now);
      break;
    }
    this.#maybeFollowCommit(args.leaderCommit, lastNewIndex, now);
    return { term: this.#currentTerm, success: true, conflictTerm: 0, conflictIndex: 0 };
  }

  /** Figure 2: commitIndex = min(leaderCommit, index of last new entry), never backwards. */
  #maybeFollowCommit(leaderCommit: number, lastNewIndex: number, now: number): void {
    if (leaderCommit > this.#commitIndex) {
      this.#commitIndex = Math.max(this.#commitIndex, Math.min(leaderCommit, lastNewIndex));
      this.#refreshConfiguration(now);
    }
  }

  /**
   * Figure 13, InstallSnapshot RPC, receiver implementation. Chunks arrive in order; one snapshot
   * is assembled at a time, and a chunk of another one (a newer snapshot, or a new leader's)
   * at offset 0 starts over. The reply says how many bytes this peer holds, so that the leader
   * resumes there, and whether this peer now holds the log through the snapshot.
   */
  #handleInstallSnapshot(
    args: InstallSnapshotArgs,
    data: Uint8Array,
    now: number,
  ): InstallSnapshotReply {
    this.#leaderId = args.leaderId;
    this.#leaderContactAt = now;
    this.#resetElectionDeadline(now);
    const { lastIncludedIndex: index, lastIncludedTerm: term, offset } = args;
    const reply = (held: number, installed: boolean): InstallSnapshotReply => ({
      term: this.#currentTerm,
      offset: held,
      installed,
    });
    // Committed entries match the leader's (§5.4): through the commit index, nothing is missing.
    if (index <= this.#commitIndex) return reply(offset + data.length, true);
    let incoming = this.#incoming;
    if (
      incoming === null || incoming.index !== index || incoming.term !== term ||
      incoming.leaderTerm !== this.#currentTerm
    ) {
      if (offset !== 0) return reply(0, false);
      incoming = {
        index,
        term,
        configuration: args.configuration,
        leaderTerm: this.#currentTerm,
        chunks: [],
        length: 0,
      };
      this.#incoming = incoming;
    }
    if (offset === incoming.length) {
      const maxBytes = this.#config.maxSnapshotBytes ?? 1024 * 1024 * 1024;
      if (incoming.length + data.length > maxBytes) {
        this.#trace(`refuses a snapshot through ${index}: more than ${maxBytes} bytes`);
        this.#incoming = null;
        return reply(0, false);
      }
      incoming.chunks.push(data);
      incoming.length += data.length;
    }
    if (!args.done || offset + data.length !== incoming.length) {
      return reply(incoming.length, false);
    }
    const assembled = new Uint8Array(incoming.length);
    let at = 0;
    for (const chunk of incoming.chunks) {
      assembled.set(chunk, at);
      at += chunk.length;
    }
    this.#incoming = null;
    this.#installSnapshot({
      index,
      term,
      data: assembled,
      configuration: incoming.configuration ?? this.#history.at(index),
    }, now);
    return reply(assembled.length, true);
  }

  /**
   * Figure 13, steps 6 to 8: a snapshot past the commit index replaces the log through its last
   * index. If the log holds that entry (same index and term), the entries after it stay;
   * otherwise the whole log goes. The service gets the snapshot before any later entry, once it
   * is durable here.
   */
  #installSnapshot(snapshot: Snapshot & { configuration: Configuration }, now: number): void {
    const { index, term } = snapshot;
    const before = this.#history.current;
    if (this.#log.termAt(index) === term) {
      this.#log.compact(index, term);
      this.#history.compact(index, snapshot.configuration);
    } else {
      // Entries up to the commit index are in the snapshot too; the rest conflict or are missing.
      if (this.#log.lastIndex >= this.#log.firstIndex) this.#log.truncateFrom(this.#log.firstIndex);
      this.#log.compact(index, term);
      this.#history.reset(snapshot.configuration, index);
      this.#logChangedFrom(index);
    }
    this.#snapshot = snapshot;
    this.#unsavedSnapshot = snapshot;
    this.#snapshotToApply = snapshot;
    this.#commitIndex = index;
    this.#trace(
      `installs a snapshot through ${index} (term ${term}), ${snapshot.data.length} bytes`,
    );
    if (!sameConfiguration(this.#history.current, before)) this.#configurationChanged(now);
  }

  /**
   * Drops the entries from `index` on, which conflict with what leader `leaderId` sent; returns
   * whether a configuration entry went with them (the one before it is back in effect).
   */
  #truncateFrom(index: number, leaderId: number): boolean {
    // Committed entries are on a majority and in every later leader's log (§5.4): a request to
    // overwrite one comes from a peer that broke the protocol, or from a bug here.
    invariant(
      index > this.#commitIndex,
      () =>
        `leader ${leaderId} of term ${this.#currentTerm} asks to overwrite index ${index}, at or below the commit index ${this.#commitIndex}`,
    );
    // Leader Append-Only (§5.3).
    invariant(this.#role !== "leader", () => `a leader was asked to truncate its own log`);
    this.#log.truncateFrom(index);
    return this.#history.truncateFrom(index);
  }

  /** Counts an answer to this peer's pre-vote or election. */
  #handleVoteReply(
    message: Extract<ReplyMessage, { type: "RequestVoteReply" }>,
    now: number,
  ): void {
    const { from, args, reply } = message;
    if (reply === null) return;
    if (args.preVote === true) {
      // A refusal with a higher term made this peer a follower already, in step().
      if (this.#role !== "precandidate" || args.term !== this.#currentTerm + 1) return;
      this.#tracker.recordVote(from, reply.voteGranted);
      if (this.#tracker.voteResult() === "won") this.#campaign("election", now);
      return;
    }
    // A voter grants in the request's term and replies with it: a grant of another term answers
    // another request, which only a transport that mixed replies up could deliver here.
    if (this.#role !== "candidate" || args.term !== this.#currentTerm) return;
    if (reply.term !== args.term) return;
    this.#tracker.recordVote(from, reply.voteGranted);
    this.#maybeWin(now);
  }

  /**
   * A candidate with a quorum of votes becomes leader, once its own term and vote are durable.
   * Others' votes answer requests sent after that save, but the only voter of a configuration
   * wins on its own vote: leading before the save, a crash could bring it back in the term
   * before, to be elected in this term a second time, with another log.
   */
  #maybeWin(now: number): void {
    if (this.#role !== "candidate" || this.#tracker.voteResult() !== "won") return;
    if (this.#hardStateChanged || this.#hardStateSave !== null) return;
    this.#becomeLeader(now);
  }

  /** Advances a follower's progress, or backs its nextIndex up. */
  #handleAppendEntriesReply(
    peer: number,
    args: AppendEntriesArgs,
    reply: AppendEntriesReply | null,
    now: number,
  ): void {
    const progress = this.#tracker.progress(peer);
    // A reply to a request of an earlier term says nothing about this term's logs.
    if (progress === undefined || args.term !== this.#currentTerm) return;
    const lastIndex = args.prevLogIndex + args.entries.length;
    if (reply === null) {
      this.#appendLost(peer, progress, args, now);
      return;
    }
    progress.recentActive = true;
    // Any answer of this term, even a rejection, shows the follower took this peer as leader
    // when it got the request: the request's round counts for reads and the lease.
    if ((args.round ?? 0) > progress.ackedRound) {
      progress.ackedRound = args.round!;
      this.#confirmReads();
    }
    if (reply.success) {
      if (progress.maybeUpdate(lastIndex)) this.#maybeCommit(now);
      this.#maybeSendTimeoutNow(peer, progress, now);
      // A probe's success shows where the logs match: from there, pipelining is safe.
      if (progress.state === "probe" && progress.matchIndex >= progress.nextIndex - 1) {
        progress.becomeReplicate();
      }
      this.#replicate(peer, progress, now);
      return;
    }
    if (progress.isStaleRejection(args.prevLogIndex)) {
      // Overtaken by what the leader has learned since: its slot is free for what waits. But if
      // it carried entries past the known match, the follower refused entries it lacks, at a
      // position it holds (the request arrived before the one it follows): send them again.
      progress.inflights.free(lastIndex);
      if (progress.state === "replicate" && lastIndex > progress.matchIndex) progress.becomeProbe();
      this.#replicate(peer, progress, now);
      return;
    }
    // §5.3, accelerated backtracking: skip the follower's whole conflicting term at once, or, if
    // the leader holds entries of that term, resume just after its last one.
    let next = reply.conflictIndex;
    if (reply.conflictTerm > 0) {
      const lastOfTerm = this.#log.lastIndexOfTerm(reply.conflictTerm);
      if (lastOfTerm > 0) next = lastOfTerm + 1;
    }
    progress.becomeProbe(Math.max(Math.min(next, args.prevLogIndex), 1));
    if (progress.nextIndex === args.prevLogIndex + 1) {
      // The follower refuses a position it had acknowledged: it lost saved entries (a broken
      // disk). Resending at once would loop as fast as the network allows; the heartbeat retries.
      this.#trace(
        `AppendEntries to ${peer} rejected at its acknowledged match ${args.prevLogIndex}`,
      );
      return;
    }
    this.#trace(
      `AppendEntries to ${peer} rejected at ${args.prevLogIndex}: next ${progress.nextIndex}`,
    );
    this.#replicate(peer, progress, now);
  }

  /**
   * No reply came to an AppendEntries. A lost probe is retried by the heartbeat, never at once:
   * an unreachable peer answers at once, and resending would loop. A lost pipelined request
   * frees its slot; unless a later success covers its entries, the follower may lack them, and
   * nothing in flight would tell (the requests behind a gap are rejected, but the last one has
   * none behind it): the leader probes from the known match at once, which carries what waits.
   */
  #appendLost(peer: number, progress: Progress, args: AppendEntriesArgs, now: number): void {
    if (progress.state !== "replicate") {
      if (progress.state === "probe" && args.prevLogIndex === progress.nextIndex - 1) {
        progress.probeSent = false;
      }
      return;
    }
    if (args.entries.length === 0) return; // A heartbeat held no slot.
    const lastIndex = args.prevLogIndex + args.entries.length;
    progress.inflights.free(lastIndex);
    if (lastIndex <= progress.matchIndex) return;
    progress.becomeProbe();
    this.#replicate(peer, progress, now);
  }

  /**
   * A follower answered a chunk of the snapshot (or did not). Once it holds the log through the
   * snapshot, the leader probes from just after it; otherwise the next chunk starts where the
   * follower says its copy ends. A chunk that brought no progress, or got no answer, is retried
   * by the heartbeat, not at once.
   */
  #handleInstallSnapshotReply(
    peer: number,
    args: InstallSnapshotArgs,
    reply: InstallSnapshotReply | null,
    now: number,
  ): void {
    const progress = this.#tracker.progress(peer);
    if (progress === undefined || args.term !== this.#currentTerm) return;
    if (progress.state !== "snapshot" || args.lastIncludedIndex !== progress.pendingSnapshot) {
      return;
    }
    if (reply === null) {
      if (args.offset === progress.snapshotOffset) progress.probeSent = false;
      return;
    }
    progress.recentActive = true;
    if (reply.installed) {
      if (progress.maybeUpdate(args.lastIncludedIndex)) this.#maybeCommit(now);
      progress.becomeProbe(args.lastIncludedIndex + 1);
      this.#trace(`follower ${peer} holds the snapshot through ${args.lastIncludedIndex}`);
      this.#replicate(peer, progress, now);
      return;
    }
    if (args.offset !== progress.snapshotOffset) return; // an answer to an earlier chunk
    const size = this.#snapshot?.data.length ?? 0;
    const advanced = reply.offset > progress.snapshotOffset;
    progress.snapshotOffset = Math.min(reply.offset, size);
    progress.probeSent = false;
    if (advanced) this.#replicate(peer, progress, now);
  }

  /** Tells the core that the save made with `mark` (and every earlier one) is durable. */
  onSaved(mark: SaveMark, now: number): void {
    const at = this.#pendingSaves.findIndex((pending) =>
      pending.mark === mark ||
      (pending.mark.term === mark.term && pending.mark.lastIndex === mark.lastIndex)
    );
    invariant(at >= 0, () => `onSaved() for a save that is not pending: ${JSON.stringify(mark)}`);
    const durable = this.#pendingSaves.splice(0, at + 1);
    if (this.#hardStateSave !== null && durable.includes(this.#hardStateSave)) {
      this.#hardStateSave = null;
    }
    // The disk now holds the log as it was when this save was asked for. What changed since (in
    // later saves, or not asked for yet) is not on disk.
    let stable = mark.lastIndex;
    for (const pending of this.#pendingSaves) stable = Math.min(stable, pending.from - 1);
    this.#stableIndex = Math.min(stable, this.#unsavedFrom - 1);
    if (this.#role === "leader") this.#maybeCommit(now);
    this.#maybeWin(now);
    this.#checkInvariants();
  }

  /** Takes what has to be saved, sent and applied since the last call. */
  takeReady(now: number): Ready {
    if (this.#roundWanted && this.#role === "leader") {
      // Reads asked for a round: one heartbeat to every follower confirms them all at once.
      this.#roundWanted = false;
      this.#startRound(now);
      this.#tracker.forEachFollower((peer, progress) => this.#heartbeat(peer, progress, now));
    }
    if (this.#replicationWanted) {
      this.#replicationWanted = false;
      if (this.#role === "leader") {
        this.#tracker.forEachFollower((peer, progress) => this.#replicate(peer, progress, now));
      }
    }
    let save: PersistChange | null = null;
    let saveMark: SaveMark | null = null;
    if (
      this.#hardStateChanged || this.#unsavedFrom !== Infinity || this.#unsavedSnapshot !== null
    ) {
      save = { term: this.#currentTerm, votedFor: this.#votedFor };
      if (this.#unsavedSnapshot !== null) save.snapshot = this.#unsavedSnapshot;
      if (this.#unsavedFrom !== Infinity) {
        // A persisted log change starts after the snapshot: what it covers is gone.
        const from = Math.max(this.#unsavedFrom, this.#log.firstIndex);
        save.log = { from, entries: this.#log.slice(from) };
      }
      saveMark = { term: this.#currentTerm, lastIndex: this.#log.lastIndex };
      const pending = { mark: saveMark, from: this.#unsavedFrom };
      this.#pendingSaves.push(pending);
      if (this.#hardStateChanged) this.#hardStateSave = pending;
      this.#hardStateChanged = false;
      this.#unsavedFrom = Infinity;
      this.#unsavedSnapshot = null;
    }
    const apply: ApplyMsg[] = [];
    const snapshot = this.#snapshotToApply;
    if (snapshot !== null && this.#stableIndex >= snapshot.index) {
      // The service gets the snapshot once it is durable here, before any entry after it.
      this.#snapshotToApply = null;
      this.#lastApplied = snapshot.index;
      apply.push({
        commandValid: false,
        command: null,
        commandIndex: 0,
        commandTerm: 0,
        snapshotValid: true,
        snapshot: snapshot.data,
        snapshotIndex: snapshot.index,
        snapshotTerm: snapshot.term,
      });
    }
    const applyUpTo = this.#snapshotToApply === null
      ? Math.min(this.#commitIndex, this.#stableIndex)
      : 0;
    while (this.#lastApplied < applyUpTo) {
      this.#lastApplied++;
      const entry = this.#log.entryAt(this.#lastApplied)!;
      apply.push({
        commandValid: entry.type === undefined,
        command: entry.command,
        commandIndex: this.#lastApplied,
        commandTerm: entry.term,
        snapshotValid: false,
        snapshot: null,
        snapshotIndex: 0,
        snapshotTerm: 0,
      });
    }
    const ready: Ready = {
      save,
      saveMark,
      send: this.#send,
      sendAfterSave: this.#sendAfterSave,
      apply,
      reads: this.#readStates,
    };
    this.#send = [];
    this.#sendAfterSave = [];
    this.#readStates = [];
    this.#checkInvariants();
    return ready;
  }

  /** The O(1) invariants that hold between steps. */
  #checkInvariants(): void {
    invariant(
      this.#commitIndex <= this.#log.lastIndex,
      () => `commitIndex ${this.#commitIndex} is past the last log index ${this.#log.lastIndex}`,
    );
    invariant(
      this.#lastApplied <= this.#commitIndex,
      () => `lastApplied ${this.#lastApplied} is past commitIndex ${this.#commitIndex}`,
    );
    invariant(
      this.#stableIndex <= this.#log.lastIndex,
      () =>
        `the stable index ${this.#stableIndex} is past the last log index ${this.#log.lastIndex}`,
    );
  }

  #logChangedFrom(index: number): void {
    this.#unsavedFrom = Math.min(this.#unsavedFrom, index);
    this.#stableIndex = Math.min(this.#stableIndex, index - 1);
  }

  #resetElectionDeadline(now: number): void {
    const { electionTimeoutMinMs, electionTimeoutMaxMs, random } = this.#config;
    this.#electionDeadline = now + randomInt(random, electionTimeoutMinMs, electionTimeoutMaxMs);
  }

  /** Figure 2: a higher term seen anywhere makes a peer a follower of that term. */
  #becomeFollower(term: number, now: number): void {
    if (term > this.#currentTerm) {
      this.#currentTerm = term;
      this.#votedFor = null;
      this.#hardStateChanged = true;
      this.#leaderId = null;
    }
    if (this.#role === "leader") {
      this.#resetElectionDeadline(now);
      this.#tracker.clearProgress();
      this.#quorumCheckAt = Infinity;
      this.#failReads();
      this.#endTransfer();
    }
    if (this.#role !== "follower") this.#trace(`becomes follower`);
    this.#role = "follower";
  }

  /**
   * Starts a pre-vote or an election. Thesis §9.6: before an election, a pre-candidate asks the
   * others whether they would vote for it, without anyone changing term; only a quorum of yeses
   * starts the election (§5.2: a candidate of the next term, voting for itself). A peer that
   * cannot win, or cannot hear, then no longer raises terms and unseats leaders.
   */
  #campaign(kind: "preVote" | "election", now: number, transfer = false): void {
    const { me } = this.#config;
    this.#resetElectionDeadline(now);
    this.#leaderId = null;
    this.#tracker.resetVotes();
    if (kind === "preVote") {
      this.#role = "precandidate";
      this.#counters.preVotesStarted++;
      this.#trace(`starts pre-vote for term ${this.#currentTerm + 1}`);
    } else {
      this.#counters.electionsStarted++;
      this.#currentTerm++;
      this.#votedFor = me;
      this.#hardStateChanged = true;
      this.#role = "candidate";
      this.#trace(`starts election`);
    }
    if (this.#tracker.voteResult() === "won") {
      // The only voter: no one else to ask. Its election is won once its vote is saved.
      if (kind === "preVote") this.#campaign("election", now);
      else this.#maybeWin(now);
      return;
    }
    const args: RequestVoteArgs = {
      term: kind === "preVote" ? this.#currentTerm + 1 : this.#currentTerm,
      candidateId: me,
      lastLogIndex: this.#log.lastIndex,
      lastLogTerm: this.#log.lastTerm,
    };
    if (kind === "preVote") args.preVote = true;
    if (transfer) args.transfer = true;
    // A RequestVote reports this peer's vote for itself, which must be durable first; a pre-vote
    // changes nothing and may leave at once.
    const queue = kind === "preVote" ? this.#send : this.#sendAfterSave;
    for (const peer of this.#tracker.voterOthers) {
      queue.push({ to: peer, method: RequestVote, args });
    }
  }

  #becomeLeader(now: number): void {
    this.#role = "leader";
    this.#leaseForfeited = false;
    this.#leaderId = this.#config.me;
    this.#tracker.resetProgress(this.#log.lastIndex, this.#config.maxInflightAppends, now);
    this.#startRound(now);
    this.#quorumCheckAt = now + this.#config.electionTimeoutMaxMs;
    this.#counters.electionsWon++;
    this.#uncommittedBytes = this.#log.bytesBetween(this.#commitIndex + 1, this.#log.lastIndex + 1);
    this.#trace(`becomes leader with log up to ${this.#log.lastIndex}`);
    // Figure 2: send initial empty AppendEntries to each server at once, to claim leadership.
    // Each is the first probe of where that follower's log matches.
    this.#tracker.forEachFollower((peer, progress) => {
      this.#sendAppend(peer, progress, now, progress.nextIndex);
    });
    if (this.#config.noopOnElection === true) {
      // Thesis §6.4: entries of earlier terms commit only with one of this term (§5.4.2), so a
      // leader appends an empty one at once, and what was committed before applies without
      // waiting for a client.
      const index = this.#log.append({ term: this.#currentTerm, command: null, type: "noop" }, 4);
      this.#uncommittedBytes += this.#log.bytesAt(index);
      this.#logChangedFrom(index);
      this.#replicationWanted = true;
    }
  }

  /**
   * The configuration that removed this leader from the voters committed (thesis §4.2.2): it
   * hands leadership to the most up-to-date voter whose log matches its own, if there is one,
   * so that the cluster need not wait out an election timeout, and steps down. As a learner or
   * a server outside the cluster, it never campaigns again.
   */
  #stepDownRemoved(now: number): void {
    const successor = this.mostUpToDateFollower();
    const progress = successor === null ? undefined : this.#tracker.progress(successor);
    if (progress !== undefined && progress.matchIndex === this.#log.lastIndex) {
      this.#trace(`sends TimeoutNow to ${successor}: its own removal committed`);
      this.#send.push({
        to: successor!,
        method: TimeoutNow,
        args: { term: this.#currentTerm, leaderId: this.#config.me },
      });
    }
    this.#trace(`steps down: the configuration without it as a voter committed`);
    this.#becomeFollower(this.#currentTerm, now);
    this.#leaderId = null;
  }

  /** Opens a new heartbeat round: the requests sent from now on carry it. */
  #startRound(now: number): void {
    this.#round++;
    this.#roundStartedAt[this.#round % ROUNDS_KEPT] = now;
  }

  /** Reads whose round a quorum answered are confirmed: this peer still led after they came. */
  #confirmReads(): void {
    if (this.#reads.length === 0) return;
    const answered = this.#tracker.quorumAckedRound(this.#round);
    while (this.#reads.length > 0 && this.#reads[0]!.round <= answered) {
      const { id, index } = this.#reads.shift()!;
      this.#readStates.push({ id, index });
    }
  }

  /** This peer no longer leads: reads waiting for it fail. */
  #failReads(): void {
    for (const id of this.#readsAwaitingCommit) this.#readStates.push({ id, index: null });
    for (const { id } of this.#reads) this.#readStates.push({ id, index: null });
    this.#readsAwaitingCommit = [];
    this.#reads = [];
    this.#roundWanted = false;
  }

  #endTransfer(): void {
    this.#transferee = null;
    this.#transferDeadline = Infinity;
    this.#timeoutNowSent = false;
  }

  /**
   * Check-quorum (Ongaro's thesis §6.2): a leader that no quorum has answered for a whole
   * election timeout steps down. Without it, a leader that can send but not hear keeps its
   * followers from ever timing out, and the cluster commits nothing for as long as that lasts.
   */
  #checkQuorum(now: number): void {
    if (!this.#tracker.quorumActive()) {
      this.#trace(`steps down: no quorum answered in the last election timeout`);
      this.#becomeFollower(this.#currentTerm, now);
      this.#leaderId = null;
      return;
    }
    this.#quorumCheckAt = now + this.#config.electionTimeoutMaxMs;
  }

  /**
   * The heartbeat to one follower is due: a probe is retried with entries; a pipelining
   * follower gets what waits if the window has room, or else an empty AppendEntries at its
   * known match, which the follower accepts whatever is in flight and which holds no slot.
   */
  #heartbeat(peer: number, progress: Progress, now: number): void {
    if (progress.state === "snapshot" || progress.nextIndex <= this.#log.snapshotIndex) {
      this.#sendSnapshotChunk(peer, progress, now);
      return;
    }
    if (progress.state === "probe" || (!progress.inflights.full && this.#hasEntriesFor(progress))) {
      this.#sendAppend(peer, progress, now, this.#batchEnd(progress.nextIndex));
      return;
    }
    // At the known match, or at the snapshot's last index if the match was compacted away (a
    // follower that lacks it refuses, and gets the snapshot).
    const prevLogIndex = Math.max(progress.matchIndex, this.#log.snapshotIndex);
    progress.sendAt = now + this.#config.heartbeatIntervalMs;
    this.#send.push({
      to: peer,
      method: AppendEntries,
      args: {
        term: this.#currentTerm,
        leaderId: this.#config.me,
        prevLogIndex,
        prevLogTerm: this.#log.termAt(prevLogIndex)!,
        entries: [],
        leaderCommit: this.#commitIndex,
        round: this.#round,
      },
    });
  }

  #hasEntriesFor(progress: Progress): boolean {
    return progress.nextIndex <= this.#log.lastIndex;
  }

  /**
   * Sends `peer` the entries it lacks, as far as its progress allows. While probing, one probe
   * at a time. While pipelining, and an AppendEntries is in flight, only full ones follow it
   * (cut at maxEntriesPerAppend or maxAppendBytes): the rest waits for a reply and then goes
   * out as one message. So pipelining starts exactly when one message per round trip cannot
   * carry the load, and a light load (or an unreachable follower) costs no more messages than
   * without it.
   */
  #replicate(peer: number, progress: Progress, now: number): void {
    const lastIndex = this.#log.lastIndex;
    if (progress.state === "snapshot" || progress.nextIndex <= this.#log.snapshotIndex) {
      if (progress.state !== "snapshot" || !progress.probeSent) {
        this.#sendSnapshotChunk(peer, progress, now);
      }
      return;
    }
    if (progress.state === "probe") {
      if (!progress.probeSent && this.#hasEntriesFor(progress)) {
        this.#sendAppend(peer, progress, now, this.#batchEnd(progress.nextIndex));
      }
      return;
    }
    while (this.#hasEntriesFor(progress) && !progress.inflights.full) {
      const next = progress.nextIndex;
      const end = this.#batchEnd(next);
      const full = end <= lastIndex || end - next === this.#config.maxEntriesPerAppend;
      if (progress.inflights.count > 0 && !full) return;
      this.#sendAppend(peer, progress, now, end);
    }
  }

  /**
   * Sends `peer` the next chunk of the latest snapshot (Figure 13): at most `maxAppendBytes` of
   * it, in base64. A follower that was sent an older snapshot starts over with this one.
   */
  #sendSnapshotChunk(peer: number, progress: Progress, now: number): void {
    const snapshot = this.#snapshot!;
    if (progress.state !== "snapshot" || progress.pendingSnapshot !== snapshot.index) {
      progress.becomeSnapshot(snapshot.index);
      this.#trace(`sends follower ${peer} the snapshot through ${snapshot.index}`);
    }
    const offset = progress.snapshotOffset;
    const end = Math.min(snapshot.data.length, offset + this.#config.maxAppendBytes);
    const args: InstallSnapshotArgs = {
      term: this.#currentTerm,
      leaderId: this.#config.me,
      lastIncludedIndex: snapshot.index,
      lastIncludedTerm: snapshot.term,
      offset,
      data: encodeBase64(snapshot.data.subarray(offset, end)),
      done: end === snapshot.data.length,
    };
    // The configuration goes with the first chunk, where the follower starts assembling.
    if (offset === 0) args.configuration = this.#history.at(snapshot.index);
    progress.probeSent = true;
    progress.sendAt = now + this.#config.heartbeatIntervalMs;
    this.#send.push({ to: peer, method: InstallSnapshot, args });
  }

  /** Sends `peer` an AppendEntries with the entries from its `nextIndex` up to `end` (excluded). */
  #sendAppend(peer: number, progress: Progress, now: number, end: number): void {
    const prevLogIndex = progress.nextIndex - 1;
    if (prevLogIndex < this.#log.snapshotIndex) {
      this.#sendSnapshotChunk(peer, progress, now);
      return;
    }
    const args: AppendEntriesArgs = {
      term: this.#currentTerm,
      leaderId: this.#config.me,
      prevLogIndex,
      prevLogTerm: this.#log.termAt(prevLogIndex)!,
      entries: end > prevLogIndex + 1 ? this.#log.slice(prevLogIndex + 1, end) : [],
      leaderCommit: this.#commitIndex,
      round: this.#round,
    };
    progress.sentEntries(end - 1, args.entries.length);
    progress.sendAt = now + this.#config.heartbeatIntervalMs;
    this.#send.push({ to: peer, method: AppendEntries, args });
  }

  /**
   * The index just past the entries one AppendEntries starting at `from` carries: at most
   * `maxEntriesPerAppend` entries and `maxAppendBytes` bytes, but always at least one entry, so
   * that a large entry still gets through.
   */
  #batchEnd(from: number): number {
    const { maxEntriesPerAppend, maxAppendBytes } = this.#config;
    const last = Math.min(this.#log.lastIndex, from - 1 + maxEntriesPerAppend);
    if (from > last) return from;
    let bytes = this.#log.bytesAt(from);
    let end = from + 1;
    while (end <= last) {
      bytes += this.#log.bytesAt(end);
      if (bytes > maxAppendBytes) break;
      end++;
    }
    return end;
  }

  /**
   * §5.3, §5.4.2: commit the highest index stored on a quorum, but only by counting replicas of
   * an entry from the current term; earlier entries then commit with it. The leader counts its
   * own log only as far as it is durable.
   */
  #maybeCommit(now: number): void {
    const quorumIndex = this.#tracker.committedIndex(this.#stableIndex);
    if (quorumIndex <= this.#commitIndex || this.#log.termAt(quorumIndex) !== this.#currentTerm) {
      return;
    }
    this.#uncommittedBytes -= this.#log.bytesBetween(this.#commitIndex + 1, quorumIndex + 1);
    this.#commitIndex = quorumIndex;
    this.#trace(`commits up to ${quorumIndex}`);
    this.#refreshConfiguration(now);
    if (this.#role !== "leader") return;
    // An entry of this term is committed: reads that waited for it can take the commit index.
    const waiting = this.#readsAwaitingCommit;
    this.#readsAwaitingCommit = [];
    for (const id of waiting) this.#registerRead(id);
    if (!this.#tracker.isVoter(this.#config.me) && this.#history.currentIndex <= quorumIndex) {
      this.#stepDownRemoved(now);
      return;
    }
    // Followers learn the new commit index with the next AppendEntries: soon, so that they
    // apply promptly, but not at once, so that a busy leader's next proposal carries it.
    const notifyAt = now + this.#config.commitNotifyDelayMs;
    this.#tracker.forEachFollower((_, progress) => {
      progress.sendAt = Math.min(progress.sendAt, notifyAt);
    });
  }

  #trace(line: string): void {
    this.#config.trace?.(`[peer ${this.#config.me} T${this.#currentTerm} ${this.#role}] ${line}`);
  }
}

/**
 * The term a message makes this peer consider, or null for one that carries none: a lost reply,
 * and pre-votes, which name a term nobody is in yet. A pre-vote's refusal carries the voter's
 * term, which a lagging pre-candidate does catch up with.
 */
function termOf(message: Message): number | null {
  switch (message.type) {
    case RequestVote:
      return message.args.preVote === true ? null : message.args.term;
    case AppendEntries:
      return message.args.term;
    case "RequestVoteReply":
      if (message.reply === null) return null;
      return message.args.preVote === true && message.reply.voteGranted ? null : message.reply.term;
    case InstallSnapshot:
    case TimeoutNow:
      return message.args.term;
    case "AppendEntriesReply":
    case "InstallSnapshotReply":
    case "TimeoutNowReply":
      return message.reply?.term ?? null;
  }
}
