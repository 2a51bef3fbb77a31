/**
 * The randomized explorer: one seed draws a cluster size and a fault schedule (see
 * `fault_schedule.ts`), runs the library's Raft peers through it in a simulator, checks Raft's
 * safety properties throughout (see `safety_checker.ts`), then heals a majority "core" for good
 * and requires a new command to commit within a bound. A violation comes back with the seed and
 * the trace of the events that led to it.
 *
 * @module
 */

import {
  type ClientEnd,
  type Configuration,
  make as libraryMake,
  MemoryNetwork,
  type PersistentState,
  type Persister,
  type Raft,
  type RaftOptions,
} from "../../mod.ts";
import { randomInt, sleep } from "../../src/clock.ts";
import { seededRandom, SimPersister, Simulator } from "../../src/sim/mod.ts";
import {
  describeAction,
  drawFaultPlan,
  type FaultAction,
  type FaultPlan,
  shuffle,
} from "./fault_schedule.ts";
import { NetworkFaults } from "./network_faults.ts";
import { SafetyChecker, type Violation } from "./safety_checker.ts";

/** The library's `make`, or a patched copy's (the mutant tests pass one). */
export type MakeRaft = typeof libraryMake;

/** Options for {@linkcode exploreSeed}. */
export interface ExploreOptions {
  /** Builds each peer. Default: the library's `make`. */
  make?: MakeRaft;
  /** Length of the faulty phase in virtual ms. Default 60 000: a minute of faults. */
  faultyMs?: number;
  /** Cluster sizes the seed chooses among. Default [3, 5, 7]. */
  peerCounts?: number[];
  /**
   * Virtual time the healed core has to commit a new command, in ms. Default 30 000: about 30
   * election timeouts, far more than a healthy majority needs even with disruptive peers around.
   */
  livenessBoundMs?: number;
  /** How many trace lines a violation report carries. Default 400. */
  traceLines?: number;
  /** Called with every trace line as it happens, messages included (for `--verbose`). */
  onTrace?: (line: string) => void;
  /** Extra Raft options for every peer. */
  raftOptions?: RaftOptions;
  /**
   * Whether services take snapshots (every 3, 7, 20 or 50 commands, or never, as the seed
   * draws). Default true.
   */
  snapshots?: boolean;
  /**
   * Whether the seed may draw membership changes (half the seeds do): the cluster then starts
   * with one or two spare peers outside it, and a leader adds, promotes, demotes and removes
   * servers (itself included) every few seconds, sometimes crashing right after. Default true.
   */
  membership?: boolean;
}

/** A peer as the explorer reaches into it: the driver's peer, with its membership calls. */
interface MembershipPeer {
  core: { configuration: Configuration };
  proposeConfiguration(
    next: Configuration,
  ): { ok: true; index: number } | { ok: false; reason: string; message: string };
}

/** What one seed's run did. */
export interface ExploreResult {
  seed: number;
  peers: number;
  /** The fault profile the seed drew: "mixed", "network" or "crashes". */
  profile: string;
  /** The peers that healed for good in the liveness phase. */
  core: number[];
  /** Virtual time the run covered, in ms. */
  virtualMs: number;
  /** The simulator's trace digest: equal for every replay of the seed. */
  digest: string;
  /** Timers fired and messages delivered. */
  events: number;
  commits: number;
  leaderTerms: number;
  crashes: number;
  /** Snapshots services took, and snapshots services were handed (installs and restarts). */
  snapshots: { taken: number; applied: number };
  /** Membership changes appended by leaders (0 when the seed drew none). */
  membershipChanges: number;
  /** The first violation, with the trace leading to it; null if the run was clean. */
  violation: (Violation & { trace: string[] }) | null;
}

/** Thrown inside the simulation to stop it at the first violation. */
class ViolationFound extends Error {
  override name = "ViolationFound";
}

/** More requests than this at one virtual instant mean a loop that never lets time pass. */
const maxMessagesAtOneInstant = 20_000;

