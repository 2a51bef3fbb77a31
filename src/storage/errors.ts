/**
 * Errors that a durable persister's caller is expected to handle.
 *
 * @module
 */

/**
 * Stored state is damaged somewhere other than a torn write at its very end, so loading it could
 * lose acknowledged data. Nothing was changed on disk; an operator must repair or remove the file
 * (or restore the peer from another replica).
 */
export class PersisterCorruptError extends Error {
  /** The damaged file or database. */
  readonly file: string;
  /** Byte offset of the damaged record in `file`, or `-1` when the store has no offsets. */
  readonly offset: number;

  /** Describes damage `detail` found in `file` at `offset`; `options.cause` keeps the error behind it. */
  constructor(file: string, offset: number, detail: string, options?: ErrorOptions) {
    const where = offset >= 0 ? `${file} at offset ${offset}` : file;
    super(
      `Persistent state in ${where} is corrupt: ${detail}. Nothing was loaded or changed; ` +
        `restore the peer's directory from a backup, or remove it and let the peer catch up ` +
        `from the other replicas`,
      options,
    );
    this.name = "PersisterCorruptError";
    this.file = file;
    this.offset = offset;
  }
}

/** Another process (or another persister in this process) holds the store's lock. */
export class PersisterLockedError extends Error {
  /** The locked store: a `FilePersister`'s directory, or a `KvPersister`'s database path. */
  readonly directory: string;

  /** Reports that the store at `directory` is locked by someone else. */
  constructor(directory: string) {
    super(
      `Persister store "${directory}" is locked by another process or persister; ` +
        `close that one first (a lock is released when its process exits, even by kill -9)`,
    );
    this.name = "PersisterLockedError";
    this.directory = directory;
  }
}

/** The persister was closed, or an earlier write failed and left it unusable. */
export class PersisterClosedError extends Error {
  /** Reports why saves are refused. */
  constructor(reason: string, options?: ErrorOptions) {
    super(`Persister is closed: ${reason}; open it again to continue`, options);
    this.name = "PersisterClosedError";
  }
}
