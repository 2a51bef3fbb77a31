/**
 * The lab's 4A, 4B and 3D tests (`test_test.go`), one for one: same peers, same steps, same
 * checks. Each is a body run against a fresh {@linkcode Tester}, so any suite (real time, or a
 * simulator's virtual time) can run the same tests.
 *
 * @module
 */

import { MAXLOGSIZE, RaftElectionTimeout, SnapShotInterval, type Tester } from "./tester.ts";

/** One lab test: the cluster it needs and what it does to it. */
export interface LabTest {
  /** The lab's Go test name, e.g. `TestInitialElection4A`. */
  name: string;
  servers: number;
  unreliable: boolean;
  /** Run the tester as the lab's snapshotting service (`TesterOptions.snapshots`). */
  snapshots?: boolean;
  body(cfg: Tester): Promise<void>;
}

async function initialElection(cfg: Tester): Promise<void> {
  cfg.begin("Test (4A): initial election");
  // is a leader elected?
  await cfg.checkOneLeader();
  // sleep a bit to avoid racing with followers learning of the election, then check that all
  // peers agree on the term.
  await cfg.sleep(50);
  const term1 = cfg.checkTerms();
  if (term1 < 1) cfg.fatal(`term is ${term1}, but should be at least 1`);
  // does the leader+term stay the same if there is no network failure?
  await cfg.sleep(2 * RaftElectionTimeout);
  const term2 = cfg.checkTerms();
  if (term1 !== term2) console.log("warning: term changed even though there were no failures");
  // there should still be a leader.
  await cfg.checkOneLeader();
  cfg.end();
}

async function reElection(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4A): election after network failure");
  const leader1 = await cfg.checkOneLeader();
  // if the leader disconnects, a new one should be elected.
  cfg.disconnect(leader1);
  await cfg.checkOneLeader();
  // if the old leader rejoins, that shouldn't disturb the new leader. and the old leader should
  // switch to follower.
  cfg.connect(leader1);
  const leader2 = await cfg.checkOneLeader();
  // if there's no quorum, no new leader should be elected.
  cfg.disconnect(leader2);
  cfg.disconnect((leader2 + 1) % servers);
  await cfg.sleep(2 * RaftElectionTimeout);
  // check that the one connected server does not think it is the leader.
  cfg.checkNoLeader();
  // if a quorum arises, it should elect a leader.
  cfg.connect((leader2 + 1) % servers);
  await cfg.checkOneLeader();
  // re-join of last node shouldn't prevent leader from existing.
  cfg.connect(leader2);
  await cfg.checkOneLeader();
  cfg.end();
}

async function manyElections(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4A): multiple elections");
  await cfg.checkOneLeader();
  const iters = 10;
  for (let ii = 1; ii < iters; ii++) {
    // disconnect three nodes
    const i1 = cfg.randomInt() % servers;
    const i2 = cfg.randomInt() % servers;
    const i3 = cfg.randomInt() % servers;
    cfg.disconnect(i1);
    cfg.disconnect(i2);
    cfg.disconnect(i3);
    // either the current leader should still be alive, or the remaining four should elect a new one.
    await cfg.checkOneLeader();
    cfg.connect(i1);
    cfg.connect(i2);
    cfg.connect(i3);
  }
  await cfg.checkOneLeader();
  cfg.end();
}

async function basicAgree(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): basic agreement");
  const iters = 3;
  for (let index = 1; index < iters + 1; index++) {
    const { count } = cfg.nCommitted(index);
    if (count > 0) cfg.fatal("some have committed before Start()");
    const xindex = await cfg.one(index * 100, servers, false);
    if (xindex !== index) cfg.fatal(`got index ${xindex} but expected ${index}`);
  }
  cfg.end();
}

function randomString(cfg: Tester, length: number): string {
  const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  let text = "";
  for (let i = 0; i < length; i++) text += alphabet[cfg.randomInt() % alphabet.length];
  return text;
}

