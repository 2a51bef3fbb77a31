/**
 * The Raft protocol of Figure 2 as a state machine that does no I/O. It is stepped by incoming
 * requests and replies, by proposals and by the passage of time, and hands back a {@linkcode Ready}:
 * what to save, what to send, and what to apply. The driver in `../driver.ts` owns the clock, the
 * transport and the persister.
 *
 * @module
 */

import { randomInt, type RandomSource } from "./_random.ts";
import {
  AppendEntries,
  type AppendEntriesArgs,
  type AppendEntriesReply,
  RequestVote,
  type RequestVoteArgs,
  type RequestVoteReply,
} from "./messages.ts";
import { RaftLog } from "./log.ts";
import type { ApplyMsg, PersistChange, PersistentState, Role } from "./types.ts";

/** A request the core wants sent to peer `to`. */
export type Outgoing =
  | { to: number; method: typeof RequestVote; args: RequestVoteArgs }
  | { to: number; method: typeof AppendEntries; args: AppendEntriesArgs };

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
  /** Newly committed entries, in index order. */
  apply: ApplyMsg[];
}

/** The core's fixed settings. */
export interface CoreConfig {
  me: number;
  peerCount: number;
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
  #votesGranted = new Set<number>();
  /** Pre-votes granted for term currentTerm + 1 while a pre-vote runs; null otherwise. */
  #preVotesGranted: Set<number> | null = null;
  /** When this peer last heard from the leader of its term. */
  #leaderContactAt = -Infinity;

  // Volatile state on leaders, reinitialized after election.
  #nextIndex: number[] = [];
  #matchIndex: number[] = [];
  /**
   * When the leader next sends AppendEntries to each peer: a heartbeat interval after the last
   * one, or sooner to tell it of a new commit index.
   */
  #nextSendAt: number[] = [];
  /**
   * AppendEntries of this term awaiting a reply, per peer: its pipeline. A success frees every
   * request it covers, so a reply that comes late (or never) does not hold a slot.
   */
  #inFlight: Set<AppendEntriesArgs>[] = [];
  /**
   * Per peer: true while the leader does not know where the follower's log matches its own (after
   * the election, a rejection, or a lost request). It then sends one AppendEntries at a time and
   * moves `nextIndex` only on replies. Otherwise it pipelines: `nextIndex` advances as entries
   * are sent, with up to `maxInflightAppends` AppendEntries awaiting replies.
   */
  #probing: boolean[] = [];
  /** Peers (this one included) that answered an AppendEntries of this term since the last check. */
  #heardFrom = new Set<number>();
  /** When the leader next checks that a majority still answers it (check-quorum). */
  #quorumCheckAt = Infinity;

  // What the next Ready carries.
  #hardStateChanged = false;
  #unsavedFrom = Infinity;
  #send: Outgoing[] = [];
  #sendAfterSave: Outgoing[] = [];
  #replicationWanted = false;
  /** The last save known durable: lets a new leader count its own log (see becomeLeader). */
  #durable: SaveMark = { term: -1, lastIndex: 0 };

