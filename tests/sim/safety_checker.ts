/**
 * Raft's safety properties (§5.2-§5.4, Figure 3), checked as a simulated cluster runs. The
 * explorer feeds every observation in; the first violation is kept, with the time it was seen.
 *
 * - Election Safety: at most one leader per term.
 * - Leader Append-Only: a leader never overwrites or deletes entries in its log.
 * - Log Matching: two logs holding an entry with the same index and term are identical up to it.
 * - Leader Completeness: a leader holds every entry committed in an earlier term.
 * - State Machine Safety: every peer applies, in order, a prefix of one common sequence.
 * - Terms never go backwards: not within a peer's run, and not across a restart below a term the
 *   peer already told anyone about.
 * - Votes are never forgotten: a peer that restarts in the term of a vote it granted still holds
 *   that vote (Election Safety rests on it).
 * - Snapshots hold the committed history: a snapshot saved or handed to a service covers exactly
 *   the committed entries up to its index (and their term there), and a peer never goes back
 *   below what it applied.
 * - Committed entries are electable only with them: once an entry is committed, no peer whose log
 *   lacks it may be at least as up-to-date (§5.4.1) as a majority, or it could win an election
 *   without it. This sees a Figure 8 history the moment the wrong entry commits, not only when a
 *   later leader happens to overwrite it. (Checked while the membership stays fixed: with
 *   changes, who makes a majority depends on each candidate's configuration.)
 * - Configuration in effect (thesis §4.1): each peer counts by the latest configuration in its
 *   log, committed or not; without one after its snapshot, the snapshot's; without either, the
 *   one it started with. Committed configuration entries are committed entries: State Machine
 *   Safety and Leader Completeness keep them from being lost.
 *
 * @module
 */

import type {
  ApplyMsg,
  Configuration,
  LogEntry,
  PersistChange,
  PersistentState,
  Snapshot,
} from "../../mod.ts";

/** Which property broke, and how. */
export interface Violation {
  property: string;
  message: string;
  /** Virtual time of the observation, in ms. */
  atMs: number;
}

/** Where a leader put a client's command: `start()` returned this index. */
interface Started {
  index: number;
}

/** A leader as first seen: its term and its log (commands as JSON text) at that moment. */
interface ObservedLeader {
  peer: number;
  log: string[];
}

/** Follows one cluster's history and reports the first safety violation. */
export class SafetyChecker {
  readonly #now: () => number;
  #violation: Violation | null = null;

  /** `started.get(command text)`: where the leader put a client's command. */
  readonly #started = new Map<string, Started>();
  /** term -> leader of that term, as first observed. */
  readonly #leaders = new Map<number, ObservedLeader>();
  /** The common applied sequence: index -> command text. */
  readonly #committed = new Map<number, string>();
  /**
   * Index -> a term no lower than the one in which the entry became committed: the applying
   * peer's term when it was first applied. The leader that committed it had a term no higher
   * than the term of anyone who learned of the commit.
   */
  readonly #committedTerm = new Map<number, number>();
  /** The committed entries in order, as [term, command text]: index i is at i - 1. */
  readonly #committedEntries: [number, string][] = [];
  /** The hash of the committed prefix through each index (at index - 1). */
  readonly #committedHashes: string[] = [];
  /** Per peer, the last index its current instance applied. */
  readonly #lastApplied: number[];
  /** Per peer, the log its current instance has asked to save: entries as [term, command text]. */
  readonly #logs: [number, string][][];
  /** Per peer, a hash of each prefix of its log: #prefixHashes[peer][i] covers entries 1..i+1. */
  readonly #prefixHashes: string[][];
  /** "index:term" -> the hash of the log prefix ending with that entry, as first seen. */
  readonly #entryPrefixes = new Map<string, string>();
  /** Per peer, the highest term it has sent in any request or reply. */
  readonly #promisedTerm: number[];
  /** Per peer, the latest vote it granted: term and candidate. */
  readonly #grantedVote: ({ term: number; candidate: number } | null)[];
  /** Per peer, the highest term seen in its current instance. */
  readonly #seenTerm: number[];
  /** The configuration every peer starts with. */
  readonly #initial: Configuration;
  /** Whether configurations may change in this run. */
  readonly #fixedMembership: boolean;
  /** Per peer, the configuration its snapshot carries (or the first one), and where. */
  readonly #baseConfiguration: { index: number; configuration: Configuration }[];
  /** Per peer, the indexes of the configuration entries in its log after the base. */
  readonly #configIndexes: number[][];
  readonly #expectedDescriptions: ({ source: Configuration | string; text: string } | undefined)[] =
    [];

