/**
 * The one-command demo: `deno task demo`.
 *
 * Starts 3 key/value peers as separate processes talking over WebSockets, writes through a
 * client, SIGKILLs the leader, keeps writing through the new leader, restarts the killed peer and
 * waits for it to catch up, then checks that every peer holds the same data and that every
 * acknowledged write is there. Exits 0 when all checks pass, 1 (saying what went wrong) otherwise.
 *
 * With `--web` (`deno task demo --web`), it also serves the live view of examples/web/ and prints
 * its address, waits up to a minute for a page to open it, goes step by step with a pause
 * between steps, and keeps the cluster running for the page once done, until Ctrl-C.
 *
 * Permissions, as `deno task demo` grants them: `--allow-net=127.0.0.1` (the peers' ports),
 * `--allow-write=data` (the run's directory, `data/demo-*` in the working directory, removed
 * when every check passes), `--allow-run=deno` (each peer is a `deno run` process) and
 * `--allow-read=examples/web/page` (the page `--web` serves). The peers run with the narrow
 * permissions of `examples/cluster.ts`.
 *
 * @module
 */

import { localPath, net, read, requirePermissions, runDeno, write } from "./_permissions.ts";
import { LocalCluster, makeRunDirectory, removeRunDirectory } from "./cluster.ts";
import { KvClient } from "./kv/client.ts";
import { Dashboard } from "./web/dashboard.ts";

const web = Deno.args.includes("--web");
requirePermissions([
  net("127.0.0.1"),
  write("data"),
  runDeno(),
  ...(web ? [read(localPath(new URL("./web/page", import.meta.url)))] : []),
], { task: web ? "deno task demo --web" : "deno task demo" });

const started = performance.now();
const acknowledged = new Map<string, string>();
const progressOnOneLine = Deno.stdout.isTerminal();
let retries: string[] = [];

/** The live view, with --web; the demo's steps go to its timeline too. */
let dashboard: Dashboard | null = null;

function say(line: string): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`[${seconds}s] ${line}`);
  dashboard?.note(`Demo: ${line}`);
}

/** With --web, a pause that lets a person watch what the last step did. */
function pause(): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, web ? 2500 : 0));
}

class Violation extends Error {}

function check(condition: boolean, what: string): void {
  if (!condition) throw new Violation(what);
}

async function writeKeys(client: KvClient, prefix: string, count: number): Promise<void> {
  for (let i = 1; i <= count; i++) {
    const key = `${prefix}${String(i).padStart(3, "0")}`;
    const value = `${key}@${Date.now()}`;
    await client.put(key, value);
    acknowledged.set(key, value);
    if (i % 10 === 0 || i === count) {
      const line = `          ${i}/${count} writes acknowledged`;
      if (progressOnOneLine) await Deno.stdout.write(new TextEncoder().encode(`\r${line}`));
      else console.log(line);
    }
  }
  if (progressOnOneLine) console.log();
}