async function rpcBytes(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): RPC byte count");
  await cfg.one(99, servers, false);
  const bytes0 = cfg.bytesTotal();
  const iters = 10;
  let sent = 0;
  for (let index = 2; index < iters + 2; index++) {
    const command = randomString(cfg, 5000);
    const xindex = await cfg.one(command, servers, false);
    if (xindex !== index) cfg.fatal(`got index ${xindex} but expected ${index}`);
    sent += command.length;
  }
  const got = cfg.bytesTotal() - bytes0;
  const expected = servers * sent;
  if (got > expected + 50000) cfg.fatal(`too many RPC bytes; got ${got}, expected ${expected}`);
  cfg.end();
}

async function failAgree(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): agreement despite follower disconnection");
  await cfg.one(101, servers, false);
  // disconnect one follower from the network.
  const leader = await cfg.checkOneLeader();
  cfg.disconnect((leader + 1) % servers);
  // the leader and remaining follower should be able to agree despite the disconnected follower.
  await cfg.one(102, servers - 1, false);
  await cfg.one(103, servers - 1, false);
  await cfg.sleep(RaftElectionTimeout);
  await cfg.one(104, servers - 1, false);
  await cfg.one(105, servers - 1, false);
  // re-connect
  cfg.connect((leader + 1) % servers);
  // the full set of servers should preserve previous agreements, and be able to agree on new
  // commands.
  await cfg.one(106, servers, true);
  await cfg.sleep(RaftElectionTimeout);
  await cfg.one(107, servers, true);
  cfg.end();
}

async function failNoAgree(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): no agreement if too many followers disconnect");
  await cfg.one(10, servers, false);
  // 3 of 5 followers disconnect
  const leader = await cfg.checkOneLeader();
  cfg.disconnect((leader + 1) % servers);
  cfg.disconnect((leader + 2) % servers);
  cfg.disconnect((leader + 3) % servers);
  const { index, isLeader } = cfg.rafts[leader]!.start(20);
  if (!isLeader) cfg.fatal("leader rejected Start()");
  if (index !== 2) cfg.fatal(`expected index 2, got ${index}`);
  await cfg.sleep(2 * RaftElectionTimeout);
  const { count } = cfg.nCommitted(index);
  if (count > 0) cfg.fatal(`${count} committed but no majority`);
  // repair
  cfg.connect((leader + 1) % servers);
  cfg.connect((leader + 2) % servers);
  cfg.connect((leader + 3) % servers);
  // the disconnected majority may have chosen a leader from among their own ranks, forgetting
  // index 2.
  const leader2 = await cfg.checkOneLeader();
  const second = cfg.rafts[leader2]!.start(30);
  if (!second.isLeader) cfg.fatal("leader2 rejected Start()");
  if (second.index < 2 || second.index > 3) cfg.fatal(`unexpected index ${second.index}`);
  await cfg.one(1000, servers, true);
  cfg.end();
}

async function concurrentStarts(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): concurrent Start()s");
  let success = false;
  loop: for (let attempt = 0; attempt < 5; attempt++) {
    if (attempt > 0) await cfg.sleep(3000); // give the solution some time to settle
    const leader = await cfg.checkOneLeader();
    const first = cfg.rafts[leader]!.start(1);
    if (!first.isLeader) continue; // leader moved on really quickly
    const term = first.term;
    const iters = 5;
    // The Go test starts these from goroutines; here they run as concurrent tasks.
    const started = await Promise.all(
      Array.from({ length: iters }, (_, i) =>
        Promise.resolve().then(() => {
          const result = cfg.rafts[leader]!.start(100 + i);
          return result.term === term && result.isLeader ? result.index : null;
        })),
    );
    const indexes = started.filter((index): index is number => index !== null);
    for (let j = 0; j < servers; j++) {
      // term changed -- can't expect low RPC counts
      if (cfg.rafts[j]!.getState().term !== term) continue loop;
    }
    const commands: unknown[] = [];
    for (const index of indexes) {
      const command = await cfg.wait(index, servers, term);
      if (typeof command !== "number") cfg.fatal(`value ${command} is not an int`);
      // peers have moved on to later terms, so we can't expect all Start()s to have succeeded
      if (command === -1) continue loop;
      commands.push(command);
    }
    for (let i = 0; i < iters; i++) {
      if (!commands.includes(100 + i)) cfg.fatal(`cmd ${100 + i} missing in ${commands}`);
    }
    success = true;
    break;
  }
  if (!success) cfg.fatal("term changed too often");
  cfg.end();
}

