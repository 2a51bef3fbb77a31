/**
 * The leader's view of the cluster: the configuration's quorum, each follower's
 * {@linkcode Progress}, and the votes of an election under way. Membership changes land here:
 * the voters form the quorum, and every other member (voter or learner) gets the log.
 *
 * @module
 */

import { Progress } from "./progress.ts";
import { MajorityQuorum, type Quorum, type VoteResult } from "./quorum.ts";
import type { Configuration } from "./types.ts";

/** Tracks the configuration, the followers' progress and the votes of one peer. */
export class ProgressTracker {
  /** This peer's id. */
  readonly me: number;
  /** The voters, whose majorities commit entries. */
  #quorum: MajorityQuorum;
  /** Whose majorities elect a leader, and whom a candidate asks: the same voters. */
  #electorate: MajorityQuorum;
  #configuration: Configuration;
  /** Every member but this peer, voters and learners, ascending. */
  #others: number[] = [];
  /** Every voter but this peer, ascending. */
  #voterOthers: number[] = [];
  /** Whether this peer leads: followers then have progress. */
  #leading = false;
  readonly #progress = new Map<number, Progress>();
  readonly #votes = new Map<number, boolean>();

  /** A tracker for peer `me` in a cluster of `configuration`. */
  constructor(me: number, configuration: Configuration) {
    this.me = me;
    this.#configuration = configuration;
    this.#quorum = new MajorityQuorum([]);
    this.#electorate = this.#quorum;
    this.#setMembers(configuration);
  }

  #setMembers(configuration: Configuration): void {
    this.#configuration = configuration;
    this.#quorum = new MajorityQuorum(configuration.voters.map((member) => member.id));
    // Learners neither vote nor count: a leader elected with their votes might lack what a
    // majority of voters committed.
    const electorate = configuration.voters;
    this.#electorate = new MajorityQuorum(electorate.map((member) => member.id));
    this.#voterOthers = this.#electorate.voters.filter((id) => id !== this.me);
    this.#others = [...this.#voterOthers, ...configuration.learners.map((member) => member.id)]
      .filter((id) => id !== this.me).sort((a, b) => a - b);
  }

  /** Which sets of voters form a quorum. */
  get quorum(): Quorum {
    return this.#quorum;
  }

  /** The configuration in effect. */
  get configuration(): Configuration {
    return this.#configuration;
  }

  /** Every member but this peer, voters and learners: whom a leader replicates to. */
  get others(): readonly number[] {
    return this.#others;
  }

  /** Every voter but this peer: whom a candidate asks for votes. */
  get voterOthers(): readonly number[] {
    return this.#voterOthers;
  }

  /** Whether `id` is a voter. */
  isVoter(id: number): boolean {
    return this.#quorum.voters.includes(id);
  }

  /** Whether this peer is the only voter: its own log makes a quorum. */
  get soleVoter(): boolean {
    return this.#quorum.voters.length === 1 && this.#quorum.voters[0] === this.me;
  }

  /**
   * Puts `configuration` in effect. While this peer leads, members new to it get fresh progress
   * (probing just past `lastIndex`) and members gone lose theirs; returns the new ones' ids.
   */
  setConfiguration(
    configuration: Configuration,
    lastIndex: number,
    maxInflight: number,
    now: number,
  ): number[] {
    this.#setMembers(configuration);
    const added: number[] = [];
    if (!this.#leading) return added;
    const members = new Set(this.#others);
    for (const id of [...this.#progress.keys()]) if (!members.has(id)) this.#progress.delete(id);
    for (const id of this.#others) {
      if (this.#progress.has(id)) continue;
      this.#progress.set(id, new Progress(lastIndex, maxInflight, now));
      added.push(id);
    }
    return added;
  }

  /** The progress of follower `id`, while this peer leads; undefined otherwise. */
  progress(id: number): Progress | undefined {
    return this.#progress.get(id);
  }

  /** Calls `visit` with each follower's id and progress. */
  forEachFollower(visit: (id: number, progress: Progress) => void): void {
    for (const [id, progress] of this.#progress) visit(id, progress);
  }

  /** Fresh progress for every follower of a new leader whose log ends at `lastIndex`. */
  resetProgress(lastIndex: number, maxInflight: number, now: number): void {
    this.#progress.clear();
    this.#leading = true;
    for (const id of this.#others) {
      this.#progress.set(id, new Progress(lastIndex, maxInflight, now));
    }
  }

  /** Forgets every follower's progress: this peer no longer leads. */
  clearProgress(): void {
    this.#progress.clear();
    this.#leading = false;
  }

  /**
   * The highest index a quorum holds, counting this peer's own log up to `ownIndex` if it is a
   * voter (a leader being removed manages the cluster without counting itself: thesis §4.2.2).
   */
  committedIndex(ownIndex: number): number {
    return this.#quorum.committedIndex((id) =>
      id === this.me ? ownIndex : (this.#progress.get(id)?.matchIndex ?? 0)
    );
  }

  /** The latest heartbeat round a quorum answered, this peer counting as `ownRound`. */
  quorumAckedRound(ownRound: number): number {
    return this.#quorum.committedIndex((id) =>
      id === this.me ? ownRound : (this.#progress.get(id)?.ackedRound ?? 0)
    );
  }

  /**
   * Check-quorum: whether a quorum (this peer included, if it votes) answered since the last
   * check. Clears the marks for the next round.
   */
  quorumActive(): boolean {
    const active =
      this.#quorum.voteResult((id) =>
        id === this.me || this.#progress.get(id)?.recentActive === true ? true : undefined
      ) === "won";
    for (const progress of this.#progress.values()) progress.recentActive = false;
    return active;
  }

  /** Starts counting the votes of a new election (or pre-vote), with this peer's own. */
  resetVotes(): void {
    this.#votes.clear();
    this.#votes.set(this.me, true);
  }

  /** Records `id`'s answer; the first answer of each voter counts. */
  recordVote(id: number, granted: boolean): void {
    if (!this.#votes.has(id)) this.#votes.set(id, granted);
  }

  /** The election's result so far: only voters' answers count. */
  voteResult(): VoteResult {
    return this.#electorate.voteResult((id) => this.#votes.get(id));
  }
}
