/**
 * What watching a cluster costs it: write throughput and latency of the key/value service on a
 * 3-process cluster, and the peers' CPU time, with nobody watching and with the web view's
 * streams open, measured back to back in one run, rounds interleaved so that drift (a growing
 * log, other work on the machine) falls on every mode alike.
 *
 *   deno task bench:web               (3 rounds of 3 s per mode)
 *   deno task bench:web --rounds=5 --seconds=5
 *
 * Modes:
 * - `none`: no stream open.
 * - `streams 250 ms`: one `GET /events` stream per peer at the launcher's default interval.
 * - `streams 50 ms`: the same at the fastest interval a peer grants.
 * - `page`: the launcher's web view (`Dashboard`) with its page open in headless Chromium, as a
 *   person would have it (skipped without Chromium). The launcher and the browser run on the same
 *   2 cores as the peers, so this row also counts their CPU against the cluster.
 *
 * The load: 16 closed-loop clients, each writing a 100-byte value and waiting for the reply.
 * bench:cluster cannot host a page (its peers are not the key/value service), hence this bench.
 *
 * On a shared machine, throughput swings between rounds by more than watching costs; so the
 * bench first measures the cost alone: the peers' CPU time while the cluster idles (heartbeats
 * only), per mode, where the only work that differs is serving the snapshots.
 *
 * Runs with `-A`: it reads other processes' `/proc` entries (CPU time, resident memory), which
 * Deno allows only with every permission.
 *
 * @module
 */

import { LocalCluster } from "../examples/cluster.ts";
import { KvClient } from "../examples/kv/client.ts";
import { Dashboard } from "../examples/web/dashboard.ts";
import { Browser, findChromium, type Page } from "../tests/helpers/cdp.ts";
import { percentile } from "./cluster_load.ts";

const ROUNDS = Number(flag("rounds") ?? 3);
const SECONDS = Number(flag("seconds") ?? 3);
const WARMUP_MS = 1000;
const CLIENTS = 16;
const VALUE = "v".repeat(100);

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

type Mode = "none" | "streams 250 ms" | "streams 50 ms" | "page";

interface Round {
  writesPerSecond: number;
  latenciesMs: number[];
  /** CPU time of the three peer processes together, ms per second of wall time. */
  peerCpuMsPerSecond: number;
  /** Snapshots the streams delivered per second, all peers together. */
  framesPerSecond: number;
}

/** User plus system CPU time of `pid` so far, in ms (from /proc; clock ticks of 10 ms). */
async function cpuMs(pid: number): Promise<number> {
  const stat = await Deno.readTextFile(`/proc/${pid}/stat`);
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * 10;
}

/** CPU time of `root` and every process descended from it, in ms. */
async function treeCpuMs(root: number): Promise<number> {
  const parents = new Map<number, number>();
  const cpu = new Map<number, number>();
  for await (const entry of Deno.readDir("/proc")) {
    if (!/^[0-9]+$/.test(entry.name)) continue;
    try {
      const stat = await Deno.readTextFile(`/proc/${entry.name}/stat`);
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      parents.set(Number(entry.name), Number(fields[1]));
      cpu.set(Number(entry.name), (Number(fields[11]) + Number(fields[12])) * 10);
    } catch {
      // Gone meanwhile.
    }
  }
  const inTree = (pid: number): boolean =>
    pid === root || (pid > 1 && parents.has(pid) && inTree(parents.get(pid)!));
  let total = 0;
  for (const [pid, ms] of cpu) if (inTree(pid)) total += ms;
  return total;
}

/** Opens a stream per peer at `intervalMs`; counts frames until `close()`. */
function openStreams(cluster: LocalCluster, intervalMs: number) {
  const http = Deno.createHttpClient({});
  let frames = 0;
  let closing = false;
  const readers: ReadableStreamDefaultReader<string>[] = [];
  const reading = cluster.httpUrls.map(async (url) => {
    const response = await fetch(`${url}/events?interval=${intervalMs}`, { client: http });
    const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
    readers.push(reader);
    if (closing) await reader.cancel();
    for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) {
      frames += chunk.value.split("\n\ndata: ").length - 1 +
        (chunk.value.startsWith("data: ") ? 1 : 0);
    }
  });
  return {
    frames: () => frames,
    close: async () => {
      // Cancelling the readers closes the connections; no abort signal is involved.
      closing = true;
      await Promise.all(readers.map((reader) => reader.cancel()));
      await Promise.all(reading);
      http.close();
    },
  };
}

