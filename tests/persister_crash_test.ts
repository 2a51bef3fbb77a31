/**
 * Kill -9 at random moments: a child process saves through a durable persister as fast as it
 * can (log changes with configuration entries among them, snapshots of up to 900 KB, some with
 * a configuration, both in one save) and is killed with SIGKILL;
 * after every kill the store must hold every save the child saw acknowledged, and be exactly
 * the state after some prefix of its saves.
 */

import assert from "node:assert/strict";
import { FilePersister } from "../src/storage/file_persister.ts";
import { KvPersister } from "../src/storage/kv_persister.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import {
  type Bounds,
  boundsAfterChange,
  crashChange,
  isSnapshotStep,
  WRITER_WINDOW,
} from "./helpers/crash_workload.ts";
import { randomInt } from "../src/clock.ts";
import { seededRandom } from "../src/sim/seeded_random.ts";
import { sanitized } from "./helpers/sanitized.ts";

const KILLS = 100;
const WRITER = new URL("./helpers/crash_writer.ts", import.meta.url).pathname;

interface RoundResult {
  /** The step the writer resumed from, or -1 if it was killed before it said. */
  resumedAt: number;
  /** The highest step the writer saw acknowledged, or -1. */
  lastAcknowledged: number;
}

/** Runs the writer once and kills it `delayMs` after it is ready (or after start). */
async function killedWriter(
  kind: "kv" | "file",
  place: string,
  delayMs: number,
  waitForReady: boolean,
): Promise<RoundResult> {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--unstable-kv", WRITER, kind, place],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const result: RoundResult = { resumedAt: -1, lastAcknowledged: -1 };
  const { promise: ready, resolve: onReady } = Promise.withResolvers<void>();
  const reading = (async () => {
    let text = "";
    for await (const chunk of child.stdout.pipeThrough(new TextDecoderStream())) {
      text += chunk;
      const lines = text.split("\n");
      text = lines.pop() ?? "";
      for (const line of lines) {
        const [word, number] = line.split(" ");
        if (word === "ready") {
          result.resumedAt = Number(number);
          onReady();
        } else if (word === "ack") {
          result.lastAcknowledged = Math.max(result.lastAcknowledged, Number(number));
        }
      }
    }
    onReady();
  })();
  const errors = new Response(child.stderr).text();
  if (waitForReady) await ready;
  await new Promise((resolve) => setTimeout(resolve, delayMs));
  child.kill("SIGKILL");
  const status = await child.status;
  await reading;
  const stderr = await errors;
  assert.equal(status.signal, "SIGKILL", `the writer ended by itself (${status.code}): ${stderr}`);
  assert.equal(stderr, "", "the writer printed errors");
  return result;
}

for (const kind of ["kv", "file"] as const) {
  Deno.test(
    `${kind} persister: every acknowledged save survives ${KILLS} kill -9s`,
    sanitized,
    async () => {
      const directory = await Deno.makeTempDir({ prefix: `raft-crash-${kind}-` });
      const place = kind === "kv" ? `${directory}/peer.kv` : `${directory}/peer`;
      const random = seededRandom(kind === "kv" ? 11 : 12);
      const model = new MemoryPersister();
      let modelStep = 0;
      let modelBounds: Bounds = { lastIndex: 0, snapshotIndex: 0 };
      let acknowledged = 0;
      let roundsWithAcks = 0;
      let snapshotsAcknowledged = 0;
      let killsWithSnapshotInFlight = 0;
      /** Configuration entries and snapshot configurations among the saves the stores held. */
      let configurations = 0;
      try {
        for (let round = 1; round <= KILLS; round++) {
          // One round in five kills the writer while it opens: recovery must survive that too.
          const whileOpening = round % 5 === 0;
          const delay = whileOpening ? randomInt(random, 0, 150) : randomInt(random, 0, 80);
          const run = await killedWriter(kind, place, delay, !whileOpening);
          const persister = kind === "kv"
            ? await KvPersister.open(place)
            : await FilePersister.open(place);
          const state = await persister.load();
          await persister.close();

          const floor = Math.max(run.lastAcknowledged, run.resumedAt, modelStep);
          const ceiling = Math.max(floor, run.lastAcknowledged) + WRITER_WINDOW;
          const context = `round ${round} (delay ${delay} ms, resumed at ${run.resumedAt}, ` +
            `last acknowledged ${run.lastAcknowledged}): reopened at step ${state.term}`;
          assert.ok(state.term >= floor, `${context}, lost acknowledged saves up to ${floor}`);
          assert.ok(state.term <= ceiling, `${context}, beyond any save the writer made`);
          while (modelStep < state.term) {
            modelStep++;
            const change = crashChange(modelStep, modelBounds);
            configurations += (change.log?.entries ?? []).filter((entry) =>
              entry.type === "config"
            ).length;
            if (change.snapshot?.configuration !== undefined) configurations++;
            await model.save(change);
            modelBounds = boundsAfterChange(change, modelBounds);
          }
          assert.deepEqual(state, model.state(), `${context}, with a state no prefix gives`);
          if (run.lastAcknowledged > run.resumedAt) {
            roundsWithAcks++;
            acknowledged += run.lastAcknowledged - run.resumedAt;
            for (let step = run.resumedAt + 1; step <= run.lastAcknowledged; step++) {
              if (isSnapshotStep(step)) snapshotsAcknowledged++;
            }
            const inFlight = Array.from({ length: WRITER_WINDOW }, (_, k) => floor + 1 + k);
            if (inFlight.some(isSnapshotStep)) killsWithSnapshotInFlight++;
          }
        }
        // Guards against a vacuous pass: the kills must have landed among acknowledged saves.
        assert.ok(
          roundsWithAcks >= KILLS / 2,
          `only ${roundsWithAcks} of ${KILLS} rounds saw a save acknowledged`,
        );
        // And snapshot saves must have been among them, and among the saves a kill cut short.
        assert.ok(snapshotsAcknowledged >= 20, `only ${snapshotsAcknowledged} snapshot saves`);
        assert.ok(
          killsWithSnapshotInFlight >= 5,
          `only ${killsWithSnapshotInFlight} kills came with a snapshot save in flight`,
        );
        // And configurations among what the stores held, checked like the rest.
        assert.ok(configurations >= 20, `only ${configurations} configurations were saved`);
        console.log(
          `${kind}: ${acknowledged} saves acknowledged over ${roundsWithAcks} rounds, ` +
            `${snapshotsAcknowledged} of them with snapshots; ${killsWithSnapshotInFlight} ` +
            `kills with a snapshot save possibly in flight; ${configurations} configurations`,
        );
      } finally {
        await Deno.remove(directory, { recursive: true });
      }
    },
  );
}
