/**
 * Opens a durable persister from a child process, to check that a store's lock keeps other
 * processes out.
 *
 * @module
 */

import assert from "node:assert/strict";

/**
 * Runs `deno eval` with `<persister>.open(place)` imported from `module` (a path relative to
 * `src/`), and returns the name of the error it rejected with, or `"opened"`.
 */
export async function openInChildProcess(
  module: string,
  persister: "FilePersister" | "KvPersister",
  place: string,
): Promise<string> {
  const url = new URL(`../../src/${module}`, import.meta.url).href;
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "eval",
      "--unstable-kv",
      `import { ${persister} } from ${JSON.stringify(url)};
       try { await ${persister}.open(${JSON.stringify(place)}); console.log("opened"); }
       catch (error) { console.log(error.name); }
       Deno.exit(0);`,
    ],
    stdout: "piped",
    stderr: "piped",
  });
  const result = await child.output();
  assert.equal(result.code, 0, new TextDecoder().decode(result.stderr));
  return new TextDecoder().decode(result.stdout).trim();
}
