/**
 * The service API: proposals that resolve on commit, each typed error, events, metrics, the
 * no-op at each term, fatal stops and close(). Most run in a simulator's virtual time.
 */

import assert from "node:assert/strict";
import {
  FatalError,
  type LeaderChange,
  MemoryPersister,
  NodeClosedError,
  NotLeaderError,
  OverloadedError,
  ProposalDroppedError,
  RaftNode,
  type RoleChange,
} from "../mod.ts";
import { sleep } from "../src/clock.ts";
import { Simulator } from "../src/sim/mod.ts";
import { NodeCluster } from "./helpers/node_cluster.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Runs `body` on a 3-node cluster in virtual time; closes everything afterwards. */
async function inSimulation(
  seed: number,
  body: (cluster: NodeCluster, sim: Simulator) => Promise<void>,
  n = 3,
): Promise<void> {
  const sim = new Simulator({ seed });
  await sim.run(async () => {
    const cluster = await NodeCluster.start(n, { clock: sim.clock, random: sim.random });
    try {
      await body(cluster, sim);
    } finally {
      await cluster.close();
    }
  }, { timeLimitMs: 600_000 });
}

async function waitForLeader(
  cluster: NodeCluster,
  sim: Simulator,
): Promise<RaftNode<string, string>> {
  for (let waited = 0; waited < 30_000; waited += 50) {
    const leader = cluster.leader();
    if (leader !== null) return leader;
    await sleep(sim.clock, 50);
  }
  throw new Error("no leader within 30 s");
}

Deno.test(
  "propose() resolves with the state machine's result once committed and applied",
  sanitized,
  async () => {
    await inSimulation(1, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      const result = await leader.propose("x");
      const index = [...cluster.machines[leader.id]!.applied].find(([, command]) =>
        command === "x"
      )![0];
      assert.equal(result, `applied x at ${index}`);
      assert.equal(index, 2, "index 1 is the leader's no-op");
      const results = await Promise.all(["a", "b", "c"].map((command) => leader.propose(command)));
      assert.deepEqual(results, ["applied a at 3", "applied b at 4", "applied c at 5"]);
    });
  },
);

Deno.test(
  "propose() on a follower rejects with NotLeaderError naming the leader and its address",
  sanitized,
  async () => {
    await inSimulation(2, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("x"); // every follower has heard from the leader by now
      const follower = cluster.nodes.find((node) => node !== leader)!;
      const error = await follower.propose("y").then(() => null, (error) => error);
      assert.ok(error instanceof NotLeaderError, `expected NotLeaderError, got ${error}`);
      assert.equal(error.leaderId, leader.id);
      assert.equal(error.leaderAddress, `node-${leader.id}.example`);
      assert.match(
        error.message,
        new RegExp(`peer ${leader.id} at node-${leader.id}.example leads`),
      );
    });
  },
);

Deno.test(
  "a proposal whose entry another leader overwrites rejects with ProposalDroppedError",
  sanitized,
  async () => {
    await inSimulation(3, async (cluster, sim) => {
      const old = await waitForLeader(cluster, sim);
      await old.propose("before");
      cluster.connect(old.id, false);
      const lost = old.propose("lost in the minority");
      let settled: unknown = "pending";
      lost.then((value) => settled = value, (error) => settled = error);
      // The majority elects another leader, which commits entries of its own.
      let leader: RaftNode<string, string> | undefined;
      while (leader === undefined) {
        await sleep(sim.clock, 100);
        leader = cluster.nodes.find((node) => node !== old && node!.status().role === "leader")!;
      }
      await leader.propose("in the majority");
      assert.equal(settled, "pending", "the isolated leader cannot know yet");
      cluster.connect(old.id, true);
      const error = await lost.then(() => null, (error) => error);
      assert.ok(
        error instanceof ProposalDroppedError,
        `expected ProposalDroppedError, got ${error}`,
      );
      for (const machine of cluster.machines) {
        assert.ok(![...machine.applied.values()].includes("lost in the minority"));
      }
    });
  },
);

