/**
 * What the web page shows of a local cluster, kept by its launcher: each peer's last snapshot,
 * its process and reachability, the leader the cluster agrees on, and a bounded timeline of what
 * happened (actions, elections, leader changes, peers lost and back), each entry telling how long
 * after the last action it came.
 *
 * @module
 */

import type { PeerSnapshot } from "../kv/observe.ts";

/** What the launcher knows of a peer's process. */
export type ProcessState = "running" | "paused" | "stopped" | "starting";

/**
 * Whether the launcher hears from the peer: `up` (snapshots arrive), `unresponsive` (its stream
 * is open but silent), `lost` (no stream), `connecting` (not heard from yet).
 */
export type Reachability = "connecting" | "up" | "unresponsive" | "lost";

/** One peer, as the page shows it. */
export interface PeerView {
  /** The peer's id. */
  id: number;
  /** Its HTTP address. */
  httpUrl: string;
  /** Its process, as far as the launcher knows. */
  process: ProcessState;
  /** Whether the launcher cut it off from the other peers. */
  cutOff: boolean;
  /** Whether snapshots arrive. */
  reachability: Reachability;
  /** The last snapshot heard (kept, marked stale by `reachability`, when the peer goes). */
  snapshot: PeerSnapshot | null;
}

/** The leader the page names: the running, reachable peer that leads the highest term. */
export interface LeaderView {
  /** The leader's id. */
  id: number;
  /** The term it leads. */
  term: number;
}

/** What kind of thing a timeline entry reports. */
export type EntryKind = "action" | "election" | "leader" | "peer" | "fatal" | "note";

/** One line of the timeline. */
export interface TimelineEntry {
  /** Numbers entries in order, from 1. */
  seq: number;
  /** When, in ms since the launcher started watching. */
  at: number;
  /** What kind of thing happened. */
  kind: EntryKind;
  /** The peer it is about, or null. */
  peer: number | null;
  /** A sentence saying what happened. */
  text: string;
  /**
   * For an entry that is not an action: the last action before it (within a minute) and how long
   * before, in ms; null if none.
   */
  after: { action: string; ms: number } | null;
}

/** A change to send to the page. */
export type ViewChange =
  | { type: "peer"; peer: PeerView }
  | { type: "entry"; entry: TimelineEntry }
  | { type: "leader"; leader: LeaderView | null };

/** How long an action stays the one entries are timed from. */
const ACTION_HORIZON_MS = 60000;

/** Peers, leader and timeline; every change goes to `onChange`. */
export class ClusterView {
  readonly #peers: PeerView[];
  readonly #entries: TimelineEntry[] = [];
  readonly #capacity: number;
  readonly #onChange: (change: ViewChange) => void;
  readonly #startedAt = performance.now();
  /** Terms in which each peer's pre-vote was already reported, to report one per term. */
  readonly #preVoteTerms: number[];
  #seq = 0;
  #lastAction: { text: string; at: number } | null = null;
  #leader: LeaderView | null = null;

