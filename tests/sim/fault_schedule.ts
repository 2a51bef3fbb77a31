/**
 * The explorer's fault model: from a seed, a schedule of network faults, crashes, slow disks and
 * client requests over a stretch of virtual time, then the choice of the majority "core" that
 * heals for the liveness phase. The schedule is drawn before the run from its own random stream,
 * so it reads the same whatever the peers do.
 *
 * @module
 */

import { randomInt, type RandomSource } from "../../src/clock.ts";

/** How messages fare in one direction between two peers. */
export interface DirectionFault {
  /** Every message is lost. */
  cut: boolean;
  /** Messages are held back until the fault is lifted. */
  clogged: boolean;
  /** Probability that a message is lost. */
  loss: number;
  /** Probability that a request is delivered twice. */
  duplication: number;
  /** Messages wait up to this long, so they reorder; long delays when large. */
  maxDelayMs: number;
}

/** One step of a schedule. Peers are numbers; groups are lists of peers. */
export type FaultAction =
  | { kind: "isolate"; peer: number }
  | { kind: "isolateLeader" }
  | { kind: "split"; minority: number[] }
  | { kind: "oneWay"; from: number; to: number }
  | { kind: "deafen"; peer: number } // hears nobody, but everyone hears it
  | { kind: "mute"; peer: number } // hears everyone, but nobody hears it
  | { kind: "clog"; from: number; to: number }
  | { kind: "degrade"; from: number; to: number; fault: DirectionFault }
  | { kind: "healSome"; count: number } // lift faults of `count` random directions
  | { kind: "healAll" }
  | { kind: "crash"; peer: number }
  | { kind: "crashLeader" }
  | { kind: "restart"; peer: number } // the peer, if it is down
  | { kind: "slowSaves"; peer: number; maxMs: number } // 0: fast again
  | { kind: "unreliable"; on: boolean } // the lab's 10% loss and short delays, everywhere
  | { kind: "clientBurst"; count: number };

/** A timed action. */
export interface ScheduledFault {
  atMs: number;
  action: FaultAction;
}

/** A whole run's plan. */
export interface FaultPlan {
  /** The mix of faults: "mixed", "network" or "crashes". */
  profile: string;
  peers: number;
  /** Length of the faulty phase, in virtual ms. */
  faultyMs: number;
  faults: ScheduledFault[];
  /** Mean pause between a client's `start()` calls, in ms. */
  clientIntervalMs: number;
  /** The peers that heal for good in the liveness phase: a majority. */
  core: number[];
}

/** Options for {@linkcode drawFaultPlan}. */
export interface FaultPlanOptions {
  /** Cluster sizes to choose from. Default [3, 5, 7]. */
  peerCounts?: number[];
  /** Length of the faulty phase in ms. Default 60 000. */
  faultyMs?: number;
}

/** How often each kind of fault comes up, relative to the others, in one profile. */
type Weights = Record<FaultAction["kind"], number>;

/**
 * Seeds choose among profiles, so that some runs are mostly partitions, some mostly crashes (the
 * lab's Figure 8 storm: leaders crash soon after they are elected) and some a mix.
 */
const profiles: Record<string, { weights: Weights; meanGapsMs: number[] }> = {
  mixed: {
    weights: {
      isolate: 8,
      isolateLeader: 7,
      split: 6,
      oneWay: 6,
      deafen: 4,
      mute: 3,
      clog: 6,
      degrade: 8,
      healSome: 12,
      healAll: 4,
      crash: 8,
      crashLeader: 4,
      restart: 10,
      slowSaves: 5,
      unreliable: 3,
      clientBurst: 6,
    },
    meanGapsMs: [300, 800, 1500, 3000, 5000],
  },
  network: {
    weights: {
      isolate: 8,
      isolateLeader: 8,
      split: 8,
      oneWay: 8,
      deafen: 5,
      mute: 4,
      clog: 8,
      degrade: 10,
      healSome: 16,
      healAll: 4,
      crash: 1,
      crashLeader: 1,
      restart: 3,
      slowSaves: 2,
      unreliable: 3,
      clientBurst: 5,
    },
    meanGapsMs: [200, 500, 1000, 2000],
  },
  crashes: {
    weights: {
      isolate: 2,
      isolateLeader: 2,
      split: 1,
      oneWay: 1,
      deafen: 0,
      mute: 0,
      clog: 1,
      degrade: 2,
      healSome: 3,
      healAll: 2,
      crash: 6,
      crashLeader: 14,
      restart: 20,
      slowSaves: 8,
      unreliable: 2,
      clientBurst: 8,
    },
    meanGapsMs: [100, 200, 400, 800],
  },
};

