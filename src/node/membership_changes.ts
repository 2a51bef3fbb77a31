/**
 * How a {@linkcode RaftNode} changes the cluster's membership (thesis chapter 4): the next
 * configuration for each request, checked, with a typed error for each refusal; the changes
 * waiting to commit; and learners catching up before they are promoted (thesis §4.2.1).
 *
 * @module
 */

import type { Clock } from "../clock.ts";
import type { RaftPeer } from "../driver.ts";
import type { ApplyMsg, Configuration, LogEntry, Member } from "../raft/types.ts";
import {
  ChangeInProgressError,
  LastVoterError,
  MemberExistsError,
  type NodeClosedError,
  type NotLeaderError,
  ProposalDroppedError,
  ProposalOutcomeUnknownError,
  UnknownMemberError,
} from "./errors.ts";
import { MAX_ADDRESS_LENGTH } from "../raft/membership.ts";

/** Options for one membership change. */
export interface ChangeOptions {
  /** Stops waiting when aborted: the change rejects with the signal's reason (it may still commit). */
  signal?: AbortSignal;
  /**
   * Stops waiting after this many milliseconds: the change rejects with a `TimeoutError` (it may
   * still commit). For a promotion, the time includes the learner's catching up. Default: no
   * limit, except for catching up (below).
   */
  timeoutMs?: number;
}

/** How long a learner may take to catch up before a promotion gives up, by default. */
export const DEFAULT_CATCH_UP_MS = 60_000;

interface PendingChange {
  term: number;
  resolve(configuration: Configuration): void;
  reject(error: unknown): void;
}

interface CatchUp {
  id: number;
  /** The leader's last index when this round started: the learner must reach it. */
  target: number;
  startedAt: number;
  resolve(): void;
  reject(error: unknown): void;
}

function checkId(id: unknown): asserts id is number {
  if (!Number.isSafeInteger(id) || (id as number) < 0) {
    throw new RangeError(`A server id must be a non-negative integer, got ${String(id)}`);
  }
}

function checkAddress(address: unknown): asserts address is string {
  if (typeof address !== "string" || address.length > MAX_ADDRESS_LENGTH) {
    throw new TypeError(
      `A server address must be a string of at most ${MAX_ADDRESS_LENGTH} characters, got ${
        String(address)
      }`,
    );
  }
}

function find(members: Member[], id: number): Member | undefined {
  return members.find((member) => member.id === id);
}

/** `configuration` with learner `id` at `address` added. */
export function withLearner(
  configuration: Configuration,
  id: number,
  address: string,
): Configuration {
  checkId(id);
  checkAddress(address);
  if (find(configuration.voters, id) !== undefined) {
    throw new MemberExistsError(id, `Server ${id} is already a voter of the cluster`);
  }
  if (find(configuration.learners, id) !== undefined) {
    throw new MemberExistsError(id, `Server ${id} is already a learner of the cluster`);
  }
  return {
    voters: configuration.voters,
    learners: [...configuration.learners, { id, address }],
  };
}

/** `configuration` with learner `id` a voter. */
export function promoted(configuration: Configuration, id: number): Configuration {
  checkId(id);
  if (find(configuration.voters, id) !== undefined) {
    throw new MemberExistsError(id, `Server ${id} is already a voter of the cluster`);
  }
  const learner = find(configuration.learners, id);
  if (learner === undefined) {
    throw new UnknownMemberError(id, `Server ${id} is not a learner of the cluster: add it first`);
  }
  return {
    voters: [...configuration.voters, learner],
    learners: configuration.learners.filter((member) => member.id !== id),
  };
}

/** `configuration` without server `id`. */
export function without(configuration: Configuration, id: number): Configuration {
  checkId(id);
  if (find(configuration.learners, id) !== undefined) {
    return {
      voters: configuration.voters,
      learners: configuration.learners.filter((member) => member.id !== id),
    };
  }
  if (find(configuration.voters, id) === undefined) throw new UnknownMemberError(id);
  if (configuration.voters.length === 1) throw new LastVoterError(id);
  return {
    voters: configuration.voters.filter((member) => member.id !== id),
    learners: configuration.learners,
  };
}

/** The membership changes of one node: proposed here, waiting to commit and apply here. */
export class MembershipChanges {
  readonly #peer: RaftPeer;
  readonly #clock: Clock;
  readonly #electionTimeoutMs: number;
  readonly #notLeader: () => NotLeaderError;
  readonly #pending = new Map<number, PendingChange>();
  #catchUps: CatchUp[] = [];

  /**
   * Changes made through `peer`; a learner has caught up once it reaches the leader's log as it
   * was at the start of a round that took at most `electionTimeoutMs`.
   */
  constructor(
    peer: RaftPeer,
    clock: Clock,
    electionTimeoutMs: number,
    notLeader: () => NotLeaderError,
  ) {
    this.#peer = peer;
    this.#clock = clock;
    this.#electionTimeoutMs = electionTimeoutMs;
    this.#notLeader = notLeader;
  }

