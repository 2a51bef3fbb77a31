/**
 * A `deno task`'s own command line, to run it as a test's subprocess with exactly the
 * permissions the task grants (a test spawning `deno task` itself would also test the task
 * runner's output, and could not hand the process a signal directly).
 *
 * @module
 */

import { fileURLToPath } from "node:url";

/** The repository's root, where tasks run. */
export const root: string = fileURLToPath(new URL("../../", import.meta.url));

/**
 * The arguments after `deno` of `deno task <name>`, e.g. `["run", "--allow-net=127.0.0.1",
 * "examples/cluster.ts"]`; run them with `cwd: root`.
 *
 * @throws {Error} If deno.json has no such task, or it is not a plain `deno` command.
 */
export async function taskArgs(name: string): Promise<string[]> {
  const config = JSON.parse(await Deno.readTextFile(`${root}deno.json`));
  const task: unknown = config.tasks?.[name];
  const command = typeof task === "object" && task !== null && "command" in task
    ? task.command
    : task;
  if (typeof command !== "string") throw new Error(`deno.json has no task ${name}`);
  const [deno, ...args] = command.split(/\s+/);
  if (deno !== "deno" || args.some((arg) => /["'$&|;<>]/.test(arg))) {
    throw new Error(`Task ${name} is not a plain deno command: ${command}`);
  }
  return args;
}