Deno.test(
  "a leader whose followers do not answer rejects with OverloadedError past maxUncommittedBytes",
  sanitized,
  async () => {
    const sim = new Simulator({ seed: 4 });
    await sim.run(async () => {
      const cluster = await NodeCluster.start(3, {
        clock: sim.clock,
        random: sim.random,
        nodeOptions: { maxUncommittedBytes: 1000 },
      });
      try {
        const leader = await waitForLeader(cluster, sim);
        await leader.propose("x");
        for (const node of cluster.nodes) if (node !== leader) cluster.connect(node!.id, false);
        const pending: Promise<unknown>[] = [];
        let overloaded: OverloadedError | null = null;
        for (let i = 0; i < 100 && overloaded === null; i++) {
          const proposal = leader.propose("c".repeat(50));
          const outcome = await Promise.race([
            proposal.then(() => "committed", (error) => error),
            sleep(sim.clock, 1).then(() => "pending"),
          ]);
          if (outcome instanceof OverloadedError) overloaded = outcome;
          else {
            assert.equal(outcome, "pending");
            pending.push(proposal.catch(() => {}));
          }
        }
        assert.ok(overloaded !== null, "expected an OverloadedError");
        assert.ok(overloaded.uncommittedBytes <= 1000 && overloaded.limit === 1000);
        assert.ok(pending.length > 5 && pending.length < 25, `${pending.length} proposals fit`);
      } finally {
        await cluster.close();
      }
    }, { timeLimitMs: 600_000 });
  },
);

Deno.test(
  "a proposal rejects with TimeoutError after timeoutMs and with the signal's reason on abort",
  sanitized,
  async () => {
    await inSimulation(5, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      for (const node of cluster.nodes) if (node !== leader) cluster.connect(node!.id, false);
      const timedOut = await leader.propose("t", { timeoutMs: 300 }).then(() => null, (e) => e);
      assert.ok(
        timedOut instanceof DOMException && timedOut.name === "TimeoutError",
        String(timedOut),
      );
      const controller = new AbortController();
      const aborted = leader.propose("a", { signal: controller.signal }).then(() => null, (e) => e);
      controller.abort();
      const error = await aborted;
      assert.ok(error instanceof DOMException && error.name === "AbortError", String(error));
      const already = await leader.propose("b", { signal: AbortSignal.abort(new Error("mine")) })
        .then(() => null, (e) => e);
      assert.equal((already as Error).message, "mine");
      await assert.rejects(leader.propose("c", { timeoutMs: -1 }), RangeError);
    });
  },
);

Deno.test(
  "commands that JSON would change are refused with a TypeError naming the value",
  sanitized,
  async () => {
    await inSimulation(6, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim) as unknown as RaftNode<unknown, unknown>;
      const cases: [unknown, RegExp][] = [
        [{ when: new Date(0) }, /command\.when is a Date/],
        [{ a: undefined }, /command\.a is undefined/],
        [[1, , 3], /command\[1\] is a hole/],
        [NaN, /command is NaN/],
        [{ n: 1n }, /command\.n is a bigint/],
        [new Map(), /command is a Map/],
        [-0, /command is -0/],
      ];
      for (const [command, message] of cases) {
        await assert.rejects(leader.propose(command), (error: Error) => {
          assert.ok(error instanceof TypeError, `${error}`);
          assert.match(error.message, message);
          return true;
        });
      }
      let deep: unknown = "leaf";
      for (let i = 0; i < 100; i++) deep = [deep];
      await assert.rejects(leader.propose(deep), /nested more than 64 levels/);
      assert.match(
        String(await leader.propose({ ok: [1, "two", null, { three: true }] })),
        /applied/,
      );
    });
  },
);

Deno.test(
  "a restarted cluster applies what was committed without any new proposal (the no-op)",
  sanitized,
  async () => {
    await inSimulation(7, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      for (const command of ["a", "b", "c"]) await leader.propose(command);
      for (let i = 0; i < 3; i++) await cluster.crash(i);
      for (let i = 0; i < 3; i++) await cluster.restart(i);
      await waitForLeader(cluster, sim);
      await sleep(sim.clock, 2000);
      for (const machine of cluster.machines) {
        assert.deepEqual(
          [...machine.applied.values()],
          ["a", "b", "c"],
          "every node applies the committed commands again, with no client",
        );
      }
    });
  },
);

