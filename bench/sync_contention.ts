/**
 * What one `fdatasync` of a small record costs on this disk, alone and with other processes
 * syncing at the same time (as the three peers of `deno task bench:cluster` (b) do), when the
 * file grows with every record and when the record overwrites zeros written in advance (as a
 * preallocating `FilePersister` does). Prints a table of per-sync latencies.
 *
 *   deno task bench:sync                        (1 and 3 processes, 3000 records each)
 *   deno task bench:sync --processes=1,2,3 --records=5000
 *
 * @module
 */

import { denoCommand } from "../examples/_permissions.ts";

/** Bytes per record: a 100-byte command and the FilePersister record around it. */
const RECORD_BYTES = 131;
const PREALLOCATED_BYTES = 8 * 1024 * 1024;

type Mode = "growing" | "preallocated";

interface ChildResult {
  p50Us: number;
  p99Us: number;
}

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

function percentile(sorted: number[], fraction: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * fraction))]!;
}

/** In a child: writes `records` records to a fresh file, each followed by fdatasync. */
async function child(mode: Mode, records: number): Promise<ChildResult> {
  const directory = await Deno.makeTempDir({ prefix: "raft-sync-" });
  const file = await Deno.open(`${directory}/log`, { read: true, write: true, create: true });
  try {
    if (mode === "preallocated") {
      const zeros = new Uint8Array(1024 * 1024);
      for (let at = 0; at < PREALLOCATED_BYTES; at += zeros.length) file.writeSync(zeros);
      await file.sync();
      file.seekSync(0, Deno.SeekMode.Start);
    }
    const record = new Uint8Array(RECORD_BYTES).fill(0x5a);
    const times: number[] = [];
    for (let i = 0; i < records; i++) {
      const start = performance.now();
      let written = 0;
      while (written < record.length) written += file.writeSync(record.subarray(written));
      await file.syncData();
      times.push((performance.now() - start) * 1000);
    }
    times.sort((a, b) => a - b);
    return { p50Us: percentile(times, 0.5), p99Us: percentile(times, 0.99) };
  } finally {
    file.close();
    await Deno.remove(directory, { recursive: true });
  }
}

/** Runs `processes` children at once; returns each one's result. */
async function together(mode: Mode, processes: number, records: number): Promise<ChildResult[]> {
  const children = Array.from({ length: processes }, () =>
    new Deno.Command(denoCommand(), {
      args: [
        "run",
        "--allow-read",
        "--allow-write",
        import.meta.filename!,
        "--child",
        mode,
        String(records),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).output());
  const outputs = await Promise.all(children);
  return outputs.map((output) => {
    if (!output.success) throw new Error(`A ${mode} child failed`);
    return JSON.parse(new TextDecoder().decode(output.stdout)) as ChildResult;
  });
}

async function main(): Promise<void> {
  const processCounts = (flag("processes") ?? "1,3").split(",").map(Number);
  const records = Number(flag("records") ?? 3000);
  if (processCounts.some((n) => !Number.isInteger(n) || n < 1)) {
    throw new RangeError(`--processes must list positive integers, got ${flag("processes")}`);
  }
  if (!Number.isInteger(records) || records < 1) {
    throw new RangeError(`--records must be a positive integer, got ${flag("records")}`);
  }
  console.log(`# ${new Date().toISOString()}  load average: ${loadAverage()}`);
  console.log(
    `# ${records} records of ${RECORD_BYTES} bytes per process, each followed by fdatasync`,
  );
  console.log(
    "| file         | processes syncing at once | p50 per sync (us) | p99 per sync (us) |",
  );
  console.log(
    "| ------------ | ------------------------: | ----------------: | ----------------: |",
  );
  for (const processes of processCounts) {
    // Alternate the modes so that both see the same moment's machine.
    for (const mode of ["growing", "preallocated"] as const) {
      const results = await together(mode, processes, records);
      const p50s = results.map((r) => r.p50Us.toFixed(0)).join(", ");
      const p99s = results.map((r) => r.p99Us.toFixed(0)).join(", ");
      console.log(`| ${mode.padEnd(12)} | ${String(processes).padStart(25)} | ${p50s} | ${p99s} |`);
    }
  }
}

function loadAverage(): string {
  try {
    return Deno.loadavg().map((load) => load.toFixed(2)).join(" ");
  } catch {
    return "unknown";
  }
}

if (Deno.args[0] === "--child") {
  const mode = Deno.args[1] as Mode;
  console.log(JSON.stringify(await child(mode, Number(Deno.args[2]))));
} else {
  await main();
}