async function rejoin(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): rejoin of partitioned leader");
  await cfg.one(101, servers, true);
  // leader network failure
  const leader1 = await cfg.checkOneLeader();
  cfg.disconnect(leader1);
  // make old leader try to agree on some entries
  cfg.rafts[leader1]!.start(102);
  cfg.rafts[leader1]!.start(103);
  cfg.rafts[leader1]!.start(104);
  // new leader commits, also for index=2
  await cfg.one(103, 2, true);
  // new leader network failure
  const leader2 = await cfg.checkOneLeader();
  cfg.disconnect(leader2);
  // old leader connected again
  cfg.connect(leader1);
  await cfg.one(104, 2, true);
  // all together now
  cfg.connect(leader2);
  await cfg.one(105, servers, true);
  cfg.end();
}

async function backup(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): leader backs up quickly over incorrect follower logs");
  await cfg.one(cfg.randomInt(), servers, true);
  // put leader and one follower in a partition
  const leader1 = await cfg.checkOneLeader();
  cfg.disconnect((leader1 + 2) % servers);
  cfg.disconnect((leader1 + 3) % servers);
  cfg.disconnect((leader1 + 4) % servers);
  // submit lots of commands that won't commit
  for (let i = 0; i < 50; i++) cfg.rafts[leader1]!.start(cfg.randomInt());
  await cfg.sleep(RaftElectionTimeout / 2);
  cfg.disconnect((leader1 + 0) % servers);
  cfg.disconnect((leader1 + 1) % servers);
  // allow other partition to recover
  cfg.connect((leader1 + 2) % servers);
  cfg.connect((leader1 + 3) % servers);
  cfg.connect((leader1 + 4) % servers);
  // lots of successful commands to new group.
  for (let i = 0; i < 50; i++) await cfg.one(cfg.randomInt(), 3, true);
  // now another partitioned leader and one follower
  const leader2 = await cfg.checkOneLeader();
  let other = (leader1 + 2) % servers;
  if (leader2 === other) other = (leader2 + 1) % servers;
  cfg.disconnect(other);
  // lots more commands that won't commit
  for (let i = 0; i < 50; i++) cfg.rafts[leader2]!.start(cfg.randomInt());
  await cfg.sleep(RaftElectionTimeout / 2);
  // bring original leader back to life,
  for (let i = 0; i < servers; i++) cfg.disconnect(i);
  cfg.connect((leader1 + 0) % servers);
  cfg.connect((leader1 + 1) % servers);
  cfg.connect(other);
  // lots of successful commands to new group.
  for (let i = 0; i < 50; i++) await cfg.one(cfg.randomInt(), 3, true);
  // now everyone
  for (let i = 0; i < servers; i++) cfg.connect(i);
  await cfg.one(cfg.randomInt(), servers, true);
  cfg.end();
}

