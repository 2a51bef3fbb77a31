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
  /**
   * Whether a hunt over the first few hundred seeds must catch it. False for a bug so rare that
   * only a long run found it: its regression test names the seed, or scripts the scenario.
   */
  huntable: boolean;
}

/** The classic bugs the issue names, and the fixes of the bugs the explorer found, taken out again. */
export const mutants: Mutant[] = [
  {
    name: "vote not persisted before replying",
    description: "the driver answers RequestVote without waiting for the save of the vote",
    file: "driver.ts",
    find: "    await this.#saveChain;\n    if (this.#dead) return undefined;",
    replace:
      "    if (method !== RequestVote) await this.#saveChain;\n    if (this.#dead) return undefined;",
    huntable: true,
  },
  {
    name: "AppendEntries acknowledged before its entries are saved",
    description:
      "the driver answers AppendEntries without waiting for the save of the entries it appended, so a crash can lose entries the leader counted toward a commit",
    file: "driver.ts",
    find: "    await this.#saveChain;\n    if (this.#dead) return undefined;",
    replace:
      "    if (method !== AppendEntries) await this.#saveChain;\n    if (this.#dead) return undefined;",
    huntable: true,
  },
  {
    name: "vote not marked for saving",
    description:
      "the core grants a vote without marking its hard state changed, so the vote is saved only if something else is",
    file: "raft/core.ts",
    find: "        this.#votedFor = args.candidateId;\n        this.#hardStateChanged = true;",
    replace: "        this.#votedFor = args.candidateId;",
    huntable: true,
  },
  {
    name: "election restriction removed",
    description: "a voter grants its vote whatever the candidate's log (§5.4.1 dropped)",
    file: "raft/core.ts",
    find: "return this.#log.isUpToDate(args.lastLogTerm, args.lastLogIndex);",
    replace: "return true;",
    huntable: true,
  },
  {
    name: "leader commits an old-term entry by counting replicas",
    description: "the leader commits any index stored on a majority, of any term (§5.4.2 dropped)",
    file: "raft/core.ts",
    find: "quorumIndex <= this.#commitIndex || this.#log.termAt(quorumIndex) !== this.#currentTerm",
    replace: "quorumIndex <= this.#commitIndex",
    huntable: true,
  },
  {
    name: "follower truncates its log on a non-conflicting AppendEntries",
    description:
      "a follower drops everything after the request's entries, even when they all match, so a late heartbeat erases acknowledged entries",
    file: "raft/core.ts",
    find:
      "    for (let i = 0; i < entries.length; i++) {\n      const index = prevLogIndex + 1 + i;",
    replace: "    this.#log.truncateFrom(prevLogIndex + 1);\n" +
      "    this.#logChangedFrom(prevLogIndex + 1);\n" +
      "    for (let i = 0; i < entries.length; i++) {\n      const index = prevLogIndex + 1 + i;",
    huntable: true,
  },
  {
    name: "no check-quorum",
    description: "a leader that hears no majority keeps leading (the liveness bug seed 373 found)",
    file: "raft/core.ts",
    find: "if (!this.#tracker.quorumActive()) {",
    replace: "if (false) {",
    huntable: true,
  },
  {
    name: "a snapshot at or below the commit index is installed",
    description:
      "a follower installs a snapshot older than what it committed, so its service goes back in time (Figure 13 installs only what is new)",
    file: "raft/core.ts",
    find: "    if (index <= this.#commitIndex) return reply(offset + data.length, true);",
    replace: "",
    huntable: true,
  },
  {
    name: "a snapshot records the wrong term",
    description:
      "the service's snapshot is saved with the term of the entry before its last index, so followers that install it disagree with the log about that entry",
    file: "raft/core.ts",
    find: "    const term = this.#log.termAt(index)!;\n    this.#log.compact(index, term);",
    replace: "    const term = this.#log.termAt(index - 1)!;\n    this.#log.compact(index, term);",
    huntable: true,
  },
  {
    name: "membership change before an entry of the leader's term commits",
    description:
      "a new leader changes the membership at once, though an uncommitted change of an earlier leader may be in other logs: the single-server change bug, whose fix is to commit an entry of the leader's own term first",
    file: "raft/core.ts",
    find:
      '    if (this.#log.termAt(this.#commitIndex) !== this.#currentTerm) {\n      return {\n        ok: false,\n        reason: "in progress",',
    replace: '    if (false) {\n      return {\n        ok: false,\n        reason: "in progress",',
    huntable: true,
  },
  {
    name: "configurations take effect at commit",
    description:
      "a server counts by the latest committed configuration in its log rather than the latest appended one (thesis §4.1 takes it at append)",
    file: "raft/core.ts",
    find: "    return this.#history.current;",
    replace: "    return this.#history.at(this.#commitIndex);",
    huntable: true,
  },
  {
    name: "learners vote",
    description:
      "candidates ask learners for votes and count them, though only voters' majorities commit: a leader can be elected without what a majority of voters holds",
    file: "raft/tracker.ts",
    find: "    const electorate = configuration.voters;",
    replace: "    const electorate = [...configuration.voters, ...configuration.learners];",
    huntable: true,
  },
  {
    name: "sole voter leads before its vote is saved",
    description:
      "the only voter of a configuration becomes leader as soon as it votes for itself, before the save of its term and vote: a crash brings it back in the term before, to be elected in the same term a second time with another log (the bug the first membership runs found)",
    file: "raft/core.ts",
    find: "    if (this.#hardStateChanged || this.#hardStateSave !== null) return;\n",
    replace: "",
    huntable: true,
  },
  {
    name: "saves one at a time",
    description:
      "the driver starts a save only once the previous one resolved, so with a slow disk saves pile up and replies wait for the pile (the bug seed 32803 found)",
    file: "driver.ts",
    find: "      written = this.#persister.save(change).then(",
    replace: "      written = this.#saveChain.then(() => this.#persister.save(change)).then(",
    huntable: false,
  },
  {
    name: "no pre-vote",
    description:
      "elections start without a pre-vote, so a peer that cannot win keeps taking the votes of a healed majority (the bug seed 58871 found; its regression test is a scripted scenario)",
    file: "driver.ts",
    find: "const preVote = options.preVote ?? true;",
    replace: "const preVote = options.preVote ?? false;",
    huntable: false,
  },
];

