/**
 * Where a kv peer keeps its Raft state: a `KvPersister` (Deno KV, SQLite underneath) in the peer's
 * data directory, so a restarted peer resumes with its term, vote and log.
 *
 * @module
 */

import { join } from "node:path";
import { KvPersister } from "../../mod.ts";

/** Opens the persister for the peer whose data directory is `dataDir`, creating it if needed. */
export async function openPersister(dataDir: string): Promise<KvPersister> {
  await Deno.mkdir(dataDir, { recursive: true });
  return await KvPersister.open(join(dataDir, "raft.kv"));
}
