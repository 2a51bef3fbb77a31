/**
 * `deno task cluster` as a person runs it, with the task's permissions: Ctrl-C stops every peer
 * and removes the directory the run made, or, given `--data`, leaves the data there and says so.
 */

import assert from "node:assert/strict";
import { root, taskArgs } from "./helpers/tasks.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** A running `deno task cluster`, its output read as it comes. */
class RunningCluster {
  readonly #child: Deno.ChildProcess;
  readonly #reader: ReadableStreamDefaultReader<string>;
  output = "";

  constructor(args: string[]) {
    this.#child = new Deno.Command(Deno.execPath(), {
      args: ["run", "--no-prompt", ...args.slice(1)],
      cwd: root,
      env: { NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#reader = this.#child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  /** Reads until the output matches `pattern`; fails if the process ends first. */
  async waitFor(pattern: RegExp): Promise<RegExpMatchArray> {
    for (;;) {
      const match = this.output.match(pattern);
      if (match !== null) return match;
      const { value, done } = await this.#reader.read();
      if (done) assert.fail(`expected ${pattern} before the end of:\n${this.output}`);
      this.output += value;
    }
  }

  /** Sends SIGINT, as Ctrl-C does; resolves to the exit code once the output ends. */
  interrupt(): Promise<number> {
    this.#stopped ??= (async () => {
      try {
        this.#child.kill("SIGINT");
      } catch {
        // It has exited already.
      }
      for (;;) {
        const { value, done } = await this.#reader.read();
        if (done) break;
        this.output += value;
      }
      return (await this.#child.status).code;
    })();
    return this.#stopped;
  }

  #stopped: Promise<number> | null = null;

  /** Stops the launcher (and so its peers) if a failed check left it running. */
  async [Symbol.asyncDispose](): Promise<void> {
    await this.interrupt();
  }
}

/** The HTTP addresses the launcher printed. */
function httpUrls(output: string): string[] {
  return [...output.matchAll(/^peer \d+: raft \S+ +http (http:\/\/127\.0\.0\.1:\d+)$/gm)].map(
    (match) => match[1]!,
  );
}

async function answers(url: string): Promise<boolean> {
  try {
    const response = await fetch(`${url}/status`, { signal: AbortSignal.timeout(1000) });
    await response.body?.cancel();
    return true;
  } catch {
    return false;
  }
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}

Deno.test(
  "deno task cluster: Ctrl-C stops every peer and removes the run's directory",
  sanitized,
  async () => {
    await using cluster = new RunningCluster(await taskArgs("cluster"));
    const [, dataDir] = await cluster.waitFor(/data and logs under (data\/cluster-\w+) .*Ctrl-C/);
    const urls = httpUrls(cluster.output);
    assert.equal(urls.length, 3, cluster.output);
    assert.ok(await exists(`${root}${dataDir}/peer0`), `no ${dataDir}/peer0 while running`);
    assert.ok(await answers(urls[0]!), "peer 0 does not answer while running");

    assert.equal(await cluster.interrupt(), 0, cluster.output);
    assert.match(cluster.output, new RegExp(`stopped every peer and removed ${dataDir}\n$`));
    assert.ok(!(await exists(`${root}${dataDir}`)), `${dataDir} is still there`);
    for (const url of urls) assert.ok(!(await answers(url)), `${url} still answers`);
  },
);

Deno.test(
  "deno task cluster --data DIR: Ctrl-C stops every peer and says where the data stays",
  sanitized,
  async () => {
    const dataDir = `data/cluster-test-${crypto.randomUUID().slice(0, 8)}`;
    try {
      await using cluster = new RunningCluster([
        ...(await taskArgs("cluster")),
        "--data",
        dataDir,
      ]);
      await cluster.waitFor(/Ctrl-C stops the cluster/);
      assert.match(cluster.output, new RegExp(`data and logs under ${dataDir}; Ctrl-C`));

      assert.equal(await cluster.interrupt(), 0, cluster.output);
      assert.match(cluster.output, new RegExp(`data and logs left in ${dataDir}\n$`));
      assert.ok(await exists(`${root}${dataDir}/peer0.log`), `${dataDir} was not left in place`);
      for (const url of httpUrls(cluster.output)) {
        assert.ok(!(await answers(url)), `${url} still answers`);
      }
    } finally {
      await Deno.remove(`${root}${dataDir}`, { recursive: true }).catch(() => {});
      await Deno.remove(`${root}data`).catch(() => {}); // only if empty
    }
  },
);
