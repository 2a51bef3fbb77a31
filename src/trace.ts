/**
 * The debug trace: off by default, on when the environment variable `RAFT_DEBUG` is set.
 *
 * @module
 */

import type { TraceSink } from "./types.ts";

/**
 * The trace sink that `RAFT_DEBUG` asks for: `console.error`, each line prefixed with the
 * milliseconds since the process started, or null.
 */
export function traceFromEnvironment(): TraceSink | null {
  let enabled = false;
  try {
    // Ask first, so that a run without --allow-env never shows a permission prompt.
    const permission = Deno.permissions.querySync({ name: "env", variable: "RAFT_DEBUG" });
    const value = permission.state === "granted" ? Deno.env.get("RAFT_DEBUG") : undefined;
    enabled = value !== undefined && value !== "" && value !== "0";
  } catch {
    // No --allow-env: the trace stays off.
  }
  if (!enabled) return null;
  // performance.now() counts from the process's start: one time base for every peer, whenever
  // each was made, so that lines of different peers sort by their stamps.
  return (line: string) => console.error(`${performance.now().toFixed(1).padStart(9)} ${line}`);
}
