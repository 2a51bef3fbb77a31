/**
 * A child process for the crash test: opens a persister, reports the step it resumes from, then
 * saves {@linkcode crashChange}s as fast as it can, several in flight, printing `ack <step>` as
 * each save resolves, until the test kills it.
 *
 * Usage: deno run -A --unstable-kv tests/helpers/crash_writer.ts <kv|file> <place>
 */

import { FilePersister } from "../../src/storage/file_persister.ts";
import { KvPersister } from "../../src/storage/kv_persister.ts";
import type { Persister } from "../../src/types.ts";
import { boundsAfterChange, crashChange, WRITER_WINDOW } from "./crash_workload.ts";

const [kind, place] = Deno.args;
if ((kind !== "kv" && kind !== "file") || place === undefined) {
  console.error(`Usage: crash_writer.ts <kv|file> <place>, got ${JSON.stringify(Deno.args)}`);
  Deno.exit(2);
}
// A guard, should the test die before it kills this process.
setTimeout(() => Deno.exit(0), 30_000);

const encoder = new TextEncoder();
const say = (line: string) => Deno.stdout.writeSync(encoder.encode(`${line}\n`));

// A small compaction threshold, so that kills also land inside compactions.
const persister: Persister = kind === "kv"
  ? await KvPersister.open(place)
  : await FilePersister.open(place, { compactMinBytes: 32 * 1024 });
const state = await persister.load();
let step = state.term;
const snapshotIndex = state.snapshot?.index ?? 0;
let bounds = { lastIndex: snapshotIndex + state.log.length, snapshotIndex };
say(`ready ${step}`);

const inFlight = new Set<Promise<void>>();
while (true) {
  step++;
  const change = crashChange(step, bounds);
  bounds = boundsAfterChange(change, bounds);
  const acknowledged = step;
  const save = persister.save(change).then(() => {
    say(`ack ${acknowledged}`);
  });
  inFlight.add(save);
  save.finally(() => inFlight.delete(save));
  if (inFlight.size >= WRITER_WINDOW || step % 5 === 0) await Promise.race(inFlight);
}
