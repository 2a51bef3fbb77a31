/**
 * Bugs a Jepsen run of the key/value service must catch: each is a textual patch applied to a
 * temporary copy of the repository (`deno.json`, `mod.ts`, `src/`, `examples/kv/`), whose peers
 * the run then starts instead of this checkout's, as `tests/sim/mutants.ts` does for the
 * simulator. `deno task jepsen --mutant NAME` runs one.
 *
 * @module
 */

import { dirname, join } from "node:path";

/** A bug, as a textual patch of one file of the repository. */
export interface ServiceMutant {
  /** What `--mutant` takes. */
  name: string;
  /** What the patch does, in the words of the bug. */
  description: string;
  /** The file to patch, relative to the repository root. */
  file: string;
  /** Each exact text to replace, which must occur exactly once, and its replacement. */
  patches: readonly { find: string; replace: string }[];
  /**
   * Whether the peers must run with `--lease-reads` (and the clients send lease reads), whatever
   * the run's options say.
   */
  leaseReads: boolean;
}

/** The mutants; see the module documentation. */
export const serviceMutants: readonly ServiceMutant[] = [
  {
    name: "leader-read-local",
    description:
      "the leader serves GET from its local state without ReadIndex (no node.read()), so a deposed leader that does not know it yet answers stale values",
    file: "examples/kv/server.ts",
    patches: [{
      find: "    await node.read({",
      replace: '    if (consistent === "follower" || consistent === "lease") await node.read({',
    }],
    leaseReads: false,
  },
  {
    name: "follower-read-local",
    description:
      "a peer serves ?consistent=follower reads from its local state without asking the leader for a read index, so a lagging or cut-off follower answers stale values",
    file: "examples/kv/server.ts",
    patches: [{
      find: "    await node.read({",
      replace: '    if (consistent !== "follower") await node.read({',
    }],
    leaseReads: false,
  },
  {
    name: "lease-unbounded",
    description:
      "RaftCore.leaseRead ignores its lease bound: a leader serves lease reads for as long as it believes it leads, until check-quorum makes it step down",
    file: "src/raft/core.ts",
    patches: [{
      find: "return now < this.#leaseExpiry() ? this.#commitIndex : null;",
      replace: "return this.#commitIndex;",
    }],
    leaseReads: true,
  },
  {
    name: "lease-unbounded-no-check-quorum",
    description:
      "lease-unbounded, and check-quorum never steps down: a leader cut off from the others serves lease reads for as long as the partition lasts",
    file: "src/raft/core.ts",
    patches: [
      {
        find: "return now < this.#leaseExpiry() ? this.#commitIndex : null;",
        replace: "return this.#commitIndex;",
      },
      {
        find: "if (!this.#tracker.quorumActive()) {",
        replace: "if (!this.#tracker.quorumActive() && false) {",
      },
    ],
    leaseReads: true,
  },
];

/** The mutant called `name`. @throws {RangeError} If there is none. */
export function findMutant(name: string): ServiceMutant {
  const mutant = serviceMutants.find((candidate) => candidate.name === name);
  if (mutant === undefined) {
    throw new RangeError(
      `Unknown mutant ${JSON.stringify(name)}; known: ${
        serviceMutants.map((m) => m.name).join(", ")
      }`,
    );
  }
  return mutant;
}

/** The files and folders of the repository a peer needs to run. */
const NEEDED = ["deno.json", "mod.ts", "src", "examples/kv"];

/**
 * Copies what a peer needs to a new temporary directory and applies `mutant`; resolves to the
 * copy's root. The caller removes it.
 *
 * @throws {Error} If a patch's text does not occur exactly once: the mutant would test nothing.
 */
export async function prepareMutant(mutant: ServiceMutant): Promise<string> {
  const root = new URL("../../", import.meta.url).pathname;
  const copy = await Deno.makeTempDir({ prefix: "denoraft-jepsen-mutant-" });
  try {
    for (const item of NEEDED) await copyTree(join(root, item), join(copy, item));
    const path = join(copy, mutant.file);
    let text = await Deno.readTextFile(path);
    for (const { find, replace } of mutant.patches) {
      const occurrences = text.split(find).length - 1;
      if (occurrences !== 1) {
        throw new Error(
          `Mutant "${mutant.name}": the text to patch occurs ${occurrences} times in ${mutant.file}, not once; update the mutant`,
        );
      }
      text = text.replace(find, () => replace);
    }
    await Deno.writeTextFile(path, text);
    return copy;
  } catch (error) {
    await Deno.remove(copy, { recursive: true });
    throw error;
  }
}

async function copyTree(from: string, to: string): Promise<void> {
  const info = await Deno.stat(from);
  if (info.isFile) {
    await Deno.mkdir(dirname(to), { recursive: true });
    await Deno.copyFile(from, to);
    return;
  }
  await Deno.mkdir(to, { recursive: true });
  for await (const entry of Deno.readDir(from)) {
    if (entry.isDirectory || entry.isFile) {
      await copyTree(join(from, entry.name), join(to, entry.name));
    }
  }
}
