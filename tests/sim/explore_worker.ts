/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * One of the workers `explore.ts` runs seeds on, one per core: it receives a
 * {@linkcode SeedRequest}, runs that seed, and posts back a {@linkcode SeedReply}. A seed's run
 * is the same here as in the main thread: everything it does is drawn from its seed.
 *
 * @module
 */

import { type ExploreOptions, type ExploreResult, exploreSeed } from "./explorer.ts";
import { exploreKvSeed, type KvExploreResult } from "./kv_explorer.ts";

/** A seed to run, on the Raft explorer or the key/value explorer. */
export type SeedRequest =
  | { kind: "raft"; seed: number; options: Pick<ExploreOptions, "faultyMs" | "peerCounts"> }
  | { kind: "kv"; seed: number };

/** What a seed's run found. */
export type SeedReply =
  | { kind: "raft"; seed: number; result: ExploreResult }
  | { kind: "kv"; seed: number; result: KvExploreResult };

self.onmessage = async (event: MessageEvent<SeedRequest>) => {
  const request = event.data;
  const reply: SeedReply = request.kind === "raft"
    ? { kind: "raft", seed: request.seed, result: await exploreSeed(request.seed, request.options) }
    : { kind: "kv", seed: request.seed, result: await exploreKvSeed(request.seed) };
  self.postMessage(reply);
};
