/**
 * An exclusive lock on a persister's store, so that two processes (or two persisters in one
 * process) never write the same Raft state: two peers sharing one log could each grant a vote
 * in the same term.
 *
 * @module
 */

import { PersisterLockedError } from "./errors.ts";

/**
 * Stores locked by this process, by lock file path or by database file identity: flock would
 * refuse them too, but closing a descriptor of a database that this process has open would
 * drop the POSIX locks SQLite holds on it, so a second persister must be refused before it
 * opens one.
 */
const lockedHere = new Set<string>();

/** A held lock; {@linkcode StoreLock.release} gives it up. */
export class StoreLock {
  readonly #key: string;
  readonly #files: Deno.FsFile[];

  private constructor(key: string, files: Deno.FsFile[]) {
    this.#key = key;
    this.#files = files;
  }

  /**
   * Takes an exclusive `flock` on the file at `lockPath` (created if missing), or rejects with a
   * {@linkcode PersisterLockedError} naming `store` if someone else holds it. The kernel releases
   * the lock when the process dies, even by `kill -9`.
   */
  static async take(lockPath: string, store: string): Promise<StoreLock> {
    if (lockedHere.has(lockPath)) throw new PersisterLockedError(store);
    lockedHere.add(lockPath);
    try {
      return new StoreLock(lockPath, [await flockOrThrow(lockPath, store)]);
    } catch (error) {
      lockedHere.delete(lockPath);
      throw error;
    }
  }

  /**
   * Locks the database file at `path` (created empty if missing) by its identity rather than by
   * the name it was given, so that a symbolic or hard link to a database in use is refused like
   * its own path: resolves symbolic links, takes a `flock` on `<real path>.lock`, and on Linux
   * one on the database file itself, which every hard link shares (Linux keeps `flock` apart
   * from the POSIX locks SQLite takes; other systems may not, and there a hard link is not
   * detected). Resolves to the lock and the database's real path; rejects with a
   * {@linkcode PersisterLockedError} naming `store` if someone else holds either lock.
   */
  static async takeDatabase(
    path: string,
    store: string,
  ): Promise<{ lock: StoreLock; realPath: string }> {
    // Creates the file only if nothing is there: a descriptor of a database that SQLite may
    // have open in this process is never opened and closed before the identity check below.
    await Deno.writeFile(path, new Uint8Array(0), { createNew: true }).catch((error) => {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    });
    const realPath = await Deno.realPath(path);
    const { dev, ino } = await Deno.stat(realPath);
    const key = `database ${dev}:${ino}`;
    if (lockedHere.has(key)) throw new PersisterLockedError(store);
    lockedHere.add(key);
    const files: Deno.FsFile[] = [];
    try {
      files.push(await flockOrThrow(`${realPath}.lock`, store));
      if (Deno.build.os === "linux") files.push(await flockOrThrow(realPath, store, false));
      return { lock: new StoreLock(key, files), realPath };
    } catch (error) {
      for (const file of files) file.close();
      lockedHere.delete(key);
      throw error;
    }
  }

  /** Gives the lock up (closing the descriptors releases the flocks). */
  release(): void {
    for (const file of this.#files) file.close();
    lockedHere.delete(this.#key);
  }
}

/**
 * How long a refused `flock` is tried again before the store counts as locked. A lock this
 * process has just released can still be held for a moment: a child process that another part
 * of the program is spawning shares the descriptor until it execs (it is close-on-exec, but the
 * lock belongs to the open file, not to the descriptor). Seen when a persister was closed and
 * reopened while other tests spawned processes.
 */
const LOCK_RETRY_MS = [10, 20, 40, 80, 150];

/**
 * Opens `path` (creating it when `create`) and takes an exclusive `flock` on it, or rejects with
 * a {@linkcode PersisterLockedError} naming `store`.
 */
async function flockOrThrow(path: string, store: string, create = true): Promise<Deno.FsFile> {
  const file = await Deno.open(path, create ? { write: true, create: true } : { read: true });
  let locked = false;
  try {
    locked = await file.tryLock(true);
    for (const delayMs of LOCK_RETRY_MS) {
      if (locked) break;
      await new Promise((resolve) => setTimeout(resolve, delayMs));
      locked = await file.tryLock(true);
    }
  } finally {
    if (!locked) file.close();
  }
  if (!locked) throw new PersisterLockedError(store);
  return file;
}