Deno.test(
  "leaderchange and rolechange fire after the step; a throwing or slow listener harms nothing",
  sanitized,
  async () => {
    await inSimulation(8, async (cluster, sim) => {
      const changes: LeaderChange[] = [];
      const roles: RoleChange[] = [];
      const errors: unknown[] = [];
      const consoleError = console.error;
      console.error = (...args: unknown[]) => errors.push(args);
      try {
        for (const node of cluster.nodes) {
          node!.addEventListener("leaderchange", (event) => changes.push(event.detail));
          node!.addEventListener("rolechange", (event) => roles.push(event.detail));
          node!.addEventListener("leaderchange", () => {
            throw new Error("listener bug");
          });
          // A listener that never finishes does not hold anything up either.
          node!.addEventListener("rolechange", () => new Promise(() => {}));
        }
        const leader = await waitForLeader(cluster, sim);
        await leader.propose("x");
        await sleep(sim.clock, 100);
      } finally {
        console.error = consoleError;
      }
      const leader = cluster.leader()!;
      assert.ok(
        changes.filter((change) => change.leaderId === leader.id).length === 3,
        `every node learns the leader: ${JSON.stringify(changes)}`,
      );
      assert.ok(
        roles.some((change) => change.role === "leader" && change.previous === "candidate"),
      );
      assert.ok(roles.some((change) => change.role === "candidate"));
      assert.equal(errors.length, 3, "each throwing listener is reported on the console");
      assert.equal(leader.status().role, "leader");
    });
  },
);

Deno.test(
  "a failed save stops the node: fatal fires, closed rejects, waiting proposals reject",
  sanitized,
  async () => {
    const disk = new MemoryPersister();
    let failing = false;
    let closedPersister = 0;
    const persister = {
      load: () => disk.load(),
      save: (change: Parameters<MemoryPersister["save"]>[0]) =>
        failing ? Promise.reject(new Error("disk on fire")) : disk.save(change),
      close: () => {
        closedPersister++;
        return Promise.resolve();
      },
    };
    const node = await RaftNode.create<string, string>({
      id: 0,
      peers: [{ call: () => Promise.resolve(undefined) }],
      persister,
      stateMachine: { apply: (command) => command },
      electionTimeoutMinMs: 20,
      electionTimeoutMaxMs: 40,
      heartbeatIntervalMs: 10,
      trace: null,
    });
    const fatalEvents: FatalError[] = [];
    node.addEventListener("fatal", (event) => fatalEvents.push(event.detail));
    await new Promise((resolve) => node.addEventListener("leaderchange", resolve, { once: true }));
    assert.equal(await node.propose("ok"), "ok");
    failing = true;
    const doomed = node.propose("doomed").then(() => null, (error) => error);
    const closed = await node.closed.then(() => null, (error) => error);
    assert.ok(closed instanceof FatalError && closed.reason === "save", String(closed));
    assert.equal((closed.cause as Error).message, "disk on fire");
    assert.ok((await doomed) instanceof FatalError);
    await Promise.resolve();
    assert.equal(fatalEvents.length, 1);
    assert.equal(closedPersister, 1, "the persister is closed after a fatal stop too");
    await assert.rejects(node.propose("after"), NodeClosedError);
    assert.equal(node.status().closed, true);
  },
);

Deno.test("an apply that throws stops the node with reason apply", sanitized, async () => {
  const node = await RaftNode.create<string, string>({
    id: 0,
    peers: [{ call: () => Promise.resolve(undefined) }],
    persister: new MemoryPersister(),
    stateMachine: {
      apply: (command) => {
        if (command === "bad") throw new Error("state machine bug");
        return command;
      },
    },
    electionTimeoutMinMs: 20,
    electionTimeoutMaxMs: 40,
    heartbeatIntervalMs: 10,
    trace: null,
  });
  await new Promise((resolve) => node.addEventListener("leaderchange", resolve, { once: true }));
  const proposal = node.propose("bad").then(() => null, (error) => error);
  const closed = await node.closed.then(() => null, (error) => error);
  assert.ok(closed instanceof FatalError && closed.reason === "apply", String(closed));
  assert.ok((await proposal) instanceof FatalError);
});