async function count(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): RPC counts aren't too high");
  const rpcs = () => {
    let n = 0;
    for (let j = 0; j < servers; j++) n += cfg.rpcCount(j);
    return n;
  };
  let leader = await cfg.checkOneLeader();
  let total1 = rpcs();
  if (total1 > 30 || total1 < 1) {
    cfg.fatal(`too many or few RPCs (${total1}) to elect initial leader`);
  }
  let total2 = 0;
  let success = false;
  loop: for (let attempt = 0; attempt < 5; attempt++) {
    if (attempt > 0) await cfg.sleep(3000); // give the solution some time to settle
    leader = await cfg.checkOneLeader();
    total1 = rpcs();
    const iters = 10;
    const first = cfg.rafts[leader]!.start(1);
    if (!first.isLeader) continue; // leader moved on really quickly
    const { index: starti, term } = first;
    const commands: number[] = [];
    for (let i = 1; i < iters + 2; i++) {
      const x = cfg.randomInt();
      commands.push(x);
      const result = cfg.rafts[leader]!.start(x);
      if (result.term !== term) continue loop; // term changed while starting
      if (!result.isLeader) continue loop; // no longer the leader, so term has changed
      if (starti + i !== result.index) cfg.fatal("Start() failed");
    }
    for (let i = 1; i < iters + 1; i++) {
      const command = await cfg.wait(starti + i, servers, term);
      if (command !== commands[i - 1]) {
        if (command === -1) continue loop; // term changed -- try again
        cfg.fatal(
          `wrong value ${command} committed for index ${starti + i}; expected ${commands}`,
        );
      }
    }
    let failed = false;
    total2 = 0;
    for (let j = 0; j < servers; j++) {
      // term changed -- can't expect low RPC counts; keep going to update total2
      if (cfg.rafts[j]!.getState().term !== term) failed = true;
      total2 += cfg.rpcCount(j);
    }
    if (failed) continue loop;
    if (total2 - total1 > (iters + 1 + 3) * 3) {
      cfg.fatal(`too many RPCs (${total2 - total1}) for ${iters} entries`);
    }
    success = true;
    break;
  }
  if (!success) cfg.fatal("term changed too often");
  await cfg.sleep(RaftElectionTimeout);
  const total3 = rpcs();
  if (total3 - total2 > 3 * 20) {
    cfg.fatal(`too many RPCs (${total3 - total2}) for 1 second of idleness`);
  }
  cfg.end();
}

async function persist1(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): basic persistence");
  await cfg.one(11, servers, true);
  // crash and re-start all
  for (let i = 0; i < servers; i++) await cfg.start1(i);
  for (let i = 0; i < servers; i++) {
    cfg.disconnect(i);
    cfg.connect(i);
  }
  await cfg.one(12, servers, true);
  const leader1 = await cfg.checkOneLeader();
  cfg.disconnect(leader1);
  await cfg.start1(leader1);
  cfg.connect(leader1);
  await cfg.one(13, servers, true);
  const leader2 = await cfg.checkOneLeader();
  cfg.disconnect(leader2);
  await cfg.one(14, servers - 1, true);
  await cfg.start1(leader2);
  cfg.connect(leader2);
  await cfg.wait(4, servers, -1); // wait for leader2 to join before killing i3
  const i3 = ((await cfg.checkOneLeader()) + 1) % servers;
  cfg.disconnect(i3);
  await cfg.one(15, servers - 1, true);
  await cfg.start1(i3);
  cfg.connect(i3);
  await cfg.one(16, servers, true);
  cfg.end();
}

async function persist2(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): more persistence");
  let index = 1;
  for (let iters = 0; iters < 5; iters++) {
    await cfg.one(10 + index, servers, true);
    index++;
    const leader1 = await cfg.checkOneLeader();
    cfg.disconnect((leader1 + 1) % servers);
    cfg.disconnect((leader1 + 2) % servers);
    await cfg.one(10 + index, servers - 2, true);
    index++;
    cfg.disconnect((leader1 + 0) % servers);
    cfg.disconnect((leader1 + 3) % servers);
    cfg.disconnect((leader1 + 4) % servers);
    await cfg.start1((leader1 + 1) % servers);
    await cfg.start1((leader1 + 2) % servers);
    cfg.connect((leader1 + 1) % servers);
    cfg.connect((leader1 + 2) % servers);
    await cfg.sleep(RaftElectionTimeout);
    await cfg.start1((leader1 + 3) % servers);
    cfg.connect((leader1 + 3) % servers);
    await cfg.one(10 + index, servers - 2, true);
    index++;
    cfg.connect((leader1 + 4) % servers);
    cfg.connect((leader1 + 0) % servers);
  }
  await cfg.one(1000, servers, true);
  cfg.end();
}

