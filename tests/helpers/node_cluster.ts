/**
 * A cluster of {@linkcode RaftNode}s on the in-memory network, for tests: in a simulator's virtual
 * time by default, with disconnects, crashes and restarts from each peer's saved state.
 *
 * @module
 */

import {
  type ClientEnd,
  MemoryNetwork,
  MemoryPersister,
  type Persister,
  RaftNode,
  type RaftNodeOptions,
  type StateMachine,
} from "../../mod.ts";
import type { Clock, RandomSource } from "../../src/clock.ts";

/** What each node's state machine applied, index by index. */
export class RecordingStateMachine implements StateMachine<string, string> {
  /** index -> command, as applied. */
  readonly applied = new Map<number, string>();
  /** Optional hook, called before each apply returns. */
  onApply: ((command: string, index: number) => void) | null = null;

  /** The indexes of the snapshots this machine was restored from. */
  readonly restoredFrom: number[] = [];

  apply(command: string, index: number): string {
    if (this.applied.has(index)) throw new Error(`Index ${index} applied twice`);
    this.applied.set(index, command);
    this.onApply?.(command, index);
    return `applied ${command} at ${index}`;
  }

  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify([...this.applied]));
  }

  restore(data: Uint8Array, index: number): void {
    const entries = JSON.parse(new TextDecoder().decode(data)) as [number, string][];
    if (entries.some(([at]) => at > index)) {
      throw new Error(`A snapshot through ${index} holds later entries`);
    }
    this.applied.clear();
    for (const [at, command] of entries) this.applied.set(at, command);
    this.restoredFrom.push(index);
  }
}

/** Options for {@linkcode NodeCluster}. */
export interface NodeClusterOptions {
  clock: Clock;
  random: RandomSource;
  /** Extra node options for every node. */
  nodeOptions?: Partial<RaftNodeOptions<string, string>>;
  /** Records network events (a simulator's digest). */
  record?: (event: string) => void;
}

/** N nodes on one in-memory network. */
export class NodeCluster {
  readonly network: MemoryNetwork;
  readonly nodes: (RaftNode<string, string> | null)[];
  readonly machines: RecordingStateMachine[];
  readonly disks: MemoryPersister[];
  readonly #options: NodeClusterOptions;
  readonly #n: number;
  readonly #instance: number[];
  #connected: boolean[];

  private constructor(n: number, options: NodeClusterOptions) {
    this.#n = n;
    this.#options = options;
    this.network = new MemoryNetwork({
      clock: options.clock,
      random: options.random,
      ...(options.record !== undefined ? { record: options.record } : {}),
    });
    this.nodes = new Array(n).fill(null);
    this.machines = [];
    this.disks = [];
    this.#instance = new Array(n).fill(0);
    this.#connected = new Array(n).fill(true);
  }

  /** Starts `n` nodes. */
  static async start(n: number, options: NodeClusterOptions): Promise<NodeCluster> {
    const cluster = new NodeCluster(n, options);
    for (let i = 0; i < n; i++) {
      cluster.disks.push(new MemoryPersister());
      cluster.machines.push(new RecordingStateMachine());
    }
    for (let i = 0; i < n; i++) await cluster.restart(i);
    return cluster;
  }

  /** (Re)starts node i on a copy of its disk, with a fresh state machine. */
  async restart(i: number): Promise<RaftNode<string, string>> {
    await this.crash(i);
    const instance = ++this.#instance[i]!;
    const ends: ClientEnd[] = [];
    for (let j = 0; j < this.#n; j++) {
      const name = `${i}->${j}#${instance}`;
      ends.push(this.network.makeEnd(name));
      this.network.connect(name, `node-${j}`);
    }
    this.machines[i] = new RecordingStateMachine();
    const disk = this.disks[i]!.copy();
    this.disks[i] = disk;
    const node = await RaftNode.create<string, string>({
      id: i,
      peers: ends,
      persister: disk as Persister,
      stateMachine: this.machines[i]!,
      clock: this.#options.clock,
      random: this.#options.random,
      trace: null,
      addresses: [...Array(this.#n).keys()].map((j) => `node-${j}.example`),
      ...this.#options.nodeOptions,
    });
    this.nodes[i] = node;
    this.network.addServer(`node-${i}`, node);
    this.#applyConnectivity();
    return node;
  }

  /** Stops node i (if running) as a crash would; its disk keeps what it saved. */
  async crash(i: number): Promise<void> {
    const node = this.nodes[i];
    if (node === null || node === undefined) return;
    this.network.deleteServer(`node-${i}`);
    this.nodes[i] = null;
    // A crash keeps what the disk holds now: copy it before close() lets anything else finish.
    this.disks[i] = this.disks[i]!.copy();
    await node.close();
  }

  /** Cuts node i off from every other (both ways), or reconnects it. */
  connect(i: number, connected: boolean): void {
    this.#connected[i] = connected;
    this.#applyConnectivity();
  }

  #applyConnectivity(): void {
    for (let i = 0; i < this.#n; i++) {
      if (this.#instance[i] === 0) continue; // not started yet
      for (let j = 0; j < this.#n; j++) {
        const name = `${i}->${j}#${this.#instance[i]}`;
        this.network.enable(name, this.#connected[i]! && this.#connected[j]!);
      }
    }
  }

  /** The node that leads the highest term, if any. */
  leader(): RaftNode<string, string> | null {
    let best: RaftNode<string, string> | null = null;
    for (const node of this.nodes) {
      if (node === null || node.status().role !== "leader") continue;
      if (best === null || node.status().term > best.status().term) best = node;
    }
    return best;
  }

  /** Closes every node and the network. */
  async close(): Promise<void> {
    for (let i = 0; i < this.#n; i++) await this.crash(i);
    this.network.close();
  }
}