Deno.test(
  "close() stops everything in order and settles waiting proposals; await using closes too",
  sanitized,
  async () => {
    const order: string[] = [];
    const disk = new MemoryPersister();
    const transport = {
      ends: [{ call: () => Promise.resolve(undefined) }, {
        call: () => Promise.resolve(undefined),
      }],
      clientEnds() {
        return this.ends;
      },
      handler: null as unknown,
      setHandler(handler: unknown) {
        this.handler = handler;
      },
      close() {
        order.push("transport");
        return Promise.resolve();
      },
    };
    {
      await using node = await RaftNode.create<string, string>({
        id: 0,
        peers: transport,
        persister: {
          load: () => disk.load(),
          save: (change) => disk.save(change),
          close: () => {
            order.push("persister");
            return Promise.resolve();
          },
        },
        stateMachine: { apply: (command) => command },
        trace: null,
      });
      assert.equal(transport.handler, node, "the node registers with its transport");
      assert.ok(node.close() === node.close(), "close() twice returns the same promise");
      await node.closed;
    }
    assert.deepEqual(
      order,
      ["transport", "persister"],
      "the transport closes before the persister",
    );
  },
);

Deno.test(
  "metrics() reports term, role, elections, proposals, RPCs and save latency",
  sanitized,
  async () => {
    await inSimulation(9, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("x");
      await leader.propose("y", { timeoutMs: 1 }).catch(() => {});
      const follower = cluster.nodes.find((node) => node !== leader)!;
      await follower.propose("z").catch(() => {});
      const text = leader.metrics();
      const value = (series: string) => {
        const line = text.split("\n").find((line) => line.startsWith(series + " "));
        assert.ok(
          line !== undefined,
          `expected a line for ${series} in:
${text}`,
        );
        return Number(line.slice(series.length + 1));
      };
      assert.equal(value("raft_term"), leader.status().term);
      assert.equal(value('raft_role{role="leader"}'), 1);
      assert.equal(value('raft_role{role="follower"}'), 0);
      assert.equal(value("raft_leader"), leader.id);
      assert.equal(value("raft_elections_won_total"), 1);
      assert.ok(value("raft_proposals_committed_total") >= 1);
      assert.ok(value('raft_rpcs_total{method="AppendEntries",direction="out"}') > 0);
      assert.ok(value('raft_rpc_bytes_total{method="AppendEntries",direction="out"}') > 0);
      assert.ok(value("raft_save_duration_seconds_count") > 0);
      assert.equal(
        value('raft_save_duration_seconds_bucket{le="+Inf"}'),
        value("raft_save_duration_seconds_count"),
      );
      assert.equal(
        value("raft_apply_lag"),
        value("raft_commit_index") - value("raft_applied_index"),
      );
      assert.equal(value("raft_voters"), leader.configuration().voters.length);
      assert.equal(value("raft_learners"), 0);
      const followerText = follower.metrics();
      assert.match(followerText, /raft_proposals_rejected_total\{reason="not_leader"\} 1/);
      assert.match(followerText, /raft_rpcs_total\{method="AppendEntries",direction="in"\} \d+/);
      for (const line of text.trimEnd().split("\n")) {
        assert.match(
          line,
          /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? -?[\d.e+-]+|\w+(\{[^}]*\})? [+-]Inf)$/,
        );
      }
    });
  },
);

Deno.test("status() lists each follower's progress on the leader", sanitized, async () => {
  await inSimulation(10, async (cluster, sim) => {
    const leader = await waitForLeader(cluster, sim);
    await leader.propose("x");
    await sleep(sim.clock, 100);
    const status = leader.status();
    assert.equal(status.role, "leader");
    assert.deepEqual(
      status.followers.map((follower) => follower.id).sort(),
      [0, 1, 2].filter((id) => id !== leader.id),
    );
    for (const follower of status.followers) {
      assert.equal(follower.matchIndex, status.lastLogIndex);
      assert.equal(follower.nextIndex, status.lastLogIndex + 1);
      assert.equal(follower.state, "replicate");
    }
    assert.deepEqual(cluster.nodes.find((node) => node !== leader)!.status().followers, []);
  });
});

