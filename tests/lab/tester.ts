/**
 * The lab's tester (`config.go`), in TypeScript: it builds a cluster of Raft peers on a
 * {@linkcode MemoryNetwork}, crashes and restarts them, cuts and heals links, and checks what they
 * apply. One tester serves every suite; the clock and random source are injectable so the same
 * tests can run in real or virtual time.
 *
 * @module
 */

import {
  type ApplyMsg,
  type ClientEnd,
  type Clock,
  make,
  MemoryNetwork,
  MemoryPersister,
  type PersistentState,
  type Persister,
  type Raft,
  type RaftOptions,
  type RandomSource,
  realClock,
} from "../../mod.ts";
import { sleep } from "../../src/clock.ts";

/** The lab's election timeout constant, used by the tests' sleeps. */
export const RaftElectionTimeout = 1000;

/** The lab's limit on one test: a test that runs longer fails, even if all its checks passed. */
export const LAB_TEST_TIME_LIMIT_MS = 120_000;

/** In snapshot mode, each peer's service snapshots its state every this many commands. */
export const SnapShotInterval = 10;

/**
 * The lab's `MAXLOGSIZE` for the snapshot tests, in characters of the JSON text of the persisted
 * `{ term, votedFor, log }` (the snapshot not counted): a peer that compacts its log every
 * {@linkcode SnapShotInterval} commands stays well under it.
 */
export const MAXLOGSIZE = 4000;

/** A test that fails says so through this error. */
export class TestFailure extends Error {
  override name = "TestFailure";
}

/** Where restarted peers find their state: the lab's `Persister.Copy()` semantics by default. */
export interface TesterPersistence {
  /** A persister for a new instance of `peer`, holding what its previous instance saved. */
  open(peer: number): Promise<Persister>;
  /** `peer`'s instance crashed: cut `old` off, so late writes never reach the next instance. */
  crash(peer: number, old: Persister): Promise<void>;
  /**
   * What `peer`'s state is now: its running instance's persister's, or, while it is crashed,
   * what its next instance will load. Null if it was never started.
   */
  saved(peer: number): Promise<PersistentState | null>;
  /** Releases everything at the end of a test. */
  close(): Promise<void>;
}

/** The lab's in-memory persistence: each restart gets a copy of what was saved at the crash. */
export function memoryPersistence(): TesterPersistence {
  const saved = new Map<number, MemoryPersister>();
  return {
    open(peer) {
      const persister = saved.get(peer)?.copy() ?? new MemoryPersister();
      saved.set(peer, persister);
      return Promise.resolve(persister);
    },
    crash(peer, old) {
      if (old instanceof MemoryPersister) saved.set(peer, old.copy());
      return Promise.resolve();
    },
    saved: (peer) => Promise.resolve(saved.get(peer)?.state() ?? null),
    close: () => Promise.resolve(),
  };
}

/** Options for {@linkcode Tester.create}. */
export interface TesterOptions {
  /** Start with an unreliable network. */
  unreliable?: boolean;
  /** Time source for the peers, the network and the tester's own sleeps. Default: real time. */
  clock?: Clock;
  /** Random source for the tests' choices, the network and the peers. Default: `Math.random`. */
  random?: RandomSource;
  /** Where the network reports each message it delivers: a simulator's digest. Default: none. */
  record?: (event: string) => void;
  /** Where peers save their state. Default: {@linkcode memoryPersistence}. */
  persistence?: TesterPersistence;
  /** Extra options for every peer. */
  raftOptions?: RaftOptions;
  /** Builds each peer. Default: the library's `make` (regression tests pass a mutant's). */
  make?: typeof make;
  /**
   * Be the lab's snapshotting service (`applierSnap`): each peer applies commands strictly in
   * order, snapshots everything it applied every {@linkcode SnapShotInterval} commands through
   * `Raft.snapshot`, and installs the snapshots Raft hands it, checking their index and term. A
   * restarted peer starts from nothing, so it must be handed its saved snapshot before any
   * later command. Default: false, the 4A/4B applier, which only checks commands.
   */
  snapshots?: boolean;
  /** Print the lab's "Test ..." and "Passed" lines. Default: true. */
  print?: boolean;
  /**
   * Printed before each of those lines, to tell suites apart in one output (the stress script
   * reads only unprefixed lines). Default: none.
   */
  printPrefix?: string;
}

