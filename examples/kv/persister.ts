/**
 * Where a kv peer keeps its Raft state. Until the durable `KvPersister` lands, state lives in
 * memory, so a restarted peer rebuilds from the leader instead of from its data directory.
 *
 * @module
 */

import { MemoryPersister, type Persister } from "../../mod.ts";

/** Opens the persister for the peer whose data directory is `dataDir`. */
export function openPersister(dataDir: string): Promise<Persister & { close?(): void }> {
  Deno.mkdirSync(dataDir, { recursive: true });
  return Promise.resolve(new MemoryPersister());
}
