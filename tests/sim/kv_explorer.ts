/**
 * The key/value example's state machine on `RaftNode`, under the explorer's fault schedules, with
 * clients that time out and retry, in a simulator's virtual time: every operation a client makes
 * goes into a history, and the run passes only if the history is linearizable (checked with the
 * project's checker) and every peer ends with the same data.
 *
 * Writes go through the log with a client session (a retry keeps its sequence number, so it
 * applies once); reads go through `RaftNode.read()`, on the leader or, now and then, on a
 * follower, and sometimes as lease reads. Faults: partitions, clogs (which is what a paused
 * process looks like to the others), loss, duplication and delays (so messages reorder), crashes
 * and restarts from a disk that may lose saves in flight, and slow disks; and now and then the
 * leader is asked to hand its leadership over.
 *
 * @module
 */

import {
  type ClientEnd,
  MemoryNetwork,
  NotLeaderError,
  ProposalDroppedError,
  RaftNode,
  type RaftNodeOptions,
} from "../../mod.ts";
import { randomInt, sleep } from "../../src/clock.ts";
import { checkLinearizable, HistoryRecorder, type Value } from "../../src/linearizability/mod.ts";
import { seededRandom, SimPersister, Simulator } from "../../src/sim/mod.ts";
import type { PersistentState } from "../../src/types.ts";
import {
  type KvCommand,
  type KvRefusal,
  type KvResult,
  KvStateMachine,
} from "../../examples/kv/state_machine.ts";
import { describeAction, drawFaultPlan, type FaultPlan } from "./fault_schedule.ts";
import { NetworkFaults } from "./network_faults.ts";

/** `RaftNode.create`, or a patched copy's (the mutant tests pass one). */
export type CreateNode = typeof RaftNode.create;

/** Options for {@linkcode exploreKvSeed}. */
export interface KvExploreOptions {
  /** Builds each node. Default: the library's `RaftNode.create`. */
  create?: CreateNode;
  /** Length of the faulty phase, in virtual ms. Default 20 000. */
  faultyMs?: number;
  /** Called with every trace line (for `--verbose`). */
  onTrace?: (line: string) => void;
}

/** What one seed's run did. */
export interface KvExploreResult {
  seed: number;
  peers: number;
  profile: string;
  /** Operations by outcome. */
  operations: { ok: number; failed: number; unknown: number };
  /** The checker's verdict: null when linearizable and converged, else what went wrong. */
  violation: string | null;
  /** The last trace lines before the end of the run. */
  trace: string[];
}

const KEYS = ["a", "b", "c"];
const TRACE_LINES = 300;

type KvNode = RaftNode<KvCommand, KvResult | KvRefusal | undefined>;

/** Runs one seed. Never throws for a violation: it is in the result. */
export async function exploreKvSeed(
  seed: number,
  options: KvExploreOptions = {},
): Promise<KvExploreResult> {
  const plan = drawFaultPlan(seededRandom(seed, 1), {
    faultyMs: options.faultyMs ?? 20_000,
    peerCounts: [3, 5],
  });
  return await new KvRun(seed, plan, options).run();
}

/** One seed's cluster, clients, faults and checks. */
class KvRun {
  readonly #seed: number;
  readonly #plan: FaultPlan;
  readonly #options: KvExploreOptions;
  readonly #create: CreateNode;
  readonly #sim: Simulator;
  readonly #net: MemoryNetwork;
  readonly #faults: NetworkFaults;
  readonly #n: number;
  readonly #nodes: (KvNode | null)[];
  readonly #machines: KvStateMachine[];
  readonly #disks: (SimPersister | null)[];
  readonly #diskStates: (PersistentState | undefined)[];
  readonly #instances: number[];
  readonly #ends: string[][];
  readonly #recorder: HistoryRecorder;
  readonly #trace: string[] = [];
  readonly #snapshotEvery: number;
  readonly #leaseReads: boolean;
  #stop = false;
  #operations = { ok: 0, failed: 0, unknown: 0 };

