/**
 * What a leader knows of one follower's log, and how it replicates to it: Figure 2's
 * `nextIndex` and `matchIndex`, plus the state that decides how many AppendEntries may be on
 * the wire at once.
 *
 * @module
 */

import { Inflights } from "./inflights.ts";
import { invariant } from "./invariants.ts";

/**
 * How a leader sends to a follower:
 * - `probe`: the leader does not know where the follower's log matches its own (after an
 *   election, a rejection or a lost request). It sends one AppendEntries at a time and moves
 *   `nextIndex` only on replies; the heartbeat retries a probe whose reply never came.
 * - `replicate`: the logs are known to match up to `matchIndex`. The leader pipelines: it
 *   advances `nextIndex` as it sends, with up to a window of requests awaiting replies.
 * - `snapshot`: the follower needs entries the leader has compacted away, so the leader sends
 *   its snapshot (Figure 13), one chunk at a time, then probes from just after it.
 */
export type ProgressState = "probe" | "replicate" | "snapshot";

/** One follower's progress, as its leader tracks it. */
export class Progress {
  /** Figure 2: the highest index known to be replicated on the follower. */
  matchIndex = 0;
  /** Figure 2: the index of the next entry to send to the follower. */
  nextIndex: number;
  /** How the leader sends to this follower; change it only through the transitions below. */
  state: ProgressState = "probe";
  /**
   * Probe state: a probe awaits its reply; snapshot state: a chunk does. No other is sent until
   * a reply, a loss or a heartbeat.
   */
  probeSent = false;
  /** Snapshot state: the last index of the snapshot being sent. */
  pendingSnapshot = 0;
  /** Snapshot state: how many bytes of it the follower holds. */
  snapshotOffset = 0;
  /** Replicate state: the AppendEntries in flight. */
  readonly inflights: Inflights;
  /** When the leader next sends to this follower: a heartbeat interval after the last send, or sooner to announce a commit. */
  sendAt: number;
  /** Whether the follower answered an AppendEntries of this term since the last check-quorum. */
  recentActive = false;
  /** The latest heartbeat round of this term the follower answered (thesis §6.4: reads). */
  ackedRound = 0;

  /** A follower of a new leader whose log ends at `lastIndex`: probe just past it. */
  constructor(lastIndex: number, maxInflight: number, now: number) {
    this.nextIndex = lastIndex + 1;
    this.inflights = new Inflights(maxInflight);
    this.sendAt = now;
  }

  /** Falls back to one request at a time, from `nextIndex` (just past the match by default). */
  becomeProbe(nextIndex: number = this.matchIndex + 1): void {
    this.state = "probe";
    this.nextIndex = Math.max(nextIndex, this.matchIndex + 1);
    this.probeSent = false;
    this.inflights.reset();
    this.#check();
  }

  /**
   * Starts sending the snapshot through `index`, from its first byte: the follower needs
   * entries before `index`, which the leader compacted away.
   */
  becomeSnapshot(index: number): void {
    this.state = "snapshot";
    this.pendingSnapshot = index;
    this.snapshotOffset = 0;
    this.nextIndex = Math.max(this.nextIndex, index + 1, this.matchIndex + 1);
    this.probeSent = false;
    this.inflights.reset();
    this.#check();
  }

  /** Starts pipelining from just past the match: the logs are known to agree up to there. */
  becomeReplicate(): void {
    this.state = "replicate";
    this.nextIndex = this.matchIndex + 1;
    this.probeSent = false;
    this.inflights.reset();
  }

  /**
   * The follower holds the leader's log up to `index` (a success reply). Returns whether the
   * match advanced. Frees the requests that the reply covers.
   */
  maybeUpdate(index: number): boolean {
    const advanced = index > this.matchIndex;
    if (advanced) this.matchIndex = index;
    this.nextIndex = Math.max(this.nextIndex, index + 1);
    this.inflights.freeThrough(index);
    this.#check();
    return advanced;
  }

  /**
   * Whether a rejection of the AppendEntries whose `prevLogIndex` was `rejected` is stale: sent
   * before something the leader has since learned. While probing, a rejection is current only
   * for the position being probed; while pipelining, only beyond the known match (a request at
   * or below it was overtaken by one the follower accepted, as etcd's `MaybeDecrTo` says).
   */
  isStaleRejection(rejected: number): boolean {
    if (this.state === "snapshot") return true; // the snapshot will tell
    return this.state === "probe" ? rejected !== this.nextIndex - 1 : rejected <= this.matchIndex;
  }

  /** Whether the leader must wait before sending entries: a probe is out, or the window is full. */
  get paused(): boolean {
    return this.state === "replicate" ? this.inflights.full : this.probeSent;
  }

  /**
   * Records an AppendEntries just sent with entries up to `lastIndex` (`count` of them): a probe
   * now awaits its reply; a pipelined request takes a slot and moves `nextIndex` past it.
   */
  sentEntries(lastIndex: number, count: number): void {
    if (this.state !== "replicate") {
      this.probeSent = true;
      return;
    }
    if (count === 0) return;
    this.inflights.add(lastIndex);
    this.nextIndex = lastIndex + 1;
    this.#check();
  }

  #check(): void {
    invariant(
      this.matchIndex < this.nextIndex,
      () =>
        `a follower's matchIndex ${this.matchIndex} is not below its nextIndex ${this.nextIndex}`,
    );
  }
}
