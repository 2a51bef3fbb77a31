/**
 * Group commit: writes that arrive while one is being made durable go out together in the next
 * one, still in call order, so that one sync serves many saves.
 *
 * @module
 */

import { PersisterClosedError } from "./errors.ts";

interface Waiting<T> {
  item: T;
  resolve: () => void;
  reject: (error: unknown) => void;
}

/**
 * Serializes batches of items through `flush`. Each {@linkcode GroupCommit.submit} resolves once
 * the batch that held its item was flushed. A failed flush fails its batch and every later
 * submit: after a failed write or sync, what is on disk is unknown, so the owner must reopen.
 */
export class GroupCommit<T> {
  readonly #flush: (items: T[]) => Promise<void>;
  readonly #afterFlush: () => Promise<void>;
  #waiting: Waiting<T>[] = [];
  #running: Promise<void> | null = null;
  #failure: PersisterClosedError | null = null;
  /** Whether a flush or `afterFlush` failed: what is stored is then unknown. */
  #broken = false;

  /**
   * `flush` makes a batch durable; `afterFlush` runs between batches (with none in flight), after
   * the batch's callers were answered: the place for compaction and cleanup.
   */
  constructor(flush: (items: T[]) => Promise<void>, afterFlush?: () => Promise<void>) {
    this.#flush = flush;
    this.#afterFlush = afterFlush ?? (() => Promise.resolve());
  }

  /** Queues `item`; resolves once it is durable. */
  submit(item: T): Promise<void> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    this.#waiting.push({ item, resolve, reject });
    this.#running ??= this.#drain();
    return promise;
  }

  /**
   * Stops accepting items and tasks, and waits until every queued one is settled: items and
   * exclusive tasks that came before, including items queued behind a task.
   */
  async close(reason: string): Promise<void> {
    this.#failure ??= new PersisterClosedError(reason);
    // An exclusive turn of its own comes after every turn already waiting; a task that ends
    // starts the items queued behind it, and this turn waits for those too.
    await this.#exclusive(() => Promise.resolve()).catch(() => undefined);
  }

  /**
   * Runs `task` with no batch in flight and none starting until it ends: for reads that must
   * see one consistent state. Items submitted meanwhile wait, then go out together. Rejects
   * after `close` or a failed flush (what is stored is then unknown).
   */
  exclusive<R>(task: () => Promise<R>): Promise<R> {
    if (this.#failure !== null) return Promise.reject(this.#failure);
    return this.#exclusive(task);
  }

  async #exclusive<R>(task: () => Promise<R>): Promise<R> {
    while (this.#running !== null) await this.#running;
    if (this.#broken) throw this.#failure;
    const { promise, resolve } = Promise.withResolvers<void>();
    this.#running = promise;
    try {
      return await task();
    } finally {
      this.#running = null;
      resolve();
      if (this.#waiting.length > 0) this.#running = this.#drain();
    }
  }

  /** Why submits are refused (after `close` or a failed flush), or `null` while they are taken. */
  get failure(): PersisterClosedError | null {
    return this.#failure;
  }

  async #drain(): Promise<void> {
    while (this.#waiting.length > 0) {
      const batch = this.#waiting;
      this.#waiting = [];
      try {
        await this.#flush(batch.map((waiting) => waiting.item));
      } catch (error) {
        this.#failure = new PersisterClosedError("a write failed", { cause: error });
        this.#broken = true;
        for (const waiting of batch) waiting.reject(error);
        for (const waiting of this.#waiting) waiting.reject(this.#failure);
        this.#waiting = [];
        break;
      }
      for (const waiting of batch) waiting.resolve();
      try {
        await this.#afterFlush();
      } catch (error) {
        this.#failure = new PersisterClosedError("maintenance failed", { cause: error });
        this.#broken = true;
        for (const waiting of this.#waiting) waiting.reject(this.#failure);
        this.#waiting = [];
        break;
      }
    }
    this.#running = null;
  }
}
