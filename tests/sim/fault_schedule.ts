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

/** Draws a plan from `random`. */
export function drawFaultPlan(random: RandomSource, options: FaultPlanOptions = {}): FaultPlan {
  const peerCounts = options.peerCounts ?? [3, 5, 7];
  const faultyMs = options.faultyMs ?? 60_000;
  const pick = <T>(items: readonly T[]): T => items[randomInt(random, 0, items.length - 1)]!;
  const peers = pick(peerCounts);
  const peer = () => randomInt(random, 0, peers - 1);
  const otherThan = (a: number) => (a + randomInt(random, 1, peers - 1)) % peers;
  const subset = (size: number) => shuffle(random, [...Array(peers).keys()]).slice(0, size);
  // Some runs are calm, some stormy: the mean pause between faults is 300 ms to 5 s.
  const meanGapMs = pick([300, 800, 1500, 3000, 5000]);
  const faults: ScheduledFault[] = [];
  let atMs = randomInt(random, 0, 2000);
  while (atMs < faultyMs) {
    const roll = random();
    let action: FaultAction;
    if (roll < 0.08) action = { kind: "isolate", peer: peer() };
    else if (roll < 0.15) action = { kind: "isolateLeader" };
    else if (roll < 0.21) {
      action = { kind: "split", minority: subset(randomInt(random, 1, Math.floor(peers / 2))) };
    } else if (roll < 0.27) {
      const from = peer();
      action = { kind: "oneWay", from, to: otherThan(from) };
    } else if (roll < 0.31) action = { kind: "deafen", peer: peer() };
    else if (roll < 0.34) action = { kind: "mute", peer: peer() };
    else if (roll < 0.40) {
      const from = peer();
      action = { kind: "clog", from, to: otherThan(from) };
    } else if (roll < 0.48) {
      const from = peer();
      action = {
        kind: "degrade",
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
    } else if (roll < 0.60) action = { kind: "healSome", count: randomInt(random, 1, peers) };
    else if (roll < 0.64) action = { kind: "healAll" };
    else if (roll < 0.72) action = { kind: "crash", peer: peer() };
    else if (roll < 0.76) action = { kind: "crashLeader" };
    else if (roll < 0.86) action = { kind: "restart", peer: peer() };
    else if (roll < 0.91) {
      action = { kind: "slowSaves", peer: peer(), maxMs: pick([0, 5, 50, 300]) };
    } else if (roll < 0.94) action = { kind: "unreliable", on: random() < 0.5 };
    else action = { kind: "clientBurst", count: randomInt(random, 2, 20) };
    faults.push({ atMs, action });
    // Exponential gaps, with an occasional flurry of faults at the same instant.
    atMs += random() < 0.1 ? 0 : Math.ceil(-Math.log(1 - random()) * meanGapMs);
  }
  const clientIntervalMs = pick([20, 100, 300]);
  const core = subset(Math.floor(peers / 2) + 1).sort((a, b) => a - b);
  return { peers, faultyMs, faults, clientIntervalMs, core };
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
