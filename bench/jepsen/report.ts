/**
 * The figures of a Jepsen run, computed from what the clients, the nemesis, the end check and the
 * linearizability checker found, and their text form.
 *
 * @module
 */

import type { CheckResult, Operation } from "../../src/linearizability/mod.ts";
import { OPERATION_LABELS, type OperationStats } from "./client.ts";
import type { FinalState } from "./final_state.ts";
import { type Fault, FAULT_KINDS } from "./nemesis.ts";

/** Everything a run found; see {@linkcode summarize}. */
export interface JepsenReport {
  /** Whether the run passed: the history is linearizable and the peers converged. */
  ok: boolean;
  /** The options that fix the run, for repeating it. */
  settings: Record<string, string | number | boolean>;
  /** Operations by label and outcome. */
  operations: OperationStats["counts"];
  /** Attempts by answer, e.g. `{ "200": 1234, "421": 56, "timeout": 7 }`. */
  attempts: Record<string, number>;
  /** Every fault injected, in order. */
  faults: Fault[];
  /** How long the clients ran, in ms. */
  durationMs: number;
  /** When the last fault was healed, in ms since the clients started. */
  healedAtMs: number;
  /** Successful operations after the last heal: the cluster came back. */
  okAfterHeal: number;
  /** Longest time without a successful operation, in ms, and when it began (ms since start). */
  longestUnavailable: { ms: number; fromMs: number };
  /** Successful reads per second, over the whole run. */
  readsPerSecond: number;
  /** Successful writes and deletes per second, over the whole run. */
  writesPerSecond: number;
  /** The linearizability check. */
  check: {
    verdict: "linearizable" | "not linearizable" | "unknown (checker timed out)";
    ms: number;
    /** Operations in the history, the final reads included. */
    operations: number;
    /** Of which with an unknown outcome. */
    unknown: number;
    /** The checker's explanation of a violation. */
    explanation?: string;
  };
  /** The end state. */
  final: Omit<FinalState, "data"> & {
    /** Keys by where their final value came from. */
    provenance: { acknowledged: number; unknownOutcome: number; absent: number };
  };
}

/** What {@linkcode summarize} needs. */
export interface RunRecord {
  /** The options that fix the run. */
  settings: Record<string, string | number | boolean>;
  /** The clients' counts. */
  stats: OperationStats;
  /** The nemesis's faults. */
  faults: Fault[];
  /** When the clients started and stopped, and when the last fault was healed (recorder clock). */
  times: { start: number; end: number; healed: number };
  /** The history that was checked. */
  history: Operation[];
  /** The checker's answer and how long it took, in ms. */
  check: { result: CheckResult; ms: number };
  /** The end state. */
  final: FinalState;
}

/** Computes the figures of a run. */
export function summarize(record: RunRecord): JepsenReport {
  const { stats, times, history, check, final } = record;
  const durationMs = times.end - times.start;
  const successes = [...stats.successTimes].sort((a, b) => a - b);
  let longest = { ms: 0, fromMs: 0 };
  let last = times.start;
  for (const at of [...successes, times.end]) {
    if (at - last > longest.ms) longest = { ms: at - last, fromMs: last - times.start };
    last = Math.max(last, at);
  }
  const ok = (labels: string[]) =>
    labels.reduce((sum, label) => sum + stats.counts[label as keyof typeof stats.counts].ok, 0);
  const verdict = check.result.ok === true
    ? "linearizable"
    : check.result.ok === false
    ? "not linearizable"
    : "unknown (checker timed out)";
  // Where each key's final value came from: values are unique per write.
  const provenance = { acknowledged: 0, unknownOutcome: 0, absent: 0 };
  const reference = final.data.find((answer) => answer !== null);
  if (reference) {
    const finalValues = new Map(reference.data);
    const keys = new Set(history.map((operation) => operation.key));
    for (const key of keys) {
      const value = finalValues.get(key);
      if (value === undefined) {
        provenance.absent++;
        continue;
      }
      const writer = history.find((operation) =>
        operation.key === key && operation.kind === "write" && operation.input === value
      );
      if (writer?.output === "ok") provenance.acknowledged++;
      else provenance.unknownOutcome++;
    }
  }
  const { data: _data, ...finalRest } = final;
  return {
    ok: check.result.ok === true && final.ok,
    settings: record.settings,
    operations: stats.counts,
    attempts: stats.attempts,
    faults: record.faults,
    durationMs,
    healedAtMs: times.healed - times.start,
    okAfterHeal: successes.filter((at) => at > times.healed).length,
    longestUnavailable: longest,
    readsPerSecond: ok(["read", "read (follower)", "read (lease)"]) / (durationMs / 1000),
    writesPerSecond: ok(["write", "delete"]) / (durationMs / 1000),
    check: {
      verdict,
      ms: check.ms,
      operations: history.length,
      unknown: history.filter((operation) => operation.output === undefined).length,
      ...(check.result.ok === false ? { explanation: check.result.explanation } : {}),
    },
    final: { ...finalRest, provenance },
  };
}

