/**
 * Runs slow tests at the same time, while each stays a `Deno.test` of its own: its own name, its
 * own pass or fail, its own sanitizers, its own output. Meant for tests that mostly sleep, like
 * the lab's real-time tests, and for tests that compute, one per core.
 *
 * `deno test` runs the tests of a file one after another, and Deno's op and resource sanitizers
 * are per process: a timer started before a test and fired during it fails that test. So tests
 * cannot overlap in one process and keep their sanitizers. Here each test runs alone in a child
 * `deno test` process, with the op and resource sanitizers on, and the test registered in this
 * process only waits for its child's verdict and prints the child's output. The children start
 * ahead of their tests, at most `concurrency` at a time, the longest expected first.
 *
 * The file that registers the tests is also the children's entry point: a child runs the same
 * file with `RAFT_CONCURRENT_TEST` naming one test, and this module then registers that test
 * alone, sanitized. So a file that uses this helper declares all its tests through it.
 *
 * @example A file of tests that sleep, run two at a time
 * ```ts
 * import { registerConcurrentTests } from "./helpers/concurrent_tests.ts";
 *
 * registerConcurrentTests(import.meta.url, [
 *   { name: "a slow test", expectedSeconds: 30, fn: async () => {} },
 *   { name: "another", fn: async () => {} },
 * ], { concurrency: 2 });
 * ```
 *
 * @module
 */

import { sanitized } from "./sanitized.ts";

/** One test for {@linkcode registerConcurrentTests}. */
export interface ConcurrentTest {
  /** Its `Deno.test` name; unique in its file. */
  name: string;
  /** The test. Runs alone in a child `deno test` process, with the op and resource sanitizers on. */
  fn: () => Promise<void> | void;
  /**
   * Roughly how long the test takes, in seconds. Longer tests start first, so the last to finish
   * is not a long one started late. Default: 1.
   */
  expectedSeconds?: number;
  /**
   * Kills the child and fails the test once it has run this long, so that a hung test fails
   * instead of hanging the suite. Default: no limit.
   */
  killAfterMs?: number;
}

/** Options for {@linkcode registerConcurrentTests}. */
export interface ConcurrentTestOptions {
  /**
   * How many children may run at once, at most: tests that compute rather than wait pass the
   * number of cores. The `RAFT_TEST_CONCURRENCY` environment variable caps it further (1 runs the
   * tests one after another, each when its turn comes). Default: `RAFT_TEST_CONCURRENCY`, else 8,
   * enough for the real-time lab suite to take about as long as its longest test on 2 cores (see
   * docs/testing.md).
   */
  concurrency?: number;
}

/** The environment variable that selects the one test a child runs. */
const CHILD_VARIABLE = "RAFT_CONCURRENT_TEST";
/** The environment variable that caps the concurrency of every file. */
const CONCURRENCY_VARIABLE = "RAFT_TEST_CONCURRENCY";
const DEFAULT_CONCURRENCY = 8;

/** What a child is told: which file's which test, and the line that reports its body passed. */
interface ChildOrder {
  entry: string;
  name: string;
  passedLine: string;
}

/**
 * Registers `tests` with `Deno.test`, to run concurrently in child processes. `entry` is the
 * calling file's `import.meta.url`: the file the children run.
 */
