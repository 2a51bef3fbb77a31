/**
 * Quorums: which sets of voters can commit an entry or win an election. Everything that counts
 * votes or acknowledgements asks a {@linkcode Quorum}, so that a configuration of another shape
 * (a joint one during a membership change) changes this file, not its callers.
 *
 * @module
 */

/** Whether an election is won, lost, or still open. */
export type VoteResult = "won" | "lost" | "pending";

/** A rule for which sets of voters form a quorum. */
export interface Quorum {
  /** Every voter, in ascending order. */
  readonly voters: readonly number[];
  /**
   * The highest log index that a quorum has acknowledged, given each voter's highest
   * acknowledged index (§5.3: an entry stored on a majority can commit).
   */
  committedIndex(acknowledged: (voter: number) => number): number;
  /**
   * An election's result from each voter's answer: true granted, false refused, undefined not
   * answered yet.
   */
  voteResult(vote: (voter: number) => boolean | undefined): VoteResult;
}

/** The majority rule of §5.2 over one set of voters. */
export class MajorityQuorum implements Quorum {
  readonly voters: readonly number[];
  /** Scratch space for {@linkcode MajorityQuorum.committedIndex}, reused across calls. */
  readonly #scratch: number[];

  /** A majority of `voters` (ids without repeats). */
  constructor(voters: Iterable<number>) {
    this.voters = [...new Set(voters)].sort((a, b) => a - b);
    this.#scratch = new Array(this.voters.length).fill(0);
  }

  /** How many voters make a majority. */
  get size(): number {
    return Math.floor(this.voters.length / 2) + 1;
  }

  /**
   * The index that a majority holds: sorted from highest to lowest, the acknowledgement at
   * position `size - 1`. With no voters, `Infinity`: an empty set constrains nothing, as etcd's
   * joint configurations need.
   */
  committedIndex(acknowledged: (voter: number) => number): number {
    const count = this.voters.length;
    if (count === 0) return Infinity;
    const indexes = this.#scratch;
    for (let i = 0; i < count; i++) indexes[i] = acknowledged(this.voters[i]!);
    indexes.sort((a, b) => b - a);
    return indexes[this.size - 1]!;
  }

  /** Won once a majority granted, lost once a majority refused; an empty set wins. */
  voteResult(vote: (voter: number) => boolean | undefined): VoteResult {
    if (this.voters.length === 0) return "won";
    let granted = 0;
    let refused = 0;
    for (const voter of this.voters) {
      const answer = vote(voter);
      if (answer === true) granted++;
      else if (answer === false) refused++;
    }
    if (granted >= this.size) return "won";
    if (refused >= this.size) return "lost";
    return "pending";
  }
}
