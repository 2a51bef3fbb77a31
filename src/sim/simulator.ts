/**
 * The deterministic simulator's run loop: a virtual clock, a seeded random source and a digest of
 * everything that happened, for running a whole cluster in one process in virtual time.
 *
 * @module
 */

import { setImmediate } from "node:timers";
import type { RandomSource } from "../clock.ts";
import { seededRandom } from "./seeded_random.ts";
import { TraceDigest } from "./trace_digest.ts";
import { VirtualClock } from "./virtual_clock.ts";

/** Options for {@linkcode Simulator}. */
export interface SimulatorOptions {
  /**
   * Fixes every random draw made through {@linkcode Simulator.random}, and so, when the code under
   * test uses only the simulator's clock and random source, the whole run. Default 1.
   */
  seed?: number;
}

/** Options for {@linkcode Simulator.run}. */
export interface SimulatorRunOptions {
  /**
   * Virtual time (ms since the simulator was made) past which the run fails with a
   * {@linkcode SimulationTimeLimitError}: a guard against runs that never finish. Default
   * `Infinity`.
   */
  timeLimitMs?: number;
  /**
   * Most timers that may fire at one virtual instant before the run fails with a
   * {@linkcode SimulationStalledError}: code that keeps scheduling zero-delay timers would keep
   * time from ever moving on. Default 1 000 000, far beyond what a cluster does in one instant.
   */
  maxTimersPerInstant?: number;
  /**
   * Called before each timer fires, when every microtask has run: nothing is in the middle of a
   * step, so this is where invariants can be checked. A throw ends the run with that error.
   * Default: none.
   */
  onQuiescent?: () => void;
}

/**
 * The run's `main` has not settled, yet time cannot move on: no timer is pending, or timers keep
 * firing at one instant.
 */
export class SimulationStalledError extends Error {
  /** The class name, for stack traces. */
  override name = "SimulationStalledError";
}

/** The run passed its `timeLimitMs` of virtual time. */
export class SimulationTimeLimitError extends Error {
  /** The class name, for stack traces. */
  override name = "SimulationTimeLimitError";
}

/**
 * Runs code in virtual time. Everything in the simulation must take its time, timers and random
 * numbers from {@linkcode Simulator.clock} and {@linkcode Simulator.random}, and otherwise use only
 * promises and microtasks: no real timers, no `Math.random`, no I/O. Then
 * {@linkcode Simulator.run} advances time exactly when nothing else can run, a minute of idle
 * cluster time costs milliseconds, and a seed fixes the run; ties between timers due at the same
 * virtual time go in scheduling order.
 *
 * Every fired timer is added to {@linkcode Simulator.digest}, as is every line given to
 * {@linkcode Simulator.record} (a network's messages, say): equal digests mean equal runs.
 *
 * @example Three Raft peers elect a leader within a few virtual seconds
 * ```ts
 * import { make, MemoryNetwork, MemoryPersister, type Raft, Simulator } from "@denoraft/raft";
 *
 * const sim = new Simulator({ seed: 7 });
 * const network = new MemoryNetwork({ clock: sim.clock, random: sim.random });
 * const leader = await sim.run(async () => {
 *   const peers: Raft[] = [];
 *   for (let i = 0; i < 3; i++) {
 *     const ends = [0, 1, 2].map((j) => {
 *       const end = network.makeEnd(`${i}-${j}`);
 *       network.connect(`${i}-${j}`, `server-${j}`);
 *       network.enable(`${i}-${j}`, true);
 *       return end;
 *     });
 *     const raft = await make(ends, i, new MemoryPersister(), () => {}, {
 *       clock: sim.clock,
 *       random: sim.random,
 *     });
 *     network.addServer(`server-${i}`, raft);
 *     peers.push(raft);
 *   }
 *   await new Promise<void>((resolve) => sim.clock.schedule(5_000, resolve)); // 5 virtual s
 *   const found = peers.findIndex((raft) => raft.getState().isLeader);
 *   peers.forEach((raft) => raft.kill());
 *   network.close();
 *   return found;
 * });
 * console.log(`peer ${leader} leads; digest ${sim.digest}`);
 * ```
 */
export class Simulator {
  /** The seed this simulator was made with. */
  readonly seed: number;
  /** The virtual clock: pass it to everything in the simulation. */
  readonly clock: VirtualClock = new VirtualClock();
  /** The seeded random source: pass it to everything in the simulation. */
  readonly random: RandomSource;
  readonly #digest = new TraceDigest();
  #running = false;

  /** Creates a simulator at virtual time 0. */
  constructor(options: SimulatorOptions = {}) {
    this.seed = options.seed ?? 1;
    this.random = seededRandom(this.seed);
  }

  /** Adds an event line to the digest, e.g. a message as a network delivers it. */
  record(event: string): void {
    this.#digest.add(event);
  }

  /** The digest of every fired timer and recorded event so far, as 16 hex digits. */
  get digest(): string {
    return this.#digest.hex;
  }

  /** How many timers and recorded events went into the digest. */
  get eventCount(): number {
    return this.#digest.count;
  }

  /**
   * Calls `main` and runs the simulation until the promise it returns settles; resolves or
   * rejects as it does. Between steps it yields to the event loop with `setImmediate`, which runs
   * only after every pending microtask, then fires the earliest virtual timer.
   *
   * @throws {SimulationStalledError} If `main` is still pending but no timer is, or timers keep
   * firing at one instant.
   * @throws {SimulationTimeLimitError} If virtual time passes `options.timeLimitMs`.
   */
  async run<T>(main: () => Promise<T>, options: SimulatorRunOptions = {}): Promise<T> {
    if (this.#running) throw new Error("Simulator.run() is already running on this simulator");
    this.#running = true;
    const timeLimitMs = options.timeLimitMs ?? Infinity;
    const maxTimersPerInstant = options.maxTimersPerInstant ?? 1_000_000;
    let instant = this.clock.now();
    let timersThisInstant = 0;
    let outcome: { ok: true; value: T } | { ok: false; error: unknown } | null = null;
    try {
      main().then(
        (value) => outcome = { ok: true, value },
        (error) => outcome = { ok: false, error },
      );
      for (;;) {
        await new Promise<void>((resolve) => setImmediate(resolve));
        if (outcome !== null) break;
        options.onQuiescent?.();
        const at = this.clock.nextAt();
        if (at === undefined) {
          throw new SimulationStalledError(
            `Simulation with seed ${this.seed} stalled at ${this.clock.now()} ms: the run has not finished but no timer is pending`,
          );
        }
        if (at > timeLimitMs) {
          throw new SimulationTimeLimitError(
            `Simulation with seed ${this.seed} passed its time limit of ${timeLimitMs} ms`,
          );
        }
        if (at !== instant) {
          instant = at;
          timersThisInstant = 0;
        }
        if (++timersThisInstant > maxTimersPerInstant) {
          throw new SimulationStalledError(
            `Simulation with seed ${this.seed} stalled at ${at} ms: more than ${maxTimersPerInstant} timers fired there without time moving on`,
          );
        }
        const fired = this.clock.fireNext()!;
        this.#digest.add(`timer ${fired.at} #${fired.sequence}`);
      }
    } finally {
      this.#running = false;
    }
    const result = outcome as { ok: true; value: T } | { ok: false; error: unknown };
    if (!result.ok) throw result.error;
    return result.value;
  }
}