  /**
   * Proposes `next` and resolves with it once its entry is committed and applied here.
   *
   * @throws {NotLeaderError}, {ChangeInProgressError}, `RangeError` (malformed), and while
   * waiting, {@linkcode ProposalDroppedError} and the `signal`'s and `timeoutMs`'s errors.
   */
  propose(next: Configuration, options: ChangeOptions): Promise<Configuration> {
    const result = this.#peer.proposeConfiguration(next);
    if (!result.ok) {
      if (result.reason === "not leader") throw this.#notLeader();
      if (result.reason === "in progress") {
        throw new ChangeInProgressError(`Membership change refused: ${result.message}`);
      }
      throw new RangeError(`Membership change refused: ${result.message}`);
    }
    const { index, term } = result;
    return this.#wait(options, `The membership change at index ${index}`, (settle) => {
      this.#pending.set(index, {
        term,
        resolve: (configuration) => settle(() => configuration),
        reject: (error) => settle(() => Promise.reject(error)),
      });
      return () => this.#pending.delete(index);
    });
  }

  /**
   * Resolves once learner `id` has caught up with the leader (thesis §4.2.1): in rounds, each
   * replicating what the leader held when the round began; the learner is caught up when a round
   * takes at most an election timeout, so that its promotion cannot leave the cluster waiting
   * long for it. Rejects if this node stops leading, or `id` stops being a learner.
   */
  catchUp(id: number, options: ChangeOptions): Promise<void> {
    const timeoutMs = options.timeoutMs ?? DEFAULT_CATCH_UP_MS;
    return this.#wait({ ...options, timeoutMs }, `Learner ${id} catching up`, (settle) => {
      const catchUp: CatchUp = {
        id,
        target: this.#peer.core.lastIndex,
        startedAt: this.#clock.now(),
        resolve: () => settle(() => undefined),
        reject: (error) => settle(() => Promise.reject(error)),
      };
      this.#catchUps.push(catchUp);
      this.observe();
      return () => {
        this.#catchUps = this.#catchUps.filter((other) => other !== catchUp);
      };
    });
  }

  /**
   * Runs `register` (which returns how to unregister) and waits for it to settle, or for the
   * signal or the timeout.
   */
  #wait<T>(
    options: ChangeOptions,
    what: string,
    register: (settle: (outcome: () => T | Promise<T>) => void) => () => void,
  ): Promise<T> {
    const { signal, timeoutMs } = options;
    return new Promise<T>((resolve, reject) => {
      let cancelTimer: (() => void) | null = null;
      let unregister = () => {};
      const finish = () => {
        unregister();
        cancelTimer?.();
        signal?.removeEventListener("abort", onAbort);
      };
      const onAbort = () => {
        finish();
        reject(signal!.reason);
      };
      unregister = register((outcome) => {
        finish();
        try {
          resolve(outcome());
        } catch (error) {
          reject(error);
        }
      });
      signal?.addEventListener("abort", onAbort, { once: true });
      if (timeoutMs !== undefined) {
        cancelTimer = this.#clock.schedule(timeoutMs, () => {
          finish();
          reject(
            new DOMException(`${what} did not finish within ${timeoutMs} ms`, "TimeoutError"),
          );
        });
      }
    });
  }

  /** After each step: learners that caught up, and waits that can no longer succeed. */
  observe(): void {
    if (this.#catchUps.length === 0) return;
    const core = this.#peer.core;
    const now = this.#clock.now();
    for (const catchUp of [...this.#catchUps]) {
      if (core.role !== "leader") {
        catchUp.reject(this.#notLeader());
        continue;
      }
      if (!core.configuration.learners.some((member) => member.id === catchUp.id)) {
        catchUp.reject(
          new UnknownMemberError(catchUp.id, `Server ${catchUp.id} is no learner now`),
        );
        continue;
      }
      const match = core.progress(catchUp.id)?.matchIndex ?? 0;
      if (match < catchUp.target) continue;
      if (now - catchUp.startedAt <= this.#electionTimeoutMs) {
        catchUp.resolve();
        continue;
      }
      // The round took too long: the leader's log grew meanwhile. Another round.
      catchUp.target = core.lastIndex;
      catchUp.startedAt = now;
    }
  }

  /** A committed entry that is not a command reached the applier: settles its change, if any. */
  applied(msg: ApplyMsg): void {
    const pending = this.#pending.get(msg.commandIndex);
    if (pending === undefined) return;
    const entryIsChange = typeof msg.command === "object" && msg.command !== null;
    if (pending.term === msg.commandTerm && entryIsChange) {
      pending.resolve(msg.command as Configuration);
    } else {
      pending.reject(new ProposalDroppedError(msg.commandIndex, pending.term));
    }
  }

  /** The log from `from` on was replaced with `entries`: changes overwritten are dropped. */
  overwritten(from: number, entries: LogEntry[]): void {
    for (const [index, pending] of this.#pending) {
      if (index < from) continue;
      const entry = entries[index - from];
      if (entry === undefined || entry.term !== pending.term) {
        pending.reject(
          new ProposalDroppedError(index, pending.term, "another leader's log replaced it"),
        );
      }
    }
  }

  /** A snapshot from the leader through `index` replaced the state: outcomes it covers are unknown. */
  restored(index: number): void {
    for (const [at, pending] of this.#pending) {
      if (at > index) continue;
      pending.reject(
        new ProposalOutcomeUnknownError(
          `The membership change at index ${at} is covered by a snapshot from the leader; see configuration()`,
        ),
      );
    }
  }

  /** The node closed (or stopped): every wait rejects with `error`. */
  close(error: NodeClosedError | Error): void {
    for (const pending of [...this.#pending.values()]) pending.reject(error);
    for (const catchUp of [...this.#catchUps]) catchUp.reject(error);
  }
}