/**
 * Bugs of reads that the key/value explorer (`kv_explorer.ts`) must catch: each makes a read
 * return data that can be stale, which only a linearizability check sees.
 */
export const readMutants: Mutant[] = [
  {
    name: "leader reads without ReadIndex",
    description:
      "a leader serves a read from its own state at once, without confirming it still leads: a deposed leader that has not heard of it yet serves stale data",
    file: "node/raft_node.ts",
    find: "if (leader) index = await this.#peer.readIndex();",
    replace: "if (leader) index = this.#peer.core.commitIndex;",
    huntable: true,
  },
  {
    name: "follower reads without asking the leader",
    description:
      "a follower serves a read from its own state, without the leader's read index: it can lag behind writes that already completed",
    file: "node/raft_node.ts",
    find: "else index = await this.#peer.askLeaderForReadIndex();",
    replace: "else index = this.#peer.core.commitIndex;",
    huntable: true,
  },
  {
    name: "lease reads without a quorum's recent answer",
    description:
      "a leader serves lease reads for as long as it believes it leads, not only while a quorum's recent answer bounds the lease (a lease without check-quorum): a leader cut off serves stale data until it steps down",
    file: "raft/core.ts",
    find: "    return now < this.#leaseExpiry() ? this.#commitIndex : null;",
    replace: "    return this.#commitIndex;",
    huntable: true,
  },
];

/**
 * Copies `src/` to a temporary directory, applies `mutant`, and imports the copy's `make`.
 *
 * @throws {Error} If the patch's text does not occur exactly once: the mutant would test nothing.
 */
export async function loadMutant(mutant: Mutant): Promise<MakeRaft> {
  return (await loadMutantModule<{ make: MakeRaft }>(mutant, "driver.ts")).make;
}

/**
 * Copies `src/` to a temporary directory, applies `mutant`, and imports the copy's `module`
 * (a path under `src/`).
 *
 * @throws {Error} If the patch's text does not occur exactly once: the mutant would test nothing.
 */
export async function loadMutantModule<T>(mutant: Mutant, module: string): Promise<T> {
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
    return await import(`file://${copy}/${module}`) as T;
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
  // --seeds N: seeds 1..N per mutant. --all: run every seed and count those that catch it, rather
  // than stop at the first. --only NAME: that mutant alone, huntable or not.
  const index = Deno.args.indexOf("--seeds");
  const seeds = index >= 0 ? Number(Deno.args[index + 1]) : 500;
  const all = Deno.args.includes("--all");
  const onlyIndex = Deno.args.indexOf("--only");
  const only = onlyIndex >= 0 ? Deno.args[onlyIndex + 1] : undefined;
  const chosen = only === undefined
    ? mutants.filter((candidate) => candidate.huntable)
    : mutants.filter((candidate) => candidate.name === only);
  if (chosen.length === 0) {
    console.error(
      `No mutant named "${only}"; the names are: ${mutants.map((m) => m.name).join(", ")}`,
    );
    Deno.exit(2);
  }
  console.log(
    `| mutant | first seed that catches it | property | ${
      all ? "seeds that catch it | " : ""
    }wall time |`,
  );
  console.log(`| --- | ---: | --- | ${all ? "---: | " : ""}---: |`);
  let missed = 0;
  for (const mutant of chosen) {
    const make = await loadMutant(mutant);
    const started = performance.now();
    let first: ExploreResult | null = null;
    let caught = 0;
    if (all) {
      for (let seed = 1; seed <= seeds; seed++) {
        const result = await exploreSeed(seed, { make });
        if (result.violation === null) continue;
        caught++;
        first ??= result;
      }
    } else {
      first = await hunt(make, seeds);
    }
    const wall = `${((performance.now() - started) / 1000).toFixed(1)} s`;
    const count = all ? ` ${caught} of ${seeds} |` : "";
    if (first === null) missed++;
    console.log(
      first === null
        ? `| ${mutant.name} | not caught in ${seeds} seeds | |${count} ${wall} |`
        : `| ${mutant.name} | ${first.seed} | ${first.violation!.property} |${count} ${wall} |`,
    );
  }
  Deno.exit(missed === 0 ? 0 : 1);
}
