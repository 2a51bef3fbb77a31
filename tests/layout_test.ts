/**
 * The protocol folder stays I/O-free: `src/raft/` imports nothing outside itself and touches no
 * clock, timer, random source, file, socket or environment of its own (everything comes in
 * through its inputs), so it runs the same in a test, a simulator and a real process.
 */

import assert from "node:assert/strict";

const protocol = new URL("../src/raft/", import.meta.url);

/** What no file of the protocol may mention: the world outside it. */
const forbidden: [RegExp, string][] = [
  [/\bDeno\./, "Deno"],
  [/\bsetTimeout\b|\bsetInterval\b|\bqueueMicrotask\b/, "a timer"],
  [/\bDate\.now\b|\bperformance\.now\b|\bnew Date\(/, "the clock"],
  [/\bMath\.random\b|\bcrypto\./, "a random source"],
  [/\bfetch\(|\bWebSocket\b/, "the network"],
  [/\bconsole\./, "the console"],
];

Deno.test("the protocol folder imports only its own files and touches nothing outside", async () => {
  const problems: string[] = [];
  let files = 0;
  for await (const entry of Deno.readDir(protocol)) {
    if (!entry.isFile || !entry.name.endsWith(".ts")) continue;
    files++;
    const text = await Deno.readTextFile(new URL(entry.name, protocol));
    const code = text.replace(/\/\*[\s\S]*?\*\/|\/\/.*$/gm, ""); // comments may name anything
    for (const match of code.matchAll(/(?:from|import)\s*\(?\s*["']([^"']+)["']/g)) {
      const specifier = match[1]!;
      if (!/^\.\/[\w.]+\.ts$/.test(specifier)) {
        problems.push(`${entry.name} imports ${specifier}, outside src/raft/`);
      }
    }
    for (const [pattern, what] of forbidden) {
      if (pattern.test(code)) problems.push(`${entry.name} uses ${what} (${pattern})`);
    }
  }
  assert.ok(files >= 5, `expected the protocol's files in ${protocol}, found ${files}`);
  assert.deepEqual(problems, []);
});
