/**
 * Soak benchmark: three key/value peers as `deno run` processes under steady write load for a
 * given time. Every few seconds it prints each peer's resident memory, the disk its data
 * directory takes and the length of its log (entries after its latest snapshot); at the end it
 * SIGKILLs a follower and times its restart: until its process answers, and until it has caught
 * up with every command committed before the kill. With snapshots, all of these stay flat however
 * long the run, and the restart does not grow with the number of commands ever committed.
 *
 *   deno task bench:soak                      # 10 minutes
 *   deno task bench:soak --minutes 2 --writers 16 --keys 1000 --interval 5 --snapshot-every 2000
 *
 * @module
 */

import { parseArgs } from "node:util";
import { join } from "node:path";
import { LocalCluster } from "../examples/cluster.ts";

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    minutes: { type: "string", default: "10" },
    writers: { type: "string", default: "8" },
    keys: { type: "string", default: "1000" },
    interval: { type: "string", default: "5" },
    "snapshot-every": { type: "string", default: "2000" },
  },
});
const minutes = Number(flags.minutes);
const writers = Number(flags.writers);
const keys = Number(flags.keys);
const intervalS = Number(flags.interval);
for (
  const [name, value] of [["minutes", minutes], ["writers", writers], ["keys", keys], [
    "interval",
    intervalS,
  ]] as const
) {
  if (!(value > 0)) throw new RangeError(`--${name} must be a positive number, got ${value}`);
}

/** Bytes of every file under `directory`. */
async function diskBytes(directory: string): Promise<number> {
  let total = 0;
  for await (const entry of Deno.readDir(directory)) {
    const path = join(directory, entry.name);
    if (entry.isDirectory) total += await diskBytes(path);
    else if (entry.isFile) total += (await Deno.stat(path)).size;
  }
  return total;
}

const mib = (bytes: number) => (bytes / 1024 / 1024).toFixed(1);
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));

const snapshotEvery = Number(flags["snapshot-every"]);
const cluster = await LocalCluster.start({
  peers: 3,
  serverArgs: ["--snapshot-every", String(snapshotEvery)],
});
const http = Deno.createHttpClient({});
let stop = false;
let written = 0;
let leader = await cluster.waitForLeader();

/** One writer: PUT after PUT to the leader, following 421 hints. */
async function writer(id: number): Promise<void> {
  const value = "v".repeat(100);
  let seq = 0;
  while (!stop) {
    const key = `k${Math.floor(Math.random() * keys)}`;
    seq++;
    for (let attempt = 0; attempt < 50 && !stop; attempt++) {
      try {
        const response = await fetch(`${cluster.httpUrls[leader]}/kv/${key}`, {
          method: "PUT",
          body: value,
          headers: { "x-client-id": `soak-${id}`, "x-request-seq": String(seq) },
          client: http,
          signal: AbortSignal.timeout(5000),
        });
        const reply = await response.json().catch(() => ({}));
        if (response.status === 200) {
          written++;
          break;
        }
        const hinted = cluster.httpUrls.indexOf(reply.leader);
        if (response.status === 421 && hinted >= 0) leader = hinted;
        else await sleep(100);
      } catch {
        await sleep(100);
      }
    }
  }
}

console.log(
  `soak: 3 peers, ${writers} writers of 100-byte values over ${keys} keys, ${minutes} min, a sample every ${intervalS} s, a snapshot every ${snapshotEvery} commands`,
);
console.log("| time s | writes/s | peer | RSS MiB | disk MiB | log entries | snapshot index |");
console.log("| ---: | ---: | ---: | ---: | ---: | ---: | ---: |");
const samples: { rss: number; disk: number; log: number }[][] = [[], [], []];
const started = Date.now();
const load = Array.from({ length: writers }, (_, id) => writer(id));
let lastWritten = 0;
while (Date.now() - started < minutes * 60_000) {
  await sleep(intervalS * 1000);
  const rate = ((written - lastWritten) / intervalS).toFixed(0);
  lastWritten = written;
  const elapsed = ((Date.now() - started) / 1000).toFixed(0);
  for (let peer = 0; peer < 3; peer++) {
    const status = await cluster.status(peer);
    if (status === undefined) continue;
    const disk = await diskBytes(cluster.peerDataDir(peer));
    const log = status.lastLogIndex - status.snapshotIndex;
    samples[peer]!.push({ rss: status.memory.rss, disk, log });
    console.log(
      `| ${elapsed} | ${peer === 0 ? rate : ""} | ${peer} | ${mib(status.memory.rss)} | ${
        mib(disk)
      } | ${log} | ${status.snapshotIndex} |`,
    );
  }
}
stop = true;
await Promise.all(load);

// Restart a follower: the time until its process answers, and until it caught up.
leader = await cluster.waitForLeader();
const follower = [0, 1, 2].find((peer) => peer !== leader)!;
const target = (await cluster.status(leader))!.commitIndex;
await cluster.kill(follower, "SIGKILL");
const restartStarted = performance.now();
await cluster.startPeer(follower);
const answered = performance.now() - restartStarted;
let caughtUp = Infinity;
for (let i = 0; i < 600; i++) {
  const status = await cluster.status(follower);
  if (status !== undefined && status.appliedIndex >= target) {
    caughtUp = performance.now() - restartStarted;
    break;
  }
  await sleep(25);
}
const finalStatus = await cluster.status(follower);

/** The mean of the first and last quarters of a series, and their ratio. */
function drift(values: number[]): { first: number; last: number; ratio: number } {
  const quarter = Math.max(1, Math.floor(values.length / 4));
  const mean = (part: number[]) => part.reduce((sum, value) => sum + value, 0) / part.length;
  const first = mean(values.slice(0, quarter));
  const last = mean(values.slice(-quarter));
  return { first, last, ratio: last / first };
}

console.log();
console.log(
  `${written} writes in ${minutes} min (${
    (written / minutes / 60).toFixed(0)
  }/s); the cluster committed ${target} entries in all`,
);
console.log(
  "| peer | RSS MiB, first / last quarter | disk MiB, first / last quarter | log entries, first / last quarter |",
);
console.log("| ---: | ---: | ---: | ---: |");
for (let peer = 0; peer < 3; peer++) {
  const rss = drift(samples[peer]!.map((sample) => sample.rss));
  const disk = drift(samples[peer]!.map((sample) => sample.disk));
  const log = drift(samples[peer]!.map((sample) => sample.log));
  console.log(
    `| ${peer} | ${mib(rss.first)} / ${mib(rss.last)} (x${rss.ratio.toFixed(2)}) | ${
      mib(disk.first)
    } / ${mib(disk.last)} (x${disk.ratio.toFixed(2)}) | ${log.first.toFixed(0)} / ${
      log.last.toFixed(0)
    } |`,
  );
}
console.log(
  `restart of follower ${follower} after SIGKILL: its process answered in ${
    answered.toFixed(0)
  } ms, and it had applied every one of the ${target} committed entries in ${
    caughtUp.toFixed(0)
  } ms (snapshot through ${finalStatus?.snapshotIndex}, ${
    (finalStatus?.lastLogIndex ?? 0) - (finalStatus?.snapshotIndex ?? 0)
  } entries after it)`,
);
http.close();
await cluster.stop();
await Deno.remove(cluster.dataDir, { recursive: true });