  /**
   * Checks a cluster of `peers` that starts in `initial` (default: every peer a voter), whose
   * membership is fixed unless `fixedMembership` is false; `now` gives the virtual time for
   * reports.
   */
  constructor(
    peers: number,
    now: () => number,
    initial: Configuration = {
      voters: Array.from({ length: peers }, (_, id) => ({ id, address: "" })),
      learners: [],
    },
    fixedMembership = true,
  ) {
    this.#now = now;
    this.#initial = initial;
    this.#fixedMembership = fixedMembership;
    this.#baseConfiguration = Array.from({ length: peers }, () => ({
      index: 0,
      configuration: initial,
    }));
    this.#configIndexes = Array.from({ length: peers }, () => []);
    this.#lastApplied = new Array(peers).fill(0);
    this.#logs = Array.from({ length: peers }, () => []);
    this.#prefixHashes = Array.from({ length: peers }, () => []);
    this.#promisedTerm = new Array(peers).fill(0);
    this.#seenTerm = new Array(peers).fill(0);
    this.#grantedVote = new Array(peers).fill(null);
  }

  /** The first violation seen, or null. */
  get violation(): Violation | null {
    return this.#violation;
  }

  /** How many entries are known committed. */
  get committedCount(): number {
    return this.#committed.size;
  }

  /** How many terms had a leader. */
  get leaderTerms(): number {
    return this.#leaders.size;
  }

  #fail(property: string, message: string): void {
    this.#violation ??= { property, message, atMs: this.#now() };
  }

  /** Reports a violation found outside the checker: liveness, or a run that stopped time. */
  report(property: string, message: string): void {
    this.#fail(property, message);
  }

  /** A peer (re)started with `state` loaded from its disk. */
  onStart(peer: number, state: PersistentState): void {
    if (state.term < this.#promisedTerm[peer]!) {
      this.#fail(
        "Terms never go backwards",
        `peer ${peer} restarted with term ${state.term}, but had already sent term ${
          this.#promisedTerm[peer]
        } to others`,
      );
    }
    const vote = this.#grantedVote[peer] ?? null;
    if (vote !== null && vote.term === state.term && state.votedFor !== vote.candidate) {
      this.#fail(
        "Votes are never forgotten",
        `peer ${peer} restarted in term ${state.term} with vote ${state.votedFor}, but had granted its vote in that term to ${vote.candidate}`,
      );
    }
    this.#seenTerm[peer] = state.term;
    this.#lastApplied[peer] = 0;
    this.#logs[peer] = [];
    this.#prefixHashes[peer] = [];
    this.#baseConfiguration[peer] = { index: 0, configuration: this.#initial };
    this.#configIndexes[peer] = [];
    const snapshotIndex = state.snapshot?.index ?? 0;
    if (state.snapshot !== null) this.#takeSnapshot(peer, state.snapshot);
    this.#appendToLog(peer, snapshotIndex + 1, state.log);
  }

  /**
   * `peer`'s disk now holds `snapshot` in place of its log through `snapshot.index`: that must be
   * the committed history through there. The peer's log (as this checker follows it) starts with
   * the committed entries.
   */
  #takeSnapshot(peer: number, snapshot: Snapshot): void {
    const { index, term } = snapshot;
    const configuration = snapshot.configuration ?? this.#expectedConfiguration(peer, index);
    this.#baseConfiguration[peer] = { index, configuration };
    this.#configIndexes[peer] = this.#configIndexes[peer]!.filter((at) => at > index);
    if (index > this.#committedEntries.length) {
      this.#fail(
        "Snapshots hold the committed history",
        `peer ${peer} saved a snapshot through ${index}, but only ${this.#committedEntries.length} entries are known committed`,
      );
      return;
    }
    if (index > 0 && this.#committedEntries[index - 1]![0] !== term) {
      this.#fail(
        "Snapshots hold the committed history",
        `peer ${peer} saved a snapshot through ${index} in term ${term}, but the committed entry there has term ${
          this.#committedEntries[index - 1]![0]
        }`,
      );
    }
    const log = this.#logs[peer]!;
    const hashes = this.#prefixHashes[peer]!;
    if (
      log.length >= index && (index === 0 || hashes[index - 1] === this.#committedHashes[index - 1])
    ) {
      return; // the log already holds the committed entries there
    }
    this.#logs[peer] = this.#committedEntries.slice(0, index).map(([t, c]) => [t, c]);
    this.#prefixHashes[peer] = this.#committedHashes.slice(0, index);
    this.#configIndexes[peer] = [];
  }

  /** A peer sent a request or a reply carrying `term`. */
  onTermSent(peer: number, term: number): void {
    if (term > this.#promisedTerm[peer]!) this.#promisedTerm[peer] = term;
  }

  /** A peer sent a reply granting its vote in `term` to `candidate`. */
  onVoteGranted(peer: number, term: number, candidate: number): void {
    const vote = this.#grantedVote[peer] ?? null;
    if (vote === null || term >= vote.term) this.#grantedVote[peer] = { term, candidate };
  }

  /** A client's `start(command)` was accepted at `index`. */
  onStarted(command: unknown, index: number): void {
    this.#started.set(JSON.stringify(command), { index });
  }

  /** A peer asked its disk to save `change`: its log now reads so. */
  onSave(peer: number, change: PersistChange): void {
    if (change.snapshot !== undefined) this.#takeSnapshot(peer, change.snapshot);
    if (change.log === undefined) return;
    const { from, entries } = change.log;
    const log = this.#logs[peer]!;
    // §5.3 Leader Append-Only: the leader of the change's term must not drop its own entries.
    const leader = this.#leaders.get(change.term);
    if (leader?.peer === peer && from <= log.length) {
      this.#fail(
        "Leader Append-Only",
        `peer ${peer}, leader of term ${change.term}, replaced its entries from index ${from} (log length ${log.length})`,
      );
    }
    this.#appendToLog(peer, from, entries);
  }

  #appendToLog(peer: number, from: number, entries: LogEntry[]): void {
    const log = this.#logs[peer]!;
    const hashes = this.#prefixHashes[peer]!;
    log.length = Math.min(log.length, from - 1);
    hashes.length = log.length;
    this.#configIndexes[peer] = this.#configIndexes[peer]!.filter((at) => at < from);
    for (const entry of entries) {
      const text = JSON.stringify(entry.command);
      log.push([entry.term, text]);
      const index = log.length;
      if (entry.type === "config") this.#configIndexes[peer]!.push(index);
      const hash = hashPrefix(hashes[index - 2] ?? "", entry.term, text);
      hashes.push(hash);
      // Log Matching: same index and term means the same prefix, in every log, at every time.
      const key = `${index}:${entry.term}`;
      const first = this.#entryPrefixes.get(key);
      if (first === undefined) this.#entryPrefixes.set(key, hash);
      else if (first !== hash) {
        this.#fail(
          "Log Matching",
          `peer ${peer}'s log holds an entry at index ${index} in term ${entry.term} (${text}) whose preceding entries differ from another log's entry with that index and term`,
        );
      }
    }
  }

  /**
   * The configuration in effect on `peer` through `index` (its whole log by default), as its log
   * and snapshot say.
   */
  #expectedConfiguration(peer: number, index = Infinity): Configuration {
    const indexes = this.#configIndexes[peer]!.filter((at) => at <= index);
    const last = indexes.at(-1);
    if (last === undefined) return this.#baseConfiguration[peer]!.configuration;
    return JSON.parse(this.#logs[peer]![last - 1]![1]) as Configuration;
  }

  /**
   * The description of the configuration in effect on `peer` by its log and snapshot. Called
   * between every two steps for every peer: kept per peer, and worked out again only when the
   * entry or snapshot it comes from is another.
   */
  #expectedDescription(peer: number): string {
    const last = this.#configIndexes[peer]!.at(-1);
    const source = last === undefined
      ? this.#baseConfiguration[peer]!.configuration
      : this.#logs[peer]![last - 1]![1];
    const cached = this.#expectedDescriptions[peer];
    if (cached?.source === source) return cached.text;
    const text = describe(this.#expectedConfiguration(peer));
    this.#expectedDescriptions[peer] = { source, text };
    return text;
  }

  /** Between steps: `peer` counts votes and acknowledgements by `configuration`. */
  onConfiguration(peer: number, configuration: Configuration): void {
    const expected = this.#expectedDescription(peer);
    const actual = describe(configuration);
    if (expected !== actual) {
      this.#fail(
        "Configuration in effect",
        `peer ${peer} counts by ${actual}, but the latest configuration in its log is ${expected}`,
      );
    }
  }

  /** Between steps: `peer`'s current instance is in `term`, as leader or not. */
  onState(peer: number, term: number, isLeader: boolean): void {
    if (term < this.#seenTerm[peer]!) {
      this.#fail(
        "Terms never go backwards",
        `peer ${peer}'s term went from ${this.#seenTerm[peer]} to ${term}`,
      );
    }
    this.#seenTerm[peer] = term;
    if (!isLeader) return;
    const known = this.#leaders.get(term);
    if (known !== undefined) {
      if (known.peer !== peer) {
        this.#fail(
          "Election Safety",
          `peers ${known.peer} and ${peer} are both leaders of term ${term}`,
        );
      }
      return;
    }
    const log = this.#logs[peer]!.map(([, text]) => text);
    this.#leaders.set(term, { peer, log });
    // Leader Completeness: a new leader holds every entry committed in an earlier term.
    for (const [index, command] of this.#committed) {
      const commitTerm = this.#committedTerm.get(index)!;
      if (commitTerm < term && log[index - 1] !== command) {
        this.#fail(
          "Leader Completeness",
          `peer ${peer} leads term ${term} without entry ${index} (${command}), committed by term ${commitTerm}; it has ${
            log[index - 1] ?? "nothing"
          } there`,
        );
      }
    }
  }

  /**
   * Entry `index` (`text`) was just committed: a peer whose log lacks it must not be at least as
   * up-to-date as a majority of the logs (its own included), or that majority would elect it.
   */
  #checkElectableOnlyWith(index: number, text: string): void {
    if (!this.#fixedMembership) return;
    const lasts = this.#logs.map((log): [number, number] => [log.at(-1)?.[0] ?? 0, log.length]);
    const majority = Math.floor(this.#logs.length / 2) + 1;
    for (const [peer, log] of this.#logs.entries()) {
      if (log[index - 1]?.[1] === text) continue;
      const voters = lasts.filter((last) => atLeastAsUpToDate(lasts[peer]!, last)).length;
      if (voters >= majority) {
        this.#fail(
          "Committed entries are electable only with them",
          `entry ${index} (${text}) is committed, but peer ${peer}, whose log lacks it (last entry ${
            lasts[peer]![1]
          } in term ${
            lasts[peer]![0]
          }), is at least as up-to-date as ${voters} of ${this.#logs.length} logs: it could be elected without it`,
        );
        return;
      }
    }
  }

  /**
   * `peer`'s service was handed a snapshot through `index` in `term`, holding `commands` (the
   * JSON text of each command, index i at i - 1): exactly the committed history through there,
   * and no step back from what the peer applied.
   */
  onSnapshotApplied(peer: number, index: number, term: number, commands: string[]): void {
    if (index < this.#lastApplied[peer]!) {
      this.#fail(
        "State Machine Safety",
        `peer ${peer} was handed a snapshot through ${index} after applying up to ${
          this.#lastApplied[peer]
        }`,
      );
    }
    if (commands.length !== index) {
      this.#fail(
        "Snapshots hold the committed history",
        `peer ${peer} was handed a snapshot through ${index} holding ${commands.length} commands`,
      );
    }
    for (let i = 0; i < commands.length; i++) {
      const committed = this.#committedEntries[i];
      if (committed === undefined || committed[1] !== commands[i]) {
        this.#fail(
          "Snapshots hold the committed history",
          `peer ${peer} was handed a snapshot through ${index} with ${commands[i]} at index ${
            i + 1
          }, where ${committed?.[1] ?? "nothing"} was committed`,
        );
        break;
      }
    }
    if (index > 0 && this.#committedEntries[index - 1]?.[0] !== term) {
      this.#fail(
        "Snapshots hold the committed history",
        `peer ${peer} was handed a snapshot through ${index} in term ${term}, but the committed entry there has term ${
          this.#committedEntries[index - 1]?.[0]
        }`,
      );
    }
    this.#lastApplied[peer] = index;
  }

  /** `peer`'s service was handed `msg`; `term` is the peer's current term. */
  onApply(peer: number, msg: ApplyMsg, term: number): void {
    const text = JSON.stringify(msg.command);
    const expected = this.#lastApplied[peer]! + 1;
    if (msg.commandIndex !== expected) {
      this.#fail(
        "State Machine Safety",
        `peer ${peer} applied index ${msg.commandIndex} when ${expected} was next`,
      );
    }
    this.#lastApplied[peer] = msg.commandIndex;
    const committed = this.#committed.get(msg.commandIndex);
    if (committed !== undefined) {
      if (committed !== text) {
        this.#fail(
          "State Machine Safety",
          `peer ${peer} applied ${text} at index ${msg.commandIndex}, where another peer applied ${committed}`,
        );
      }
      return;
    }
    this.#committed.set(msg.commandIndex, text);
    this.#committedTerm.set(msg.commandIndex, term);
    if (msg.commandIndex === this.#committedEntries.length + 1) {
      this.#committedEntries.push([msg.commandTerm, text]);
      this.#committedHashes.push(
        hashPrefix(this.#committedHashes.at(-1) ?? "", msg.commandTerm, text),
      );
    }
    this.#checkElectableOnlyWith(msg.commandIndex, text);
    const started = this.#started.get(text);
    if (started !== undefined && started.index !== msg.commandIndex) {
      this.#fail(
        "State Machine Safety",
        `${text} was started at index ${started.index} but applied at ${msg.commandIndex}`,
      );
    }
    for (const [leaderTerm, leader] of this.#leaders) {
      if (leaderTerm > term && leader.log[msg.commandIndex - 1] !== text) {
        this.#fail(
          "Leader Completeness",
          `entry ${msg.commandIndex} (${text}) was committed by term ${term}, but peer ${leader.peer} became leader of term ${leaderTerm} without it`,
        );
      }
    }
  }
}