  /** A view of the peers at `httpUrls`, keeping the last `capacity` timeline entries. */
  constructor(
    httpUrls: readonly string[],
    onChange: (change: ViewChange) => void,
    capacity = 200,
  ) {
    this.#peers = httpUrls.map((httpUrl, id) => ({
      id,
      httpUrl,
      process: "running",
      cutOff: false,
      reachability: "connecting",
      snapshot: null,
    }));
    this.#preVoteTerms = httpUrls.map(() => -1);
    this.#onChange = onChange;
    this.#capacity = capacity;
  }

  /** Every peer's view (the objects themselves: read, do not change). */
  get peers(): readonly PeerView[] {
    return this.#peers;
  }

  /** The timeline, oldest first. */
  get entries(): readonly TimelineEntry[] {
    return this.#entries;
  }

  /** The leader the page names, or null. */
  get leader(): LeaderView | null {
    return this.#leader;
  }

  /** Records what a person (or the launcher's script) did; later entries are timed from it. */
  action(peer: number | null, text: string): void {
    const entry = this.#add("action", peer, text);
    this.#lastAction = { text, at: entry.at };
  }

  /** Records a remark of the launcher's script, such as a step of the demo. */
  note(text: string): void {
    this.#add("note", null, text);
  }

  /** Sets what the launcher knows of `peer`'s process. */
  setProcess(peer: number, process: ProcessState, cutOff?: boolean): void {
    const view = this.#peers[peer]!;
    view.process = process;
    if (cutOff !== undefined) view.cutOff = cutOff;
    this.#changed(view);
    this.#updateLeader();
  }

  /** Sets whether `peer` is cut off. */
  setCutOff(peer: number, cutOff: boolean): void {
    const view = this.#peers[peer]!;
    view.cutOff = cutOff;
    this.#changed(view);
  }

  /** Takes `peer`'s new snapshot: reports elections, step-downs and fatal stops it shows. */
  snapshot(peer: number, snapshot: PeerSnapshot): void {
    const view = this.#peers[peer]!;
    const before = view.snapshot?.pid === snapshot.pid ? view.snapshot : null;
    const { term, role } = snapshot.status;
    if (before !== null) {
      // Pre-votes leave the term as it was; an election that followed in the same snapshot
      // raised it since.
      const askedIn = before.status.term;
      if (
        snapshot.elections.preVotesStarted > before.elections.preVotesStarted &&
        this.#preVoteTerms[peer] !== askedIn
      ) {
        this.#preVoteTerms[peer] = askedIn;
        this.#add(
          "election",
          peer,
          `Peer ${peer} heard from no leader in term ${askedIn} and asked for pre-votes`,
        );
      }
      if (snapshot.elections.started > before.elections.started) {
        this.#add("election", peer, `Peer ${peer} started an election for term ${term}`);
      }
      if (snapshot.elections.won > before.elections.won) {
        this.#add("election", peer, `Peer ${peer} won the election for term ${term}`);
      }
      if (before.status.role === "leader" && role !== "leader") {
        this.#add("election", peer, `Peer ${peer} stepped down in term ${term}; now ${role}`);
      }
    }
    for (const event of snapshot.events) {
      if (event.type === "fatal") {
        this.#add("fatal", peer, `Peer ${peer} stopped: ${event.message}`);
      }
    }
    view.snapshot = snapshot;
    this.#changed(view);
    this.#updateLeader();
  }

  /** Takes whether `peer` is heard from; reports a peer lost, silent, or back. */
  setReachability(peer: number, reachability: Reachability, reason: string): void {
    const view = this.#peers[peer]!;
    const previous = view.reachability;
    if (previous === reachability) return;
    view.reachability = reachability;
    if (reachability === "up") {
      const status = view.snapshot?.status;
      const what = status === undefined ? "" : `: term ${status.term}, ${status.role}`;
      const verb = previous === "connecting" ? "is up" : "is back";
      this.#add("peer", peer, `Peer ${peer} ${verb} (pid ${view.snapshot?.pid})${what}`);
    } else if (reachability === "unresponsive") {
      this.#add("peer", peer, `Peer ${peer} is unresponsive: ${reason}`);
    } else if (reachability === "lost" && previous !== "connecting") {
      this.#add("peer", peer, `Peer ${peer} is lost: ${reason}`);
    }
    this.#changed(view);
    this.#updateLeader();
  }

  #updateLeader(): void {
    let leader: LeaderView | null = null;
    for (const view of this.#peers) {
      const status = view.snapshot?.status;
      // A stopped or paused process leads nothing, whatever its last snapshot said.
      if (view.process !== "running" || view.reachability !== "up") continue;
      if (status === undefined || status.role !== "leader") continue;
      if (leader === null || status.term > leader.term) leader = { id: view.id, term: status.term };
    }
    const previous = this.#leader;
    if (leader?.id === previous?.id && leader?.term === previous?.term) return;
    this.#leader = leader;
    if (leader !== null) {
      this.#add("leader", leader.id, `Leader: peer ${leader.id}, term ${leader.term}`);
    } else if (previous !== null) {
      this.#add("leader", null, `No leader: peer ${previous.id} no longer leads or is not heard`);
    }
    this.#onChange({ type: "leader", leader });
  }

  #changed(view: PeerView): void {
    this.#onChange({ type: "peer", peer: view });
  }

  #add(kind: EntryKind, peer: number | null, text: string): TimelineEntry {
    const at = Math.round(performance.now() - this.#startedAt);
    const last = this.#lastAction;
    const after = kind !== "action" && last !== null && at - last.at <= ACTION_HORIZON_MS
      ? { action: last.text, ms: at - last.at }
      : null;
    const entry: TimelineEntry = { seq: ++this.#seq, at, kind, peer, text, after };
    this.#entries.push(entry);
    if (this.#entries.length > this.#capacity) this.#entries.shift();
    this.#onChange({ type: "entry", entry });
    return entry;
  }
}
