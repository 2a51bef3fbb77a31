/**
 * What an example says when it lacks a permission: the permission, in words, and the flags that
 * grant it, before it has tried anything, instead of a prompt or a stack trace on first use.
 *
 * @module
 */

import { isAbsolute, relative } from "node:path";
import { fileURLToPath } from "node:url";

/**
 * The path of `url` (a file next to an example) as a flag should name it: relative to the working
 * directory when it lies under it (`examples/web/page`), else absolute.
 */
export function localPath(url: URL): string {
  const path = fileURLToPath(url);
  const fromHere = relative(Deno.cwd(), path);
  return fromHere === "" || fromHere.startsWith("..") || isAbsolute(fromHere) ? path : fromHere;
}

/** A permission an example needs: the flag that grants it, and whether it is held. */
export interface Needed {
  /** The `--allow-*` flag's name, e.g. `--allow-net`. */
  flag: "--allow-net" | "--allow-read" | "--allow-write" | "--allow-env" | "--allow-run";
  /** The flag's value, e.g. `127.0.0.1`. */
  value: string;
  /** Whether the process holds the permission (asked without prompting). */
  granted(): boolean;
}

function held(descriptor: Deno.PermissionDescriptor): boolean {
  return Deno.permissions.querySync(descriptor).state === "granted";
}

/** Network access to `host` (a host name or address, with a port or not). */
export function net(host: string): Needed {
  return { flag: "--allow-net", value: host, granted: () => held({ name: "net", host }) };
}

/** Read access to `path` (a file or a directory, and everything under it). */
export function read(path: string): Needed {
  return { flag: "--allow-read", value: path, granted: () => held({ name: "read", path }) };
}

/** Write access to `path` (a file or a directory, and everything under it). */
export function write(path: string): Needed {
  return { flag: "--allow-write", value: path, granted: () => held({ name: "write", path }) };
}

/** Access to the environment variable `variable`. */
export function env(variable: string): Needed {
  return { flag: "--allow-env", value: variable, granted: () => held({ name: "env", variable }) };
}

/**
 * The `deno` to start child processes with: this process's own executable when it may run it
 * (with `-A`, or `--allow-run` naming its path), else `deno` as found on the `PATH`, which is
 * what `--allow-run=deno` allows (it names the `PATH` entry, often a link to the executable).
 */
export function denoCommand(): string {
  const own = Deno.permissions.querySync({ name: "run", command: Deno.execPath() });
  return own.state === "granted" ? Deno.execPath() : "deno";
}

/**
 * Permission to run `deno` itself, for examples that start peers as processes: either this
 * process's own executable or `deno` on the `PATH` (what `--allow-run=deno` names).
 */
export function runDeno(): Needed {
  return {
    flag: "--allow-run",
    value: "deno",
    granted: () =>
      held({ name: "run", command: Deno.execPath() }) || held({ name: "run", command: "deno" }),
  };
}

/** What `flag` with `values` grants, in words. */
function describe(flag: Needed["flag"], values: readonly string[]): string {
  const list = listed(values);
  switch (flag) {
    case "--allow-net":
      return `network access to ${list}`;
    case "--allow-read":
      return `read access to ${list}`;
    case "--allow-write":
      return `write access to ${list}`;
    case "--allow-env":
      return `the environment variable${values.length > 1 ? "s" : ""} ${list}`;
    case "--allow-run":
      return `permission to run ${list} (it starts each peer as a process)`;
  }
}

/** Options for {@linkcode requirePermissions}. */
export interface RequireOptions {
  /** The task that runs the example with its permissions, e.g. `deno task demo`. */
  task?: string;
}

/**
 * Checks, without prompting, that the process holds every permission in `needed`; if not, says
 * which it lacks and the flags that grant them all, and exits with code 2. Also turns a
 * permission error that escapes later (a path the check could not foresee) into one line, not a
 * stack trace.
 */
export function requirePermissions(needed: readonly Needed[], options: RequireOptions = {}): void {
  const alternative = options.task === undefined ? "" : ` (or use \`${options.task}\`)`;
  explainPermissionErrors(alternative);
  const missing = byFlag(needed.filter((permission) => !permission.granted()));
  if (missing.size === 0) return;
  const what = listed([...missing].map(([flag, values]) => describe(flag, values)));
  const flags = [...byFlag(needed)].map(([flag, values]) => `${flag}=${values.join(",")}`);
  console.error(`This example needs ${what}: run it with ${flags.join(" ")}${alternative}.`);
  Deno.exit(2);
}

/** `needed`'s values by flag, in order, without repeats. */
function byFlag(needed: readonly Needed[]): Map<Needed["flag"], string[]> {
  const values = new Map<Needed["flag"], string[]>();
  for (const { flag, value } of needed) {
    const list = values.get(flag) ?? [];
    if (!list.includes(value)) list.push(value);
    values.set(flag, list);
  }
  return values;
}

/** `a`, `a and b`, `a, b and c`. */
function listed(items: readonly string[]): string {
  return items.length < 2
    ? items.join("")
    : `${items.slice(0, -1).join(", ")} and ${items[items.length - 1]}`;
}

let explaining = false;

/**
 * From now on, a permission error nobody caught ends the process with one line saying what was
 * refused and, if given, the alternative (e.g. the task to use), and exit code 2. Other errors
 * are left as they are.
 */
function explainPermissionErrors(alternative: string): void {
  if (explaining) return;
  explaining = true;
  const explain = (error: unknown): boolean => {
    if (error instanceof Deno.errors.NotCapable) {
      // Deno's message names the resource and the flag: "Requires read access to "x", run
      // again with the --allow-read flag".
      console.error(`This example lacks a permission. ${error.message}${alternative}.`);
    } else if (error instanceof Deno.errors.PermissionDenied) {
      console.error(`The system refused access: ${error.message}`);
    } else {
      return false;
    }
    Deno.exit(2);
  };
  globalThis.addEventListener("unhandledrejection", (event) => {
    if (explain(event.reason)) event.preventDefault();
  });
  globalThis.addEventListener("error", (event) => {
    if (explain(event.error)) event.preventDefault();
  });
}
