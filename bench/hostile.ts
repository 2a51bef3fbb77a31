/**
 * A 3-peer key/value cluster (`examples/kv/server.ts` processes) under load, first left alone and
 * then with its leader attacked by clients without the secret: floods of silent, slowloris and
 * upgrade-and-wait sockets from 200 addresses, malformed frames, forged handshakes, 60 MiB frames
 * and 50 MB request bodies, all at once (`bench/hostile_attacker.ts`, in its own process). Prints,
 * for each phase, the writes committed per second, how long a peer's link to the attacked peer
 * takes to come back after it drops, and the attacked peer's peak RSS; see docs/websocket.md.
 *
 *   deno task bench:hostile            (20 s per phase)
 *   deno task bench:hostile --quick    (8 s per phase)
 *   deno task bench:hostile --attacks=floods,frames
 *                                      (some attacks only: floods, malformed, forged, frames,
 *                                      bodies)
 *   deno task bench:hostile --attacker=nice
 *                                      (the attacker at `nice 19`, not `SCHED_IDLE`)
 *   deno task bench:hostile --peer-v8-flags=
 *                                      (the peers with these V8 flags; empty: V8's defaults;
 *                                      default: `PEER_V8_FLAGS` of examples/cluster.ts)
 *
 * Runs with `-A`: it reads the peers' `/proc` entries (CPU time), which Deno allows only with
 * every permission. The attacker it starts runs with `--allow-net` only (its sockets bind source
 * addresses all over 127.0.0.0/8), under `SCHED_IDLE` (`chrt --idle 0`, Linux).
 *
 * @module
 */

import { LocalCluster, PEER_V8_FLAGS } from "../examples/cluster.ts";
import { peerV8Flags } from "./cluster_kv.ts";
import { KvClient } from "../examples/kv/client.ts";
import { cpuSeconds, rssBytes } from "../tests/helpers/attacks.ts";
import { HOSTILE_SECRET } from "../tests/helpers/hostile.ts";
import { tokenUrl } from "../tests/helpers/websocket.ts";
import { type Attack, type AttackPlan, type AttackReport, ATTACKS } from "./hostile_attacker.ts";

const QUICK = Deno.args.includes("--quick");
/** Length of each phase, in ms. */
const PHASE_MS = QUICK ? 8000 : 20_000;
/** Closed-loop writers, each one PUT at a time. */
const WRITERS = 8;
/** The attacks run, e.g. `--attacks=floods,frames`; default all. */
const CHOSEN = (flag("attacks")?.split(",") ?? [...ATTACKS]) as Attack[];
/** `--attacker=nice`: the attacker at `nice 19` rather than `SCHED_IDLE`. */
const NICE_ATTACKER = ((value) => {
  if (value === undefined || value === "idle") return false;
  if (value === "nice") return true;
  throw new RangeError(`--attacker must be idle or nice, got ${JSON.stringify(value)}`);
})(flag("attacker"));
/** How often a follower's links are dropped to time their recovery, in ms. */
const BLIP_EVERY_MS = 2000;

interface PhaseResult {
  phase: string;
  commitsPerSecond: number;
  recoveries: number[];
  peakRssBytes: number;
  /** Peak RSS of the other follower, which holds the same data and is not attacked. */
  referenceRssBytes: number;
  /** CPU seconds used during the phase: by the attacked peer, each follower, the attacker. */
  cpu: { attacked: number; followers: number[]; attacker: number };
  /** Failed write attempts that the clients retried, by reason. */
  retries: Record<string, number>;
  attack: AttackReport | undefined;
  refused: Record<string, number>;
}