async function persist3(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): partitioned leader and one follower crash, leader restarts");
  await cfg.one(101, 3, true);
  const leader = await cfg.checkOneLeader();
  cfg.disconnect((leader + 2) % servers);
  await cfg.one(102, 2, true);
  await cfg.crash1((leader + 0) % servers);
  await cfg.crash1((leader + 1) % servers);
  cfg.connect((leader + 2) % servers);
  await cfg.start1((leader + 0) % servers);
  cfg.connect((leader + 0) % servers);
  await cfg.one(103, 2, true);
  await cfg.start1((leader + 1) % servers);
  cfg.connect((leader + 1) % servers);
  await cfg.one(104, servers, true);
  cfg.end();
}

async function figure8(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): Figure 8");
  await cfg.one(cfg.randomInt(), 1, true);
  let nup = servers;
  for (let iters = 0; iters < 1000; iters++) {
    let leader = -1;
    for (let i = 0; i < servers; i++) {
      const raft = cfg.rafts[i];
      if (raft?.start(cfg.randomInt()).isLeader) leader = i;
    }
    if (cfg.randomInt() % 1000 < 100) {
      await cfg.sleep(cfg.randomInt() % (RaftElectionTimeout / 2));
    } else {
      await cfg.sleep(cfg.randomInt() % 13);
    }
    if (leader !== -1) {
      await cfg.crash1(leader);
      nup -= 1;
    }
    if (nup < 3) {
      const s = cfg.randomInt() % servers;
      if (cfg.rafts[s] === null) {
        await cfg.start1(s);
        cfg.connect(s);
        nup += 1;
      }
    }
  }
  for (let i = 0; i < servers; i++) {
    if (cfg.rafts[i] === null) {
      await cfg.start1(i);
      cfg.connect(i);
    }
  }
  await cfg.one(cfg.randomInt(), servers, true);
  cfg.end();
}

async function unreliableAgree(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): unreliable agreement");
  const background: Promise<number>[] = [];
  for (let iters = 1; iters < 50; iters++) {
    for (let j = 0; j < 4; j++) {
      const agreement = cfg.one(100 * iters + j, 1, true);
      agreement.catch(() => {}); // a failure is reported by Promise.all below
      background.push(agreement);
    }
    await cfg.one(iters, 1, true);
  }
  cfg.setUnreliable(false);
  await Promise.all(background);
  await cfg.one(100, servers, true);
  cfg.end();
}

async function figure8Unreliable(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (4B): Figure 8 (unreliable)");
  await cfg.one(cfg.randomInt() % 10000, 1, true);
  let nup = servers;
  for (let iters = 0; iters < 1000; iters++) {
    if (iters === 200) cfg.setLongReordering(true);
    let leader = -1;
    for (let i = 0; i < servers; i++) {
      const { isLeader } = cfg.rafts[i]!.start(cfg.randomInt() % 10000);
      if (isLeader && cfg.connected[i]) leader = i;
    }
    if (cfg.randomInt() % 1000 < 100) {
      await cfg.sleep(cfg.randomInt() % (RaftElectionTimeout / 2));
    } else {
      await cfg.sleep(cfg.randomInt() % 13);
    }
    if (leader !== -1 && cfg.randomInt() % 1000 < RaftElectionTimeout / 2) {
      cfg.disconnect(leader);
      nup -= 1;
    }
    if (nup < 3) {
      const s = cfg.randomInt() % servers;
      if (!cfg.connected[s]) {
        cfg.connect(s);
        nup += 1;
      }
    }
  }
  for (let i = 0; i < servers; i++) {
    if (!cfg.connected[i]) cfg.connect(i);
  }
  await cfg.one(cfg.randomInt() % 10000, servers, true);
  cfg.end();
}

