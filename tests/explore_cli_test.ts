/**
 * The explorer's command line (`tests/sim/explore.ts`): run on workers, it prints what it prints
 * in one thread, in the same order, but for wall times.
 */

import assert from "node:assert/strict";
import { sanitized } from "./helpers/sanitized.ts";
import { runSeeds, type SeedReply, type SeedRequest } from "./sim/explore.ts";

const EXPLORE = new URL("./sim/explore.ts", import.meta.url).pathname;
const ROOT = new URL("../", import.meta.url).pathname;

/** Runs the explorer with `args`; resolves to its exit code and its output, wall times masked. */
async function explore(args: string[]): Promise<{ code: number; lines: string[] }> {
  const output = await new Deno.Command(Deno.execPath(), {
    args: ["run", `--allow-read=${ROOT}`, EXPLORE, ...args],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  return {
    code: output.code,
    lines: text.trimEnd().split("\n").map((line) =>
      line.replace(/[\d.]+ s (of )?wall( time)?/g, "<wall>")
    ),
  };
}

Deno.test(
  "explore: seeds on two workers print what they print in one thread, in seed order",
  sanitized,
  async () => {
    const args = ["--seeds", "8", "--from", "41", "--faulty-ms", "20000"];
    const [parallel, sequential] = await Promise.all([
      explore([...args, "--jobs", "2"]),
      explore([...args, "--jobs", "1"]),
    ]);
    assert.equal(parallel.code, 0);
    assert.equal(sequential.code, 0);
    assert.deepEqual(parallel.lines, sequential.lines);
    assert.match(parallel.lines[0]!, /^8 seeds \(41\.\.48\): 0 with violations/);
    assert.match(
      parallel.lines.at(-1)!,
      /^Explored kv seeds 41\.\.48: 8 seeds, [1-9]\d* operations ok/,
    );
  },
);

Deno.test(
  "explore: a worker's reply waits for the replies of the seeds before it",
  sanitized,
  async () => {
    // The first worker takes a key/value seed, which runs far longer than the Raft seeds the
    // second worker gets through meanwhile: their replies come first, and must wait.
    const requests: SeedRequest[] = [
      { kind: "kv", seed: 3 },
      ...[1, 2, 3, 4].map((seed) => ({ kind: "raft" as const, seed, options: { faultyMs: 5000 } })),
    ];
    const delivered: SeedReply[] = [];
    await runSeeds(requests, 2, (reply) => delivered.push(reply));
    assert.deepEqual(
      delivered.map((reply) => `${reply.kind} ${reply.seed} ${reply.result.seed}`),
      requests.map((request) => `${request.kind} ${request.seed} ${request.seed}`),
    );
    assert.ok(delivered.every((reply) => reply.result.violation === null));
  },
);