export function registerConcurrentTests(
  entry: string,
  tests: ConcurrentTest[],
  options: ConcurrentTestOptions = {},
): void {
  const names = new Set<string>();
  for (const test of tests) {
    if (names.has(test.name)) {
      throw new TypeError(`Duplicate test name ${JSON.stringify(test.name)}`);
    }
    names.add(test.name);
  }
  const order = childOrder();
  if (order !== null) {
    if (order.entry === entry) registerInChild(tests, order);
    return;
  }
  if (
    options.concurrency !== undefined &&
    (!Number.isSafeInteger(options.concurrency) || options.concurrency < 1)
  ) {
    throw new RangeError(`Concurrency must be a positive integer, got ${options.concurrency}`);
  }
  const fromEnvironment = concurrencyFromEnvironment();
  const concurrency = Math.min(options.concurrency ?? fromEnvironment, fromEnvironment);
  const pool = new ChildPool(entry, tests, concurrency);
  // A run cut short (a --filter, --fail-fast) leaves children running: they go with the file.
  globalThis.addEventListener("unload", () => pool.killAll());
  tests.forEach((test, index) => {
    Deno.test({
      name: test.name,
      // The test's own code runs in the child, under the sanitizers. Here the test only waits for
      // a child that was started before it (that is the point), which the sanitizers would fail.
      sanitizeOps: false,
      sanitizeResources: false,
      fn: async () => {
        const verdict = await pool.verdict(index);
        if (!verdict.passed) throw new ChildTestFailure(test.name, verdict);
        console.log(
          `${verdict.output}(ran alone in a child process: ${verdict.seconds.toFixed(1)} s)`,
        );
      },
    });
  });
}

/** A test that failed in its child: the message has the child's output, the stack adds nothing. */
class ChildTestFailure extends Error {
  override name = "ChildTestFailure";

  constructor(test: string, verdict: Verdict) {
    super(
      `${test}: ${verdict.reason} (child process, ${verdict.seconds.toFixed(1)} s)\n` +
        `--- its output ---\n${verdict.output}--- end of its output ---`,
    );
    this.stack = `${this.name}: ${this.message}`;
  }
}

function childOrder(): ChildOrder | null {
  const text = Deno.env.get(CHILD_VARIABLE);
  if (text === undefined) return null;
  const order = JSON.parse(text) as ChildOrder;
  if (
    typeof order.entry !== "string" || typeof order.name !== "string" ||
    typeof order.passedLine !== "string"
  ) {
    throw new TypeError(`${CHILD_VARIABLE} is malformed: ${JSON.stringify(text)}`);
  }
  return order;
}

function concurrencyFromEnvironment(): number {
  const text = Deno.env.get(CONCURRENCY_VARIABLE);
  if (text === undefined || text === "") return DEFAULT_CONCURRENCY;
  const value = Number(text);
  if (!Number.isSafeInteger(value) || value < 1) {
    throw new RangeError(`${CONCURRENCY_VARIABLE} must be a positive integer, got "${text}"`);
  }
  return value;
}

/** In the child: registers the ordered test alone, sanitized, and reports when its body passed. */
function registerInChild(tests: ConcurrentTest[], order: ChildOrder): void {
  const test = tests.find((candidate) => candidate.name === order.name);
  if (test === undefined) return; // the parent sees no passed line and fails the test
  Deno.test({
    name: test.name,
    ...sanitized,
    fn: async () => {
      await test.fn();
      // The parent also requires exit code 0, which the sanitizers' verdict decides.
      console.log(order.passedLine);
    },
  });
}

/** What a child's run came to. */
interface Verdict {
  passed: boolean;
  /** Why it failed. */
  reason: string;
  /** On a pass, what the test printed; on a failure, all the child printed. */
  output: string;
  seconds: number;
}

/** Starts the children, at most `concurrency` at a time, and hands each test its verdict. */
class ChildPool {
  readonly #entry: string;
  readonly #tests: ConcurrentTest[];
  readonly #concurrency: number;
  readonly #passedLine = `concurrent test passed ${crypto.randomUUID()}`;
  /** Each test's verdict, from the moment its child starts or its turn comes. */
  readonly #verdicts = new Map<number, PromiseWithResolvers<Verdict>>();
  readonly #children = new Map<number, Deno.ChildProcess>();
  /** Tests whose turn has come but whose child has not started yet: they start next. */
  readonly #due: number[] = [];
  /** Tests below this index that have not started were filtered out of the run. */
  #reached = 0;

  constructor(entry: string, tests: ConcurrentTest[], concurrency: number) {
    this.#entry = entry;
    this.#tests = tests;
    this.#concurrency = concurrency;
  }

  /** The verdict of test `index`, whose turn has come; starts children as slots allow. */
  verdict(index: number): Promise<Verdict> {
    this.#reached = Math.max(this.#reached, index);
    let verdict = this.#verdicts.get(index);
    if (verdict === undefined) {
      verdict = Promise.withResolvers<Verdict>();
      this.#verdicts.set(index, verdict);
      this.#due.push(index);
    }
    this.#fill();
    return verdict.promise;
  }