/** The report as text: tables in Markdown, then the verdict. */
export function formatReport(report: JepsenReport): string {
  const lines: string[] = [];
  const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
  lines.push(
    `Settings: ${
      Object.entries(report.settings).map(([name, value]) => `${name}=${value}`).join(" ")
    }`,
    "",
    "| operation | ok | failed | unknown |",
    "| --- | ---: | ---: | ---: |",
  );
  for (const label of OPERATION_LABELS) {
    const { ok, fail, unknown } = report.operations[label];
    if (ok + fail + unknown > 0) lines.push(`| ${label} | ${ok} | ${fail} | ${unknown} |`);
  }
  lines.push(
    "",
    "| fault | injected | on the leader | reset | blackhole |",
    "| --- | ---: | ---: | ---: | ---: |",
  );
  for (const kind of FAULT_KINDS) {
    const faults = report.faults.filter((fault) => fault.kind === kind);
    if (faults.length === 0) continue;
    const count = (test: (fault: Fault) => boolean) => faults.filter(test).length;
    lines.push(
      `| ${kind} | ${faults.length} | ${count((fault) => fault.leader)} | ${
        count((fault) => fault.mode === "reset")
      } | ${count((fault) => fault.mode === "blackhole")} |`,
    );
  }
  const attempts = Object.entries(report.attempts).sort(([, a], [, b]) => b - a);
  lines.push(
    "",
    `Attempts by answer: ${attempts.map(([what, n]) => `${what}: ${n}`).join(", ")}`,
    `Clients ran ${seconds(report.durationMs)}; faults healed at ${
      seconds(report.healedAtMs)
    }; ${report.okAfterHeal} operations succeeded after that.`,
    `Longest time without a successful operation: ${seconds(report.longestUnavailable.ms)} (from ${
      seconds(report.longestUnavailable.fromMs)
    }).`,
    `Successful reads: ${report.readsPerSecond.toFixed(1)}/s; writes and deletes: ${
      report.writesPerSecond.toFixed(1)
    }/s.`,
    `End state: ${
      report.final.ok
        ? `converged ${
          seconds(report.final.convergedAfterMs)
        } after the clients stopped, at commit index ${report.final.commitIndex}; every peer holds the same data`
        : `FAILED: ${report.final.problems.join("; ")}`
    }. Final values: ${report.final.provenance.acknowledged} keys from acknowledged writes, ${report.final.provenance.unknownOutcome} from writes of unknown outcome, ${report.final.provenance.absent} absent.`,
    `Linearizability: ${report.check.verdict}, checked in ${
      report.check.ms.toFixed(0)
    } ms (${report.check.operations} operations, ${report.check.unknown} of unknown outcome, final reads included).`,
  );
  if (report.check.explanation !== undefined) lines.push("", report.check.explanation);
  lines.push("", report.ok ? "PASS" : "FAIL");
  return lines.join("\n");
}