/** The peers' CPU time in ms per second over `seconds` of an idle cluster watched in `mode`. */
async function idleRound(
  mode: Mode,
  cluster: LocalCluster,
  pids: number[],
  page: Page | null,
): Promise<{ peers: number; viewer: number }> {
  const watching = await watch(mode, cluster, page);
  await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
  // The viewer: this process (the launcher's part, or the stream readers) and the browser.
  const viewer = async () =>
    (await cpuMs(Deno.pid)) + (browser === null ? 0 : await treeCpuMs(browser.pid));
  const before = (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0);
  const viewerBefore = await viewer();
  await new Promise((resolve) => setTimeout(resolve, SECONDS * 1000));
  const after = (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0);
  const viewerAfter = await viewer();
  await watching.close();
  return { peers: (after - before) / SECONDS, viewer: (viewerAfter - viewerBefore) / SECONDS };
}

/** Starts watching the cluster as `mode` says. */
async function watch(mode: Mode, cluster: LocalCluster, page: Page | null) {
  let streams: ReturnType<typeof openStreams> | null = null;
  let dashboard: Dashboard | null = null;
  if (mode === "streams 250 ms") streams = openStreams(cluster, 250);
  if (mode === "streams 50 ms") streams = openStreams(cluster, 50);
  if (mode === "page") {
    dashboard = await Dashboard.start(cluster);
    await page!.navigate(dashboard.url);
    await page!.waitFor(
      "the page to hear 3 peers",
      `document.getElementById("heard").textContent === "3 of 3 peers heard"`,
      10000,
    );
  }
  return {
    frames: () => streams?.frames() ?? 0,
    close: async () => {
      await streams?.close();
      if (dashboard !== null) {
        await page!.navigate("about:blank");
        await dashboard.close();
      }
    },
  };
}

async function round(
  mode: Mode,
  cluster: LocalCluster,
  clients: KvClient[],
  pids: number[],
  page: Page | null,
): Promise<Round> {
  const watching = await watch(mode, cluster, page);
  const startedAt = performance.now();
  const measureFrom = startedAt + WARMUP_MS;
  const stopAt = measureFrom + SECONDS * 1000;
  let cpuBefore = 0;
  let framesBefore = 0;
  const sampling = (async () => {
    await new Promise((resolve) => setTimeout(resolve, WARMUP_MS));
    cpuBefore = (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0);
    framesBefore = watching.frames();
  })();
  let writes = 0;
  const latenciesMs: number[] = [];
  let sequence = 0;
  await Promise.all(clients.map(async (client) => {
    while (performance.now() < stopAt) {
      const before = performance.now();
      await client.put(`bench-${sequence++ % 1000}`, VALUE);
      const after = performance.now();
      if (before >= measureFrom && after <= stopAt) {
        writes++;
        latenciesMs.push(after - before);
      }
    }
  }));
  await sampling;
  const cpuAfter = (await Promise.all(pids.map(cpuMs))).reduce((a, b) => a + b, 0);
  const frames = watching.frames() - framesBefore;
  await watching.close();
  return {
    writesPerSecond: writes / SECONDS,
    latenciesMs,
    peerCpuMsPerSecond: (cpuAfter - cpuBefore) / SECONDS,
    framesPerSecond: frames / SECONDS,
  };
}

function median(values: number[]): number {
  return percentile(values, 50);
}

const chromium = findChromium();
const modes: Mode[] = ["none", "streams 250 ms", "streams 50 ms"];
if (chromium !== null) modes.push("page");
else console.log("no Chromium found: the page mode is left out (apt-get install chromium)");

