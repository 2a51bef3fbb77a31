/**
 * The leader's view of the cluster: the configuration's quorum, each follower's
 * {@linkcode Progress}, and the votes of an election under way. Membership changes land here.
 *
 * @module
 */

import { Progress } from "./progress.ts";
import { MajorityQuorum, type Quorum, type VoteResult } from "./quorum.ts";

/** Tracks the configuration, the followers' progress and the votes of one peer. */
export class ProgressTracker {
  /** This peer's id. */
  readonly me: number;
  /** Which sets of voters form a quorum. */
  readonly quorum: Quorum;
  readonly #progress = new Map<number, Progress>();
  readonly #votes = new Map<number, boolean>();

  /** A tracker for peer `me` in a cluster whose voters are `voters`. */
  constructor(me: number, voters: Iterable<number>) {
    this.me = me;
    this.quorum = new MajorityQuorum(voters);
  }

  /** Every voter but this peer. */
  get others(): readonly number[] {
    return this.quorum.voters.filter((id) => id !== this.me);
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
    for (const id of this.others) this.#progress.set(id, new Progress(lastIndex, maxInflight, now));
  }

  /** Forgets every follower's progress: this peer no longer leads. */
  clearProgress(): void {
    this.#progress.clear();
  }

  /** The highest index a quorum holds, counting this peer's own log up to `ownIndex`. */
  committedIndex(ownIndex: number): number {
    return this.quorum.committedIndex((id) =>
      id === this.me ? ownIndex : (this.#progress.get(id)?.matchIndex ?? 0)
    );
  }

  /** The latest heartbeat round a quorum answered, this peer counting as `ownRound`. */
  quorumAckedRound(ownRound: number): number {
    return this.quorum.committedIndex((id) =>
      id === this.me ? ownRound : (this.#progress.get(id)?.ackedRound ?? 0)
    );
  }

  /**
   * Check-quorum: whether a quorum (this peer included) answered since the last check. Clears
   * the marks for the next round.
   */
  quorumActive(): boolean {
    const active =
      this.quorum.voteResult((id) =>
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

  /** The election's result so far. */
  voteResult(): VoteResult {
    return this.quorum.voteResult((id) => this.#votes.get(id));
  }
}