/** The numbers the lab prints when a test passes. */
export interface TestStats {
  description: string;
  seconds: number;
  peers: number;
  rpcs: number;
  bytes: number;
  commits: number;
}

/** Every passed test's numbers in this process, for the stress script's summary. */
export const passedTests: TestStats[] = [];

/** The lab's `config`: a cluster of `n` peers under test. */
export class Tester {
  readonly n: number;
  readonly net: MemoryNetwork;
  readonly clock: Clock;
  readonly random: RandomSource;
  /** `rafts[i]` is peer i's running instance, or null while it is crashed. */
  readonly rafts: (Raft | null)[];
  /** Whether each peer is on the network. */
  readonly connected: boolean[];

  readonly #persistence: TesterPersistence;
  readonly #raftOptions: RaftOptions;
  readonly #make: typeof make;
  readonly #snapshots: boolean;
  readonly #print: boolean;
  readonly #printPrefix: string;
  readonly #persisters: (Persister | null)[];
  readonly #endNames: (string[] | null)[];
  /** Copy of each peer's applied commands, by index. */
  readonly #logs: Map<number, AppliedEntry>[];
  /** In snapshot mode: the last index each peer's current instance applied or installed. */
  readonly #lastApplied: number[];
  #applyError: string | null = null;
  #maxIndex = 0;
  #nextEndId = 0;
  readonly #created: number;
  // begin()/end() statistics
  #description = "";
  #t0 = 0;
  #rpcs0 = 0;
  #bytes0 = 0;
  #maxIndex0 = 0;

