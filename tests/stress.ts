/**
 * Runs the whole test suite (`deno test -A`) several times in a row and summarizes it: per lab
 * test, the worst and median RPC counts and times over the runs; per run, wall and CPU time.
 * Stops at the first failing run and keeps its output.
 *
 * Usage: `deno task stress [runs] [extra deno test args...]` (default 10 runs). For example,
 * `deno task stress 10 tests/lab_realtime_test.ts` runs only the real-time lab suites, and
 * `RAFT_TEST_CONCURRENCY=1 deno task stress 10` runs them one at a time (docs/testing.md).
 *
 * @module
 */

import type { TestStats } from "./lab/tester.ts";

const runs = Number(Deno.args[0] ?? "10");
if (!Number.isInteger(runs) || runs < 1) {
  console.error(`Runs must be a positive integer, got ${JSON.stringify(Deno.args[0])}`);
  Deno.exit(2);
}
const extra = Deno.args.slice(1).map((arg) => `'${arg.replaceAll("'", "'\\''")}'`).join(" ");

const byTest = new Map<string, TestStats[]>();
const runTimes: { wall: number; cpu: number }[] = [];

for (let run = 1; run <= runs; run++) {
  // bash's `time` reports the wall time and the CPU time of deno and all its children.
  const script = `TIMEFORMAT='TIMES %R %U %S'; time deno test -A ${extra} 2>&1`;
  const output = await new Deno.Command("bash", {
    args: ["-c", script],
    env: { NO_COLOR: "1" },
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(output.stdout);
  const times = new TextDecoder().decode(output.stderr).match(/TIMES ([\d.]+) ([\d.]+) ([\d.]+)/);
  if (!output.success || times === null) {
    const log = `stress-failure-${run}.log`;
    await Deno.writeTextFile(log, text + new TextDecoder().decode(output.stderr));
    console.error(`Run ${run} of ${runs} FAILED; its output is in ${log}`);
    Deno.exit(1);
  }
  const [wall, user, system] = times.slice(1).map(Number) as [number, number, number];
  runTimes.push({ wall, cpu: user + system });
  let description = "";
  for (const line of text.split("\n")) {
    const begin = line.match(/^(Test \((?:4[AB]|3D)\): .*) \.\.\.$/);
    if (begin) description = begin[1]!;
    const passed = line.match(/^\s+\.\.\. Passed --\s+([\d.]+)\s+(\d+)\s+(\d+)\s+(\d+)\s+(\d+)/);
    if (passed && description) {
      const [seconds, peers, rpcs, bytes, commits] = passed.slice(1).map(Number) as number[];
      const lines = byTest.get(description) ?? [];
      lines.push({
        description,
        seconds: seconds!,
        peers: peers!,
        rpcs: rpcs!,
        bytes: bytes!,
        commits: commits!,
      });
      byTest.set(description, lines);
    }
  }
  const summary = text.match(/ok \| (\d+) passed.*$/m)?.[0] ?? "";
  console.log(
    `Run ${run} of ${runs}: ${summary.trim()} (wall ${wall.toFixed(1)} s, CPU ${
      (user + system).toFixed(1)
    } s)`,
  );
}

const median = (values: number[]) => {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor((sorted.length - 1) / 2)]!;
};
console.log(`\nAll ${runs} runs passed.\n`);
console.log("| test | peers | time s (median / max) | RPCs (median / max) | commits (median) |");
console.log("| --- | ---: | ---: | ---: | ---: |");
for (const [description, lines] of byTest) {
  const seconds = lines.map((l) => l.seconds);
  const rpcs = lines.map((l) => l.rpcs);
  console.log(
    `| ${description} | ${lines[0]!.peers} | ${median(seconds).toFixed(1)} / ${
      Math.max(...seconds).toFixed(1)
    } | ${median(rpcs)} / ${Math.max(...rpcs)} | ${median(lines.map((l) => l.commits))} |`,
  );
}
const walls = runTimes.map((t) => t.wall);
const cpus = runTimes.map((t) => t.cpu);
console.log(
  `\nWhole suite per run: wall ${median(walls).toFixed(1)} s median (max ${
    Math.max(...walls).toFixed(1)
  }), CPU ${median(cpus).toFixed(1)} s median (max ${Math.max(...cpus).toFixed(1)}).`,
);