/** Runs one seed. Never throws for a violation: it is in the result. */
export async function exploreSeed(
  seed: number,
  options: ExploreOptions = {},
): Promise<ExploreResult> {
  const plan = drawFaultPlan(seededRandom(seed, 1), {
    ...(options.faultyMs !== undefined ? { faultyMs: options.faultyMs } : {}),
    ...(options.peerCounts !== undefined ? { peerCounts: options.peerCounts } : {}),
  });
  const run = new ExplorerRun(seed, plan, options);
  return await run.run();
}

/** One seed's cluster, faults, client and checks. */
class ExplorerRun {
  readonly #seed: number;
  readonly #plan: FaultPlan;
  readonly #options: ExploreOptions;
  readonly #make: MakeRaft;
  readonly #sim: Simulator;
  readonly #net: MemoryNetwork;
  readonly #checker: SafetyChecker;
  readonly #n: number;
  readonly #rafts: (Raft | null)[];
  readonly #disks: (SimPersister | null)[];
  /** What each peer's disk held at its last crash. */
  readonly #diskStates: (PersistentState | undefined)[];
  readonly #saveDelayMaxMs: number[];
  /** Current instance's outgoing end names: #ends[i][j] reaches j. */
  readonly #ends: string[][];
  readonly #instances: number[];
  /** How often services snapshot (every N applied commands; 0: never), drawn per seed. */
  readonly #snapshotEvery: number;
  #snapshotsTaken = 0;
  #snapshotsApplied = 0;
  /** How messages fare in each direction between two peers. */
  readonly #faults: NetworkFaults;
  readonly #trace: string[] = [];
  #traceStart = 0;
  #crashes = 0;
  #commandCount = 0;
  #clientStopped = false;
  /** The peers that heal for good in the liveness phase (the plan's, unless it avoids the leader). */
  #core: number[];
  /** Whether the lab's unreliable mode is on (outside storms, which set their own). */
  #unreliable = false;
  /** Random numbers for membership changes: a stream of their own, as for snapshots. */
  readonly #membershipRandom: () => number;
  /** Whether this seed changes the membership; the configuration its peers start with. */
  readonly #membership: boolean;
  readonly #initialConfiguration: Configuration;
  #membershipChanges = 0;
  #messagesAt = -1;
  #messagesNow = 0;

