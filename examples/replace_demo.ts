/**
 * Replacing a dead machine, with one command: `deno task demo:replace`.
 *
 * Starts 3 key/value peers as separate processes, with a client writing throughout. Then peer 1
 * is destroyed: SIGKILL, and its data directory deleted. A new, empty peer 3 is started with
 * `--join`, added as a learner (the leader catches it up with its snapshot, since its log was
 * compacted long ago), promoted to voter once caught up, and peer 1 is removed. At the end, every
 * acknowledged write must be on every member (0, 2 and 3). Exits 0 when all checks pass, 1 (saying
 * what went wrong) otherwise. Ctrl-C stops every process it started.
 *
 * The membership changes go through the key/value example's HTTP API (`/members`), which calls
 * `RaftNode.addLearner`, `promote` and `removeServer` on the leader (docs/membership.md).
 *
 * Permissions, as `deno task demo:replace` grants them: `--allow-net=127.0.0.1` (the peers'
 * ports), `--allow-write=data` (the run's directory, `data/replace-demo-*` in the working
 * directory, removed when every check passes) and `--allow-run=deno` (each peer is a `deno run`
 * process). The peers run with the narrow permissions of `examples/cluster.ts`.
 *
 * @module
 */

import { LocalCluster, makeRunDirectory, type PeerStatus, removeRunDirectory } from "./cluster.ts";
import { KvClient } from "./kv/client.ts";
import { net, requirePermissions, runDeno, write } from "./_permissions.ts";

requirePermissions([net("127.0.0.1"), write("data"), runDeno()], {
  task: "deno task demo:replace",
});

const started = performance.now();
const acknowledged = new Map<string, string>();

function say(line: string): void {
  const seconds = ((performance.now() - started) / 1000).toFixed(1).padStart(5);
  console.log(`[${seconds}s] ${line}`);
}

class Violation extends Error {}

function check(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Violation(what);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

// Slots for 4 peers; peers 0-2 form the cluster, slot 3 is the replacement. Snapshots every 100
// commands, so that the new peer is caught up from a snapshot, not from a log that starts at 1.
const cluster = await LocalCluster.start({
  peers: 4,
  dataDir: await makeRunDirectory("replace-demo"),
  initialPeers: 3,
  absent: [3],
  serverArgs: ["--snapshot-every", "100"],
});
const http = Deno.createHttpClient({});
let stopWriting = false;
let failed = false;
const cleanUp = async () => {
  stopWriting = true;
  await cluster.stop();
  http.close();
};
Deno.addSignalListener("SIGINT", async () => {
  console.log("\ninterrupted: stopping the peers");
  await cleanUp();
  console.log(`peer logs kept in ${cluster.dataDir}`);
  Deno.exit(130);
});

/** The running peers' statuses, by id. */
async function statuses(peers: number[]): Promise<Map<number, PeerStatus>> {
  const found = new Map<number, PeerStatus>();
  await Promise.all(peers.map(async (peer) => {
    const status = await cluster.status(peer);
    if (status !== undefined) found.set(peer, status);
  }));
  return found;
}

/** Waits for a leader among `peers`; resolves to its id. */
async function leaderAmong(peers: number[], timeoutMs = 15_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    for (const [peer, status] of await statuses(peers)) {
      if (status.role === "leader") return peer;
    }
    await sleep(50);
  }
  throw new Violation(`no leader among peers ${peers.join(", ")} within ${timeoutMs} ms`);
}

/** Calls the membership API on the leader among `peers`, retrying while leadership moves. */
async function members(
  peers: number[],
  method: string,
  path: string,
  body?: unknown,
): Promise<{ voters: number[]; learners: number[] }> {
  const deadline = Date.now() + 90_000;
  let last = "";
  while (Date.now() < deadline) {
    const leader = await leaderAmong(peers);
    const response = await fetch(`${cluster.httpUrls[leader]}${path}`, {
      method,
      headers: { authorization: `Bearer ${cluster.secret}` },
      ...(body === undefined ? {} : { body: JSON.stringify(body) }),
      client: http,
    });
    const reply = await response.json();
    if (response.ok) {
      const { voters, learners } = reply.configuration as {
        voters: { id: number }[];
        learners: { id: number }[];
      };
      return { voters: voters.map((m) => m.id), learners: learners.map((m) => m.id) };
    }
    last = `${response.status} ${reply.error}`;
    // 421: leadership moved; 409: a change is still committing. Both pass.
    if (response.status !== 421 && response.status !== 409 && response.status !== 503) break;
    await sleep(200);
  }
  throw new Violation(`${method} ${path} failed: ${last}`);
}

