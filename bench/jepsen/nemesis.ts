/**
 * The nemesis of a Jepsen-style run: one fault at a time, each held for a while and then healed,
 * with quiet spells between them, every kind once (in a random order) before any kind twice, all
 * drawn from a seeded random source (the processes' timing is
 * still the machine's, so a seed fixes the schedule, not the run).
 *
 * | fault     | what it does                                                                  |
 * | --------- | ----------------------------------------------------------------------------- |
 * | `kill`    | SIGKILL a peer (the leader half the time), restart it on its data directory   |
 * | `pause`   | SIGSTOP the leader, SIGCONT it later: it wakes up believing it still leads    |
 * | `isolate` | cut every link of one peer (the leader half the time), `reset` or `blackhole` |
 * | `split`   | cut the cluster in two, a majority and a minority (with 3 peers: `isolate`)   |
 * | `deafen`  | the leader hears nobody but everybody hears it (one direction of each link)   |
 *
 * @module
 */

import type { RandomSource } from "../../src/clock.ts";
import type { CutMode } from "../../tests/helpers/tcp_proxy.ts";
import type { JepsenCluster } from "./cluster.ts";

/** The kinds of fault; see the module documentation. */
export type FaultKind = "kill" | "pause" | "isolate" | "split" | "deafen";

/** Every fault kind. */
export const FAULT_KINDS: readonly FaultKind[] = ["kill", "pause", "isolate", "split", "deafen"];

/** One fault injected, for the figures and the timeline. */
export interface Fault {
  /** What was done. */
  kind: FaultKind;
  /** The peers it hit: the killed, paused, isolated or deafened peer, or a split's minority. */
  targets: number[];
  /** Whether the leader (as the nemesis found it) was among the targets. */
  leader: boolean;
  /** How a partition cut its links; undefined for kills and pauses. */
  mode?: CutMode;
  /** When it began, in ms, by the nemesis's clock (see {@linkcode NemesisOptions.now}). */
  at: number;
  /** How long it was held, in ms, until healed. */
  heldMs: number;
}

/** Options for {@linkcode Nemesis}. */
export interface NemesisOptions {
  /** The cluster to attack. */
  cluster: JepsenCluster;
  /** Draws every choice. */
  random: RandomSource;
  /**
   * The kinds to draw from. They are dealt from a shuffled deck, so that every kind comes once
   * before any comes twice. Default: all of them.
   */
  faults?: readonly FaultKind[];
  /** Shortest and longest time a fault is held, in ms. Default 1000 to 5000. */
  holdMs?: readonly [number, number];
  /** Shortest and longest quiet spell before each fault, in ms. Default 500 to 3000. */
  quietMs?: readonly [number, number];
  /** Where to say what it does. Default: nothing. */
  log?: (line: string) => void;
  /** The clock of {@linkcode Fault.at}, in ms. Default: ms since the nemesis was made. */
  now?: () => number;
}

/** Injects faults into a {@linkcode JepsenCluster} until stopped; see the module documentation. */
export class Nemesis {
  /** Every fault injected so far, in order. */
  readonly faults: Fault[] = [];
  readonly #cluster: JepsenCluster;
  readonly #random: RandomSource;
  readonly #kinds: readonly FaultKind[];
  readonly #holdMs: readonly [number, number];
  readonly #quietMs: readonly [number, number];
  readonly #log: (line: string) => void;
  readonly #now: () => number;

