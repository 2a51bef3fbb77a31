/**
 * Stores written by earlier versions of the persisters, kept gzipped in `tests/fixtures/` (see
 * its README for how they were made).
 *
 * @module
 */

import type { LogEntry, PersistChange, PersistentState, Snapshot } from "../../src/types.ts";
import { configuration, snapshotData } from "./persister_contract.ts";

/** Writes the fixture `name` (a `.gz` file in `tests/fixtures/`), unzipped, to `path`. */
export async function unzipFixture(name: string, path: string): Promise<void> {
  const zipped = await Deno.readFile(new URL(`../fixtures/${name}`, import.meta.url));
  const stream = new Blob([zipped]).stream().pipeThrough(new DecompressionStream("gzip"));
  await Deno.writeFile(path, new Uint8Array(await new Response(stream).arrayBuffer()));
}

/** What both format 1 fixtures hold. */
export const FORMAT_1_STATE: PersistentState = {
  term: 3,
  votedFor: 2,
  snapshot: null,
  log: [
    { term: 1, command: "one" },
    { term: 1, command: { two: 2 } },
    { term: 2, command: "b".repeat(70_000) },
    { term: 2, command: [4] },
    { term: 3, command: null },
  ],
};

/**
 * What the format 2 fixtures hold: stores written just before membership changes, whose
 * snapshot has no configuration.
 */
export const FORMAT_2_STATE: PersistentState = {
  term: 2,
  votedFor: 1,
  snapshot: { index: 2, term: 1, data: Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) % 256) },
  log: [
    { term: 1, command: "three" },
    { term: 2, command: null, type: "noop" },
    { term: 2, command: [5] },
  ],
};

const afterFormat2Entry: LogEntry = { term: 3, command: configuration([0, 1, 2]), type: "config" };
const afterFormat2Snapshot: Snapshot = {
  index: 4,
  term: 2,
  data: snapshotData(4, 100),
  configuration: configuration([0, 1]),
};

/**
 * Saves that give a store holding {@linkcode FORMAT_2_STATE} a configuration entry, then a
 * snapshot with a configuration (through index 4, so the entries 3 and 4 of format 2 go), and
 * the state they leave.
 */
export const AFTER_FORMAT_2: { changes: PersistChange[]; state: PersistentState } = {
  changes: [
    { term: 3, votedFor: 0, log: { from: 6, entries: [afterFormat2Entry] } },
    { term: 3, votedFor: 0, snapshot: afterFormat2Snapshot },
  ],
  state: {
    term: 3,
    votedFor: 0,
    snapshot: afterFormat2Snapshot,
    log: [{ term: 2, command: [5] }, afterFormat2Entry],
  },
};
