/**
 * An exclusive lock on a persister's store, so that two processes (or two persisters in one
 * process) never write the same Raft state: two peers sharing one log could each grant a vote
 * in the same term.
 *
 * @module
 */

import { PersisterLockedError } from "./errors.ts";

/** Lock files held by this process: flock would also refuse them, this names the cause. */
const lockedHere = new Set<string>();

/** A held lock; {@linkcode StoreLock.release} gives it up. */
export class StoreLock {
  readonly #path: string;
  readonly #file: Deno.FsFile;

  private constructor(path: string, file: Deno.FsFile) {
    this.#path = path;
    this.#file = file;
  }

  /**
   * Takes an exclusive `flock` on the file at `lockPath` (created if missing), or rejects with a
   * {@linkcode PersisterLockedError} naming `store` if someone else holds it. The kernel releases
   * the lock when the process dies, even by `kill -9`.
   */
  static async take(lockPath: string, store: string): Promise<StoreLock> {
    if (lockedHere.has(lockPath)) throw new PersisterLockedError(store);
    const file = await Deno.open(lockPath, { write: true, create: true });
    let locked = false;
    try {
      locked = await file.tryLock(true);
    } finally {
      if (!locked) file.close();
    }
    if (!locked) throw new PersisterLockedError(store);
    lockedHere.add(lockPath);
    return new StoreLock(lockPath, file);
  }

  /** Gives the lock up (closing the descriptor releases the flock). */
  release(): void {
    this.#file.close();
    lockedHere.delete(this.#path);
  }
}
