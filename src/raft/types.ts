/**
 * The protocol's data: log entries, the persistent state and its incremental changes, what is
 * handed to the service, and a peer's role. The I/O-free protocol in this folder and the public
 * API share these shapes; `src/types.ts` re-exports them.
 *
 * @module
 */

/** One entry of the replicated log: the term in which a leader created it, and the command. */
export interface LogEntry {
  /** The leader's term when the entry was created (Figure 2: "term when entry was received"). */
  term: number;
  /**
   * The service's command: any JSON value (`null` in a no-op entry, the new
   * {@linkcode Configuration} in a configuration entry).
   */
  command: unknown;
  /**
   * What the entry is when it is not a service's command: `"noop"` for the empty entry a new
   * leader appends at the start of its term (thesis §6.4), so that it learns what is committed
   * without waiting for a client; `"config"` for a membership change (thesis chapter 4), whose
   * command is the cluster's new configuration. Absent for commands.
   */
  type?: "noop" | "config";
}

/** One server of a cluster: a stable id, and where the others reach it. */
export interface Member {
  /** The server's id: a non-negative integer, never reused for another server. */
  id: number;
  /**
   * How the other servers reach it, in the transport's terms (a WebSocket transport's
   * `ws://host:port`); empty for transports that need none, such as the lab's fixed peer list.
   */
  address: string;
}

/**
 * The cluster's members (thesis chapter 4): the voters, whose majorities elect leaders and
 * commit entries, and the learners, which receive the log but neither vote nor count for a
 * majority. A configuration takes effect on a server as soon as its entry is in the server's log,
 * committed or not.
 */
export interface Configuration {
  /** The voting members, at least one. */
  voters: Member[];
  /** The non-voting members. */
  learners: Member[];
}

/**
 * A snapshot of the service's state (§7): it replaces every log entry up to and including
 * `index`, so the log can be compacted.
 */
export interface Snapshot {
  /** The last log index the snapshot covers (§7: "last included index"). */
  index: number;
  /** The term of the entry at `index` (§7: "last included term"). */
  term: number;
  /**
   * The service's state as of `index`, in the service's own encoding. Empty data stands for no
   * service state: a persister stores and returns it like any other, and the core treats it as
   * no snapshot.
   */
  data: Uint8Array;
  /**
   * The cluster's configuration as of `index` (thesis §4.4: a snapshot carries the latest
   * configuration it covers). Absent in snapshots made before membership changes existed: the
   * configuration is then the one the server was started with.
   */
  configuration?: Configuration;
}

/**
 * Figure 2's persistent state, as a persister loads it: the term, the vote, the latest snapshot
 * and the log after it. `log[0]` is the entry at index `(snapshot?.index ?? 0) + 1`.
 */
export interface PersistentState {
  /** Latest term the server has seen. */
  term: number;
  /** Peer that received this server's vote in `term`, or `null`. */
  votedFor: number | null;
  /** The latest snapshot saved, or `null` when none was ever saved. */
  snapshot: Snapshot | null;
  /** The log after the snapshot; `log[0]` has index `(snapshot?.index ?? 0) + 1`. */
  log: LogEntry[];
}

/**
 * An incremental change to the persistent state. The term and vote are always given in full; the
 * log changes only as a suffix, so a save never rewrites the whole log. A change that holds both
 * a snapshot and a log change is applied atomically: after a crash, both or neither.
 */
export interface PersistChange {
  /** The current term after the change. */
  term: number;
  /** The vote after the change. */
  votedFor: number | null;
  /**
   * Optional: the new snapshot. Every log entry at index <= snapshot.index is discarded with it;
   * entries after it stay, and a snapshot past the end of the log empties the log. Its index is
   * at least the stored snapshot's index.
   */
  snapshot?: Snapshot;
  /**
   * Optional log change, applied after `snapshot`: drop every entry at index >= from, then
   * append `entries`, the first at `from` (from > snapshot index, and at most one past the
   * log's last index, or past the snapshot's when it is further).
   */
  log?: { from: number; entries: LogEntry[] };
}

/**
 * What a peer hands to its service, in log order: a committed command, or a snapshot that
 * replaces the service's state up to an index.
 */
export interface ApplyMsg {
  /**
   * True when `command` is a committed command of the service. False on snapshot messages, and
   * on the no-op entries a new leader appends when `noopOnElection` is set (their `command` is
   * `null`; `commandIndex` and `commandTerm` still say where they are).
   */
  commandValid: boolean;
  /** The committed command, as given to `start()` on the leader. */
  command: unknown;
  /** The log index of the command; starts at 1. */
  commandIndex: number;
  /** The term of the entry at `commandIndex` (0 on snapshot messages). */
  commandTerm: number;
  /** True when this message carries a snapshot instead of a command. */
  snapshotValid: boolean;
  /** The snapshot's data; null on command messages. */
  snapshot: Uint8Array | null;
  /** The last log index the snapshot covers; 0 on command messages. */
  snapshotIndex: number;
  /** The term of the entry at `snapshotIndex`; 0 on command messages. */
  snapshotTerm: number;
}

/**
 * A peer's role (§5.1), plus the pre-candidate of Ongaro's thesis §9.6: a peer whose election
 * timer fired and that asks whether it could win before it starts a real election.
 */
export type Role = "follower" | "precandidate" | "candidate" | "leader";