async function churn(cfg: Tester, unreliable: boolean): Promise<void> {
  const servers = cfg.n;
  cfg.begin(unreliable ? "Test (4B): unreliable churn" : "Test (4B): churn");
  let stop = false;
  // concurrent clients: each proposes to every peer and remembers what committed.
  const client = async (me: number): Promise<number[]> => {
    const values: number[] = [];
    while (!stop) {
      const x = cfg.randomInt();
      let index = -1;
      let ok = false;
      for (let i = 0; i < servers; i++) {
        // try them all, maybe one of them is a leader
        const result = cfg.rafts[i]?.start(x);
        if (result?.isLeader) {
          ok = true;
          index = result.index;
        }
      }
      if (ok) {
        // maybe leader will commit our value, maybe not. but don't wait forever.
        for (const to of [10, 20, 50, 100, 200]) {
          const { count, command } = cfg.nCommitted(index);
          if (count > 0) {
            if (typeof command !== "number") cfg.fatal("wrong command type");
            if (command === x) values.push(x);
            break;
          }
          await cfg.sleep(to);
        }
      } else {
        await cfg.sleep(79 + me * 17);
      }
    }
    return values;
  };
  const ncli = 3;
  const clients = Array.from({ length: ncli }, (_, i) => client(i));
  clients.forEach((c) => c.catch(() => {})); // reported by Promise.all below
  // Should the driver fail, stop the clients before reporting.
  try {
    for (let iters = 0; iters < 20; iters++) {
      if (cfg.randomInt() % 1000 < 200) cfg.disconnect(cfg.randomInt() % servers);
      if (cfg.randomInt() % 1000 < 500) {
        const i = cfg.randomInt() % servers;
        if (cfg.rafts[i] === null) await cfg.start1(i);
        cfg.connect(i);
      }
      if (cfg.randomInt() % 1000 < 200) {
        const i = cfg.randomInt() % servers;
        if (cfg.rafts[i] !== null) await cfg.crash1(i);
      }
      // Make crash/restart infrequent enough that the peers can often keep up, but not so
      // infrequent that everything has settled down from one change to the next.
      await cfg.sleep((RaftElectionTimeout * 7) / 10);
    }
    await cfg.sleep(RaftElectionTimeout);
    cfg.setUnreliable(false);
    for (let i = 0; i < servers; i++) {
      if (cfg.rafts[i] === null) await cfg.start1(i);
      cfg.connect(i);
    }
  } finally {
    stop = true;
  }
  const values = (await Promise.all(clients)).flat();
  await cfg.sleep(RaftElectionTimeout);
  const lastIndex = await cfg.one(cfg.randomInt(), servers, true);
  const really: unknown[] = [];
  for (let index = 1; index <= lastIndex; index++) {
    const v = await cfg.wait(index, servers, -1);
    if (typeof v !== "number") cfg.fatal("not an int");
    really.push(v);
  }
  for (const v1 of values) {
    if (!really.includes(v1)) cfg.fatal(`didn't find a value: ${v1}`);
  }
  cfg.end();
}

/** Part 4A: leader election. */
export const lab4A: LabTest[] = [
  { name: "TestInitialElection4A", servers: 3, unreliable: false, body: initialElection },
  { name: "TestReElection4A", servers: 3, unreliable: false, body: reElection },
  { name: "TestManyElections4A", servers: 7, unreliable: false, body: manyElections },
];

