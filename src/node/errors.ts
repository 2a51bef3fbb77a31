/**
 * The errors a {@linkcode RaftNode}'s proposals reject with, besides the standard `AbortError`
 * and `TimeoutError` (`DOMException`s) for a proposal's `signal` and `timeoutMs`.
 *
 * @module
 */

/**
 * This peer is not the leader, so it did not append the command. Send it to the leader:
 * `leaderId` (and `leaderAddress`, when the node was given addresses) name it when this peer
 * knows who leads; retry after a short pause when it does not.
 *
 * @example
 * ```ts
 * import { NotLeaderError } from "@denoraft/raft";
 * const error = new NotLeaderError(2, "http://127.0.0.1:8003");
 * console.log(error.leaderId, error.leaderAddress); // 2 http://127.0.0.1:8003
 * ```
 */
export class NotLeaderError extends Error {
  /** The class name, for stack traces. */
  override name = "NotLeaderError";
  /** The peer this one believes leads, or null when it knows of none. */
  readonly leaderId: number | null;
  /** The leader's address from the node's `addresses`, when known. */
  readonly leaderAddress: string | null;

  /** An error naming the known leader (or none). */
  constructor(leaderId: number | null, leaderAddress: string | null = null) {
    super(
      leaderId === null
        ? "This peer is not the leader and knows of none; retry shortly"
        : `This peer is not the leader; peer ${leaderId}${
          leaderAddress === null ? "" : ` at ${leaderAddress}`
        } leads`,
    );
    this.leaderId = leaderId;
    this.leaderAddress = leaderAddress;
  }
}

/**
 * The proposal's entry was overwritten by another leader's before it committed: the command was
 * not applied, and will not be. It is safe to propose it again.
 */
export class ProposalDroppedError extends Error {
  /** The class name, for stack traces. */
  override name = "ProposalDroppedError";
  /** Where the entry was appended. */
  readonly index: number;
  /** The term in which it was appended. */
  readonly term: number;

  /** An error for the entry proposed at `index` in `term`. */
  constructor(index: number, term: number, why = "another leader's entry took its place") {
    super(`The proposal at index ${index} (term ${term}) was dropped: ${why}; propose it again`);
    this.index = index;
    this.term = term;
  }
}

/**
 * The leader holds more uncommitted entries than its `maxUncommittedBytes`: followers are slow
 * or unreachable, and accepting more would let the log grow without bound. Nothing was appended;
 * retry later.
 */
export class OverloadedError extends Error {
  /** The class name, for stack traces. */
  override name = "OverloadedError";
  /** Bytes of uncommitted entries the leader holds. */
  readonly uncommittedBytes: number;
  /** The limit they would pass. */
  readonly limit: number;

  /** An error for a leader holding `uncommittedBytes` against `limit`. */
  constructor(uncommittedBytes: number, limit: number) {
    super(
      `The leader holds ${uncommittedBytes} bytes of uncommitted entries, and this command would pass maxUncommittedBytes (${limit}); retry later`,
    );
    this.uncommittedBytes = uncommittedBytes;
    this.limit = limit;
  }
}

/**
 * The node is closed (or closing). A proposal pending when it closed may still commit on the
 * other peers: its outcome is unknown.
 */
export class NodeClosedError extends Error {
  /** The class name, for stack traces. */
  override name = "NodeClosedError";
}

/**
 * The node's state machine was replaced by a snapshot from the leader that covers this
 * proposal's index: whether the command was applied is unknown. Read the state to find out, or
 * propose again if the command is safe to apply twice.
 */
export class ProposalOutcomeUnknownError extends Error {
  /** The class name, for stack traces. */
  override name = "ProposalOutcomeUnknownError";
}

/**
 * A membership change was refused because another is not finished: the leader changes one
 * server at a time, and only once it has committed an entry of its own term (which takes one
 * round trip after an election). Nothing changed; retry once the pending change resolves.
 */
export class ChangeInProgressError extends Error {
  /** The class name, for stack traces. */
  override name = "ChangeInProgressError";
}

/** A membership change names a server that is not a member (or not in the role it needs). */
export class UnknownMemberError extends Error {
  /** The class name, for stack traces. */
  override name = "UnknownMemberError";
  /** The server's id. */
  readonly id: number;

  /** An error for server `id`. */
  constructor(id: number, message = `Server ${id} is not a member of the cluster`) {
    super(message);
    this.id = id;
  }
}

/** A membership change would add a server that is already a member (in that role). */
export class MemberExistsError extends Error {
  /** The class name, for stack traces. */
  override name = "MemberExistsError";
  /** The server's id. */
  readonly id: number;

  /** An error for server `id`. */
  constructor(id: number, message = `Server ${id} is already a member of the cluster`) {
    super(message);
    this.id = id;
  }
}

/**
 * A membership change would remove the cluster's last voter, leaving no one to elect a leader
 * or commit anything. Nothing changed.
 */
export class LastVoterError extends Error {
  /** The class name, for stack traces. */
  override name = "LastVoterError";
  /** The server's id. */
  readonly id: number;

  /** An error for removing server `id`. */
  constructor(id: number) {
    super(`Server ${id} is the last voter of the cluster: removing it would leave none`);
    this.id = id;
  }
}
