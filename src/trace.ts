/**
 * The debug trace: off by default, on when the environment variable `RAFT_DEBUG` is set.
 *
 * @module
 */

import type { TraceSink } from "./types.ts";

/**
 * The trace sink that `RAFT_DEBUG` asks for: `console.error`, each line prefixed with the
 * milliseconds since the process started, or null. `readVariable` reads the variable (tests pass
 * their own, so as not to change the environment of a whole process).
 */
export function traceFromEnvironment(
  readVariable: () => string | undefined = readDebugVariable,
): TraceSink | null {
  const value = readVariable();
  if (value === undefined || value === "" || value === "0") return null;
  // performance.now() counts from the process's start: one time base for every peer, whenever
  // each was made, so that lines of different peers sort by their stamps.
  return (line: string) => console.error(`${performance.now().toFixed(1).padStart(9)} ${line}`);
}

/** `RAFT_DEBUG`, or undefined when unset or not readable (no `--allow-env`: no prompt either). */
function readDebugVariable(): string | undefined {
  try {
    const permission = Deno.permissions.querySync({ name: "env", variable: "RAFT_DEBUG" });
    return permission.state === "granted" ? Deno.env.get("RAFT_DEBUG") : undefined;
  } catch {
    return undefined;
  }
}