/** Part 4B: log replication and persistence. */
export const lab4B: LabTest[] = [
  { name: "TestBasicAgree4B", servers: 3, unreliable: false, body: basicAgree },
  { name: "TestRPCBytes4B", servers: 3, unreliable: false, body: rpcBytes },
  { name: "TestFailAgree4B", servers: 3, unreliable: false, body: failAgree },
  { name: "TestFailNoAgree4B", servers: 5, unreliable: false, body: failNoAgree },
  { name: "TestConcurrentStarts4B", servers: 3, unreliable: false, body: concurrentStarts },
  { name: "TestRejoin4B", servers: 3, unreliable: false, body: rejoin },
  { name: "TestBackup4B", servers: 5, unreliable: false, body: backup },
  { name: "TestCount4B", servers: 3, unreliable: false, body: count },
  { name: "TestPersist14B", servers: 3, unreliable: false, body: persist1 },
  { name: "TestPersist24B", servers: 5, unreliable: false, body: persist2 },
  { name: "TestPersist34B", servers: 3, unreliable: false, body: persist3 },
  { name: "TestFigure84B", servers: 5, unreliable: false, body: figure8 },
  { name: "TestUnreliableAgree4B", servers: 5, unreliable: true, body: unreliableAgree },
  { name: "TestFigure8Unreliable4B", servers: 5, unreliable: true, body: figure8Unreliable },
  { name: "TestReliableChurn4B", servers: 5, unreliable: false, body: (cfg) => churn(cfg, false) },
  { name: "TestUnreliableChurn4B", servers: 5, unreliable: true, body: (cfg) => churn(cfg, true) },
];

/**
 * The lab's `snapcommon`: 30 rounds in which a victim (a follower, or every third round the
 * leader) is cut off or crashed while the others take enough commands for a snapshot, then comes
 * back and must catch up, by an InstallSnapshot if the others compacted what it misses. No peer's
 * persisted log may grow past {@linkcode MAXLOGSIZE}.
 */
async function snapCommon(
  cfg: Tester,
  name: string,
  disconnect: boolean,
  crash: boolean,
): Promise<void> {
  const iters = 30;
  const servers = cfg.n;
  cfg.begin(name);
  await cfg.one(cfg.randomInt(), servers, true);
  let leader1 = await cfg.checkOneLeader();
  for (let i = 0; i < iters; i++) {
    let victim = (leader1 + 1) % servers;
    let sender = leader1;
    if (i % 3 === 1) {
      sender = (leader1 + 1) % servers;
      victim = leader1;
    }
    if (disconnect) {
      cfg.disconnect(victim);
      await cfg.one(cfg.randomInt(), servers - 1, true);
    }
    if (crash) {
      await cfg.crash1(victim);
      await cfg.one(cfg.randomInt(), servers - 1, true);
    }
    // perhaps send enough to get a snapshot
    const nn = SnapShotInterval / 2 + cfg.randomInt() % SnapShotInterval;
    for (let j = 0; j < nn; j++) cfg.rafts[sender]!.start(cfg.randomInt());
    // let applier threads catch up with the Start()'s
    if (!disconnect && !crash) {
      // make sure all followers have caught up, so that an InstallSnapshot RPC isn't required
      // for TestSnapshotBasic3D().
      await cfg.one(cfg.randomInt(), servers, true);
    } else {
      await cfg.one(cfg.randomInt(), servers - 1, true);
    }
    const size = await cfg.logSize();
    if (size >= MAXLOGSIZE) {
      cfg.fatal(`Log size too large: ${size} characters of persisted state, limit ${MAXLOGSIZE}`);
    }
    if (disconnect) {
      // reconnect a follower, who maybe behind and needs to receive a snapshot to catch up.
      cfg.connect(victim);
      await cfg.one(cfg.randomInt(), servers, true);
      leader1 = await cfg.checkOneLeader();
    }
    if (crash) {
      await cfg.start1(victim);
      cfg.connect(victim);
      await cfg.one(cfg.randomInt(), servers, true);
      leader1 = await cfg.checkOneLeader();
    }
  }
  cfg.end();
}

