/// <reference no-default-lib="true" />
/// <reference lib="deno.worker" />
/**
 * One of the workers `explore.ts` runs seeds on, one per core: it receives a `SeedRequest`, runs
 * that seed, and posts back its `SeedReply`. A seed's run is the same here as in the main thread:
 * everything it does is drawn from its seed.
 *
 * @module
 */

import { runSeed, type SeedRequest } from "./explore.ts";

self.onmessage = async (event: MessageEvent<SeedRequest>) => {
  self.postMessage(await runSeed(event.data));
};