const cluster = await LocalCluster.start({
  peers: 3,
  dataDir: await makeRunDirectory("demo"),
  faultInjection: web,
});
if (web) {
  dashboard = await Dashboard.start(cluster);
  console.log(`live view: ${dashboard.url}`);
  console.log("waiting up to a minute for a page to open it...\n");
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([
    dashboard.pageConnected(),
    new Promise((resolve) => (timer = setTimeout(resolve, 60000))),
  ]);
  clearTimeout(timer);
}
const client = new KvClient(cluster.httpUrls, {
  deadlineMs: 20000,
  onRetry: (_peer, reason) => retries.push(reason),
});
let failed = false;
try {
  console.log("denoraft demo: a replicated key/value store on 3 Raft peers, each its own process,");
  console.log(`talking over WebSockets on 127.0.0.1; state under ${cluster.dataDir}\n`);
  for (let peer = 0; peer < 3; peer++) {
    const status = await cluster.status(peer);
    say(
      `peer ${peer} running: pid ${status?.pid}, raft ${cluster.peerUrls[peer]}, http ${
        cluster.httpUrls[peer]
      }`,
    );
  }

  const leader = await cluster.waitForLeader();
  const leaderStatus = await cluster.status(leader);
  say(`peer ${leader} elected leader in term ${leaderStatus?.term}`);

  await pause();
  say("writing 30 keys through the client (each waits for a majority to commit)");
  await writeKeys(client, "before-", 30);
  await pause();

  // Keep writing while the leader dies, to show writes carry on through the failover.
  say(
    `SIGKILL the leader, peer ${leader} (pid ${leaderStatus?.pid}), while a client keeps writing`,
  );
  const killedAt = performance.now();
  retries = [];
  const writing = writeKeys(client, "during-", 30);
  dashboard?.action(leader, `Demo: kill peer ${leader}, the leader (SIGKILL)`);
  await cluster.kill(leader, "SIGKILL");
  const newLeader = await cluster.waitForLeader(10000);
  const newStatus = await cluster.status(newLeader);
  check(newLeader !== leader, `the killed peer ${leader} still reported as leader`);
  say(
    `peer ${newLeader} took over as leader in term ${newStatus?.term}, ` +
      `${Math.round(performance.now() - killedAt)} ms after the kill`,
  );
  await writing;
  say(
    `writes continued: all 30 acknowledged; the client retried ${retries.length} times meanwhile`,
  );
  for (const reason of new Set(retries)) say(`  retry reason: ${reason}`);
  await pause();

  say(`restarting peer ${leader} on its data directory`);
  dashboard?.action(leader, `Demo: restart peer ${leader}`);
  await cluster.startPeer(leader);
  say(`peer ${leader} is back: pid ${(await cluster.status(leader))?.pid}`);
  say("writing 20 more keys");
  await writeKeys(client, "after-", 20);

  const target = (await cluster.status(await cluster.waitForLeader()))?.commitIndex ?? 0;
  say(`waiting for every peer to apply up to index ${target}`);
  const deadline = Date.now() + 15000;
  for (;;) {
    const applied = await Promise.all(
      [0, 1, 2].map(async (peer) => (await cluster.status(peer))?.appliedIndex ?? -1),
    );
    if (applied.every((index) => index >= target)) {
      say(`peer ${leader} caught up: applied indexes ${applied.join(", ")}`);
      break;
    }
    if (Date.now() > deadline) {
      check(
        false,
        `peers did not catch up to index ${target} in 15 s: applied ${applied.join(", ")}`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 50));
  }

  say("checking the data on every peer");
  const data = await Promise.all([0, 1, 2].map((peer) => cluster.data(peer)));
  const texts = data.map((entries) => JSON.stringify(entries));
  check(data.every((entries) => entries !== undefined), "a peer did not return its data");
  check(texts.every((text) => text === texts[0]), "the peers hold different data");
  const held = new Map(data[0]!);
  for (const [key, value] of acknowledged) {
    check(
      held.get(key) === value,
      `acknowledged write ${key}=${value} is missing (found ${held.get(key)})`,
    );
  }
  check(held.size === acknowledged.size, `expected ${acknowledged.size} keys, found ${held.size}`);
  const sample = [...acknowledged.keys()][0]!;
  check(
    await client.get(sample) === acknowledged.get(sample),
    `a linearizable read of ${sample} disagrees`,
  );
  say(
    `all 3 peers hold the same ${held.size} keys; all ${acknowledged.size} acknowledged writes present`,
  );
} catch (error) {
  failed = true;
  console.log();
  console.log(`FAIL: ${error instanceof Violation ? error.message : error}`);
} finally {
  client.close();
  if (dashboard !== null) {
    console.log(`\nthe cluster keeps running for the page at ${dashboard.url}; Ctrl-C stops it`);
    await new Promise<void>((resolve) => Deno.addSignalListener("SIGINT", () => resolve()));
    await dashboard.close();
  }
  await cluster.stop();
  if (failed) {
    console.log(`Peer logs kept in ${cluster.dataDir}`);
  } else {
    await removeRunDirectory(cluster.dataDir);
    say("PASS: stopped every peer and removed the data directory");
  }
}
Deno.exit(failed ? 1 : 0);
