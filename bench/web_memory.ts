/**
 * Whether a page left open grows the peers' memory: a 3-process cluster, idle (heartbeats only,
 * so its log does not grow), watched by the web view at the fastest update rate a peer grants
 * (a snapshot every 50 ms, five times the default), with the page open in headless Chromium
 * (or, without Chromium, a reader of the page's stream), for a number of minutes; beside it, in
 * the same run, a second cluster that nobody watches, as the control. Every 10 s it samples
 * each peer's resident set size (VmRSS); at the end it prints the least-squares slope of each
 * peer's RSS after the first minute (warm-up), in KiB per minute.
 *
 *   deno task bench:web-memory                 (10 minutes)
 *   deno task bench:web-memory --minutes=60
 *   DENO_V8_FLAGS=--gc-global deno task bench:web-memory --minutes=6
 *                                              (every collection a full one, in the peers too:
 *                                               the trend without V8's saw-tooth; docs/web.md)
 *
 * Runs with `-A`: it reads other processes' `/proc` entries (CPU time, resident memory), which
 * Deno allows only with every permission.
 *
 * @module
 */

import { LocalCluster } from "../examples/cluster.ts";
import { Dashboard } from "../examples/web/dashboard.ts";
import { Browser, findChromium } from "../tests/helpers/cdp.ts";

const MINUTES = Number(
  Deno.args.find((arg) => arg.startsWith("--minutes="))?.slice("--minutes=".length) ?? 10,
);
const SAMPLE_MS = 10000;
const WARMUP_MS = 60000;

/** Resident set size of `pid`, in KiB. */
async function rssKiB(pid: number): Promise<number> {
  const status = await Deno.readTextFile(`/proc/${pid}/status`);
  return Number(status.match(/^VmRSS:\s+(\d+) kB/m)![1]);
}

/** Least-squares slope of `points` ([x, y]). */
function slope(points: [number, number][]): number {
  const n = points.length;
  const meanX = points.reduce((sum, [x]) => sum + x, 0) / n;
  const meanY = points.reduce((sum, [, y]) => sum + y, 0) / n;
  let covariance = 0;
  let variance = 0;
  for (const [x, y] of points) {
    covariance += (x - meanX) * (y - meanY);
    variance += (x - meanX) ** 2;
  }
  return covariance / variance;
}

const [cluster, control] = await Promise.all([
  LocalCluster.start({ peers: 3 }),
  LocalCluster.start({ peers: 3 }),
]);
const dashboard = await Dashboard.start(cluster, { intervalMs: 50 });
const chromium = findChromium();
const browser = chromium === null ? null : await Browser.launch(chromium);
// A reader of the page's stream, to count what reaches a page (and to be the page without
// Chromium). It ends when the dashboard closes, which ends every page's stream.
let pageMessages = 0;
const reading = (async () => {
  const response = await fetch(`${new URL(dashboard.url).origin}/api/events`);
  for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
    pageMessages += chunk.split("\nevent: ").length - 1 + (chunk.startsWith("event: ") ? 1 : 0);
  }
})();
try {
  await cluster.waitForLeader();
  await control.waitForLeader();
  const pidsOf = (c: LocalCluster) =>
    Promise.all(c.httpUrls.map(async (_, peer) => (await c.status(peer))!.pid));
  const pids = [...await pidsOf(cluster), ...await pidsOf(control)];
  const page = await browser?.newPage();
  await page?.setViewport(1280, 800);
  await page?.navigate(dashboard.url);
  console.log(
    `${MINUTES} min, idle cluster, snapshots every 50 ms, page ${
      browser === null ? "stream read by this process (no Chromium)" : "open in headless Chromium"
    }; RSS in MiB of peers 0-2 (watched) and 3-5 (control, not watched)`,
  );
  const startedAt = performance.now();
  const samples: { minutes: number; rss: number[] }[] = [];
  const messagesAtWarmup = { count: 0, at: 0 };
  while (performance.now() - startedAt <= MINUTES * 60000) {
    const minutes = (performance.now() - startedAt) / 60000;
    const rss = await Promise.all(pids.map(rssKiB));
    samples.push({ minutes, rss });
    if (messagesAtWarmup.at === 0 && minutes * 60000 >= WARMUP_MS) {
      Object.assign(messagesAtWarmup, { count: pageMessages, at: performance.now() });
    }
    if (samples.length % 6 === 1) {
      const mib = rss.map((kib) => (kib / 1024).toFixed(1));
      console.log(
        `  ${minutes.toFixed(1).padStart(5)} min: watched ${mib.slice(0, 3).join(", ")} | ` +
          `control ${mib.slice(3).join(", ")} MiB; page messages so far ${pageMessages}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, SAMPLE_MS));
  }
  const rate = (pageMessages - messagesAtWarmup.count) /
    ((performance.now() - messagesAtWarmup.at) / 1000);
  console.log(`\nmessages reaching the page: ${rate.toFixed(1)}/s after warm-up`);
  console.log(
    "| peer        | RSS at 1 min, MiB | RSS at end, MiB | slope after 1 min, KiB/min |",
  );
  console.log(
    "| ----------- | ----------------: | --------------: | -------------------------: |",
  );
  const after = samples.filter((sample) => sample.minutes * 60000 >= WARMUP_MS);
  pids.forEach((_, peer) => {
    const points = after.map((s): [number, number] => [s.minutes, s.rss[peer]!]);
    const name = peer < 3 ? `watched ${peer}` : `control ${peer - 3}`;
    console.log(
      `| ${name.padEnd(11)} | ${(points[0]![1] / 1024).toFixed(1).padStart(17)} | ${
        (points[points.length - 1]![1] / 1024).toFixed(1).padStart(15)
      } | ${slope(points).toFixed(1).padStart(26)} |`,
    );
  });
} finally {
  await browser?.close();
  await dashboard.close();
  await reading;
  for (const c of [cluster, control]) {
    await c.stop();
    await Deno.remove(c.dataDir, { recursive: true });
  }
}