/** Writes keys until told to stop, recording each acknowledged one. */
async function keepWriting(client: KvClient): Promise<number> {
  let written = 0;
  while (!stopWriting) {
    const key = `key-${String(written + 1).padStart(5, "0")}`;
    const value = `${key}@${Date.now()}`;
    await client.put(key, value);
    acknowledged.set(key, value);
    written++;
  }
  return written;
}

try {
  console.log("denoraft demo: replacing a dead machine in a 3-peer key/value cluster,");
  console.log(`with a client writing throughout; state under ${cluster.dataDir}\n`);
  const first = await leaderAmong([0, 1, 2]);
  say(`peers 0, 1, 2 running; peer ${first} leads`);
  const client = new KvClient(cluster.httpUrls, { deadlineMs: 30_000 });
  const writer = keepWriting(client);
  while (acknowledged.size < 400) await sleep(50);
  say(`${acknowledged.size} writes acknowledged so far; the client keeps writing`);

  // Destroy peer 1 for good: process and disk.
  const victim = 1;
  say(`destroying peer ${victim}: SIGKILL, and its data directory deleted`);
  await cluster.kill(victim, "SIGKILL");
  await Deno.remove(cluster.peerDataDir(victim), { recursive: true });
  const survivors = [0, 2];
  say(`peer ${await leaderAmong(survivors)} leads the two survivors; writes carry on`);

  const replacement = 3;
  say(`starting peer ${replacement}, empty, with --join (its data directory is new)`);
  await cluster.startPeer(replacement);
  let configuration = await members(survivors, "POST", "/members", {
    id: replacement,
    address: cluster.peerUrls[replacement],
  });
  say(
    `peer ${replacement} added as a learner: voters ${configuration.voters}, learners ${configuration.learners}`,
  );
  configuration = await members(survivors, "POST", `/members/${replacement}/promote`);
  const caughtUp = (await cluster.status(replacement))!;
  say(
    `peer ${replacement} caught up (its snapshot through ${caughtUp.snapshotIndex}, applied ${caughtUp.appliedIndex}) and promoted: voters ${configuration.voters}`,
  );
  check(caughtUp.snapshotIndex > 0, `peer ${replacement} should have started from a snapshot`);
  const members3 = [0, 2, replacement];
  configuration = await members(members3, "DELETE", `/members/${victim}`);
  say(`peer ${victim} removed: voters ${configuration.voters}`);
  check(
    JSON.stringify(configuration.voters) === JSON.stringify(members3),
    `expected voters ${members3}, got ${configuration.voters}`,
  );

  // Prove the new majority works without the old machine: stop the client, then check.
  await sleep(500);
  stopWriting = true;
  const written = await writer;
  client.close();
  say(`the client stops: ${written} writes acknowledged in all`);

  const leader = await leaderAmong(members3);
  const target = (await cluster.status(leader))!.commitIndex;
  say(`waiting for peers ${members3.join(", ")} to apply up to index ${target}`);
  const deadline = Date.now() + 20_000;
  for (;;) {
    const applied = [...(await statuses(members3)).values()].map((status) => status.appliedIndex);
    if (applied.length === members3.length && applied.every((index) => index >= target)) break;
    check(Date.now() < deadline, `peers did not apply up to ${target}: ${applied.join(", ")}`);
    await sleep(50);
  }
  for (const peer of members3) {
    const data = new Map(await cluster.data(peer) ?? []);
    for (const [key, value] of acknowledged) {
      check(
        data.get(key) === value,
        `peer ${peer} lacks the acknowledged write ${key}=${value} (has ${data.get(key)})`,
      );
    }
    check(
      data.size === acknowledged.size,
      `peer ${peer} holds ${data.size} keys, not ${acknowledged.size}`,
    );
  }
  say(`all ${acknowledged.size} acknowledged writes are on every member: ${members3.join(", ")}`);
} catch (error) {
  failed = true;
  console.error(
    error instanceof Violation ? `\nCHECK FAILED: ${error.message}` : "\nDEMO FAILED:",
    error instanceof Violation ? "" : error,
  );
  console.error(`peer logs: ${cluster.dataDir}/peer*.log`);
} finally {
  await cleanUp();
}
if (!failed) {
  await removeRunDirectory(cluster.dataDir);
  console.log("\nreplace demo passed; stopped every peer and removed the data directory");
}
Deno.exit(failed ? 1 : 0);
