/**
 * Mutation tests of the explorer: each mutant is a copy of `src/` with one classic Raft bug
 * patched in, and the explorer must catch it within a few hundred seeds.
 *
 * Usage: `deno task mutants [--seeds 500]` prints, per mutant, the first seed that caught it and
 * the property that broke. `tests/explorer_mutants_test.ts` asserts the same.
 *
 * @module
 */

import { type ExploreOptions, type ExploreResult, exploreSeed, type MakeRaft } from "./explorer.ts";

/** A bug, as a textual patch of one file in `src/`. */
export interface Mutant {
  name: string;
  /** What the patch does, in the words of the bug. */
  description: string;
  /** The file under `src/` to patch. */
  file: string;
  /** The exact text to replace; it must occur exactly once. */
  find: string;
  replace: string;
}

/** The classic bugs the issue names, plus check-quorum taken out again (a liveness bug). */
export const mutants: Mutant[] = [
  {
    name: "vote not persisted before replying",
    description: "the driver answers RequestVote without waiting for the save of the vote",
    file: "raft.ts",
    find: "    await this.#saveChain;\n    return this.#dead ? undefined : reply;",
    replace:
      "    if (method !== RequestVote) await this.#saveChain;\n    return this.#dead ? undefined : reply;",
  },
  {
    name: "election restriction removed",
    description: "a voter grants its vote whatever the candidate's log (§5.4.1 dropped)",
    file: "core.ts",
    find: "this.#log.isUpToDate(args.lastLogTerm, args.lastLogIndex);",
    replace: "true;",
  },
  {
    name: "leader commits an old-term entry by counting replicas",
    description: "the leader commits any index stored on a majority, of any term (§5.4.2 dropped)",
    file: "core.ts",
    find:
      "majorityMatch > this.#commitIndex && this.#log.termAt(majorityMatch) === this.#currentTerm",
    replace: "majorityMatch > this.#commitIndex",
  },
  {
    name: "follower truncates its log on a non-conflicting AppendEntries",
    description:
      "a follower drops everything after the request's entries, even when they all match, so a late heartbeat erases acknowledged entries",
    file: "core.ts",
    find:
      "    for (let i = 0; i < entries.length; i++) {\n      const index = prevLogIndex + 1 + i;",
    replace: "    this.#log.truncateFrom(prevLogIndex + 1);\n" +
      "    this.#logChangedFrom(prevLogIndex + 1);\n" +
      "    for (let i = 0; i < entries.length; i++) {\n      const index = prevLogIndex + 1 + i;",
  },
  {
    name: "no check-quorum",
    description: "a leader that hears no majority keeps leading (the liveness bug seed 373 found)",
    file: "core.ts",
    find: "if (this.#heardFrom.size * 2 <= this.#config.peerCount) {",
    replace: "if (false) {",
  },
];

/**
 * Copies `src/` to a temporary directory, applies `mutant`, and imports the copy's `make`.
 *
 * @throws {Error} If the patch's text does not occur exactly once: the mutant would test nothing.
 */
export async function loadMutant(mutant: Mutant): Promise<MakeRaft> {
  const source = new URL("../../src/", import.meta.url);
  const copy = await Deno.makeTempDir({ prefix: "raft-mutant-" });
  try {
    await copyDirectory(source, copy);
    const path = `${copy}/${mutant.file}`;
    const text = await Deno.readTextFile(path);
    const occurrences = text.split(mutant.find).length - 1;
    if (occurrences !== 1) {
      throw new Error(
        `Mutant "${mutant.name}": the text to patch occurs ${occurrences} times in src/${mutant.file}, not once; update the mutant`,
      );
    }
    await Deno.writeTextFile(path, text.replace(mutant.find, mutant.replace));
    const module = await import(`file://${copy}/raft.ts`) as { make: MakeRaft };
    return module.make;
  } finally {
    await Deno.remove(copy, { recursive: true });
  }
}

async function copyDirectory(from: URL, to: string): Promise<void> {
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory) {
      await Deno.mkdir(`${to}/${entry.name}`);
      await copyDirectory(new URL(`${entry.name}/`, from), `${to}/${entry.name}`);
    } else if (entry.isFile) {
      await Deno.copyFile(new URL(entry.name, from), `${to}/${entry.name}`);
    }
  }
}

/** Runs seeds from `first` on `make` until one finds a violation; null if none in `seeds`. */
export async function hunt(
  make: MakeRaft,
  seeds: number,
  first = 1,
  options: ExploreOptions = {},
): Promise<ExploreResult | null> {
  for (let seed = first; seed < first + seeds; seed++) {
    const result = await exploreSeed(seed, { ...options, make });
    if (result.violation !== null) return result;
  }
  return null;
}

if (import.meta.main) {
  const index = Deno.args.indexOf("--seeds");
  const seeds = index >= 0 ? Number(Deno.args[index + 1]) : 500;
  console.log(`| mutant | first seed that catches it | property | wall time |`);
  console.log(`| --- | ---: | --- | ---: |`);
  let missed = 0;
  for (const mutant of mutants) {
    const make = await loadMutant(mutant);
    const started = performance.now();
    const found = await hunt(make, seeds);
    const wall = `${((performance.now() - started) / 1000).toFixed(1)} s`;
    if (found === null) missed++;
    console.log(
      found === null
        ? `| ${mutant.name} | not caught in ${seeds} seeds | | ${wall} |`
        : `| ${mutant.name} | ${found.seed} | ${found.violation!.property} | ${wall} |`,
    );
  }
  Deno.exit(missed === 0 ? 0 : 1);
}