  /** Kills the children still running. */
  killAll(): void {
    for (const child of this.#children.values()) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
    }
  }

  /**
   * While fewer than `concurrency` children run, starts the tests whose turn has come, then those
   * still ahead, longest expected first. One at a time, only tests whose turn has come start.
   */
  #fill(): void {
    while (this.#children.size < this.#concurrency) {
      let next = this.#due.shift() ?? -1;
      if (next === -1 && this.#concurrency > 1) {
        for (let index = this.#reached; index < this.#tests.length; index++) {
          if (this.#verdicts.has(index)) continue;
          if (next === -1 || expected(this.#tests[index]!) > expected(this.#tests[next]!)) {
            next = index;
          }
        }
      }
      if (next === -1) return;
      this.#start(next);
    }
  }

  #start(index: number): void {
    let verdict = this.#verdicts.get(index);
    if (verdict === undefined) {
      verdict = Promise.withResolvers<Verdict>();
      this.#verdicts.set(index, verdict);
    }
    const { resolve } = verdict;
    const failed = (error: unknown): Verdict => ({
      passed: false,
      reason: `could not run: ${error}`,
      output: "",
      seconds: 0,
    });
    this.#run(index).catch(failed).then((result) => {
      this.#children.delete(index);
      resolve(result);
      this.#fill();
    });
  }

  async #run(index: number): Promise<Verdict> {
    const test = this.#tests[index]!;
    const order: ChildOrder = { entry: this.#entry, name: test.name, passedLine: this.#passedLine };
    const args = ["test", "-A", "--no-check", "--config", CONFIG];
    // Narrows the child to the one test even if the file registered others directly.
    if (!/^\/.*\/$/.test(test.name)) args.push("--filter", test.name);
    args.push(decodeURIComponent(new URL(this.#entry).pathname));
    const started = performance.now();
    const child = new Deno.Command(Deno.execPath(), {
      args,
      env: { [CHILD_VARIABLE]: JSON.stringify(order), NO_COLOR: "1" },
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    this.#children.set(index, child);
    let killed = false;
    const timer = test.killAfterMs === undefined ? undefined : setTimeout(() => {
      killed = true;
      child.kill("SIGKILL");
    }, test.killAfterMs);
    const [status, stdout, stderr] = await Promise.all([
      child.status,
      new Response(child.stdout).text(),
      new Response(child.stderr).text(),
    ]);
    clearTimeout(timer);
    const seconds = (performance.now() - started) / 1000;
    const output = (stdout + stderr).replaceAll(`${this.#passedLine}\n`, "");
    if (killed) {
      return {
        passed: false,
        reason: `still running after ${test.killAfterMs} ms, killed`,
        output,
        seconds,
      };
    }
    const reportedPass = stdout.split("\n").includes(this.#passedLine);
    if (status.success && reportedPass) {
      return { passed: true, reason: "", output: testOutput(stdout, this.#passedLine), seconds };
    }
    const reason = !status.success
      ? `failed (exit code ${status.code}${status.signal ? `, ${status.signal}` : ""})`
      : `the child ran no test named ${JSON.stringify(test.name)}`;
    return { passed: false, reason, output, seconds };
  }
}

const CONFIG = decodeURIComponent(new URL("../../deno.json", import.meta.url).pathname);

function expected(test: ConcurrentTest): number {
  return test.expectedSeconds ?? 1;
}

/** The lines a passed child's test printed: the contents of `deno test`'s output blocks. */
function testOutput(stdout: string, passedLine: string): string {
  const lines: string[] = [];
  let inBlock = false;
  for (const line of stdout.split("\n")) {
    if (/^-+ (post-test )?output -+$/.test(line)) inBlock = true;
    else if (/^-+ (post-test )?output end -+$/.test(line)) inBlock = false;
    else if (inBlock && line !== passedLine) lines.push(line + "\n");
  }
  return lines.join("");
}