  constructor(seed: number, plan: FaultPlan, options: KvExploreOptions) {
    this.#seed = seed;
    this.#plan = plan;
    this.#options = options;
    this.#create = options.create ?? RaftNode.create;
    this.#sim = new Simulator({ seed });
    this.#n = plan.peers;
    this.#net = new MemoryNetwork({
      clock: this.#sim.clock,
      random: this.#sim.random,
      record: (event) => this.#sim.record(event),
    });
    this.#faults = new NetworkFaults(this.#n);
    this.#nodes = new Array(this.#n).fill(null);
    this.#machines = Array.from({ length: this.#n }, () => new KvStateMachine());
    this.#disks = new Array(this.#n).fill(null);
    this.#diskStates = new Array(this.#n).fill(undefined);
    this.#instances = new Array(this.#n).fill(0);
    this.#ends = Array.from({ length: this.#n }, () => []);
    this.#recorder = new HistoryRecorder({ now: () => this.#sim.clock.now() });
    const random = seededRandom(seed, 3);
    this.#snapshotEvery = [5, 20, 10_000][randomInt(random, 0, 2)]!;
    this.#leaseReads = random() < 0.7;
  }

  async run(): Promise<KvExploreResult> {
    let violation: string | null = null;
    try {
      violation = await this.#sim.run(() => this.#main(), {
        timeLimitMs: this.#plan.faultyMs + 120_000,
      });
    } catch (error) {
      violation = `the run failed: ${error instanceof Error ? error.stack : String(error)}`;
    }
    return {
      seed: this.#seed,
      peers: this.#n,
      profile: this.#plan.profile,
      operations: this.#operations,
      violation,
      trace: this.#trace.slice(-TRACE_LINES),
    };
  }

  async #main(): Promise<string | null> {
    this.#log(
      `kv seed ${this.#seed}: ${this.#n} peers, ${this.#plan.profile} faults, snapshots every ${this.#snapshotEvery}, lease reads ${this.#leaseReads}`,
    );
    for (let i = 0; i < this.#n; i++) await this.#start(i);
    const clients = [0, 1, 2, 3, 4, 5].map((id) => this.#client(id));
    for (const { atMs, action } of this.#plan.faults) {
      if (this.#sim.clock.now() >= this.#plan.faultyMs) break;
      const wait = atMs - this.#sim.clock.now();
      if (wait > 0) await sleep(this.#sim.clock, wait);
      await this.#perform(action);
    }
    const rest = this.#plan.faultyMs - this.#sim.clock.now();
    if (rest > 0) await sleep(this.#sim.clock, rest);
    // Heal for good, bring every peer back, let the clients finish, then let the peers converge.
    this.#log("heal: every link, every peer");
    this.#faults.healAll();
    this.#net.setReliable(true);
    for (let i = 0; i < this.#n; i++) if (this.#nodes[i] === null) await this.#start(i);
    this.#applyFaults();
    await sleep(this.#sim.clock, 5_000);
    this.#stop = true;
    await Promise.all(clients);
    const converged = await this.#converge();
    for (let i = 0; i < this.#n; i++) this.#crash(i, false);
    this.#net.close();
    if (converged !== null) return converged;
    const result = checkLinearizable(this.#recorder.history(), { timeoutMs: 20_000 });
    if (result.ok === true) return null;
    if (result.ok === "unknown") {
      return `the checker gave up on key ${result.key} (${result.reason})`;
    }
    return `not linearizable: ${result.explanation}`;
  }

  /** Waits until every peer applied the same data (a write through the log settles it). */
  async #converge(): Promise<string | null> {
    for (let attempt = 0; attempt < 60; attempt++) {
      const leader = this.#leader();
      if (leader !== null) {
        await leader.propose({ op: "delete", key: "settle", clientId: "", seq: 0 }).catch(() => {});
        await sleep(this.#sim.clock, 500);
        const data = this.#machines.map((machine) => JSON.stringify(machine.entries()));
        if (data.every((entry) => entry === data[0])) return null;
      } else {
        await sleep(this.#sim.clock, 500);
      }
    }
    const data = this.#machines.map((machine, i) =>
      `peer ${i}: ${JSON.stringify(machine.entries())}`
    );
    return `the peers did not converge after healing: ${data.join("; ")}`;
  }

  // --- Peers ---

  async #start(i: number): Promise<void> {
    this.#crash(i, false);
    const instance = ++this.#instances[i]!;
    const disk = new SimPersister({
      clock: this.#sim.clock,
      random: this.#sim.random,
      state: this.#diskStates[i] ?? { term: 0, votedFor: null, snapshot: null, log: [] },
    });
    this.#disks[i] = disk;
    const names: string[] = [];
    const ends: ClientEnd[] = [];
    for (let j = 0; j < this.#n; j++) {
      const name = `${i}>${j}#${instance}`;
      ends.push(this.#net.makeEnd(name));
      this.#net.connect(name, `kv-${j}`);
      this.#net.enable(name, true);
      names.push(name);
    }
    for (const name of this.#ends[i]!) this.#net.deleteEnd(name);
    this.#ends[i] = names;
    // A restarted service starts empty: the snapshot on disk and the log rebuild it.
    this.#machines[i] = new KvStateMachine();
    const nodeOptions: RaftNodeOptions<KvCommand, KvResult | KvRefusal | undefined> = {
      id: i,
      peers: ends,
      persister: disk,
      stateMachine: this.#machines[i]!,
      clock: this.#sim.clock,
      random: this.#sim.random,
      trace: (line) => this.#log(line),
      snapshotEveryEntries: this.#snapshotEvery,
      leaseReads: this.#leaseReads,
      onFatal: (error) => this.#log(`peer ${i} FATAL: ${error.message}`),
    };
    const node = await this.#create(nodeOptions);
    this.#nodes[i] = node;
    this.#net.addServer(`kv-${i}`, node);
    this.#applyFaults();
    this.#log(`peer ${i} starts (instance ${instance})`);
  }

  #crash(i: number, log = true): void {
    const node = this.#nodes[i];
    const disk = this.#disks[i];
    if (node === null || node === undefined || disk === null || disk === undefined) return;
    this.#net.deleteServer(`kv-${i}`);
    this.#nodes[i] = null;
    this.#disks[i] = null;
    this.#diskStates[i] = disk.crash();
    // Not awaited: a crashed disk never settles the saves it lost, and close() waits for them.
    void node.close();
    if (log) this.#log(`peer ${i} crashes`);
  }

  #leader(): KvNode | null {
    let best: KvNode | null = null;
    for (const node of this.#nodes) {
      if (node === null || node.status().role !== "leader") continue;
      if (best === null || node.status().term > best.status().term) best = node;
    }
    return best;
  }

  // --- Faults ---

  async #perform(action: FaultPlan["faults"][number]["action"]): Promise<void> {
    this.#log(`fault: ${describeAction(action)}`);
    const random = this.#sim.random;
    const leader = this.#leader()?.id ?? null;
    // Now and then the leader is asked to hand its leadership over (as the key/value example does
    // on SIGTERM), to a given peer or to the most up-to-date one, while the faults go on.
    if (leader !== null && random() < 0.2) {
      const to = random() < 0.5
        ? undefined
        : (leader + randomInt(random, 1, this.#n - 1)) % this.#n;
      // Half the time the target is paused first: its TimeoutNow waits, the leader gives the
      // transfer up, and the target campaigns when it wakes up.
      const paused = to !== undefined && random() < 0.5;
      this.#log(
        `  asks the leader, ${leader}, to hand over to ${to ?? "the most up-to-date peer"}${
          paused ? ", paused" : ""
        }`,
      );
      if (paused) {
        this.#faults.pause(to);
        this.#applyFaults();
        const wakeAfterMs = randomInt(random, 1_000, 3_000);
        sleep(this.#sim.clock, wakeAfterMs).then(() => {
          this.#log(`  peer ${to} wakes up`);
          this.#faults.healPeer(to);
          this.#applyFaults();
        });
      }
      this.#nodes[leader]!.transferLeadership(to).then(
        () => this.#log(`  leader ${leader} handed its leadership over`),
        (error) => this.#log(`  leader ${leader}'s transfer ended: ${(error as Error).name}`),
      );
    }
    // Stale leaders are where reads go wrong: a quarter of the time, the leader is also cut off
    // or paused, whatever else the schedule does.
    if (leader !== null && action.kind !== "isolateLeader" && random() < 0.25) {
      await this.#perform({ kind: "isolateLeader" });
    }
    // Half the time a faulty leader is paused rather than cut off: it wakes up a stale leader.
    if (action.kind === "isolateLeader" && leader !== null && random() < 0.5) {
      this.#log(`  pauses the leader, ${leader}`);
      this.#faults.pause(leader);
      this.#applyFaults();
      return;
    }
    if (this.#faults.perform(action, leader, random, () => this.#applyFaults())) {
      this.#applyFaults();
      return;
    }
    switch (action.kind) {
      case "crash":
        this.#crash(action.peer);
        break;
      case "crashLeader":
        if (leader !== null) this.#crash(leader);
        break;
      case "restart":
        if (this.#nodes[action.peer] === null) await this.#start(action.peer);
        break;
      case "slowSaves":
        this.#disks[action.peer]?.setSaveDelay({ min: 0, max: action.maxMs });
        break;
      case "unreliable":
        this.#net.setReliable(!action.on);
        break;
      case "storm":
        // Leaders crash soon after they are elected, as in the lab's Figure 8 test.
        for (let round = 0; round < Math.min(action.rounds, 10); round++) {
          await sleep(this.#sim.clock, randomInt(random, 50, 500));
          const current = this.#leader();
          if (current !== null) this.#crash(current.id);
          const down = [...Array(this.#n).keys()].filter((i) => this.#nodes[i] === null);
          if (down.length * 2 >= this.#n) await this.#start(down[0]!);
        }
        break;
      default:
        break; // clientBurst: the clients are busy anyway
    }
  }

  #applyFaults(): void {
    for (let i = 0; i < this.#n; i++) {
      for (let j = 0; j < this.#n; j++) {
        const name = this.#ends[i]![j];
        if (name !== undefined && i !== j) {
          this.#net.setEndFaults(name, this.#faults.endFaults(i, j));
        }
      }
    }
  }

  // --- Clients ---

  /** A client: one operation at a time, with retries, until told to stop. */
  async #client(id: number): Promise<void> {
    const random = seededRandom(this.#seed, 10 + id);
    const clientId = `client-${id}`;
    let seq = 0;
    let target = randomInt(random, 0, this.#n - 1);
    while (!this.#stop) {
      await sleep(this.#sim.clock, randomInt(random, 1, 50));
      const key = KEYS[randomInt(random, 0, KEYS.length - 1)]!;
      // Now and then a client tries any peer, as clients behind a load balancer do: a peer that
      // was cut off and still believes it leads gets requests too.
      if (random() < 0.3) target = randomInt(random, 0, this.#n - 1);
      const roll = random();
      if (roll < 0.45) {
        const follower = random() < 0.3;
        // Lease reads fall back to ReadIndex when there is no lease: use them all the time.
        const lease = !follower && this.#leaseReads;
        target = await this.#read(id, key, target, follower, lease, random);
        continue;
      }
      seq++;
      const value: Value = `${id}.${seq}`;
      const command: KvCommand = roll < 0.85
        ? { op: "put", key, value, clientId, seq }
        : { op: "delete", key, clientId, seq };
      target = await this.#write(id, command, target, random);
    }
  }

  async #read(
    client: number,
    key: string,
    target: number,
    follower: boolean,
    lease: boolean,
    random: () => number,
  ): Promise<number> {
    const operation = this.#recorder.invoke(client, key, "read");
    const node = this.#nodes[target];
    if (node === null || node === undefined) {
      operation.fail();
      this.#operations.failed++;
      return randomInt(random, 0, this.#n - 1);
    }
    if (!follower && node.status().role !== "leader") {
      // As the key/value server does: only the leader serves a read unless asked otherwise.
      operation.fail();
      this.#operations.failed++;
      return node.status().leaderId ?? randomInt(random, 0, this.#n - 1);
    }
    try {
      await node.read({ consistency: lease ? "lease" : "linearizable", timeoutMs: 1_000 });
      // Read at once, in the same step as read() resolving: nothing can apply in between.
      const value = this.#machines[target]!.get(key);
      operation.ok(value);
      this.#log(`client ${client} reads ${key} = ${value} from peer ${target}`);
      this.#operations.ok++;
      return target;
    } catch (error) {
      // A read that failed changed nothing: it simply did not happen.
      operation.fail();
      this.#operations.failed++;
      const leaderId = (error as Partial<NotLeaderError>).leaderId;
      if ((error as Error).name === NotLeaderError.name && typeof leaderId === "number") {
        return leaderId;
      }
      return randomInt(random, 0, this.#n - 1);
    }
  }

  async #write(
    client: number,
    command: KvCommand,
    target: number,
    random: () => number,
  ): Promise<number> {
    const operation = command.op === "put"
      ? this.#recorder.invoke(client, command.key, "write", command.value!)
      : this.#recorder.invoke(client, command.key, "delete");
    // Retries keep the sequence number: the session makes the write apply once.
    let mayHaveApplied = false;
    for (let attempt = 0; attempt < 20 && !this.#stop; attempt++) {
      const node = this.#nodes[target];
      if (node === null || node === undefined) {
        target = randomInt(random, 0, this.#n - 1);
        await sleep(this.#sim.clock, 50);
        continue;
      }
      try {
        const result = await node.propose(command, { timeoutMs: 1_000 });
        if (result === undefined || "error" in result) {
          throw new Error(`refused: ${JSON.stringify(result)}`);
        }
        operation.ok();
        this.#operations.ok++;
        this.#log(
          `client ${client} ${command.op}s ${command.key} (${command.value}) on peer ${target}`,
        );
        return target;
      } catch (error) {
        // By name: a mutant's node (a copy of the library) throws its own classes.
        const name = (error as Error).name;
        if (name === NotLeaderError.name) {
          target = (error as NotLeaderError).leaderId ?? randomInt(random, 0, this.#n - 1);
        } else if (name === ProposalDroppedError.name) {
          // Not applied, and it never will be: retrying is safe and keeps nothing unknown.
        } else {
          // Timed out, closed by a crash, or covered by a snapshot: it may have applied. Try
          // another peer, as a client that cannot reach its leader would.
          mayHaveApplied = true;
          target = randomInt(random, 0, this.#n - 1);
        }
        await sleep(this.#sim.clock, randomInt(random, 10, 100));
      }
    }
    if (mayHaveApplied) {
      operation.unknown();
      this.#operations.unknown++;
    } else {
      operation.fail();
      this.#operations.failed++;
    }
    return target;
  }

  // --- Trace ---

  #log(line: string): void {
    const stamped = `${(this.#sim.clock.now() / 1000).toFixed(3).padStart(8)} ${line}`;
    this.#options.onTrace?.(stamped);
    this.#trace.push(stamped);
    if (this.#trace.length > 2 * TRACE_LINES) this.#trace.splice(0, TRACE_LINES);
  }
}
