/**
 * RaftNode under changing leaders, in virtual time: clients keep proposing while leaders are cut
 * off, crash and restart. Every proposal settles at most once, a proposal never resolves for an
 * entry another leader overwrote, a dropped proposal is applied nowhere, and every node applies
 * one common sequence.
 */

import assert from "node:assert/strict";
import { NodeClosedError, NotLeaderError, ProposalDroppedError, type RaftNode } from "../mod.ts";
import { randomInt, sleep } from "../src/clock.ts";
import { Simulator } from "../src/sim/mod.ts";
import { NodeCluster } from "./helpers/node_cluster.ts";
import { sanitized } from "./helpers/sanitized.ts";

interface Outcome {
  command: string;
  settled: number;
  result?: string;
  error?: unknown;
}

async function runSeed(seed: number): Promise<{ resolved: number; dropped: number }> {
  const sim = new Simulator({ seed });
  const outcomes: Outcome[] = [];
  let resolved = 0;
  let dropped = 0;
  await sim.run(async () => {
    const n = 5;
    const cluster = await NodeCluster.start(n, {
      clock: sim.clock,
      random: sim.random,
      nodeOptions: {
        heartbeatIntervalMs: 50,
        electionTimeoutMinMs: 150,
        electionTimeoutMaxMs: 300,
      },
    });
    let stop = false;
    let next = 0;
    const client = async (id: number) => {
      let target = randomInt(sim.random, 0, n - 1);
      while (!stop) {
        // Without a pause, a zero-latency network would commit every proposal at one virtual
        // instant, and time would never move on.
        await sleep(sim.clock, randomInt(sim.random, 1, 10));
        const node: RaftNode<string, string> | null = cluster.nodes[target] ?? null;
        if (node === null) {
          target = randomInt(sim.random, 0, n - 1);
          await sleep(sim.clock, 20);
          continue;
        }
        const outcome: Outcome = { command: `c${id}.${next++}`, settled: 0 };
        outcomes.push(outcome);
        try {
          outcome.result = await node.propose(outcome.command, { timeoutMs: 2000 });
          outcome.settled++;
        } catch (error) {
          outcome.settled++;
          outcome.error = error;
          if (error instanceof NotLeaderError) {
            target = error.leaderId ?? randomInt(sim.random, 0, n - 1);
            await sleep(sim.clock, 20);
          } else if (error instanceof NodeClosedError && cluster.nodes[target] !== node) {
            target = randomInt(sim.random, 0, n - 1); // the node crashed while we waited
          } else if (!(error instanceof ProposalDroppedError) && !(error instanceof DOMException)) {
            throw error; // closed by a fatal error, or a bug: stop the run
          }
        }
      }
    };
    const clients = [0, 1, 2, 3].map(client);
    // Faults: every 100-700 ms, cut the leader off, cut a random node off, crash and restart a
    // node, or heal everything.
    for (let round = 0; round < 40; round++) {
      await sleep(sim.clock, randomInt(sim.random, 100, 700));
      const leader = cluster.leader();
      switch (randomInt(sim.random, 0, 3)) {
        case 0:
          if (leader !== null) cluster.connect(leader.id, false);
          break;
        case 1:
          cluster.connect(randomInt(sim.random, 0, n - 1), false);
          break;
        case 2: {
          const victim = leader?.id ?? randomInt(sim.random, 0, n - 1);
          await cluster.crash(victim);
          await sleep(sim.clock, randomInt(sim.random, 0, 500));
          await cluster.restart(victim);
          break;
        }
        default:
          for (let i = 0; i < n; i++) cluster.connect(i, true);
      }
    }
    for (let i = 0; i < n; i++) cluster.connect(i, true);
    await sleep(sim.clock, 3000);
    stop = true;
    await Promise.all(clients);
    await sleep(sim.clock, 2000);

    // One common applied sequence.
    const common = new Map<number, string>();
    for (const machine of cluster.machines) {
      for (const [index, command] of machine.applied) {
        const other = common.get(index);
        assert.ok(
          other === undefined || other === command,
          `index ${index}: ${other} vs ${command}`,
        );
        common.set(index, command);
      }
    }
    const appliedAt = new Map([...common].map(([index, command]) => [command, index]));
    for (const outcome of outcomes) {
      assert.ok(outcome.settled <= 1, `${outcome.command} settled ${outcome.settled} times`);
      if (outcome.result !== undefined) {
        resolved++;
        const index = Number(/ at (\d+)$/.exec(outcome.result)![1]);
        assert.equal(
          common.get(index),
          outcome.command,
          `${outcome.command} resolved as applied at ${index}, where the cluster applied ${
            common.get(index)
          }`,
        );
      }
      if (outcome.error instanceof ProposalDroppedError) {
        dropped++;
        assert.equal(
          appliedAt.get(outcome.command),
          undefined,
          `${outcome.command} was reported dropped but applied`,
        );
      }
    }
    await cluster.close();
  }, { timeLimitMs: 3_600_000 });
  return { resolved, dropped };
}

Deno.test(
  "RaftNode under changing leaders: no proposal resolves for an overwritten entry",
  sanitized,
  async () => {
    let resolved = 0;
    let dropped = 0;
    const seeds = Number(Deno.env.get("NODE_SIM_SEEDS") ?? 20);
    for (let seed = 1; seed <= seeds; seed++) {
      const result = await runSeed(seed);
      resolved += result.resolved;
      dropped += result.dropped;
    }
    console.log(`${seeds} seeds: ${resolved} proposals resolved, ${dropped} dropped`);
    assert.ok(resolved > 1000, `expected many proposals to commit, got ${resolved}`);
    assert.ok(dropped > 0, "expected some proposals to be dropped by leader changes");
  },
);