/** Draws a plan from `random`. */
export function drawFaultPlan(random: RandomSource, options: FaultPlanOptions = {}): FaultPlan {
  const peerCounts = options.peerCounts ?? [3, 5, 7];
  const faultyMs = options.faultyMs ?? 60_000;
  const pick = <T>(items: readonly T[]): T => items[randomInt(random, 0, items.length - 1)]!;
  const peers = pick(peerCounts);
  const peer = () => randomInt(random, 0, peers - 1);
  const otherThan = (a: number) => (a + randomInt(random, 1, peers - 1)) % peers;
  const subset = (size: number) => shuffle(random, [...Array(peers).keys()]).slice(0, size);
  const profileName = pick(Object.keys(profiles));
  const profile = profiles[profileName]!;
  const kinds = Object.entries(profile.weights) as [FaultAction["kind"], number][];
  const totalWeight = kinds.reduce((sum, [, weight]) => sum + weight, 0);
  const drawKind = (): FaultAction["kind"] => {
    let roll = random() * totalWeight;
    for (const [kind, weight] of kinds) {
      roll -= weight;
      if (roll < 0) return kind;
    }
    return kinds.at(-1)![0];
  };
  const draw = (kind: FaultAction["kind"]): FaultAction => {
    switch (kind) {
      case "isolate":
      case "deafen":
      case "mute":
      case "crash":
      case "restart":
        return { kind, peer: peer() };
      case "isolateLeader":
      case "crashLeader":
      case "healAll":
        return { kind };
      case "split":
        return { kind, minority: subset(randomInt(random, 1, Math.floor(peers / 2))) };
      case "oneWay":
      case "clog": {
        const from = peer();
        return { kind, from, to: otherThan(from) };
      }
      case "degrade": {
        const from = peer();
        return {
          kind,
          from,
          to: otherThan(from),
          fault: {
            cut: false,
            clogged: false,
            loss: pick([0, 0.1, 0.3, 0.6]),
            duplication: pick([0, 0, 0.1, 0.3]),
            maxDelayMs: pick([0, 20, 100, 500, 3000]),
          },
        };
      }
      case "healSome":
        return { kind, count: randomInt(random, 1, peers) };
      case "slowSaves":
        return { kind, peer: peer(), maxMs: pick([0, 5, 50, 300]) };
      case "unreliable":
        return { kind, on: random() < 0.5 };
      case "clientBurst":
        return { kind, count: randomInt(random, 2, 20) };
    }
  };
  const meanGapMs = pick(profile.meanGapsMs);
  const faults: ScheduledFault[] = [];
  let atMs = randomInt(random, 0, 2000);
  while (atMs < faultyMs) {
    faults.push({ atMs, action: draw(drawKind()) });
    // Exponential gaps, with an occasional flurry of faults at the same instant.
    atMs += random() < 0.1 ? 0 : Math.ceil(-Math.log(1 - random()) * meanGapMs);
  }
  const clientIntervalMs = pick([20, 100, 300, 1000]);
  const core = subset(Math.floor(peers / 2) + 1).sort((a, b) => a - b);
  return { profile: profileName, peers, faultyMs, faults, clientIntervalMs, core };
}

/** Shuffles `items` in place (Fisher-Yates) and returns it. */
export function shuffle<T>(random: RandomSource, items: T[]): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = randomInt(random, 0, i);
    [items[i], items[j]] = [items[j]!, items[i]!];
  }
  return items;
}

/** A one-line description of an action, for traces. */
export function describeAction(action: FaultAction): string {
  const { kind, ...rest } = action;
  const fields = Object.entries(rest).map(([key, value]) => `${key}=${JSON.stringify(value)}`);
  return [kind, ...fields].join(" ");
}