function flag(name: string): string | undefined {
  const prefix = `--${name}=`;
  return Deno.args.find((arg) => arg.startsWith(prefix))?.slice(prefix.length);
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Runs `WRITERS` closed-loop writers until `until`; resolves to the writes acknowledged and the
 * reasons of the attempts that failed and were retried, counted.
 */
async function writeLoad(
  cluster: LocalCluster,
  until: number,
  phase: string,
): Promise<{ acknowledged: number; retries: Record<string, number> }> {
  let acknowledged = 0;
  const retries: Record<string, number> = {};
  const onRetry = (_peer: number, reason: string) => {
    const kind = reason.replace(/^peer \d+ /, "");
    retries[kind] = (retries[kind] ?? 0) + 1;
  };
  await Promise.all(Array.from({ length: WRITERS }, async (_, writer) => {
    const client = new KvClient(cluster.httpUrls, {
      deadlineMs: 5000,
      attemptTimeoutMs: 2000,
      onRetry,
    });
    try {
      for (let i = 0; Date.now() < until; i++) {
        try {
          await client.put(`${phase}-${writer}-${i}`, "x".repeat(64));
          if (Date.now() <= until) acknowledged++;
        } catch {
          // A write that did not commit within its deadline: counts as nothing.
        }
      }
    } finally {
      client.close();
    }
  }));
  return { acknowledged, retries };
}

/**
 * Every `BLIP_EVERY_MS`, drops the links of `follower` and times how long until it and
 * `attacked` both report their link up again; resolves to those times, in ms.
 */
async function timeRecoveries(
  cluster: LocalCluster,
  follower: number,
  attacked: number,
  until: number,
): Promise<number[]> {
  const times: number[] = [];
  while (Date.now() + BLIP_EVERY_MS < until) {
    await sleep(BLIP_EVERY_MS);
    const started = performance.now();
    await cluster.inject(follower, "disconnect");
    // The drop takes effect at once; wait until it shows, then until the link is back.
    for (;;) {
      const [a, b] = await Promise.all([cluster.status(follower), cluster.status(attacked)]);
      const up = a?.links.includes(attacked) === true && b?.links.includes(follower) === true;
      if (up && performance.now() - started > 20) break;
      if (performance.now() - started > 10_000) break; // counted as 10 s
      await sleep(10);
    }
    times.push(performance.now() - started);
  }
  return times;
}

async function phase(
  cluster: LocalCluster,
  name: string,
  attacked: number,
  attack: boolean,
): Promise<PhaseResult> {
  const status = (await cluster.status(attacked))!;
  const pid = status.pid;
  const before = status.transport;
  let attacker: Deno.ChildProcess | undefined;
  if (attack) {
    const plan: AttackPlan = {
      raftPort: Number(new URL(cluster.peerUrls[attacked]!).port),
      httpPort: Number(new URL(cluster.httpUrls[attacked]!).port),
      durationMs: PHASE_MS,
      attacks: CHOSEN,
      forgedTarget: "/" + new URL(
        await tokenUrl(
          cluster.peerUrls[attacked]!,
          (attacked + 1) % 3,
          attacked,
          "wrong-secret-0123456789",
        ),
      ).search,
    };
    // A real attacker spends its own machine's CPU, not the cluster's: here, only CPU time the
    // cluster leaves idle (SCHED_IDLE). At `nice 19` it still takes CPU time the cluster would have
    // used (see docs/websocket.md).
    attacker = new Deno.Command(NICE_ATTACKER ? "nice" : "chrt", {
      args: [
        ...(NICE_ATTACKER ? ["-n", "19"] : ["--idle", "0"]),
        Deno.execPath(),
        "run",
        "--allow-net", // its sockets bind 200 source addresses of 127.0.0.0/8
        new URL("./hostile_attacker.ts", import.meta.url).pathname,
        JSON.stringify(plan),
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    await sleep(1000); // the floods fill their slots before the measurement starts
  }
  const until = Date.now() + (attack ? PHASE_MS - 1000 : PHASE_MS);
  const referencePid = (await cluster.status((attacked + 2) % 3))!.pid;
  const followerPids = await Promise.all(
    [1, 2].map(async (step) => (await cluster.status((attacked + step) % 3))!.pid),
  );
  const cpuBefore = await Promise.all([pid, ...followerPids].map(cpuSeconds));
  const attackerCpuBefore = attacker === undefined ? 0 : await cpuSeconds(attacker.pid);
  let peak = 0;
  let referencePeak = 0;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      peak = Math.max(peak, await rssBytes(pid).catch(() => 0));
      referencePeak = Math.max(referencePeak, await rssBytes(referencePid).catch(() => 0));
      await sleep(100);
    }
  })();
  const started = Date.now();
  const follower = (attacked + 1) % 3;
  const [{ acknowledged, retries }, recoveries] = await Promise.all([
    writeLoad(cluster, until, name),
    timeRecoveries(cluster, follower, attacked, until),
  ]);
  const seconds = (Date.now() - started) / 1000;
  const cpuAfter = await Promise.all([pid, ...followerPids].map(cpuSeconds));
  const attackerCpu = attacker === undefined
    ? 0
    : await cpuSeconds(attacker.pid).catch(() => attackerCpuBefore) - attackerCpuBefore;
  const used = cpuAfter.map((after, i) => after - cpuBefore[i]!);
  sampling = false;
  await sampler;
  let report: AttackReport | undefined;
  if (attacker !== undefined) {
    const output = await attacker.output();
    report = JSON.parse(new TextDecoder().decode(output.stdout)) as AttackReport;
  }
  const after = (await cluster.status(attacked))?.transport ?? before;
  const refused: Record<string, number> = {};
  for (
    const key of [
      "refusedUpgrades",
      "refusedHandshakes",
      "refusedFrames",
      "evictedConnections",
      "acceptErrors",
      "suppressedLogLines",
    ] as const
  ) {
    refused[key] = after[key] - before[key];
  }
  return {
    phase: name,
    commitsPerSecond: acknowledged / seconds,
    recoveries,
    peakRssBytes: peak,
    referenceRssBytes: referencePeak,
    cpu: { attacked: used[0]!, followers: used.slice(1), attacker: attackerCpu },
    retries,
    attack: report,
    refused,
  };
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? NaN;
}

/** Runs one phase on a fresh cluster, so that both phases start from the same state. */
async function freshPhase(name: string, attack: boolean): Promise<PhaseResult> {
  const flags = peerV8Flags();
  const cluster = await LocalCluster.start({
    peers: 3,
    secret: HOSTILE_SECRET,
    faultInjection: true,
    ...(flags === undefined ? {} : { v8Flags: flags }),
  });
  try {
    const attacked = await cluster.waitForLeader();
    return await phase(cluster, name, attacked, attack);
  } finally {
    await cluster.stop();
    await Deno.remove(cluster.dataDir, { recursive: true });
  }
}

if (import.meta.main) {
  console.log(
    `each phase: a fresh 3-peer cluster, ${WRITERS} writers for ${PHASE_MS / 1000} s; ` +
      `the leader is the peer attacked (attacks: ${CHOSEN.join(", ")}; attacker at ${
        NICE_ATTACKER ? "nice 19" : "SCHED_IDLE"
      }; peers' V8 flags: ${(peerV8Flags() ?? PEER_V8_FLAGS).join(",") || "none"})`,
  );
  const quiet = await freshPhase("unattacked", false);
  const hostile = await freshPhase("attacked", true);
  const rows = [quiet, hostile].map((result) => ({
    phase: result.phase,
    "commits/s": result.commitsPerSecond.toFixed(0),
    "link back, median ms": median(result.recoveries).toFixed(0),
    "link back, max ms": Math.max(...result.recoveries).toFixed(0),
    "leader's peak RSS MB": (result.peakRssBytes / 1e6).toFixed(0),
    "a follower's peak RSS MB": (result.referenceRssBytes / 1e6).toFixed(0),
    "CPU s: leader, followers, attacker": [
      result.cpu.attacked,
      ...result.cpu.followers,
      result.cpu.attacker,
    ].map((value) => value.toFixed(1)).join(", "),
  }));
  console.table(rows);
  console.log(
    `attacked/unattacked commit rate: ${
      (hostile.commitsPerSecond / quiet.commitsPerSecond).toFixed(2)
    }`,
  );
  console.log("attacker:", JSON.stringify(hostile.attack));
  console.log("writes retried, unattacked:", JSON.stringify(quiet.retries));
  console.log("writes retried, attacked:", JSON.stringify(hostile.retries));
  console.log("attacked peer's counters during the attack:", JSON.stringify(hostile.refused));
  const failures: string[] = [];
  if (hostile.commitsPerSecond < quiet.commitsPerSecond / 2) {
    failures.push("commit rate under half");
  }
  if (Math.max(...hostile.recoveries) > 1000) {
    failures.push("a link took over a second to recover");
  }
  if (hostile.peakRssBytes > 200e6) failures.push("RSS over 200 MB");
  console.log(failures.length === 0 ? "PASS" : `FAIL: ${failures.join("; ")}`);
  if (failures.length > 0) Deno.exitCode = 1;
}
