/**
 * Tester persistence on disk: each peer's state lives in its own Deno.Kv database or persister
 * directory, and every restart reopens it from there.
 */

import { FilePersister } from "../../src/storage/file_persister.ts";
import { KvPersister } from "../../src/storage/kv_persister.ts";
import type { TesterPersistence } from "../lab/tester.ts";

/** The durable persisters the lab scenarios run with. */
export type DurableKind = "kv" | "file";

/** Opens `kind` persisters under a fresh temporary directory, removed by `close()`. */
export function durablePersistence(kind: DurableKind): TesterPersistence {
  let directory: Promise<string> | null = null;
  const open = new Map<number, KvPersister | FilePersister>();
  const started = new Set<number>();
  const place = async (peer: number) => {
    directory ??= Deno.makeTempDir({ prefix: `raft-lab-${kind}-` });
    return `${await directory}/peer-${peer}${kind === "kv" ? ".kv" : ""}`;
  };
  const reopen = async (peer: number) =>
    kind === "kv"
      ? await KvPersister.open(await place(peer))
      : await FilePersister.open(await place(peer));
  return {
    async open(peer) {
      const persister = await reopen(peer);
      open.set(peer, persister);
      started.add(peer);
      return persister;
    },
    async crash(peer, old) {
      // Saves already queued finish (a crash may or may not keep them); later ones are refused,
      // and the next instance reads whatever reached the disk.
      const persister = open.get(peer);
      if (persister !== old || persister === undefined) {
        throw new Error(`Peer ${peer} crashed with a persister it was not given`);
      }
      open.delete(peer);
      await persister.close();
    },
    async saved(peer) {
      const running = open.get(peer);
      if (running !== undefined) return await running.load();
      if (!started.has(peer)) return null;
      // A crashed peer's store is closed: read it as its next instance will.
      const persister = await reopen(peer);
      try {
        return await persister.load();
      } finally {
        await persister.close();
      }
    },
    async close() {
      for (const persister of open.values()) await persister.close();
      open.clear();
      if (directory !== null) await Deno.remove(await directory, { recursive: true });
      directory = null;
    },
  };
}