/** Descriptions already made: the core replaces its configuration on a change, never edits it. */
const descriptions = new WeakMap<Configuration, string>();

/** A configuration's members, as `voters 0,1,2 learners 3`. */
function describe(configuration: Configuration): string {
  let text = descriptions.get(configuration);
  if (text === undefined) {
    const ids = (members: { id: number }[]) =>
      members.map((member) => member.id).sort((a, b) => a - b).join(",");
    text = `voters ${ids(configuration.voters)} learners ${ids(configuration.learners)}`;
    descriptions.set(configuration, text);
  }
  return text;
}

/** §5.4.1: is a log ending at `a` at least as up-to-date as one ending at `b`? */
function atLeastAsUpToDate(a: [number, number], b: [number, number]): boolean {
  return a[0] > b[0] || (a[0] === b[0] && a[1] >= b[1]);
}

/** A hash of a log prefix: the previous prefix's hash, extended by one entry (cyrb53-style). */
function hashPrefix(previous: string, term: number, command: string): string {
  const text = `${previous}|${term}|${command}`;
  let h1 = 0xdeadbeef;
  let h2 = 0x41c6ce57;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 2654435761);
    h2 = Math.imul(h2 ^ c, 1597334677);
  }
  h1 = Math.imul(h1 ^ (h1 >>> 16), 2246822507) ^ Math.imul(h2 ^ (h2 >>> 13), 3266489909);
  h2 = Math.imul(h2 ^ (h2 >>> 16), 2246822507) ^ Math.imul(h1 ^ (h1 >>> 13), 3266489909);
  return (h2 >>> 0).toString(36) + "." + (h1 >>> 0).toString(36);
}
