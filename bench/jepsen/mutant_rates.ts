/**
 * How often a Jepsen run catches each mutant of `bench/jepsen/mutants.ts`: runs every mutant (and
 * the unpatched service, as a baseline that must never be "caught") on seeds 1..N, one run at a
 * time, and prints a Markdown table.
 *
 *   deno task jepsen:mutants                               # seeds 1..5, 30 s each
 *   deno task jepsen:mutants --short --seeds 10            # the short run of the CI test
 *   deno task jepsen:mutants --seeds 10 --duration 20s --only leader-read-local,none
 *
 * Exit code 0 when every mutant was caught at least once and the baseline never was.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { serviceMutants } from "./mutants.ts";
import { type JepsenOptions, parseDuration, runJepsen, SHORT_RUN } from "./run.ts";

/** What the runs of one mutant found. */
export interface MutantRate {
  /** The mutant, or `"none"` for the unpatched service. */
  name: string;
  /** The seeds run. */
  seeds: number[];
  /** The seeds whose history the checker found not linearizable. */
  violations: number[];
  /** The seeds whose end state was wrong (peers that differ, or did not converge). */
  badEndStates: number[];
  /** The seeds whose check timed out. */
  checkTimeouts: number[];
  /** The first sentence of the first violation found. */
  example: string | null;
}

/**
 * Runs `names` (mutants, or `"none"`) on `seeds`, each with `options`; resolves to what each
 * found.
 */
export async function mutantRates(
  names: readonly string[],
  seeds: readonly number[],
  options: JepsenOptions,
  log: (line: string) => void = () => {},
): Promise<MutantRate[]> {
  const rates: MutantRate[] = [];
  for (const name of names) {
    const rate: MutantRate = {
      name,
      seeds: [...seeds],
      violations: [],
      badEndStates: [],
      checkTimeouts: [],
      example: null,
    };
    for (const seed of seeds) {
      const report = await runJepsen({
        checkTimeoutMs: 60_000,
        // A caught mutant fails its run: its data is no news.
        keepData: false,
        ...options,
        seed,
        ...(name === "none" ? {} : { mutant: name }),
      });
      if (report.check.verdict === "not linearizable") {
        rate.violations.push(seed);
        const first = report.check.explanation?.split("\n")[0] ?? "";
        rate.example ??= first.length > 200 ? `${first.slice(0, 200)}…` : first;
      }
      if (!report.final.ok) rate.badEndStates.push(seed);
      if (report.check.verdict === "unknown (checker timed out)") rate.checkTimeouts.push(seed);
      log(
        `${name} seed ${seed}: ${report.check.verdict}${report.final.ok ? "" : ", bad end state"}`,
      );
    }
    rates.push(rate);
  }
  return rates;
}

if (import.meta.main) {
  const { values } = parseArgs({
    args: Deno.args,
    options: {
      seeds: { type: "string", default: "5" },
      duration: { type: "string", default: "30s" },
      short: { type: "boolean", default: false },
      only: { type: "string" },
    },
  });
  const names = values.only?.split(",") ?? [...serviceMutants.map((m) => m.name), "none"];
  const seeds = Array.from({ length: Number(values.seeds) }, (_, i) => i + 1);
  // Ctrl-C or SIGTERM ends the run in progress, which stops every process it started.
  const interrupted = new AbortController();
  for (const signal of ["SIGINT", "SIGTERM"] as const) {
    Deno.addSignalListener(signal, () => interrupted.abort(new Error(`Interrupted by ${signal}`)));
  }
  const options = {
    ...(values.short ? SHORT_RUN : { durationMs: parseDuration(values.duration) }),
    signal: interrupted.signal,
  };
  const rates = await mutantRates(names, seeds, options, (line) => console.error(line)).catch(
    (error) => {
      if (!interrupted.signal.aborted) throw error;
      console.error(`${interrupted.signal.reason.message}: every process started was stopped`);
      Deno.exit(130);
    },
  );
  const runs = values.short ? "Short runs (25 s, as in CI)" : `Runs of ${values.duration}`;
  console.log(`${runs} on seeds ${seeds[0]}..${seeds.at(-1)}, 3 peers, 8 clients:\n`);
  console.log("| mutant | runs that caught it | seeds | bad end state | first violation |");
  console.log("| --- | ---: | --- | ---: | --- |");
  let wrong = false;
  for (const rate of rates) {
    const caught = new Set([...rate.violations, ...rate.badEndStates]);
    if (rate.name === "none" ? caught.size > 0 : caught.size === 0) wrong = true;
    console.log(
      `| ${rate.name} | ${caught.size} of ${rate.seeds.length} | ${
        [...caught].sort((a, b) => a - b).join(", ")
      } | ${rate.badEndStates.length} | ${rate.example ?? ""} |`,
    );
  }
  Deno.exit(wrong ? 1 : 0);
}
