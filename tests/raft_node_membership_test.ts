/**
 * RaftNode's membership API in virtual time: a learner added and caught up (by snapshot),
 * promoted, servers removed (the leader included), and every refusal with its typed error and
 * nothing changed. Five nodes on one in-memory network; the cluster starts with voters 0, 1, 2,
 * and nodes 3 and 4 run outside it until they are added.
 */

import assert from "node:assert/strict";
import {
  ChangeInProgressError,
  type Configuration,
  LastVoterError,
  MemberExistsError,
  NotLeaderError,
  type RaftNode,
  UnknownMemberError,
} from "../mod.ts";
import { sleep } from "../src/clock.ts";
import { Simulator } from "../src/sim/mod.ts";
import { NodeCluster } from "./helpers/node_cluster.ts";
import { sanitized } from "./helpers/sanitized.ts";

const member = (id: number) => ({ id, address: `node-${id}` });
const voters = (...ids: number[]): Configuration => ({ voters: ids.map(member), learners: [] });
const ids = (configuration: Configuration) => ({
  voters: configuration.voters.map((m) => m.id),
  learners: configuration.learners.map((m) => m.id),
});

async function inSimulator(
  seed: number,
  body: (cluster: NodeCluster, sim: Simulator) => Promise<void>,
): Promise<void> {
  const sim = new Simulator({ seed });
  await sim.run(async () => {
    const cluster = await NodeCluster.start(5, {
      clock: sim.clock,
      random: sim.random,
      nodeOptions: {
        heartbeatIntervalMs: 50,
        electionTimeoutMinMs: 150,
        electionTimeoutMaxMs: 300,
        configuration: voters(0, 1, 2),
        snapshotEveryEntries: 20,
      },
    });
    try {
      await body(cluster, sim);
    } finally {
      await cluster.close();
    }
  }, { timeLimitMs: 10 * 60_000 });
}

async function leaderOf(cluster: NodeCluster, sim: Simulator): Promise<RaftNode<string, string>> {
  for (let i = 0; i < 100; i++) {
    const leader = cluster.leader();
    // A leader that has committed its no-op can change the membership.
    if (leader !== null && leader.status().commitIndex > 0) {
      const status = leader.status();
      if (status.commitIndex === status.lastLogIndex) return leader;
    }
    await sleep(sim.clock, 50);
  }
  throw new Error("no leader");
}

Deno.test(
  "RaftNode: a learner is added, caught up by snapshot, promoted; servers are removed",
  sanitized,
  async () => {
    await inSimulator(1, async (cluster, sim) => {
      let leader = await leaderOf(cluster, sim);
      for (let i = 0; i < 50; i++) await leader.propose(`before ${i}`);
      // Every node has compacted its log by now (a snapshot every 20 entries).
      assert.ok(leader.status().snapshotIndex > 0);

      const changes: Configuration[] = [];
      cluster.nodes[3]!.addEventListener("configurationchange", (event) => {
        changes.push(event.detail.configuration);
      });
      const withLearner = await leader.addLearner(3, "node-3");
      assert.deepEqual(ids(withLearner), { voters: [0, 1, 2], learners: [3] });
      assert.deepEqual(ids(leader.configuration()), ids(withLearner));

      // The learner catches up: by the leader's snapshot, then entries.
      const promoted = await leader.promote(3);
      assert.deepEqual(ids(promoted), { voters: [0, 1, 2, 3], learners: [] });
      assert.ok(
        cluster.machines[3]!.restoredFrom.length > 0,
        "the new server started from the leader's snapshot",
      );
      await leader.propose("after promotion");
      await sleep(sim.clock, 200);
      assert.deepEqual(ids(cluster.nodes[3]!.configuration()), ids(promoted));
      assert.deepEqual(
        changes.map(ids),
        [{ voters: [0, 1, 2], learners: [3] }, { voters: [0, 1, 2, 3], learners: [] }],
        "node 3 saw each configuration once",
      );

      // Remove a follower; then it is shut down and the rest carries on.
      const follower = [0, 1, 2].find((id) => id !== leader.id)!;
      const removed = await leader.removeServer(follower);
      assert.ok(!ids(removed).voters.includes(follower));
      await cluster.crash(follower);
      await leader.propose("without the follower");

      // The leader removes itself: it steps down once the change commits, and another leads.
      const old = leader;
      const final = await old.removeServer(old.id);
      assert.equal(final.voters.length, 2);
      assert.ok(!ids(final).voters.includes(old.id));
      leader = await leaderOf(cluster, sim);
      assert.notEqual(leader.id, old.id);
      assert.equal(old.status().role, "follower");
      const term = old.status().term;
      await sleep(sim.clock, 3000);
      assert.equal(old.status().role, "follower", "a removed server never campaigns");
      assert.equal(old.status().term, term, "a removed server raises no term");
      await leader.propose("after the leader's removal");
      const commit = leader.status().commitIndex;
      await sleep(sim.clock, 300);
      for (const id of ids(final).voters) {
        const machine = cluster.machines[id]!;
        assert.equal(
          machine.applied.get(commit),
          "after the leader's removal",
          `voter ${id} applied the last command`,
        );
      }
    });
  },
);

Deno.test(
  "RaftNode: refused membership changes say why and change nothing",
  sanitized,
  async () => {
    await inSimulator(2, async (cluster, sim) => {
      const leader = await leaderOf(cluster, sim);
      const follower = cluster.nodes[[0, 1, 2].find((id) => id !== leader.id)!]!;
      const before = leader.configuration();
      const lastIndex = leader.status().lastLogIndex;

      await assert.rejects(follower.addLearner(3, "node-3"), NotLeaderError);
      await assert.rejects(leader.addLearner(1, "node-1"), MemberExistsError);
      await assert.rejects(leader.removeServer(9), UnknownMemberError);
      await assert.rejects(leader.promote(4), UnknownMemberError);
      await assert.rejects(leader.promote(follower.id), MemberExistsError);
      await assert.rejects(leader.addLearner(-1, "x"), RangeError);
      await assert.rejects(leader.addLearner(3, 42 as unknown as string), TypeError);
      assert.deepEqual(leader.configuration(), before);
      assert.equal(leader.status().lastLogIndex, lastIndex, "nothing was appended");

      // One change at a time.
      const first = leader.addLearner(3, "node-3");
      await assert.rejects(leader.addLearner(4, "node-4"), ChangeInProgressError);
      await first;

      // A learner that cannot catch up (it is down) is not promoted.
      await cluster.crash(3);
      await assert.rejects(leader.promote(3, { timeoutMs: 2000 }), { name: "TimeoutError" });
      assert.deepEqual(ids(leader.configuration()), { voters: [0, 1, 2], learners: [3] });
      await leader.removeServer(3);

      // Down to one voter, which cannot be removed.
      for (const id of [0, 1, 2].filter((id) => id !== leader.id)) await leader.removeServer(id);
      await assert.rejects(leader.removeServer(leader.id), LastVoterError);
      assert.deepEqual(ids(leader.configuration()), { voters: [leader.id], learners: [] });
      assert.equal(
        await leader.propose("alone"),
        `applied alone at ${leader.status().lastLogIndex}`,
      );
    });
  },
);