Deno.test(
  "snapshots: the policy compacts the log, a lagging node is caught up by snapshot, a restart restores",
  sanitized,
  async () => {
    const sim = new Simulator({ seed: 11 });
    await sim.run(async () => {
      const cluster = await NodeCluster.start(3, {
        clock: sim.clock,
        random: sim.random,
        nodeOptions: { snapshotEveryEntries: 5 },
      });
      try {
        const leader = await waitForLeader(cluster, sim);
        const lagging = cluster.nodes.find((node) => node !== leader)!.id;
        cluster.connect(lagging, false);
        for (let i = 0; i < 23; i++) await leader.propose(`c${i}`);
        const disk = cluster.disks[leader.id]!.state();
        assert.ok(
          disk.snapshot !== null && disk.snapshot.index >= 20,
          `snapshot ${disk.snapshot?.index}`,
        );
        assert.ok(disk.log.length <= 5, `the log on disk holds ${disk.log.length} entries`);
        assert.match(leader.metrics(), /raft_snapshots_total\{origin="taken"\} [1-9]/);

        cluster.connect(lagging, true);
        await leader.propose("after");
        await sleep(sim.clock, 1000);
        const machine = cluster.machines[lagging]!;
        assert.ok(machine.restoredFrom.length > 0, "the lagging node got a snapshot");
        assert.deepEqual(
          [...machine.applied.values()],
          [...cluster.machines[leader.id]!.applied.values()],
          "it holds the same state as the leader",
        );
        assert.equal(cluster.nodes[lagging]!.status().lastApplied, leader.status().lastApplied);

        await cluster.restart(leader.id);
        await waitForLeader(cluster, sim);
        await sleep(sim.clock, 500);
        const restarted = cluster.machines[leader.id]!;
        assert.deepEqual(
          restarted.restoredFrom.length,
          1,
          "a restart restores the saved snapshot first",
        );
        assert.ok([...restarted.applied.values()].includes("after"), "and applies what follows it");
      } finally {
        await cluster.close();
      }
    }, { timeLimitMs: 600_000 });
  },
);

Deno.test(
  "snapshots: a state machine whose snapshot() returns no bytes stops the node",
  sanitized,
  async () => {
    const node = await RaftNode.create<string, string>({
      id: 0,
      peers: [{ call: () => Promise.resolve(undefined) }],
      persister: new MemoryPersister(),
      stateMachine: {
        apply: (command) => command,
        snapshot: () => "not bytes" as unknown as Uint8Array,
        restore: () => {},
      },
      snapshotEveryEntries: 1,
      electionTimeoutMinMs: 20,
      electionTimeoutMaxMs: 40,
      heartbeatIntervalMs: 10,
      trace: null,
    });
    await new Promise((resolve) => node.addEventListener("leaderchange", resolve, { once: true }));
    await node.propose("x").catch(() => {});
    const closed = await node.closed.then(() => null, (error) => error);
    assert.ok(closed instanceof FatalError && closed.reason === "apply", String(closed));
    assert.match((closed.cause as Error).message, /must return a Uint8Array/);
  },
);

// ---- Reads and leadership transfer ----------------------------------------------------------

/** The count of AppendEntries `node` sent, from its metrics. */
function appendEntriesSent(node: RaftNode<string, string>): number {
  const line = node.metrics().split("\n").find((line) =>
    line.startsWith('raft_rpcs_total{method="AppendEntries",direction="out"} ')
  );
  return line === undefined ? 0 : Number(line.split(" ")[1]);
}

Deno.test(
  "read(): a leader's reads write nothing, share one heartbeat round, and see every earlier write",
  sanitized,
  async () => {
    await inSimulation(12, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("w1");
      const last = leader.status().lastLogIndex;
      const before = appendEntriesSent(leader);
      await Promise.all([leader.read(), leader.read(), leader.read(), leader.read()]);
      const sent = appendEntriesSent(leader) - before;
      assert.ok(
        sent >= 2 && sent <= 2 * 2,
        `four reads cost one round to each follower, got ${sent}`,
      );
      assert.equal(leader.status().lastLogIndex, last, "a read appends nothing");
      assert.ok(cluster.machines[leader.id]!.applied.size >= 1);
    });
  },
);

Deno.test(
  "read(): a follower asks the leader for the read index, then waits for its own apply",
  sanitized,
  async () => {
    await inSimulation(13, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      const follower = cluster.nodes.find((node) => node !== leader)!;
      await leader.propose("x"); // every follower learns who leads
      // The follower cannot have applied y when the leader answers: the commit reaches it later.
      await leader.propose("y");
      await follower.read();
      assert.ok(
        [...cluster.machines[follower.id]!.applied.values()].includes("y"),
        "after read(), the follower's state reflects every write committed before it",
      );
    });
  },
);