const cluster = await LocalCluster.start({ peers: 3 });
const browser = chromium === null ? null : await Browser.launch(chromium);
const clients = Array.from({ length: CLIENTS }, () => new KvClient(cluster.httpUrls));
const results = new Map<Mode, Round[]>(modes.map((mode) => [mode, []]));
try {
  await cluster.waitForLeader();
  const pids = await Promise.all(
    cluster.httpUrls.map(async (_, peer) => (await cluster.status(peer))!.pid),
  );
  const page = browser === null ? null : await browser.newPage();
  await page?.setViewport(1280, 800);
  const load = await Deno.readTextFile("/proc/loadavg");
  console.log(
    `${ROUNDS} rounds of ${SECONDS} s per mode, ${CLIENTS} clients; load average at start: ${
      load.split(" ").slice(0, 3).join(" ")
    }`,
  );
  const idle = new Map<Mode, { peers: number; viewer: number }[]>(
    modes.map((mode) => [mode, []]),
  );
  for (let r = 0; r < ROUNDS; r++) {
    for (const mode of modes.map((_, i) => modes[(i + r) % modes.length]!)) {
      idle.get(mode)!.push(await idleRound(mode, cluster, pids, page));
    }
  }
  const idleBase = median(idle.get("none")!.map((r) => r.peers));
  const viewerBase = median(idle.get("none")!.map((r) => r.viewer));
  console.log(
    "\nidle cluster (heartbeats only): CPU time of the three peers together, and of the viewer " +
      "(launcher or stream readers, and the browser)",
  );
  console.log(
    "| watching       | peers' CPU ms/s (median) | added per peer, ms/s | viewer's CPU ms/s, added |",
  );
  console.log(
    "| -------------- | -----------------------: | -------------------: | -----------------------: |",
  );
  for (const mode of modes) {
    const cpu = median(idle.get(mode)!.map((r) => r.peers));
    const viewer = median(idle.get(mode)!.map((r) => r.viewer));
    console.log(
      `| ${mode.padEnd(14)} | ${cpu.toFixed(1).padStart(24)} | ${
        ((cpu - idleBase) / 3).toFixed(1).padStart(20)
      } | ${(viewer - viewerBase).toFixed(1).padStart(24)} |`,
    );
  }
  console.log("\nunder write load");
  for (let r = 0; r < ROUNDS; r++) {
    // Rotate the order so that no mode always runs first or last in a round.
    const order = modes.map((_, i) => modes[(i + r) % modes.length]!);
    for (const mode of order) {
      const result = await round(mode, cluster, clients, pids, page);
      results.get(mode)!.push(result);
      console.log(
        `  round ${r + 1}, ${mode.padEnd(14)}: ${result.writesPerSecond.toFixed(0)} writes/s, ` +
          `peers' CPU ${result.peerCpuMsPerSecond.toFixed(0)} ms/s`,
      );
    }
  }
  const base = median(results.get("none")!.map((r) => r.writesPerSecond));
  const baseCpu = median(results.get("none")!.map((r) => r.peerCpuMsPerSecond));
  console.log();
  console.log(
    "| watching       | writes/s (median) | vs none | p50 / p99 latency ms | peers' CPU ms/s | snapshots/s |",
  );
  console.log(
    "| -------------- | ----------------: | ------: | -------------------: | --------------: | ----------: |",
  );
  for (const mode of modes) {
    const rounds = results.get(mode)!;
    const writes = median(rounds.map((r) => r.writesPerSecond));
    const latencies = rounds.flatMap((r) => r.latenciesMs);
    const cpu = median(rounds.map((r) => r.peerCpuMsPerSecond));
    const frames = median(rounds.map((r) => r.framesPerSecond));
    console.log(
      `| ${mode.padEnd(14)} | ${writes.toFixed(0).padStart(17)} | ${
        (writes / base).toFixed(3).padStart(7)
      } | ${
        `${percentile(latencies, 50).toFixed(2)} / ${percentile(latencies, 99).toFixed(2)}`
          .padStart(20)
      } | ${`${cpu.toFixed(0)} (${(cpu / baseCpu).toFixed(2)}x)`.padStart(15)} | ${
        mode.startsWith("streams") ? frames.toFixed(1).padStart(11) : "-".padStart(11)
      } |`,
    );
  }
  const spread = results.get("none")!.map((r) => r.writesPerSecond);
  console.log(
    `\nspread of 'none' across rounds: ${Math.min(...spread).toFixed(0)} to ${
      Math.max(...spread).toFixed(0)
    } writes/s`,
  );
} finally {
  for (const client of clients) client.close();
  await browser?.close();
  await cluster.stop();
  await Deno.remove(cluster.dataDir, { recursive: true });
}