/** Crashes every peer, then starts and connects them all again. */
async function restartAll(cfg: Tester): Promise<void> {
  for (let i = 0; i < cfg.n; i++) await cfg.crash1(i);
  for (let i = 0; i < cfg.n; i++) {
    await cfg.start1(i);
    cfg.connect(i);
  }
}

async function snapshotAllCrash(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  const iters = 5;
  cfg.begin("Test (3D): crash and restart all servers");
  await cfg.one(cfg.randomInt(), servers, true);
  for (let i = 0; i < iters; i++) {
    // perhaps enough to get a snapshot
    const nn = SnapShotInterval / 2 + cfg.randomInt() % SnapShotInterval;
    for (let j = 0; j < nn; j++) await cfg.one(cfg.randomInt(), servers, true);
    const index1 = await cfg.one(cfg.randomInt(), servers, true);
    await restartAll(cfg);
    const index2 = await cfg.one(cfg.randomInt(), servers, true);
    if (index2 < index1 + 1) cfg.fatal(`index decreased from ${index1} to ${index2}`);
  }
  cfg.end();
}

/**
 * Do restarted peers start from their saved snapshot, and keep it through the saves that follow?
 * Each peer's service starts empty, so a restarted peer must be handed its snapshot before the
 * command after it; a peer that lost its snapshot at the save after the first restart fails at
 * the second.
 */
async function snapshotInit(cfg: Tester): Promise<void> {
  const servers = cfg.n;
  cfg.begin("Test (3D): snapshot initialization after crash");
  await cfg.one(cfg.randomInt(), servers, true);
  // enough ops to make a snapshot
  const nn = SnapShotInterval + 1;
  for (let i = 0; i < nn; i++) await cfg.one(cfg.randomInt(), servers, true);
  await restartAll(cfg);
  // a single op, to get something to be written back to persistent storage.
  await cfg.one(cfg.randomInt(), servers, true);
  await restartAll(cfg);
  // do another op to trigger potential bug
  await cfg.one(cfg.randomInt(), servers, true);
  cfg.end();
}

/**
 * A test of the lab's `snapcommon(t, name, disconnect, reliable, crash)`: three peers and the
 * snapshotting service.
 */
function snapTest(
  name: string,
  description: string,
  options: { disconnect: boolean; unreliable: boolean; crash: boolean },
): LabTest {
  const { disconnect, unreliable, crash } = options;
  return {
    name,
    servers: 3,
    unreliable,
    snapshots: true,
    body: (cfg) => snapCommon(cfg, description, disconnect, crash),
  };
}

/**
 * Part 3D: log compaction. The tester runs as the lab's snapshotting service, which snapshots
 * every {@linkcode SnapShotInterval} commands and restores the snapshots Raft hands it.
 */
export const lab3D: LabTest[] = [
  snapTest("TestSnapshotBasic3D", "Test (3D): snapshots basic", {
    disconnect: false,
    unreliable: false,
    crash: false,
  }),
  snapTest("TestSnapshotInstall3D", "Test (3D): install snapshots (disconnect)", {
    disconnect: true,
    unreliable: false,
    crash: false,
  }),
  snapTest(
    "TestSnapshotInstallUnreliable3D",
    "Test (3D): install snapshots (disconnect+unreliable)",
    { disconnect: true, unreliable: true, crash: false },
  ),
  snapTest("TestSnapshotInstallCrash3D", "Test (3D): install snapshots (crash)", {
    disconnect: false,
    unreliable: false,
    crash: true,
  }),
  snapTest("TestSnapshotInstallUnCrash3D", "Test (3D): install snapshots (unreliable+crash)", {
    disconnect: false,
    unreliable: true,
    crash: true,
  }),
  {
    name: "TestSnapshotAllCrash3D",
    servers: 3,
    unreliable: false,
    snapshots: true,
    body: snapshotAllCrash,
  },
  {
    name: "TestSnapshotInit3D",
    servers: 3,
    unreliable: false,
    snapshots: true,
    body: snapshotInit,
  },
];