  /** A nemesis for `options.cluster`; it does nothing until {@linkcode Nemesis.run}. */
  constructor(options: NemesisOptions) {
    this.#cluster = options.cluster;
    this.#random = options.random;
    this.#kinds = options.faults ?? FAULT_KINDS;
    this.#holdMs = options.holdMs ?? [1000, 5000];
    this.#quietMs = options.quietMs ?? [500, 3000];
    this.#log = options.log ?? (() => {});
    const startedAt = performance.now();
    this.#now = options.now ?? (() => performance.now() - startedAt);
    if (this.#kinds.length === 0) throw new RangeError("The nemesis needs at least one fault kind");
  }

  /**
   * Injects faults one after another until `stop` aborts; the fault held then is healed at once,
   * and every peer is running, resumed and connected when the returned promise resolves.
   */
  async run(stop: AbortSignal): Promise<void> {
    let deck: FaultKind[] = [];
    try {
      while (!stop.aborted) {
        await abortableSleep(this.#between(this.#quietMs), stop);
        if (stop.aborted) break;
        if (deck.length === 0) deck = this.#shuffled(this.#kinds);
        await this.#inject(deck.pop()!, stop);
      }
    } finally {
      await this.healAll();
    }
  }

  /** Heals every fault: restarts killed peers, resumes paused ones, heals every proxy. */
  async healAll(): Promise<void> {
    this.#cluster.heal();
    for (let peer = 0; peer < this.#cluster.size; peer++) {
      this.#cluster.resume(peer);
      if (!this.#cluster.isRunning(peer)) await this.#cluster.startPeer(peer);
    }
  }

  #between([low, high]: readonly [number, number]): number {
    return low + Math.floor(this.#random() * (high - low + 1));
  }

  #shuffled<T>(items: readonly T[]): T[] {
    const copy = [...items];
    for (let i = copy.length - 1; i > 0; i--) {
      const j = Math.floor(this.#random() * (i + 1));
      [copy[i], copy[j]] = [copy[j]!, copy[i]!];
    }
    return copy;
  }

  #pick<T>(items: readonly T[]): T {
    return items[Math.floor(this.#random() * items.length)]!;
  }

  async #inject(kind: FaultKind, stop: AbortSignal): Promise<void> {
    const cluster = this.#cluster;
    const leader = await cluster.leader();
    const peers = Array.from({ length: cluster.size }, (_, peer) => peer);
    // Half the faults that can aim at anyone aim at the leader, when there is one.
    const someone = () => leader !== null && this.#random() < 0.5 ? leader : this.#pick(peers);
    const mode: CutMode = this.#random() < 0.5 ? "reset" : "blackhole";
    const hold = this.#between(this.#holdMs);
    let targets: number[];
    let heal: () => Promise<void> | void;
    let cutMode: CutMode | undefined;
    switch (kind) {
      case "kill": {
        const peer = someone();
        targets = [peer];
        await cluster.kill(peer);
        heal = () => cluster.startPeer(peer);
        break;
      }
      case "pause": {
        const peer = leader ?? this.#pick(peers);
        targets = [peer];
        cluster.pause(peer);
        heal = () => cluster.resume(peer);
        break;
      }
      case "isolate":
      case "split": {
        const size = kind === "split" && cluster.size >= 5 ? Math.floor((cluster.size - 1) / 2) : 1;
        // The minority: a random subset of the right size, with the leader in it half the time.
        const first = someone();
        const rest = peers.filter((peer) => peer !== first);
        targets = [first];
        while (targets.length < size) {
          targets.push(rest.splice(Math.floor(this.#random() * rest.length), 1)[0]!);
        }
        cluster.partition(targets, mode);
        cutMode = mode;
        heal = () => cluster.heal();
        break;
      }
      case "deafen": {
        const peer = leader ?? this.#pick(peers);
        targets = [peer];
        for (const other of peers) if (other !== peer) cluster.cutDirection(peer, other, mode);
        cutMode = mode;
        heal = () => cluster.heal();
        break;
      }
    }
    const at = this.#now();
    const fault: Fault = {
      kind,
      targets,
      leader: leader !== null && targets.includes(leader),
      ...(cutMode === undefined ? {} : { mode: cutMode }),
      at,
      heldMs: 0,
    };
    this.faults.push(fault);
    this.#log(
      `${(at / 1000).toFixed(1)} s: ${kind}${cutMode === undefined ? "" : ` (${cutMode})`} ${
        targets.join(",")
      }${fault.leader ? " (leader)" : ""} for ${hold} ms`,
    );
    await abortableSleep(hold, stop);
    await heal();
    fault.heldMs = this.#now() - at;
  }
}

/** Resolves after `ms`, or as soon as `signal` aborts. */
export function abortableSleep(ms: number, signal: AbortSignal): Promise<void> {
  if (signal.aborted) return Promise.resolve();
  return new Promise((resolve) => {
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}
