/**
 * The network half of the explorers' fault model: how messages fare in each direction between
 * two peers, the schedule's network actions applied to that table, and the per-end faults of
 * the in-memory network that carry it out.
 *
 * @module
 */

import type { EndFaults } from "../../mod.ts";
import type { RandomSource } from "../../src/clock.ts";
import { type DirectionFault, type FaultAction, shuffle } from "./fault_schedule.ts";

/** A direction where every message gets through, at once. */
export const healthy: DirectionFault = {
  cut: false,
  clogged: false,
  loss: 0,
  duplication: 0,
  maxDelayMs: 0,
};

/** Whether a direction is healthy. */
export function isHealthy(fault: DirectionFault): boolean {
  return !fault.cut && !fault.clogged && fault.loss === 0 && fault.duplication === 0 &&
    fault.maxDelayMs === 0;
}

/** The state of every direction between `n` peers. */
export class NetworkFaults {
  readonly #n: number;
  /** #directions[from][to]: how messages from `from` to `to` fare. */
  readonly #directions: DirectionFault[][];

  /** A healthy network of `n` peers. */
  constructor(n: number) {
    this.#n = n;
    this.#directions = Array.from(
      { length: n },
      () => Array.from({ length: n }, () => ({ ...healthy })),
    );
  }

  /**
   * Applies a network action of the schedule; false for any other kind. `leader` is who leads
   * at the moment (for `isolateLeader`); `heal` is called after each direction `healSome` lifts,
   * so that clogs release what they held in the order they heal.
   */
  perform(
    action: FaultAction,
    leader: number | null,
    random: RandomSource,
    heal: (from: number, to: number) => void,
  ): boolean {
    const all = [...Array(this.#n).keys()];
    switch (action.kind) {
      case "isolate":
        this.isolate(action.peer);
        return true;
      case "isolateLeader":
        if (leader !== null) this.isolate(leader);
        return true;
      case "split":
        for (const a of action.minority) {
          for (const b of all) {
            if (action.minority.includes(b)) continue;
            this.#cut(a, b);
            this.#cut(b, a);
          }
        }
        return true;
      case "oneWay":
        this.#cut(action.from, action.to);
        return true;
      case "deafen":
        for (const j of all) this.#cut(j, action.peer);
        return true;
      case "mute":
        for (const j of all) this.#cut(action.peer, j);
        return true;
      case "clog":
        this.#directions[action.from]![action.to] = { ...healthy, clogged: true };
        return true;
      case "degrade":
        this.#directions[action.from]![action.to] = { ...action.fault };
        return true;
      case "healSome": {
        const faulty: [number, number][] = [];
        for (const a of all) {
          for (const b of all) {
            if (a !== b && !isHealthy(this.#directions[a]![b]!)) faulty.push([a, b]);
          }
        }
        // Lifted in random order: a clog's held messages go out as its link heals.
        for (const [a, b] of shuffle(random, faulty).slice(0, action.count)) {
          this.#directions[a]![b] = { ...healthy };
          heal(a, b);
        }
        return true;
      }
      case "healAll":
        this.healAll();
        return true;
      default:
        return false;
    }
  }

  /** Lifts the faults between `a` and `b`, both ways. */
  healLink(a: number, b: number): void {
    this.#directions[a]![b] = { ...healthy };
    this.#directions[b]![a] = { ...healthy };
  }

  /** Lifts every fault to and from `peer`. */
  healPeer(peer: number): void {
    for (let j = 0; j < this.#n; j++) {
      this.#directions[peer]![j] = { ...healthy };
      this.#directions[j]![peer] = { ...healthy };
    }
  }

  /** Cuts `peer` off from every other peer, both ways. */
  isolate(peer: number): void {
    for (let j = 0; j < this.#n; j++) {
      this.#cut(peer, j);
      this.#cut(j, peer);
    }
  }

  /**
   * Holds every message to and from `peer` until healed, as a process that stopped (SIGSTOP)
   * would: what it was sent waits, and goes through when it resumes.
   */
  pause(peer: number): void {
    for (let j = 0; j < this.#n; j++) {
      if (j === peer) continue;
      this.#directions[peer]![j] = { ...healthy, clogged: true };
      this.#directions[j]![peer] = { ...healthy, clogged: true };
    }
  }

  /** Heals every direction between the peers of `group`. */
  healAmong(group: readonly number[]): void {
    for (const a of group) for (const b of group) this.#directions[a]![b] = { ...healthy };
  }

  /** Heals every direction. */
  healAll(): void {
    this.healAmong([...Array(this.#n).keys()]);
  }

  /** The faults of the end on which `from` calls `to`: requests go from->to, replies to->from. */
  endFaults(from: number, to: number): EndFaults {
    const out = this.#directions[from]![to]!;
    const back = this.#directions[to]![from]!;
    return {
      requestLoss: out.cut ? 1 : out.loss,
      replyLoss: back.cut ? 1 : back.loss,
      duplication: out.duplication,
      maxDelayMs: Math.max(out.maxDelayMs, back.maxDelayMs),
      requestsClogged: out.clogged,
      repliesClogged: back.clogged,
    };
  }

  #cut(from: number, to: number): void {
    if (from !== to) this.#directions[from]![to] = { ...healthy, cut: true };
  }
}
