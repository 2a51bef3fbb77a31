/**
 * A persister for simulations: saves take virtual time, and a crash may lose or keep the saves
 * that were still in flight, as a real disk may.
 *
 * @module
 */

import { type Clock, randomInt, type RandomSource } from "../clock.ts";
import { MemoryPersister } from "../storage/memory_persister.ts";
import {
  boundsAfter,
  checkChange,
  copyEntry,
  type LogBounds,
  snapshotOf,
} from "../storage/_persist_change.ts";
import type { PersistChange, PersistentState, Persister } from "../types.ts";

/** Options for {@linkcode SimPersister}. */
export interface SimPersisterOptions {
  /** The simulation's clock, for save delays. */
  clock: Clock;
  /** The simulation's random source, for save delays and for what a crash keeps. */
  random: RandomSource;
  /** State already on the disk (what a previous instance left). Default: empty. */
  state?: PersistentState;
  /**
   * Shortest and longest time a save takes, in ms, drawn uniformly for each save. Default 0 and
   * 0: saves resolve in a microtask, like {@linkcode MemoryPersister}'s.
   */
  saveDelayMs?: { min: number; max: number };
}

interface PendingSave {
  change: PersistChange;
  resolve: () => void;
}

/**
 * A {@linkcode Persister} whose saves complete after a random virtual delay, in call order.
 * {@linkcode SimPersister.crash} ends this instance of the disk: of the saves not yet resolved, a
 * random prefix (possibly none, possibly all) reaches the disk and the rest is lost; only resolved
 * saves are promised. A save is atomic, snapshot and log change together. A restarted peer gets a
 * new `SimPersister` holding the crash's state.
 *
 * A malformed change is refused at once, as {@linkcode MemoryPersister} refuses it, checked
 * against the state that the saves already queued will leave.
 *
 * @example
 * ```ts
 * import { SimPersister, Simulator } from "@denoraft/raft";
 * const sim = new Simulator({ seed: 3 });
 * const disk = new SimPersister({ clock: sim.clock, random: sim.random, saveDelayMs: { min: 5, max: 50 } });
 * disk.save({ term: 1, votedFor: 0 }); // not awaited: in flight when the crash comes
 * const left = disk.crash(); // term 1 or term 0, as the seed decides
 * console.log(left.term);
 * ```
 */
export class SimPersister implements Persister {
  readonly #clock: Clock;
  readonly #random: RandomSource;
  /** What has reached the disk: every resolved save, and maybe some in flight. */
  readonly #durable: MemoryPersister;
  readonly #pending: PendingSave[] = [];
  /** The log's bounds once every queued save is applied: checks new saves. */
  #queued: LogBounds;
  #saveDelayMs: { min: number; max: number };
  /** When the last save in flight completes: saves complete in call order. */
  #lastDoneAt = 0;
  #crashed = false;

  /** Creates a disk holding `options.state` (or nothing). */
  constructor(options: SimPersisterOptions) {
    this.#clock = options.clock;
    this.#random = options.random;
    this.#durable = new MemoryPersister(options.state);
    const snapshotIndex = options.state?.snapshot?.index ?? 0;
    this.#queued = { lastIndex: snapshotIndex + (options.state?.log.length ?? 0), snapshotIndex };
    this.#saveDelayMs = { min: 0, max: 0 };
    this.setSaveDelay(options.saveDelayMs ?? { min: 0, max: 0 });
  }

  /**
   * Changes how long later saves take.
   *
   * @throws {RangeError} Unless 0 <= min <= max.
   */
  setSaveDelay(delayMs: { min: number; max: number }): void {
    const { min, max } = delayMs;
    if (!(min >= 0 && max >= min && Number.isFinite(max))) {
      throw new RangeError(`Save delay must satisfy 0 <= min <= max, got min ${min}, max ${max}`);
    }
    this.#saveDelayMs = { min, max };
  }

  /** Reads the saved state. A crashed disk still reads what the crash left. */
  load(): Promise<PersistentState> {
    return Promise.resolve(this.#durable.state());
  }

  /**
   * Queues `change`; it reaches the disk and resolves after the save delay, and after every
   * earlier save. After {@linkcode SimPersister.crash} the promise never resolves. Rejects at once
   * with a `RangeError` or `TypeError` if the change is malformed; nothing is queued then.
   */
  save(change: PersistChange): Promise<void> {
    if (this.#crashed) return new Promise(() => {});
    const { min, max } = this.#saveDelayMs;
    const atOnce = max === 0 && this.#pending.length === 0;
    let queued = change;
    try {
      checkChange(change, this.#queued);
      // What a disk would hold of a change that waits: the caller may reuse its snapshot's
      // buffer and its entries' objects.
      if (!atOnce) queued = copyChange(change);
    } catch (error) {
      return Promise.reject(error);
    }
    this.#queued = boundsAfter(change, this.#queued);
    if (atOnce) return this.#durable.save(change);
    return new Promise((resolve) => {
      const pending: PendingSave = { change: queued, resolve };
      this.#pending.push(pending);
      const now = this.#clock.now();
      const doneAt = Math.max(now + randomInt(this.#random, min, max), this.#lastDoneAt);
      this.#lastDoneAt = doneAt;
      this.#clock.schedule(doneAt - now, () => {
        if (this.#crashed) return;
        // Saves complete in call order, so this one is the oldest still pending.
        const oldest = this.#pending.shift()!;
        this.#durable.save(oldest.change).then(oldest.resolve);
      });
    });
  }

  /** How many saves are in flight: called, not yet resolved. */
  get pendingSaveCount(): number {
    return this.#pending.length;
  }

  /**
   * Crashes the disk: a random prefix of the saves in flight reaches it (snapshot saves like any
   * other), the rest is lost, and this instance accepts no more. Returns the state a restarted peer will find.
   */
  crash(): PersistentState {
    if (!this.#crashed) {
      this.#crashed = true;
      const kept = randomInt(this.#random, 0, this.#pending.length);
      for (const { change } of this.#pending.slice(0, kept)) this.#durable.save(change);
      this.#pending.length = 0;
    }
    return this.#durable.state();
  }

  /** The state on the disk right now: resolved saves (and, after a crash, the kept ones). */
  state(): PersistentState {
    return this.#durable.state();
  }

  /**
   * The state on the disk right now: the same as {@linkcode SimPersister.state}.
   *
   * @deprecated Use {@linkcode SimPersister.state}: "snapshot" now names Raft's snapshots
   * (`PersistentState.snapshot`), and this method returns the whole state, not a snapshot.
   */
  snapshot(): PersistentState {
    return this.state();
  }
}

/** A copy of `change` that shares no object or buffer with it. */
function copyChange(change: PersistChange): PersistChange {
  const copy: PersistChange = { ...change, ...snapshotOf(change) };
  if (change.log !== undefined) {
    const { from, entries } = change.log;
    copy.log = { from, entries: entries.map((entry, k) => copyEntry(entry, from + k)) };
  }
  return copy;
}