  constructor(config: CoreConfig, state: PersistentState, now: number) {
    this.#config = config;
    this.#currentTerm = state.term;
    this.#votedFor = state.votedFor;
    this.#log = new RaftLog(state.log);
    this.#durable = { term: state.term, lastIndex: state.log.length };
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

  /**
   * Appends `command` if this peer leads; replication starts at the next {@linkcode takeReady}.
   * `commandBytes`, the length of the command's JSON text if the caller knows it, saves the core
   * from computing it to size its messages.
   */
  propose(
    command: unknown,
    commandBytes = -1,
  ): { index: number; term: number; isLeader: boolean } {
    if (this.#role !== "leader") return { index: -1, term: this.#currentTerm, isLeader: false };
    const index = this.#log.append({ term: this.#currentTerm, command }, commandBytes);
    this.#logChangedFrom(index);
    this.#replicationWanted = true;
    return { index, term: this.#currentTerm, isLeader: true };
  }

  /** The time at which {@linkcode tick} next has something to do. */
  nextDeadline(): number {
    if (this.#role !== "leader") return this.#electionDeadline;
    let earliest = this.#quorumCheckAt;
    for (let peer = 0; peer < this.#config.peerCount; peer++) {
      if (peer === this.#config.me) continue;
      earliest = Math.min(earliest, this.#nextSendAt[peer]!);
    }
    return earliest;
  }

  /** Fires whatever timers are due at `now`: heartbeats for a leader, elections otherwise. */
  tick(now: number): void {
    if (this.#role === "leader" && now >= this.#quorumCheckAt) this.#checkQuorum(now);
    if (this.#role === "leader") {
      for (let peer = 0; peer < this.#config.peerCount; peer++) {
        if (peer === this.#config.me) continue;
        if (now >= this.#nextSendAt[peer]!) {
          // A heartbeat goes out even when the pipeline is full, but then without entries: it
          // keeps the leadership and learns of lost messages, while memory stays bounded. A
          // probe always carries entries: it is the retry.
          this.#sendAppendEntries(
            peer,
            now,
            this.#probing[peer]! || this.#inFlight[peer]!.size < this.#config.maxInflightAppends,
          );
        }
      }
    } else if (now >= this.#electionDeadline) {
      if (this.#config.preVote) this.#startPreVote(now);
      else this.#startElection(now);
    }
  }

  /** Figure 2, RequestVote RPC, receiver implementation. */
  handleRequestVote(args: RequestVoteArgs, now: number): RequestVoteReply {
    if (args.preVote === true) return this.#handlePreVote(args, now);
    if (args.term < this.#currentTerm) return { term: this.#currentTerm, voteGranted: false };
    if (args.term > this.#currentTerm) this.#becomeFollower(args.term, now);
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
    const leaderActive = this.#role === "leader" ||
      (this.#leaderId !== null &&
        now - this.#leaderContactAt < this.#config.electionTimeoutMinMs);
    const voteGranted = args.term > this.#currentTerm && !leaderActive &&
      this.#candidateLogIsUpToDate(args);
    this.#trace(
      `pre-vote from ${args.candidateId} for term ${args.term} (last ${args.lastLogIndex}@${args.lastLogTerm}): ${
        voteGranted ? "granted" : "refused"
      }`,
    );
    return { term: voteGranted ? args.term : this.#currentTerm, voteGranted };
  }

  /** §5.4.1: is the candidate's log at least as up-to-date as this peer's? */
  #candidateLogIsUpToDate(args: RequestVoteArgs): boolean {
    return this.#log.isUpToDate(args.lastLogTerm, args.lastLogIndex);
  }

  /** Figure 2, AppendEntries RPC, receiver implementation, with the §5.3 backtracking hint. */
  handleAppendEntries(args: AppendEntriesArgs, now: number): AppendEntriesReply {
    const reject = (conflictTerm: number, conflictIndex: number): AppendEntriesReply => ({
      term: this.#currentTerm,
      success: false,
      conflictTerm,
      conflictIndex,
    });
    if (args.term < this.#currentTerm) return reject(0, 0);
    if (args.term > this.#currentTerm || this.#role !== "follower") {
      if (this.#role === "leader") this.#trace(`SAFETY: second leader ${args.leaderId} in my term`);
      this.#becomeFollower(args.term, now);
    }
    this.#leaderId = args.leaderId;
    this.#leaderContactAt = now;
    this.#preVotesGranted = null;
    this.#resetElectionDeadline(now);

    const { prevLogIndex, prevLogTerm, entries } = args;
    if (prevLogIndex > this.#log.lastIndex) return reject(0, this.#log.lastIndex + 1);
    const termThere = this.#log.termAt(prevLogIndex)!;
    if (termThere !== prevLogTerm) {
      return reject(termThere, this.#log.firstIndexOfTerm(termThere));
    }
    // §5.3: delete an existing entry only if it conflicts; a stale or duplicate request whose
    // entries all match must leave later entries alone.
    for (let i = 0; i < entries.length; i++) {
      const index = prevLogIndex + 1 + i;
      const existingTerm = this.#log.termAt(index);
      if (existingTerm === entries[i]!.term) continue;
      if (existingTerm !== undefined) {
        if (index <= this.#commitIndex) {
          this.#trace(`SAFETY: leader ${args.leaderId} overwrites committed index ${index}`);
        }
        this.#log.truncateFrom(index);
      }
      for (let j = i; j < entries.length; j++) this.#log.append(entries[j]!);
      this.#logChangedFrom(index);
      break;
    }
    const lastNewIndex = prevLogIndex + entries.length;
    if (args.leaderCommit > this.#commitIndex) {
      this.#commitIndex = Math.max(this.#commitIndex, Math.min(args.leaderCommit, lastNewIndex));
    }
    return { term: this.#currentTerm, success: true, conflictTerm: 0, conflictIndex: 0 };
  }

  /** Counts a vote, or learns a newer term. `reply` is null when none came. */
  handleRequestVoteReply(
    peer: number,
    args: RequestVoteArgs,
    reply: RequestVoteReply | null,
    now: number,
  ): void {
    if (reply === null) return;
    if (args.preVote === true) {
      this.#handlePreVoteReply(peer, args, reply, now);
      return;
    }
    if (reply.term > this.#currentTerm) {
      this.#becomeFollower(reply.term, now);
      return;
    }
    if (this.#role !== "candidate" || args.term !== this.#currentTerm || !reply.voteGranted) return;
    // A voter grants in the request's term and replies with it: a grant of another term answers
    // another request, which only a transport that mixed replies up could deliver here.
    if (reply.term !== args.term) return;
    this.#votesGranted.add(peer);
    if (this.#votesGranted.size * 2 > this.#config.peerCount) this.#becomeLeader(now);
  }

  /** Counts a pre-vote; a majority starts the real election. */
  #handlePreVoteReply(
    peer: number,
    args: RequestVoteArgs,
    reply: RequestVoteReply,
    now: number,
  ): void {
    if (!reply.voteGranted) {
      // A refusal carries the voter's term, which a lagging pre-candidate catches up with.
      if (reply.term > this.#currentTerm) this.#becomeFollower(reply.term, now);
      return;
    }
    const granted = this.#preVotesGranted;
    if (granted === null || args.term !== this.#currentTerm + 1) return;
    granted.add(peer);
    if (granted.size * 2 > this.#config.peerCount) this.#startElection(now);
  }

  /** Advances a follower's match, or backs its nextIndex up. `reply` is null when none came. */
  handleAppendEntriesReply(
    peer: number,
    args: AppendEntriesArgs,
    reply: AppendEntriesReply | null,
    now: number,
  ): void {
    const current = this.#role === "leader" && args.term === this.#currentTerm;
    if (current) this.#inFlight[peer]!.delete(args);
    if (reply === null) {
      // A lost request leaves a gap, and the pipelined requests behind it are rejected, which
      // starts a probe. With nothing left behind it, probe from the last known match: the next
      // heartbeat retries.
      if (
        current && !this.#probing[peer] && this.#inFlight[peer]!.size === 0 &&
        this.#matchIndex[peer]! < args.prevLogIndex + args.entries.length
      ) {
        this.#probing[peer] = true;
        this.#nextIndex[peer] = this.#matchIndex[peer]! + 1;
      }
      return;
    }
    if (current && reply.term === this.#currentTerm) this.#heardFrom.add(peer);
    if (reply.term > this.#currentTerm) {
      this.#becomeFollower(reply.term, now);
      return;
    }
    if (!current || reply.term !== this.#currentTerm) return;

    if (reply.success) {
      const match = args.prevLogIndex + args.entries.length;
      if (match > this.#matchIndex[peer]!) {
        this.#matchIndex[peer] = match;
        this.#advanceCommitIndex(now);
      }
      for (const sent of this.#inFlight[peer]!) {
        if (sent.prevLogIndex + sent.entries.length <= match) this.#inFlight[peer]!.delete(sent);
      }
      // Once the follower is known to hold everything before nextIndex, pipelining is safe.
      if (this.#matchIndex[peer]! >= this.#nextIndex[peer]! - 1) this.#probing[peer] = false;
      this.#nextIndex[peer] = Math.max(this.#nextIndex[peer]!, this.#matchIndex[peer]! + 1);
      this.#replicate(peer, now);
      return;
    }
    // A rejection of a request older than what the leader now knows is stale: while probing, of
    // another position than the probe's; while pipelining, of a position the follower has since
    // been seen to match.
    const stale = this.#probing[peer]
      ? this.#nextIndex[peer] !== args.prevLogIndex + 1
      : args.prevLogIndex < this.#matchIndex[peer]!;
    if (stale) return;
    // §5.3, accelerated backtracking: skip the follower's whole conflicting term at once, or, if
    // the leader holds entries of that term, resume just after its last one.
    let next = reply.conflictIndex;
    if (reply.conflictTerm > 0) {
      const lastOfTerm = this.#log.lastIndexOfTerm(reply.conflictTerm);
      if (lastOfTerm > 0) next = lastOfTerm + 1;
    }
    next = Math.min(next, args.prevLogIndex);
    this.#nextIndex[peer] = Math.max(this.#matchIndex[peer]! + 1, next, 1);
    this.#probing[peer] = true;
    if (this.#nextIndex[peer] === args.prevLogIndex + 1) {
      // The follower refuses a position it had acknowledged: it lost saved entries (a broken
      // disk). Resending at once would loop as fast as the network allows; the heartbeat retries.
      this.#trace(
        `AppendEntries to ${peer} rejected at its acknowledged match ${args.prevLogIndex}`,
      );
      return;
    }
    this.#trace(
      `AppendEntries to ${peer} rejected at ${args.prevLogIndex}: next ${this.#nextIndex[peer]}`,
    );
    this.#sendAppendEntries(peer, now, true);
  }

  /** Tells the core that the save made with `mark` is durable; marks must come in save order. */
  onSaved(mark: SaveMark, now: number): void {
    // Saves resolve in the order they were made, so the latest mark describes the log on disk,
    // even when a follower's log got shorter within one term.
    this.#durable = mark;
    if (this.#role === "leader" && mark.term === this.#currentTerm) {
      const me = this.#config.me;
      if (mark.lastIndex > this.#matchIndex[me]!) {
        this.#matchIndex[me] = mark.lastIndex;
        this.#advanceCommitIndex(now);
      }
    }
  }

  /** Takes what has to be saved, sent and applied since the last call. */
  takeReady(now: number): Ready {
    if (this.#replicationWanted) {
      this.#replicationWanted = false;
      if (this.#role === "leader") {
        for (let peer = 0; peer < this.#config.peerCount; peer++) {
          if (peer !== this.#config.me) this.#replicate(peer, now);
        }
      }
    }
    let save: PersistChange | null = null;
    let saveMark: SaveMark | null = null;
    if (this.#hardStateChanged || this.#unsavedFrom !== Infinity) {
      save = { term: this.#currentTerm, votedFor: this.#votedFor };
      if (this.#unsavedFrom !== Infinity) {
        save.log = { from: this.#unsavedFrom, entries: this.#log.slice(this.#unsavedFrom) };
      }
      saveMark = { term: this.#currentTerm, lastIndex: this.#log.lastIndex };
      this.#hardStateChanged = false;
      this.#unsavedFrom = Infinity;
    }
    const apply: ApplyMsg[] = [];
    while (this.#lastApplied < this.#commitIndex) {
      this.#lastApplied++;
      apply.push({
        commandValid: true,
        command: this.#log.entryAt(this.#lastApplied)!.command,
        commandIndex: this.#lastApplied,
      });
    }
    const ready: Ready = {
      save,
      saveMark,
      send: this.#send,
      sendAfterSave: this.#sendAfterSave,
      apply,
    };
    this.#send = [];
    this.#sendAfterSave = [];
    return ready;
  }

  #logChangedFrom(index: number): void {
    this.#unsavedFrom = Math.min(this.#unsavedFrom, index);
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
    this.#preVotesGranted = null;
    if (this.#role === "leader") this.#resetElectionDeadline(now);
    if (this.#role !== "follower") this.#trace(`becomes follower`);
    this.#role = "follower";
  }

  /**
   * Thesis §9.6: before an election, ask the others whether they would vote, without anyone
   * changing term; only a majority of yeses starts the election. A peer that cannot win, or cannot
   * hear, then no longer raises terms and unseats leaders.
   */
  #startPreVote(now: number): void {
    this.#resetElectionDeadline(now);
    this.#preVotesGranted = new Set([this.#config.me]);
    this.#trace(`starts pre-vote for term ${this.#currentTerm + 1}`);
    if (this.#preVotesGranted.size * 2 > this.#config.peerCount) {
      this.#startElection(now);
      return;
    }
    const args: RequestVoteArgs = {
      term: this.#currentTerm + 1,
      candidateId: this.#config.me,
      lastLogIndex: this.#log.lastIndex,
      lastLogTerm: this.#log.lastTerm,
      preVote: true,
    };
    for (let peer = 0; peer < this.#config.peerCount; peer++) {
      if (peer !== this.#config.me) this.#send.push({ to: peer, method: RequestVote, args });
    }
  }

  /** §5.2: on election timeout, start an election for the next term. */
  #startElection(now: number): void {
    this.#preVotesGranted = null;
    this.#currentTerm++;
    this.#votedFor = this.#config.me;
    this.#hardStateChanged = true;
    this.#role = "candidate";
    this.#leaderId = null;
    this.#votesGranted = new Set([this.#config.me]);
    this.#resetElectionDeadline(now);
    this.#trace(`starts election`);
    if (this.#votesGranted.size * 2 > this.#config.peerCount) {
      this.#becomeLeader(now);
      return;
    }
    const args: RequestVoteArgs = {
      term: this.#currentTerm,
      candidateId: this.#config.me,
      lastLogIndex: this.#log.lastIndex,
      lastLogTerm: this.#log.lastTerm,
    };
    for (let peer = 0; peer < this.#config.peerCount; peer++) {
      if (peer !== this.#config.me) {
        this.#sendAfterSave.push({ to: peer, method: RequestVote, args });
      }
    }
  }

  #becomeLeader(now: number): void {
    const { peerCount, me } = this.#config;
    this.#role = "leader";
    this.#leaderId = me;
    this.#preVotesGranted = null;
    this.#nextIndex = new Array(peerCount).fill(this.#log.lastIndex + 1);
    this.#matchIndex = new Array(peerCount).fill(0);
    this.#inFlight = Array.from({ length: peerCount }, () => new Set());
    this.#probing = new Array(peerCount).fill(true);
    this.#nextSendAt = new Array(peerCount).fill(now);
    this.#heardFrom = new Set([me]);
    this.#quorumCheckAt = now + this.#config.electionTimeoutMaxMs;
    // A leader counts its own log only as far as it is durable. A candidate's log does not change
    // during its candidacy, so a save made in this term covers the log as it is now.
    if (this.#durable.term === this.#currentTerm) this.#matchIndex[me] = this.#durable.lastIndex;
    this.#trace(`becomes leader with log up to ${this.#log.lastIndex}`);
    // Figure 2: send initial empty AppendEntries to each server at once, to claim leadership.
    for (let peer = 0; peer < peerCount; peer++) {
      if (peer !== me) this.#sendAppendEntries(peer, now, true);
    }
  }

  /**
   * Check-quorum (Ongaro's thesis §6.2): a leader that no majority has answered for a whole
   * election timeout steps down. Without it, a leader that can send but not hear keeps its
   * followers from ever timing out, and the cluster commits nothing for as long as that lasts.
   */
  #checkQuorum(now: number): void {
    if (this.#heardFrom.size * 2 <= this.#config.peerCount) {
      this.#trace(`steps down: only ${[...this.#heardFrom]} answered in the last election timeout`);
      this.#becomeFollower(this.#currentTerm, now);
      this.#leaderId = null;
      return;
    }
    this.#heardFrom = new Set([this.#config.me]);
    this.#quorumCheckAt = now + this.#config.electionTimeoutMaxMs;
  }

  /**
   * Sends `peer` the entries it lacks, as far as its pipeline has room. While an AppendEntries
   * is in flight, only full ones follow it (cut at maxEntriesPerAppend or maxAppendBytes): the
   * rest waits for a reply and then goes out as one message. So pipelining starts exactly when
   * one message per round trip cannot carry the load, and a light load (or an unreachable
   * follower) costs no more messages than without it.
   */
  #replicate(peer: number, now: number): void {
    const lastIndex = this.#log.lastIndex;
    if (this.#probing[peer]) {
      if (this.#inFlight[peer]!.size === 0 && this.#nextIndex[peer]! <= lastIndex) {
        this.#sendAppendEntries(peer, now, true);
      }
      return;
    }
    while (
      this.#nextIndex[peer]! <= lastIndex &&
      this.#inFlight[peer]!.size < this.#config.maxInflightAppends
    ) {
      const next = this.#nextIndex[peer]!;
      const end = this.#batchEnd(next);
      const full = end <= lastIndex || end - next === this.#config.maxEntriesPerAppend;
      if (this.#inFlight[peer]!.size > 0 && !full) return;
      this.#sendEntriesBefore(peer, now, end);
    }
  }

  /**
   * Sends `peer` an AppendEntries from its `nextIndex`: with as many entries as one message may
   * carry (at least one, if any are missing and `withEntries`), or none, as a heartbeat.
   */
  #sendAppendEntries(peer: number, now: number, withEntries: boolean): void {
    const next = this.#nextIndex[peer]!;
    this.#sendEntriesBefore(peer, now, withEntries ? this.#batchEnd(next) : next);
  }

  /** Sends `peer` an AppendEntries with the entries from its `nextIndex` up to `end` (excluded). */
  #sendEntriesBefore(peer: number, now: number, end: number): void {
    const prevLogIndex = this.#nextIndex[peer]! - 1;
    const args: AppendEntriesArgs = {
      term: this.#currentTerm,
      leaderId: this.#config.me,
      prevLogIndex,
      prevLogTerm: this.#log.termAt(prevLogIndex)!,
      entries: end > prevLogIndex + 1 ? this.#log.slice(prevLogIndex + 1, end) : [],
      leaderCommit: this.#commitIndex,
    };
    if (!this.#probing[peer]) this.#nextIndex[peer] = end;
    this.#nextSendAt[peer] = now + this.#config.heartbeatIntervalMs;
    this.#inFlight[peer]!.add(args);
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
   * §5.3, §5.4.2: commit the highest index stored on a majority, but only by counting replicas of
   * an entry from the current term; earlier entries then commit with it.
   */
  #advanceCommitIndex(now: number): void {
    const sorted = [...this.#matchIndex].sort((a, b) => b - a);
    const majorityMatch = sorted[Math.floor(this.#config.peerCount / 2)]!;
    if (
      majorityMatch > this.#commitIndex && this.#log.termAt(majorityMatch) === this.#currentTerm
    ) {
      this.#commitIndex = majorityMatch;
      this.#trace(`commits up to ${majorityMatch}`);
      // Followers learn the new commit index with the next AppendEntries: soon, so that they
      // apply promptly, but not at once, so that a busy leader's next proposal carries it.
      const notifyAt = now + this.#config.commitNotifyDelayMs;
      for (let peer = 0; peer < this.#config.peerCount; peer++) {
        if (peer !== this.#config.me) {
          this.#nextSendAt[peer] = Math.min(this.#nextSendAt[peer]!, notifyAt);
        }
      }
    }
  }

  #trace(line: string): void {
    this.#config.trace?.(`[peer ${this.#config.me} T${this.#currentTerm} ${this.#role}] ${line}`);
  }
}