  constructor(seed: number, plan: FaultPlan, options: ExploreOptions) {
    this.#seed = seed;
    this.#plan = plan;
    this.#core = plan.core;
    this.#options = options;
    this.#make = options.make ?? libraryMake;
    this.#sim = new Simulator({ seed });
    const onTrace = options.onTrace;
    this.#net = new MemoryNetwork({
      clock: this.#sim.clock,
      random: this.#sim.random,
      record: (event) => {
        this.#sim.record(event);
        onTrace?.(`${this.#time()} net ${event}`);
      },
    });
    this.#n = plan.peers;
    this.#membershipRandom = seededRandom(seed, 3);
    this.#membership = options.membership !== false && this.#membershipRandom() < 0.5;
    const spares = this.#membership
      ? (this.#n >= 5 ? randomInt(this.#membershipRandom, 1, 2) : 1)
      : 0;
    this.#initialConfiguration = {
      voters: Array.from({ length: this.#n - spares }, (_, id) => ({ id, address: "" })),
      learners: [],
    };
    this.#checker = new SafetyChecker(
      this.#n,
      () => this.#sim.clock.now(),
      this.#initialConfiguration,
      !this.#membership,
    );
    this.#rafts = new Array(this.#n).fill(null);
    this.#disks = new Array(this.#n).fill(null);
    this.#diskStates = new Array(this.#n).fill(undefined);
    this.#saveDelayMaxMs = new Array(this.#n).fill(0);
    this.#ends = Array.from({ length: this.#n }, () => []);
    this.#instances = new Array(this.#n).fill(0);
    // From a stream of its own, so that the fault plan reads the same with or without snapshots.
    const snapshotRandom = seededRandom(seed, 2);
    this.#snapshotEvery = options.snapshots === false
      ? 0
      : [0, 3, 7, 20, 50][randomInt(snapshotRandom, 0, 4)]!;
    this.#faults = new NetworkFaults(this.#n);
  }

  async run(): Promise<ExploreResult> {
    this.#log(
      `seed ${this.#seed}: ${this.#n} peers, ${this.#plan.profile} faults, ${this.#plan.faults.length} of them over ${this.#plan.faultyMs} ms, client every ~${this.#plan.clientIntervalMs} ms, core ${
        this.#plan.core.join(",")
      }`,
    );
    let violation: ExploreResult["violation"] = null;
    try {
      await this.#sim.run(() => this.#main(), {
        onQuiescent: () => this.#observe(),
        timeLimitMs: this.#plan.faultyMs + (this.#options.livenessBoundMs ?? 30_000) + 60_000,
      });
    } catch (error) {
      const found = this.#checker.violation ?? {
        property: "Run",
        message: `the run failed: ${error instanceof Error ? error.stack : String(error)}`,
        atMs: this.#sim.clock.now(),
      };
      violation = { ...found, trace: this.#traceTail() };
    }
    if (violation === null && this.#checker.violation !== null) {
      violation = { ...this.#checker.violation, trace: this.#traceTail() };
    }
    return {
      seed: this.#seed,
      peers: this.#n,
      profile: this.#plan.profile,
      core: this.#core,
      virtualMs: this.#sim.clock.now(),
      digest: this.#sim.digest,
      events: this.#sim.eventCount,
      commits: this.#checker.committedCount,
      leaderTerms: this.#checker.leaderTerms,
      crashes: this.#crashes,
      snapshots: { taken: this.#snapshotsTaken, applied: this.#snapshotsApplied },
      membershipChanges: this.#membershipChanges,
      violation,
    };
  }

  async #main(): Promise<void> {
    if (this.#membership) {
      this.#log(
        `membership: voters ${
          this.#initialConfiguration.voters.map((m) => m.id)
        }; the rest are spares`,
      );
    }
    for (let i = 0; i < this.#n; i++) await this.#startPeer(i);
    const client = this.#client();
    const changes = this.#membership ? this.#changeMembership() : Promise.resolve();
    try {
      for (const { atMs, action } of this.#plan.faults) {
        // A storm takes time, so later faults may come late; none comes after the faulty phase.
        if (this.#sim.clock.now() >= this.#plan.faultyMs) break;
        const wait = atMs - this.#sim.clock.now();
        if (wait > 0) await sleep(this.#sim.clock, wait);
        await this.#perform(action);
      }
      const rest = this.#plan.faultyMs - this.#sim.clock.now();
      if (rest > 0) await sleep(this.#sim.clock, rest);
    } finally {
      this.#clientStopped = true;
    }
    await client;
    await changes;
    await this.#liveness();
    for (const raft of this.#rafts) raft?.kill();
    this.#net.close();
  }

  /** Between steps, when nothing is mid-flight: feed every peer's state to the checker. */
  #observe(): void {
    for (let i = 0; i < this.#n; i++) {
      const raft = this.#rafts[i];
      if (raft === null || raft === undefined) continue;
      const { term, isLeader } = raft.getState();
      this.#checker.onState(i, term, isLeader);
      const core = (raft as unknown as Partial<MembershipPeer>).core;
      if (core !== undefined) this.#checker.onConfiguration(i, core.configuration);
    }
    const violation = this.#checker.violation;
    if (violation !== null) {
      this.#log(`VIOLATION of ${violation.property}: ${violation.message}`);
      throw new ViolationFound(`${violation.property}: ${violation.message}`);
    }
  }

  // --- Peers ---

  async #startPeer(i: number): Promise<void> {
    this.#crashPeer(i, false);
    const instance = ++this.#instances[i]!;
    const state = this.#diskStates[i] ?? { term: 0, votedFor: null, snapshot: null, log: [] };
    const disk = new SimPersister({
      clock: this.#sim.clock,
      random: this.#sim.random,
      state,
      saveDelayMs: { min: 0, max: this.#saveDelayMaxMs[i]! },
    });
    this.#disks[i] = disk;
    this.#checker.onStart(i, state);
    const checker = this.#checker;
    // Saves asked for and saves durable (resolved) on this instance's disk: a reply may leave only
    // once every save started before it is durable (Figure 2's persist-before-reply rule).
    const saves = { started: 0, durable: 0 };
    const persister: Persister = {
      load: () => disk.load(),
      save(change) {
        checker.onSave(i, change);
        saves.started++;
        return disk.save(change).then(() => {
          saves.durable++;
        });
      },
    };
    const ends: ClientEnd[] = [];
    const names: string[] = [];
    for (let j = 0; j < this.#n; j++) {
      const name = `${i}>${j}#${instance}`;
      const end = this.#net.makeEnd(name);
      this.#net.connect(name, serverName(j));
      this.#net.enable(name, true);
      names.push(name);
      ends.push({
        call: (method, args) => {
          if (!isPreVote(args)) checker.onTermSent(i, termOf(args));
          if (!this.#countMessage()) return Promise.resolve(undefined);
          return end.call(method, args);
        },
      });
    }
    for (const name of this.#ends[i]!) this.#net.deleteEnd(name);
    this.#ends[i] = names;
    // The service: the JSON text of every command applied, index i at i - 1. It snapshots
    // itself every `snapshotEvery` commands, from inside the apply callback.
    let service: string[] = [];
    const raft = await this.#make(ends, i, persister, (msg) => {
      if (msg.snapshotValid) {
        const commands = JSON.parse(new TextDecoder().decode(msg.snapshot!)) as string[];
        this.#log(`peer ${i} applies the snapshot through ${msg.snapshotIndex}`);
        checker.onSnapshotApplied(i, msg.snapshotIndex, msg.snapshotTerm, commands);
        service = commands;
        this.#snapshotsApplied++;
        for (const command of commands) this.#onApply(i, JSON.parse(command));
        return;
      }
      this.#log(`peer ${i} applies ${msg.commandIndex} = ${JSON.stringify(msg.command)}`);
      checker.onApply(i, msg, this.#rafts[i]?.getState().term ?? 0);
      this.#onApply(i, msg.command);
      service.push(JSON.stringify(msg.command));
      if (this.#snapshotEvery > 0 && msg.commandIndex % this.#snapshotEvery === 0) {
        const data = new TextEncoder().encode(JSON.stringify(service));
        this.#log(`peer ${i} snapshots through ${msg.commandIndex} (${data.length} bytes)`);
        this.#rafts[i]?.snapshot(msg.commandIndex, data);
        this.#snapshotsTaken++;
      }
    }, {
      clock: this.#sim.clock,
      random: this.#sim.random,
      trace: (line) => this.#log(line),
      // A peer that stops itself (a broken invariant, a failed save or apply) is a violation.
      onFatal: (error) => {
        const cause = error.cause instanceof Error ? error.cause.message : String(error.cause);
        const message = error.message.includes(cause)
          ? error.message
          : `${error.message}: ${cause}`;
        checker.report(`Fatal stop (${error.reason})`, message);
      },
      ...(this.#membership ? { configuration: this.#initialConfiguration } : {}),
      ...this.#options.raftOptions,
    });
    this.#rafts[i] = raft;
    this.#net.addServer(serverName(i), {
      async handleRpc(method, args) {
        // The request's own saves start while it is stepped, before handleRpc first awaits.
        const replied = raft.handleRpc(method, args);
        const startedBefore = saves.started;
        const reply = await replied;
        if (reply !== undefined && saves.durable < startedBefore) {
          checker.report(
            "Durability",
            `peer ${i} answered ${method} while ${
              startedBefore - saves.durable
            } of the saves started before it were not durable: a crash now would lose what the reply promised`,
          );
        }
        // A pre-vote and its granting reply name the term a vote would be for, not the sender's.
        if (reply === undefined || isPreVote(args)) return reply;
        checker.onTermSent(i, termOf(reply));
        const granted = (reply as { voteGranted?: unknown }).voteGranted === true;
        const candidate = (args as { candidateId?: unknown } | null)?.candidateId;
        if (method === "RequestVote" && granted && typeof candidate === "number") {
          checker.onVoteGranted(i, termOf(reply), candidate);
        }
        return reply;
      },
    });
    this.#applyFaults();
    this.#log(
      `peer ${i} starts (instance ${instance}): term ${state.term}, vote ${state.votedFor}, ${state.log.length} entries`,
    );
  }

  #crashPeer(i: number, log = true): void {
    const raft = this.#rafts[i];
    const disk = this.#disks[i];
    if (raft === null || raft === undefined || disk === null || disk === undefined) return;
    this.#net.deleteServer(serverName(i));
    raft.kill();
    const inFlight = disk.pendingSaveCount;
    const state = disk.crash();
    this.#diskStates[i] = state;
    this.#rafts[i] = null;
    this.#disks[i] = null;
    this.#crashes++;
    if (log) {
      this.#log(
        `peer ${i} crashes with ${inFlight} saves in flight; its disk keeps term ${state.term}, vote ${state.votedFor}, ${state.log.length} entries`,
      );
    }
  }

  /**
   * Counts a request sent at the current virtual time; false once there were too many. Peers
   * that answer each other at once forever would keep time from ever moving on, and the run
   * from ever ending: that is reported as a violation, and the loop is cut.
   */
  #countMessage(): boolean {
    const now = this.#sim.clock.now();
    if (now !== this.#messagesAt) {
      this.#messagesAt = now;
      this.#messagesNow = 0;
    }
    if (++this.#messagesNow <= maxMessagesAtOneInstant) return true;
    this.#checker.report(
      "Progress",
      `more than ${maxMessagesAtOneInstant} requests were sent at virtual time ${now} ms: peers answer each other at once, forever`,
    );
    return false;
  }

  #leader(): number | null {
    let best: number | null = null;
    let bestTerm = -1;
    for (let i = 0; i < this.#n; i++) {
      const state = this.#rafts[i]?.getState();
      if (state?.isLeader && state.term > bestTerm) {
        best = i;
        bestTerm = state.term;
      }
    }
    return best;
  }

  // --- Faults ---

  async #perform(action: FaultAction): Promise<void> {
    this.#log(`fault: ${describeAction(action)}`);
    const leader = action.kind === "isolateLeader" ? this.#leader() : null;
    if (action.kind === "isolateLeader") this.#log(`  (leader is ${leader ?? "nobody"})`);
    const handled = this.#faults.perform(action, leader, this.#sim.random, (a, b) => {
      this.#log(`  heals ${a}->${b}`);
      this.#applyFaults();
    });
    if (handled) {
      this.#applyFaults();
      return;
    }
    switch (action.kind) {
      case "crash":
        this.#crashPeer(action.peer);
        break;
      case "crashLeader": {
        const leader = this.#leader();
        this.#log(`  (leader is ${leader ?? "nobody"})`);
        if (leader !== null) this.#crashPeer(leader);
        break;
      }
      case "restart":
        if (this.#rafts[action.peer] === null) await this.#startPeer(action.peer);
        break;
      case "slowSaves":
        this.#saveDelayMaxMs[action.peer] = action.maxMs;
        this.#disks[action.peer]?.setSaveDelay({ min: 0, max: action.maxMs });
        break;
      case "unreliable":
        this.#unreliable = action.on;
        this.#net.setReliable(!action.on);
        break;
      case "storm":
        await this.#storm(action.rounds, action.unreliable);
        break;
      case "clientBurst": {
        const leader = this.#leader();
        for (let k = 0; k < action.count; k++) {
          this.#propose(leader ?? randomInt(this.#sim.random, 0, this.#n - 1));
        }
        break;
      }
    }
    this.#applyFaults();
  }

  /** The lab's Figure 8 loop (`TestFigure84B`), on this cluster. */
  async #storm(rounds: number, unreliable: boolean): Promise<void> {
    const random = this.#sim.random;
    if (unreliable) this.#net.setReliable(false);
    const majority = Math.floor(this.#n / 2) + 1;
    for (let round = 0; round < rounds && this.#sim.clock.now() < this.#plan.faultyMs; round++) {
      let leader: number | null = null;
      for (let i = 0; i < this.#n; i++) {
        if (this.#propose(i) !== null) leader = i;
      }
      const pause = random() < 0.1 ? randomInt(random, 0, 499) : randomInt(random, 0, 12);
      await sleep(this.#sim.clock, pause);
      if (leader !== null) this.#crashPeer(leader);
      // Restart a crashed peer when too few are up, and now and then anyway, so that peers come
      // back with the logs they had, to compete with those that moved on.
      const down = [...Array(this.#n).keys()].filter((i) => this.#rafts[i] === null);
      if (down.length > 0 && (this.#n - down.length < majority || random() < 0.3)) {
        await this.#startPeer(down[randomInt(random, 0, down.length - 1)]!);
      }
    }
    this.#net.setReliable(!this.#unreliable);
  }

  /** Sets every end's faults from the direction table. */
  #applyFaults(): void {
    for (let i = 0; i < this.#n; i++) {
      for (let j = 0; j < this.#n; j++) {
        const name = this.#ends[i]![j];
        if (name === undefined || i === j) continue;
        this.#net.setEndFaults(name, this.#faults.endFaults(i, j));
      }
    }
  }

  // --- Clients ---

  #propose(peer: number, prefix = "c"): string | null {
    const raft = this.#rafts[peer];
    if (raft === null || raft === undefined) return null;
    const command = `${prefix}${++this.#commandCount}`;
    const { index, term, isLeader } = raft.start(command);
    if (!isLeader) return null;
    this.#checker.onStarted(command, index);
    this.#log(`client: peer ${peer} takes ${command} at index ${index} in term ${term}`);
    return command;
  }

  async #client(): Promise<void> {
    const random = this.#sim.random;
    while (!this.#clientStopped) {
      const pause = Math.ceil(-Math.log(1 - random()) * this.#plan.clientIntervalMs);
      await sleep(this.#sim.clock, pause);
      if (this.#clientStopped) break;
      this.#propose(randomInt(random, 0, this.#n - 1));
    }
  }

  // --- Membership ---

  /**
   * Every 0.3-3 s of the faulty phase, the leader (if any) changes the membership by one server:
   * adds a spare as a learner, promotes a learner, demotes or removes a voter (itself now and
   * then), or removes a learner. One change in four is made by a leader just cut off (or about
   * to crash), so that it stays on a minority; the next leader then changes the membership the
   * moment it is elected, and the old one comes back 0.5-3 s later: the history behind the
   * single-server change bug.
   */
  async #changeMembership(): Promise<void> {
    const random = this.#membershipRandom;
    while (!this.#clientStopped) {
      await sleep(this.#sim.clock, randomInt(random, 300, 3000));
      if (this.#clientStopped) break;
      if (random() >= 0.25) {
        const leader = this.#leader();
        if (leader !== null) this.#proposeChange(leader);
        continue;
      }
      // A burst of failovers, each with a change on both sides.
      const rounds = randomInt(random, 2, 8);
      for (let round = 0; round < rounds && !this.#clientStopped; round++) {
        await this.#failoverWithChanges();
        await sleep(this.#sim.clock, randomInt(random, 50, 800));
      }
    }
  }

  /**
   * The leader makes a change that stays on a minority: it is cut off (alone, or with one other
   * peer, which hears nothing of the next leader either) before its requests leave, or crashes
   * before they do. The next leader changes the membership the moment it is elected, and the
   * old one comes back 0.2-2 s later.
   */
  async #failoverWithChanges(): Promise<void> {
    const random = this.#membershipRandom;
    const leader = this.#leader();
    if (leader === null) return;
    const cut = random() < 0.85 ? [leader] : [];
    if (cut.length > 0 && random() < 0.2) {
      const others = [...Array(this.#n).keys()].filter((id) => id !== leader);
      cut.push(others[randomInt(random, 0, others.length - 1)]!);
    }
    if (cut.length > 0) {
      this.#log(`membership: cuts ${cut.join(" and ")} off from the rest`);
      this.#faults.perform({ kind: "split", minority: cut }, leader, random, () => {});
      this.#applyFaults();
    }
    const before = (this.#rafts[leader] as unknown as MembershipPeer).core.configuration;
    const first = this.#proposeChange(leader, [0, 1, 5, 5]);
    if (cut.length === 0) this.#crashPeer(leader);
    // Whom the first change removed: the next leader, which lacks it, removes someone else.
    const removed = first === null
      ? []
      : before.voters.map((m) => m.id).filter((id) => !first.voters.some((m) => m.id === id));
    const deadline = this.#sim.clock.now() + 3000;
    let next: number | null = null;
    while (this.#sim.clock.now() < deadline && !this.#clientStopped) {
      await sleep(this.#sim.clock, randomInt(random, 1, 5));
      next = this.#leader();
      if (next !== null && next !== leader) {
        // Removals most: two changes that each move one voter away from an even-sized
        // configuration can leave majorities that do not overlap.
        this.#proposeChange(next, [1, 5, 5, 5], [leader, ...removed]);
        break;
      }
    }
    await sleep(this.#sim.clock, randomInt(random, 200, 2000));
    if (this.#clientStopped) return;
    if (cut.length > 0) {
      if (next !== null && next !== leader && random() < 0.8) {
        // First with everyone but the new leader: the old one campaigns before it hears of it.
        this.#log(`membership: heals ${cut.join(" and ")}, except with ${next}`);
        for (const id of cut) {
          for (let other = 0; other < this.#n; other++) {
            if (other !== next && !cut.includes(other)) this.#faults.healLink(id, other);
          }
        }
        this.#applyFaults();
        await sleep(this.#sim.clock, randomInt(random, 300, 2000));
        if (this.#clientStopped) return;
      }
      this.#log(`membership: heals ${cut.join(" and ")}`);
      for (const id of cut) this.#faults.healPeer(id);
      this.#applyFaults();
    } else if (this.#rafts[leader] === null) {
      await this.#startPeer(leader);
    }
  }

  /**
   * Leader `leader` proposes a change drawn at random (of the `kinds` of {@linkcode #drawChange});
   * whether one was appended.
   */
  #proposeChange(leader: number, kinds?: number[], avoid: number[] = []): Configuration | null {
    const peer = this.#rafts[leader] as unknown as MembershipPeer | null;
    if (peer === null) return null;
    const next = this.#drawChange(peer.core.configuration, leader, kinds, avoid);
    if (next === null) return null;
    const result = peer.proposeConfiguration(next);
    this.#log(
      `membership: leader ${leader} proposes voters ${next.voters.map((m) => m.id)} learners ${
        next.learners.map((m) => m.id)
      }: ${result.ok ? `appended at ${result.index}` : `refused (${result.message})`}`,
    );
    if (!result.ok) return null;
    this.#membershipChanges++;
    return next;
  }

  /** One server's change to `current`, drawn at random; null when the draw has nothing to do. */
  #drawChange(
    current: Configuration,
    leader: number,
    kinds = [0, 1, 2, 3, 4],
    avoid: number[] = [],
  ): Configuration | null {
    const random = this.#membershipRandom;
    const voters = current.voters;
    const learners = current.learners;
    const members = new Set([...voters, ...learners].map((m) => m.id));
    const spares = [...Array(this.#n).keys()].filter((id) => !members.has(id));
    const pick = <T>(list: T[]): T => list[randomInt(random, 0, list.length - 1)]!;
    switch (pick(kinds)) {
      case 0: // add a learner
        if (spares.length === 0) return null;
        return { voters, learners: [...learners, { id: pick(spares), address: "" }] };
      case 1: { // promote a learner
        if (learners.length === 0) return null;
        const learner = pick(learners);
        return {
          voters: [...voters, learner],
          learners: learners.filter((m) => m !== learner),
        };
      }
      case 2: { // remove a voter, the leader one time in four
        if (voters.length === 1) return null;
        const victim = random() < 0.25 ? leader : pick(voters.map((m) => m.id));
        return { voters: voters.filter((m) => m.id !== victim), learners };
      }
      case 5: { // remove a voter that is neither the leader nor one to avoid
        const candidates = voters.filter((m) => m.id !== leader && !avoid.includes(m.id));
        if (voters.length === 1 || candidates.length === 0) return null;
        const victim = pick(candidates);
        return { voters: voters.filter((m) => m !== victim), learners };
      }
      case 3: { // demote a voter to learner
        if (voters.length === 1) return null;
        const demoted = pick(voters);
        return { voters: voters.filter((m) => m !== demoted), learners: [...learners, demoted] };
      }
      default: { // remove a learner
        if (learners.length === 0) return null;
        const removed = pick(learners);
        return { voters, learners: learners.filter((m) => m !== removed) };
      }
    }
  }

  // --- Liveness ---

  /** Commands of the liveness phase, and which core peers applied each. */
  readonly #livenessApplied = new Map<string, Set<number>>();

  #onApply(peer: number, command: unknown): void {
    if (typeof command !== "string" || !this.#core.includes(peer)) return;
    this.#livenessApplied.get(command)?.add(peer);
  }

  async #liveness(): Promise<void> {
    const leader = this.#leader();
    let core = this.#plan.core;
    if (this.#membership) {
      // Who makes a majority now depends on the changes: every peer heals.
      core = [...Array(this.#n).keys()];
    } else if (this.#plan.coreAvoidsLeader && leader !== null && core.includes(leader)) {
      const others = [...Array(this.#n).keys()].filter((i) => i !== leader);
      core = shuffle(this.#sim.random, others).slice(0, core.length).sort((a, b) => a - b);
    }
    this.#core = core;
    const boundMs = this.#options.livenessBoundMs ?? 30_000;
    this.#log(
      `liveness: core ${
        core.join(",")
      } heals for good; a new command must commit (be applied by a core peer)`,
    );
    for (let i = 0; i < this.#n; i++) {
      const leftover = this.#plan.leftovers[i]!;
      if (core.includes(i) || leftover === "none") continue;
      this.#log(`  peer ${i} outside the core is left with: ${leftover}`);
      if (leftover === "crash") this.#crashPeer(i);
      else await this.#perform({ kind: leftover, peer: i });
    }
    this.#net.setReliable(true);
    this.#faults.healAmong(core);
    this.#applyFaults();
    for (const i of core) if (this.#rafts[i] === null) await this.#startPeer(i);
    const healedAt = this.#sim.clock.now();
    // A majority of the cluster always includes a core peer, so a committed command is applied
    // by one soon; a non-core leader's followers in the core may lag when its links are faulty.
    const done = () => [...this.#livenessApplied.values()].some((peers) => peers.size > 0);
    while (!done()) {
      if (this.#sim.clock.now() - healedAt > boundMs) {
        const states = core.map((i) => {
          const status = this.#rafts[i]!.status();
          return `peer ${i}: T${status.term} ${status.role}, commit ${status.commitIndex}, last ${status.lastLogIndex}`;
        });
        this.#checker.report(
          "Liveness",
          `the healed core ${core.join(",")} committed no new command within ${boundMs} ms (${
            states.join("; ")
          })`,
        );
        this.#observe();
      }
      // Try every live peer, as a client that does not know the leader would.
      for (const i of shuffle(this.#sim.random, [...Array(this.#n).keys()])) {
        const command = this.#propose(i, "live");
        if (command !== null) {
          this.#livenessApplied.set(command, new Set());
          break;
        }
      }
      await sleep(this.#sim.clock, 200);
    }
    this.#log(`liveness: committed ${this.#sim.clock.now() - healedAt} ms after healing`);
  }

  // --- Trace ---

  #time(): string {
    return (this.#sim.clock.now() / 1000).toFixed(3).padStart(8);
  }

  #log(line: string): void {
    const stamped = `${this.#time()} ${line}`;
    this.#options.onTrace?.(stamped);
    const limit = this.#options.traceLines ?? 400;
    if (this.#trace.length < limit) this.#trace.push(stamped);
    else {
      this.#trace[this.#traceStart] = stamped;
      this.#traceStart = (this.#traceStart + 1) % limit;
    }
  }

  #traceTail(): string[] {
    return [...this.#trace.slice(this.#traceStart), ...this.#trace.slice(0, this.#traceStart)];
  }
}

function serverName(i: number): string {
  return `peer-${i}`;
}

/** Whether an RPC's args ask for a pre-vote (thesis §9.6). */
function isPreVote(args: unknown): boolean {
  return (args as { preVote?: unknown } | null)?.preVote === true;
}

/** The `term` field of an RPC's args or reply, or 0. */
function termOf(message: unknown): number {
  const term = (message as { term?: unknown } | null)?.term;
  return typeof term === "number" ? term : 0;
}