  private constructor(n: number, options: TesterOptions) {
    this.n = n;
    this.clock = options.clock ?? realClock;
    this.random = options.random ?? Math.random;
    this.net = new MemoryNetwork({
      clock: this.clock,
      random: this.random,
      ...(options.record ? { record: options.record } : {}),
    });
    this.#persistence = options.persistence ?? memoryPersistence();
    this.#raftOptions = {
      clock: this.clock,
      random: this.random,
      ...options.raftOptions,
    };
    this.#make = options.make ?? make;
    this.#snapshots = options.snapshots ?? false;
    this.#print = options.print ?? true;
    this.#printPrefix = options.printPrefix ?? "";
    this.rafts = new Array(n).fill(null);
    this.connected = new Array(n).fill(false);
    this.#persisters = new Array(n).fill(null);
    this.#endNames = new Array(n).fill(null);
    this.#logs = Array.from({ length: n }, () => new Map());
    this.#lastApplied = new Array(n).fill(0);
    this.#created = this.clock.now();
  }

  /** The lab's `make_config`: starts `n` connected peers. */
  static async create(n: number, options: TesterOptions = {}): Promise<Tester> {
    const tester = new Tester(n, options);
    tester.setUnreliable(options.unreliable ?? false);
    tester.net.setLongDelays(true);
    try {
      for (let i = 0; i < n; i++) await tester.start1(i);
      for (let i = 0; i < n; i++) tester.connect(i);
    } catch (error) {
      await tester.cleanup();
      throw error;
    }
    return tester;
  }

  /** Fails the test with `message`. */
  fatal(message: string): never {
    throw new TestFailure(message);
  }

  /** Sleeps on the tester's clock. */
  sleep(ms: number): Promise<void> {
    return sleep(this.clock, ms);
  }

  /** A random non-negative integer below 2^31, like Go's `rand.Int()` in the lab's tests. */
  randomInt(): number {
    return Math.floor(this.random() * 2 ** 31);
  }

  /** Shuts peer `i` down but keeps its persistent state. */
  async crash1(i: number): Promise<void> {
    this.disconnect(i);
    this.net.deleteServer(serverName(i)); // disable client connections to the server
    const raft = this.rafts[i];
    this.rafts[i] = null;
    raft?.kill();
    const persister = this.#persisters[i];
    this.#persisters[i] = null;
    if (persister) await this.#persistence.crash(i, persister);
  }

  /**
   * Starts or restarts peer `i`, killing the running instance first. The new instance gets fresh
   * outgoing ends, so the old one's calls can no longer reach anyone, and a persister holding
   * what the old one had saved. Like the lab, it leaves the peer disconnected.
   */
  async start1(i: number): Promise<void> {
    await this.crash1(i);
    const names: string[] = [];
    const ends: ClientEnd[] = [];
    for (let j = 0; j < this.n; j++) {
      const name = `end-${i}-${j}-${this.#nextEndId++}`;
      names.push(name);
      ends.push(this.net.makeEnd(name));
      this.net.connect(name, serverName(j));
    }
    const oldNames = this.#endNames[i];
    this.#endNames[i] = names;
    oldNames?.forEach((name) => this.net.deleteEnd(name));
    const persister = await this.#persistence.open(i);
    this.#persisters[i] = persister;
    // The new instance's service starts from nothing: Raft hands it its snapshot, if any.
    this.#lastApplied[i] = 0;
    let raft: Raft | null = null;
    const applier = this.#snapshots
      ? (msg: ApplyMsg) => this.#applierSnap(i, msg, raft)
      : (msg: ApplyMsg) => this.#applier(i, msg);
    raft = await this.#make(ends, i, persister, applier, this.#raftOptions);
    this.rafts[i] = raft;
    this.net.addServer(serverName(i), raft);
  }

  /** Attaches peer `i` to the network. */
  connect(i: number): void {
    this.connected[i] = true;
    for (let j = 0; j < this.n; j++) {
      if (!this.connected[j]) continue;
      const outgoing = this.#endNames[i]?.[j];
      if (outgoing !== undefined) this.net.enable(outgoing, true);
      const incoming = this.#endNames[j]?.[i];
      if (incoming !== undefined) this.net.enable(incoming, true);
    }
  }

  /** Detaches peer `i` from the network. */
  disconnect(i: number): void {
    this.connected[i] = false;
    for (let j = 0; j < this.n; j++) {
      const outgoing = this.#endNames[i]?.[j];
      if (outgoing !== undefined) this.net.enable(outgoing, false);
      const incoming = this.#endNames[j]?.[i];
      if (incoming !== undefined) this.net.enable(incoming, false);
    }
  }

  /** Requests delivered to peer `i`'s current instance. */
  rpcCount(i: number): number {
    return this.net.getCount(serverName(i));
  }

  /** Requests sent by anyone since the network was made. */
  rpcTotal(): number {
    return this.net.getTotalCount();
  }

  /** Bytes sent since the network was made. */
  bytesTotal(): number {
    return this.net.getTotalBytes();
  }

  /** Turns loss and short delays on or off. */
  setUnreliable(unreliable: boolean): void {
    this.net.setReliable(!unreliable);
  }

  /** Turns long reordering of replies on or off. */
  setLongReordering(longReordering: boolean): void {
    this.net.setLongReordering(longReordering);
  }

  /**
   * Checks that one connected peer thinks it leads and no connected peer of the same term
   * disagrees; tries a few times, since elections take time. Returns the leader.
   */
  async checkOneLeader(): Promise<number> {
    for (let iters = 0; iters < 10; iters++) {
      await this.sleep(450 + Math.floor(this.random() * 100));
      this.#checkApplyErrors();
      const leaders = new Map<number, number[]>();
      for (let i = 0; i < this.n; i++) {
        const raft = this.rafts[i];
        if (!this.connected[i] || !raft) continue;
        const { term, isLeader } = raft.getState();
        if (isLeader) leaders.set(term, [...(leaders.get(term) ?? []), i]);
      }
      let lastTermWithLeader = -1;
      for (const [term, termLeaders] of leaders) {
        if (termLeaders.length > 1) {
          this.fatal(`term ${term} has ${termLeaders.length} (>1) leaders: ${termLeaders}`);
        }
        lastTermWithLeader = Math.max(lastTermWithLeader, term);
      }
      if (leaders.size !== 0) return leaders.get(lastTermWithLeader)![0]!;
    }
    this.fatal("expected one leader, got none");
  }

  /** Checks that every connected peer has the same term; returns it. */
  checkTerms(): number {
    let term = -1;
    for (let i = 0; i < this.n; i++) {
      const raft = this.rafts[i];
      if (!this.connected[i] || !raft) continue;
      const xterm = raft.getState().term;
      if (term === -1) term = xterm;
      else if (term !== xterm) this.fatal(`servers disagree on term: ${term} and ${xterm}`);
    }
    return term;
  }

  /** Checks that no connected peer thinks it is the leader. */
  checkNoLeader(): void {
    for (let i = 0; i < this.n; i++) {
      if (this.connected[i] && this.rafts[i]?.getState().isLeader) {
        this.fatal(`expected no leader among connected servers, but ${i} claims to be leader`);
      }
    }
  }

  /** How many peers have applied `index`, and the command there (all must agree). */
  nCommitted(index: number): { count: number; command: unknown } {
    this.#checkApplyErrors();
    let count = 0;
    let text: string | undefined;
    for (let i = 0; i < this.n; i++) {
      const applied = this.#logs[i]!.get(index)?.command;
      if (applied === undefined) continue;
      if (count > 0 && applied !== text) {
        this.fatal(`committed values do not match: index ${index}, ${text}, ${applied}`);
      }
      count++;
      text = applied;
    }
    return { count, command: text === undefined ? undefined : JSON.parse(text) };
  }

  /**
   * Waits for at least `n` peers to apply `index`, and returns the command. Gives up with -1 when
   * `startTerm` > -1 and some peer has moved past that term.
   */
  async wait(index: number, n: number, startTerm: number): Promise<unknown> {
    let to = 10;
    for (let iters = 0; iters < 30; iters++) {
      if (this.nCommitted(index).count >= n) break;
      await this.sleep(to);
      if (to < 1000) to *= 2;
      if (startTerm > -1) {
        for (const raft of this.rafts) {
          // someone has moved on: we can no longer guarantee that we'll "win"
          if (raft !== null && raft.getState().term > startTerm) return -1;
        }
      }
    }
    const { count, command } = this.nCommitted(index);
    if (count < n) this.fatal(`only ${count} decided for index ${index}; wanted ${n}`);
    return command;
  }

  /**
   * Does a complete agreement on `command`, submitting it to whichever peer leads, and returns its
   * index once `expectedServers` peers applied it. With `retry`, it may submit again if a leader
   * fails just after `start()`; gives up after about 10 seconds.
   */
  async one(command: unknown, expectedServers: number, retry: boolean): Promise<number> {
    const wanted = JSON.stringify(command);
    const t0 = this.clock.now();
    let starts = 0;
    while (this.clock.now() - t0 < 10_000) {
      // try all the servers, maybe one is the leader.
      let index = -1;
      for (let si = 0; si < this.n; si++) {
        starts = (starts + 1) % this.n;
        const raft = this.connected[starts] ? this.rafts[starts] : null;
        if (raft === null || raft === undefined) continue;
        const result = raft.start(command);
        if (result.isLeader) {
          index = result.index;
          break;
        }
      }
      if (index !== -1) {
        // somebody claimed to be the leader and to have submitted our command; wait a while.
        const t1 = this.clock.now();
        while (this.clock.now() - t1 < 2000) {
          const { count, command: applied } = this.nCommitted(index);
          if (count > 0 && count >= expectedServers && JSON.stringify(applied) === wanted) {
            return index;
          }
          await this.sleep(20);
        }
        if (!retry) this.fatal(`one(${wanted}) failed to reach agreement`);
      } else {
        await this.sleep(50);
      }
    }
    this.fatal(`one(${wanted}) failed to reach agreement`);
  }

  /**
   * The lab's `LogSize()`: the largest persisted Raft state of any peer, running or crashed, in
   * characters of the JSON text of `{ term, votedFor, log }` (the snapshot is not counted).
   */
  async logSize(): Promise<number> {
    let largest = 0;
    for (let i = 0; i < this.n; i++) {
      const state = await this.#persistence.saved(i);
      if (state === null) continue;
      const { term, votedFor, log } = state;
      largest = Math.max(largest, JSON.stringify({ term, votedFor, log }).length);
    }
    return largest;
  }

  /** Starts a test: prints its description and notes the counters. */
  begin(description: string): void {
    if (this.#print) console.log(`${this.#printPrefix}${description} ...`);
    this.#description = description;
    this.#t0 = this.clock.now();
    this.#rpcs0 = this.rpcTotal();
    this.#bytes0 = this.bytesTotal();
    this.#maxIndex0 = this.#maxIndex;
  }

  /** Ends a passed test: prints the lab's "Passed" line and returns its numbers. */
  end(): TestStats {
    this.#checkApplyErrors();
    this.#checkTimeout();
    const stats: TestStats = {
      description: this.#description,
      seconds: (this.clock.now() - this.#t0) / 1000,
      peers: this.n,
      rpcs: this.rpcTotal() - this.#rpcs0,
      bytes: this.bytesTotal() - this.#bytes0,
      commits: this.#maxIndex - this.#maxIndex0,
    };
    if (this.#print) {
      console.log(
        `${this.#printPrefix}  ... Passed --  ${
          stats.seconds.toFixed(1).padStart(4)
        }  ${stats.peers} ${String(stats.rpcs).padStart(4)} ${String(stats.bytes).padStart(7)} ${
          String(stats.commits).padStart(4)
        }`,
      );
    }
    passedTests.push(stats);
    return stats;
  }

  /** Kills every peer, stops the network and releases the persisters. */
  async cleanup(): Promise<void> {
    for (const raft of this.rafts) raft?.kill();
    this.net.close();
    await this.#persistence.close();
  }

  /** The lab's `applier`: checks each command against what the other peers applied there. */
  #applier(i: number, msg: ApplyMsg): void {
    if (!msg.commandValid) return;
    const error = this.#checkLogs(i, msg);
    if (error !== null) this.#applyError ??= error;
  }

  /**
   * The lab's `checkLogs`: records that peer `i` applied `msg`'s command, and returns what is
   * wrong with that, if anything: another peer applied a different command, or the same one in
   * another term, at that index (committed entries are the same entry everywhere, §5.4), or peer
   * `i` skipped the index before it.
   */
  #checkLogs(i: number, msg: ApplyMsg): string | null {
    const entry = { command: JSON.stringify(msg.command), term: msg.commandTerm };
    let error = this.#conflict(i, msg.commandIndex, entry);
    const previousApplied = this.#logs[i]!.has(msg.commandIndex - 1);
    this.#logs[i]!.set(msg.commandIndex, entry);
    this.#maxIndex = Math.max(this.#maxIndex, msg.commandIndex);
    if (msg.commandIndex > 1 && !previousApplied) {
      error ??= `server ${i} apply out of order ${msg.commandIndex}`;
    }
    return error;
  }

  /** What is wrong if some peer applied something other than `entry` at `index`, else null. */
  #conflict(i: number, index: number, entry: AppliedEntry): string | null {
    for (let j = 0; j < this.n; j++) {
      const old = this.#logs[j]!.get(index);
      if (old === undefined) continue;
      if (old.command !== entry.command || old.term !== entry.term) {
        // some server has already committed a different value for this entry!
        return `commit index=${index} server=${i} ${entry.command} (term ${entry.term}) != ` +
          `server=${j} ${old.command} (term ${old.term})`;
      }
    }
    return null;
  }

  /**
   * The lab's `applierSnap`, the service of the snapshot tests: commands must come one index
   * after the other, every {@linkcode SnapShotInterval} commands the service hands `raft` a
   * snapshot of everything it applied, and a snapshot replaces what it applied.
   */
  #applierSnap(i: number, msg: ApplyMsg, raft: Raft | null): void {
    let error: string | null = null;
    if (msg.snapshotValid) {
      error = this.#ingestSnapshot(i, msg);
    } else if (msg.commandValid) {
      const expected = this.#lastApplied[i]! + 1;
      if (msg.commandIndex !== expected) {
        error =
          `server ${i} apply out of order, expected index ${expected}, got ${msg.commandIndex}`;
      }
      error ??= this.#checkLogs(i, msg);
      this.#lastApplied[i] = msg.commandIndex;
      if ((msg.commandIndex + 1) % SnapShotInterval === 0 && raft !== null) {
        raft.snapshot(msg.commandIndex, this.#encodeSnapshot(i, msg.commandIndex));
      }
    }
    if (error !== null) this.#applyError ??= error;
  }

  /** Peer `i`'s service state through `index`: its applied entries, as JSON text. */
  #encodeSnapshot(i: number, index: number): Uint8Array {
    const log: ([number, string] | null)[] = [];
    for (let j = 1; j <= index; j++) {
      const entry = this.#logs[i]!.get(j);
      log.push(entry === undefined ? null : [entry.term, entry.command]);
    }
    const state: SnapshotState = { lastIncludedIndex: index, log };
    return new TextEncoder().encode(JSON.stringify(state));
  }

  /**
   * The lab's `ingestSnap`: peer `i`'s service replaces its state with the snapshot `msg` carries,
   * which must be one of the services' snapshots, through `msg.snapshotIndex`, whose last entry
   * has term `msg.snapshotTerm`, agreeing with what every peer applied, and past what peer `i`
   * applied (Raft hands the service its log in order). Returns what is wrong, if anything.
   */
  #ingestSnapshot(i: number, msg: ApplyMsg): string | null {
    const { snapshotIndex: index, snapshotTerm: term } = msg;
    if (msg.snapshot === null) return `server ${i} was handed a null snapshot through ${index}`;
    const state = decodeSnapshot(msg.snapshot);
    if (state === null) return `server ${i} snapshot decode error`;
    if (state.lastIncludedIndex !== index) {
      return `server ${i} snapshot doesn't match m.SnapshotIndex: ` +
        `${state.lastIncludedIndex} in the data, ${index} in the message`;
    }
    if (index <= this.#lastApplied[i]!) {
      return `server ${i} was handed a snapshot through ${index} after applying through ${
        this.#lastApplied[i]
      }`;
    }
    const last = state.log[index - 1];
    if (last !== null && last !== undefined && last[0] !== term) {
      return `server ${i} snapshot through ${index} has snapshotTerm ${term}, ` +
        `but its entry there was applied in term ${last[0]}`;
    }
    const logs = new Map<number, AppliedEntry>();
    for (let j = 1; j <= index; j++) {
      const stored = state.log[j - 1];
      if (stored === null || stored === undefined) continue;
      const entry = { term: stored[0], command: stored[1] };
      const error = this.#conflict(i, j, entry);
      if (error !== null) return `snapshot of server ${i}: ${error}`;
      logs.set(j, entry);
    }
    this.#logs[i] = logs;
    this.#lastApplied[i] = index;
    return null;
  }

  #checkApplyErrors(): void {
    if (this.#applyError !== null) this.fatal(`apply error: ${this.#applyError}`);
  }

  #checkTimeout(): void {
    if (this.clock.now() - this.#created > LAB_TEST_TIME_LIMIT_MS) {
      this.fatal(`test took longer than ${LAB_TEST_TIME_LIMIT_MS / 1000} seconds`);
    }
  }
}

/** A command a peer applied: its JSON text, and the term of its entry. */
interface AppliedEntry {
  command: string;
  term: number;
}

/** What the snapshot mode's service puts in a snapshot: each entry's term and command text. */
interface SnapshotState {
  lastIncludedIndex: number;
  log: ([number, string] | null)[];
}

function decodeSnapshot(data: Uint8Array): SnapshotState | null {
  let value: unknown;
  try {
    value = JSON.parse(new TextDecoder().decode(data));
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { lastIncludedIndex, log } = value as Record<string, unknown>;
  if (!Number.isSafeInteger(lastIncludedIndex) || !Array.isArray(log)) return null;
  const wellFormed = log.every((entry) =>
    entry === null ||
    (Array.isArray(entry) && entry.length === 2 && Number.isSafeInteger(entry[0]) &&
      typeof entry[1] === "string")
  );
  if (!wellFormed || log.length !== lastIncludedIndex) return null;
  return { lastIncludedIndex: lastIncludedIndex as number, log: log as SnapshotState["log"] };
}

function serverName(i: number): string {
  return `server-${i}`;
}
