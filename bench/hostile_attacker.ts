/**
 * The attacker of `bench/hostile.ts`, in a process of its own so that its work does not slow the
 * bench's clients: `deno run --allow-net bench/hostile_attacker.ts '<AttackPlan as JSON>'`. Runs every
 * attack at once against one peer for `durationMs`, then prints what it did as JSON and exits.
 * Every loop is bounded by the duration; all traffic goes to 127.0.0.1, from 127.0.x.y.
 *
 * @module
 */

import {
  floodLargeFrames,
  floodRefusals,
  putLargeBody,
  SocketFlood,
} from "../tests/helpers/attacks.ts";

/** What to attack, and for how long. */
export interface AttackPlan {
  /** The attacked peer's Raft (WebSocket) port. */
  raftPort: number;
  /** The attacked peer's HTTP API port. */
  httpPort: number;
  /** How long the attack lasts, in ms. */
  durationMs: number;
  /** A request target carrying a token signed with a wrong secret. */
  forgedTarget: string;
  /** Which attacks to run (default: all of {@linkcode ATTACKS}). */
  attacks?: Attack[];
}

/** The attacks, by name. */
export const ATTACKS = ["floods", "malformed", "forged", "frames", "bodies"] as const;

/** One of {@linkcode ATTACKS}. */
export type Attack = typeof ATTACKS[number];

/** What the attacker did, printed at the end. */
export interface AttackReport {
  /** Sockets opened by the floods (silent, upgrade-and-wait, slowloris). */
  floodSockets: number;
  /** Of those, closed by the peer while the flood ran. */
  floodSocketsClosedByPeer: number;
  /** Upgrade requests without a token, each with a malformed frame after it. */
  malformedFrameAttempts: number;
  /** Upgrade requests with a forged token. */
  forgedHandshakes: number;
  /** Connections that announced a 60 MiB frame. */
  oversizedFrames: number;
  /** Bytes of those frames the peer let us write before closing. */
  oversizedBytesWritten: number;
  /** PUTs of 50 MB bodies. */
  oversizedBodies: number;
}

async function repeat(until: number, attack: () => Promise<unknown>): Promise<number> {
  let rounds = 0;
  while (Date.now() < until) {
    await attack().catch(() => undefined);
    rounds++;
  }
  return rounds;
}

if (import.meta.main) {
  const plan = JSON.parse(Deno.args[0]!) as AttackPlan;
  const until = Date.now() + plan.durationMs;
  const chosen = new Set<Attack>(plan.attacks ?? ATTACKS);
  const during = (attack: Attack) => chosen.has(attack) ? until : 0;
  const flood = (port: number, mode: "silent" | "upgrade" | "slowloris", sockets: number) =>
    new SocketFlood({
      port,
      sockets,
      addresses: 200,
      mode,
      durationMs: plan.durationMs,
      maxOpened: 200_000,
    });
  const floods = chosen.has("floods")
    ? [
      flood(plan.raftPort, "silent", 150),
      flood(plan.raftPort, "slowloris", 100),
      flood(plan.raftPort, "upgrade", 50),
      flood(plan.httpPort, "silent", 100),
      flood(plan.httpPort, "slowloris", 100),
    ]
    : [];
  let malformed = 0;
  let forged = 0;
  let oversizedBytes = 0;
  const [, , frameRounds, bodies] = await Promise.all([
    repeat(during("malformed"), async () => {
      malformed += await floodRefusals(plan.raftPort, {
        count: 100,
        parallel: 4,
        timeLimitMs: until - Date.now(),
      });
    }),
    repeat(during("forged"), async () => {
      forged += await floodRefusals(plan.raftPort, {
        count: 100,
        parallel: 4,
        timeLimitMs: until - Date.now(),
        target: plan.forgedTarget,
      });
    }),
    repeat(during("frames"), async () => {
      const { written } = await floodLargeFrames(plan.raftPort, {
        connections: 4,
        frameBytes: 60 << 20,
        target: "/",
        timeLimitMs: 2000,
      });
      oversizedBytes += written.reduce((sum, bytes) => sum + bytes, 0);
    }),
    repeat(during("bodies"), () =>
      putLargeBody(plan.httpPort, "/kv/attack", {
        bodyBytes: 50 << 20,
        chunked: false,
        timeLimitMs: 2000,
      })),
  ]);
  // The floods run until the end even when nothing else does.
  await new Promise((resolve) => setTimeout(resolve, Math.max(0, until - Date.now())));
  await Promise.all(floods.map((one) => one.stop()));
  const report: AttackReport = {
    floodSockets: floods.reduce((sum, one) => sum + one.opened, 0),
    floodSocketsClosedByPeer: floods.reduce((sum, one) => sum + one.closedByServer, 0),
    malformedFrameAttempts: malformed,
    forgedHandshakes: forged,
    oversizedFrames: frameRounds * 4,
    oversizedBytesWritten: oversizedBytes,
    oversizedBodies: bodies,
  };
  console.log(JSON.stringify(report));
}