Deno.test(
  "read(): a leader cut off from the others cannot confirm a read, which fails",
  sanitized,
  async () => {
    await inSimulation(14, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("x");
      cluster.connect(leader.id, false);
      const outcome = await leader.read().then(() => null, (error) => error);
      assert.ok(outcome instanceof NotLeaderError, `expected NotLeaderError, got ${outcome}`);
      assert.notEqual(leader.status().role, "leader", "check-quorum made it step down");
    });
  },
);

Deno.test(
  "read(): lease reads need the option, skip the round while the lease holds, and lapse when cut off",
  sanitized,
  async () => {
    await inSimulation(15, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await assert.rejects(leader.read({ consistency: "lease" }), RangeError, "off by default");
      await assert.rejects(
        leader.read({ consistency: "eventual" as never }),
        /Consistency must be "linearizable" or "lease"/,
      );
    });
    const sim = new Simulator({ seed: 16 });
    await sim.run(async () => {
      const cluster = await NodeCluster.start(3, {
        clock: sim.clock,
        random: sim.random,
        nodeOptions: { leaseReads: true },
      });
      try {
        const leader = await waitForLeader(cluster, sim);
        await leader.propose("x");
        await sleep(sim.clock, 300); // heartbeats answered: a lease
        const before = appendEntriesSent(leader);
        await leader.read({ consistency: "lease" });
        assert.equal(appendEntriesSent(leader) - before, 0, "a lease read sends nothing");
        cluster.connect(leader.id, false);
        await sleep(sim.clock, 800); // past the lease (electionTimeoutMinMs 700 / 1.1)
        const outcome = await leader.read({ consistency: "lease" }).then(() => null, (e) => e);
        assert.ok(outcome instanceof NotLeaderError, `the lease lapsed: ${outcome}`);
      } finally {
        await cluster.close();
      }
    }, { timeLimitMs: 600_000 });
    await assert.rejects(
      RaftNode.create({
        id: 0,
        peers: [{ call: () => Promise.resolve(undefined) }],
        persister: new MemoryPersister(),
        stateMachine: { apply: () => {} },
        leaseReads: true,
        preVote: false,
      }),
      /leaseReads needs preVote/,
    );
  },
);

Deno.test(
  "transferLeadership(): the target leads within a round trip; proposals wait meanwhile; bad targets change nothing",
  sanitized,
  async () => {
    await inSimulation(17, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("x");
      const term = leader.status().term;
      await assert.rejects(leader.transferLeadership(leader.id), /to itself/);
      await assert.rejects(leader.transferLeadership(7), /not a voting member/);
      await assert.rejects(leader.transferLeadership(-1), RangeError);
      assert.equal(leader.status().role, "leader", "nothing changed");
      const follower = cluster.nodes.find((node) => node !== leader)!;
      await assert.rejects(follower.transferLeadership(), NotLeaderError);

      const target = cluster.nodes.find((node) => node !== leader && node !== follower)!;
      const started = sim.clock.now();
      const transfer = leader.transferLeadership(target.id);
      await assert.rejects(
        leader.propose("during"),
        NotLeaderError,
        "no proposals while handing over",
      );
      await transfer;
      const took = sim.clock.now() - started;
      assert.ok(took < 100, `the handover took ${took} ms, less than any election timeout`);
      assert.equal(target.status().role, "leader");
      assert.equal(target.status().term, term + 1);
      await target.propose("after");
    });
  },
);

Deno.test(
  "transferLeadership(): a target that never answers makes the transfer time out, and the leader goes on",
  sanitized,
  async () => {
    await inSimulation(18, async (cluster, sim) => {
      const leader = await waitForLeader(cluster, sim);
      await leader.propose("x");
      const target = cluster.nodes.find((node) => node !== leader)!;
      cluster.connect(target.id, false);
      const outcome = await leader.transferLeadership(target.id).then(() => null, (e) => e);
      assert.ok(
        outcome instanceof DOMException && outcome.name === "TimeoutError",
        String(outcome),
      );
      assert.equal(leader.status().role, "leader");
      assert.match(await leader.propose("after"), /applied after/);
    });
  },
);
