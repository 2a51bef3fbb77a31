/**
 * The lab interface as a service sees it: `make()`'s argument checks, `start()`'s command checks,
 * applies in order and one at a time, `kill()`, and a restart from saved state.
 */

import assert from "node:assert/strict";
import { make } from "../src/driver.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import type { FatalError } from "../src/errors.ts";
import type {
  ApplyMsg,
  ClientEnd,
  LogEntry,
  PersistentState,
  Persister,
  Raft,
  RaftOptions,
} from "../src/types.ts";
import { fixedRandom, ManualClock, settle } from "./helpers/manual_clock.ts";
import { sanitized } from "./helpers/sanitized.ts";
import { SimPersister, Simulator } from "../src/sim/mod.ts";

/** Short timeouts on the real clock, so that a single peer elects itself within 100 ms. */
const fast: RaftOptions = {
  heartbeatIntervalMs: 20,
  electionTimeoutMinMs: 50,
  electionTimeoutMaxMs: 100,
  trace: null,
};

const silent: ClientEnd = { call: () => Promise.resolve(undefined) };
const ignoreApply = (): void => {};

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `condition` every 5 ms until it holds; fails after `timeoutMs`, saying what it awaited. */
async function waitFor(condition: () => boolean, what: string, timeoutMs = 2000): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!condition()) {
    if (performance.now() > deadline) {
      assert.fail(`timed out after ${timeoutMs} ms waiting for ${what}`);
    }
    await sleep(5);
  }
}

/** A one-peer cluster on the real clock that records what it applies. */
async function singlePeer(
  persister: Persister = new MemoryPersister(),
): Promise<{ raft: Raft; applied: ApplyMsg[] }> {
  const applied: ApplyMsg[] = [];
  const raft = await make([silent], 0, persister, (msg) => {
    applied.push(msg);
  }, fast);
  return { raft, applied };
}

/** The ApplyMsg of a committed command. */
function commandMessage(command: unknown, index: number, term: number): ApplyMsg {
  return {
    commandValid: true,
    command,
    commandIndex: index,
    commandTerm: term,
    snapshotValid: false,
    snapshot: null,
    snapshotIndex: 0,
    snapshotTerm: 0,
  };
}

/** An array nested `depth` levels deep. */
function nested(depth: number): unknown {
  let value: unknown = 0;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

async function untilLeader(raft: Raft): Promise<void> {
  await waitFor(() => raft.getState().isLeader, "the single peer to elect itself");
}

// ---- make() ---------------------------------------------------------------------------------

Deno.test("make() rejects bad peers, me, persister and applyCh", sanitized, async () => {
  const persister = new MemoryPersister();
  const cases: [string, () => Promise<Raft>, ErrorConstructor, RegExp][] = [
    ["empty peers", () => make([], 0, persister, ignoreApply), TypeError, /Peers/],
    [
      "peers not an array",
      () => make("ab" as never, 0, persister, ignoreApply),
      TypeError,
      /Peers/,
    ],
    ["peers null", () => make(null as never, 0, persister, ignoreApply), TypeError, /Peers/],
    [
      "a peer without call()",
      () => make([silent, {} as never], 0, persister, ignoreApply),
      TypeError,
      /Peers\[1\]/,
    ],
    [
      "a null peer",
      () => make([null as never], 0, persister, ignoreApply),
      TypeError,
      /Peers\[0\]/,
    ],
    ["me = -1", () => make([silent], -1, persister, ignoreApply), RangeError, /Me .*-1/],
    [
      "me = peers.length",
      () => make([silent, silent], 2, persister, ignoreApply),
      RangeError,
      /Me .*2/,
    ],
    [
      "me = 0.5",
      () => make([silent, silent], 0.5, persister, ignoreApply),
      RangeError,
      /Me .*0\.5/,
    ],
    ["me = NaN", () => make([silent], NaN, persister, ignoreApply), RangeError, /Me .*NaN/],
    [
      "me as a string",
      () => make([silent], "0" as never, persister, ignoreApply),
      RangeError,
      /Me/,
    ],
    [
      "no persister",
      () => make([silent], 0, undefined as never, ignoreApply),
      TypeError,
      /Persister/,
    ],
    [
      "persister without save",
      () => make([silent], 0, { load: persister.load } as never, ignoreApply),
      TypeError,
      /Persister/,
    ],
    [
      "applyCh not a function",
      () => make([silent], 0, persister, 5 as never),
      TypeError,
      /ApplyCh/,
    ],
  ];
  for (const [why, call, errorClass, message] of cases) {
    await assert.rejects(call, (error: Error) => {
      assert.ok(error instanceof errorClass, `${why}: expected ${errorClass.name}, got ${error}`);
      assert.match(error.message, message, `${why}: message`);
      return true;
    }, why);
  }
});

Deno.test("make() rejects bad options", sanitized, async () => {
  const cases: [string, RaftOptions][] = [
    ["zero heartbeat", { heartbeatIntervalMs: 0 }],
    ["negative heartbeat", { heartbeatIntervalMs: -5 }],
    ["NaN election timeout", { electionTimeoutMinMs: NaN }],
    ["infinite election timeout", { electionTimeoutMaxMs: Infinity }],
    ["heartbeat as a string", { heartbeatIntervalMs: "20" as never }],
    ["zero maxEntriesPerAppend", { maxEntriesPerAppend: 0 }],
    ["zero maxInflightAppends", { maxInflightAppends: 0 }],
    ["fractional maxInflightAppends", { maxInflightAppends: 1.5 }],
    ["negative maxAppendBytes", { maxAppendBytes: -1 }],
    ["fractional maxAppendBytes", { maxAppendBytes: 1024.5 }],
    ["negative commitNotifyDelayMs", { commitNotifyDelayMs: -1 }],
    ["heartbeat equal to the election timeout", {
      heartbeatIntervalMs: 50,
      electionTimeoutMinMs: 50,
    }],
    ["heartbeat above the election timeout", { heartbeatIntervalMs: 900 }],
    ["min above max", { electionTimeoutMinMs: 200, electionTimeoutMaxMs: 100 }],
  ];
  for (const [why, options] of cases) {
    await assert.rejects(
      () => make([silent], 0, new MemoryPersister(), ignoreApply, options),
      RangeError,
      why,
    );
  }
});

// Regression: maxEntriesPerAppend was floored after the positivity check, so 0.5 became 0 and no
// AppendEntries carried entries. make() now requires a positive integer.
Deno.test({
  ...sanitized,
  name: "make() rejects a maxEntriesPerAppend below 1",

  fn: async () => {
    let raft: Raft | undefined;
    try {
      await assert.rejects(async () => {
        raft = await make([silent], 0, new MemoryPersister(), ignoreApply, {
          ...fast,
          maxEntriesPerAppend: 0.5,
        });
      }, RangeError);
    } finally {
      raft?.kill();
    }
  },
});

/** A persister whose load() returns `state` as is. */
function loading(state: unknown): Persister {
  return { load: () => Promise.resolve(state as PersistentState), save: () => Promise.resolve() };
}

Deno.test("make() rejects a malformed loaded state", sanitized, async () => {
  const good = {
    term: 2,
    votedFor: 1,
    snapshot: null,
    log: [{ term: 1, command: "a" }, { term: 2, command: "b" }],
  };
  const snapshot = { index: 4, term: 1, data: new Uint8Array([1, 2]) };
  const cases: [string, unknown][] = [
    ["null", null],
    ["a string", "state"],
    ["a negative term", { ...good, term: -1 }],
    ["a fractional term", { ...good, term: 1.5 }],
    ["a string term", { ...good, term: "2" }],
    ["no votedFor", { term: 2, log: [] }],
    ["votedFor out of range", { ...good, votedFor: 3 }],
    ["votedFor negative", { ...good, votedFor: -1 }],
    ["log not an array", { ...good, log: {} }],
    ["a null entry", { ...good, log: [null] }],
    ["an entry without a term", { ...good, log: [{ command: "a" }] }],
    ["decreasing entry terms", {
      ...good,
      log: [{ term: 2, command: "a" }, { term: 1, command: "b" }],
    }],
    ["an entry term above the current term", { ...good, log: [{ term: 3, command: "a" }] }],
    ["a snapshot that is not an object", { ...good, snapshot: "snapshot" }],
    ["a negative snapshot index", { ...good, snapshot: { ...snapshot, index: -1 } }],
    ["a fractional snapshot index", { ...good, snapshot: { ...snapshot, index: 4.5 } }],
    ["a string snapshot index", { ...good, snapshot: { ...snapshot, index: "4" } }],
    ["a snapshot index past 2^53", { ...good, snapshot: { ...snapshot, index: 2 ** 53 } }],
    ["a negative snapshot term", { ...good, snapshot: { ...snapshot, term: -1 } }],
    ["a snapshot term above the current term", { ...good, snapshot: { ...snapshot, term: 3 } }],
    ["snapshot data that is an array", { ...good, snapshot: { ...snapshot, data: [1, 2] } }],
    ["snapshot data that is a string", { ...good, snapshot: { ...snapshot, data: "ab" } }],
    ["snapshot data that is an ArrayBuffer", {
      ...good,
      snapshot: { ...snapshot, data: new ArrayBuffer(2) },
    }],
    ["no snapshot data", { ...good, snapshot: { index: 4, term: 1 } }],
    ["an entry term below the snapshot's", {
      ...good,
      snapshot: { ...snapshot, term: 2 },
      log: [{ term: 1, command: "a" }],
    }],
    // Saved by a peer that adopted a hostile term: no election could follow it.
    ["a term of 2^53 - 1", { ...good, term: Number.MAX_SAFE_INTEGER }],
    ["a command nested 65 deep", { ...good, log: [{ term: 1, command: nested(65) }] }],
  ];
  for (const [why, state] of cases) {
    await assert.rejects(
      () => make([silent, silent, silent], 0, loading(state), ignoreApply, fast),
      (error: Error) => {
        assert.ok(error instanceof TypeError, `${why}: expected TypeError, got ${error}`);
        assert.match(error.message, /malformed/, `${why}: message`);
        return true;
      },
      why,
    );
  }
  // The well-formed state is accepted.
  const raft = await make([silent, silent, silent], 0, loading(good), ignoreApply, fast);
  assert.deepEqual(raft.getState(), { term: 2, isLeader: false });
  assert.equal(raft.status().lastLogIndex, 2);
  raft.kill();
  // So are a state with a snapshot, whose log starts at the snapshot's term or later, and one
  // from a persister written before snapshots existed, which has no snapshot field.
  for (
    const state of [
      { ...good, snapshot },
      {
        ...good,
        snapshot: { ...snapshot, term: 2, data: new Uint8Array() },
        log: good.log.slice(1),
      },
      { term: good.term, votedFor: good.votedFor, log: good.log },
    ]
  ) {
    const accepted = await make([silent, silent, silent], 0, loading(state), ignoreApply, fast);
    assert.deepEqual(accepted.getState(), { term: 2, isLeader: false });
    accepted.kill();
  }
});

// Regression: checkLoadedState accepted entries an AppendEntries would be refused for: term 0
// (terms start at 1) and no command.
Deno.test({
  ...sanitized,
  name: "make() rejects loaded entries of term 0 or without a command",

  fn: async () => {
    const cases: [string, unknown][] = [
      ["an entry of term 0", { term: 1, votedFor: null, log: [{ term: 0, command: "a" }] }],
      ["an entry without a command", { term: 1, votedFor: null, log: [{ term: 1 }] }],
    ];
    for (const [why, state] of cases) {
      let raft: Raft | undefined;
      try {
        await assert.rejects(
          async () => {
            raft = await make([silent], 0, loading(state), ignoreApply, fast);
          },
          TypeError,
          why,
        );
      } finally {
        raft?.kill();
      }
    }
  },
});

// ---- start() --------------------------------------------------------------------------------

Deno.test(
  "start() throws TypeError for a command that is not JSON, and appends nothing",
  sanitized,
  async () => {
    const { raft } = await singlePeer();
    try {
      await untilLeader(raft);
      const cyclic: Record<string, unknown> = {};
      cyclic.self = cyclic;
      const cases: [string, unknown][] = [
        ["a function", () => 1],
        ["undefined", undefined],
        ["a BigInt", 10n],
        ["a cyclic object", cyclic],
        ["a symbol", Symbol("s")],
      ];
      for (const [why, command] of cases) {
        assert.throws(() => raft.start(command), TypeError, why);
        assert.equal(raft.status().lastLogIndex, 0, `${why}: nothing may be appended`);
      }
      assert.deepEqual(raft.start({ ok: true }), { index: 1, term: 1, isLeader: true });
    } finally {
      raft.kill();
    }
  },
);

Deno.test(
  "start() throws RangeError for a command larger than the persister's maxCommandBytes",
  sanitized,
  async () => {
    const inner = new MemoryPersister();
    const persister: Persister = {
      load: () => inner.load(),
      save: (change) => inner.save(change),
      maxCommandBytes: 10,
    };
    const { raft, applied } = await singlePeer(persister);
    try {
      await untilLeader(raft);
      assert.throws(() => raft.start("x".repeat(9)), RangeError, "11 bytes of JSON");
      // 5 characters, but 2 bytes each in UTF-8: 12 bytes with the quotes.
      assert.throws(() => raft.start("é".repeat(5)), RangeError, "12 bytes of UTF-8");
      assert.equal(raft.status().lastLogIndex, 0, "nothing may be appended");
      assert.deepEqual(raft.start("x".repeat(8)), { index: 1, term: 1, isLeader: true });
      assert.deepEqual(raft.start("é".repeat(4)), { index: 2, term: 1, isLeader: true });
      await waitFor(() => applied.length === 2, "both commands of 10 bytes to apply");
      assert.deepEqual(applied.map((msg) => msg.command), ["x".repeat(8), "é".repeat(4)]);
    } finally {
      raft.kill();
    }
  },
);

Deno.test(
  "start() throws RangeError for a command deeper than maxCommandDepth or over maxCommandBytes",
  sanitized,
  async () => {
    const applied: ApplyMsg[] = [];
    const raft = await make([silent], 0, new MemoryPersister(), (msg) => {
      applied.push(msg);
    }, { ...fast, maxCommandDepth: 3, maxCommandBytes: 100 });
    try {
      await untilLeader(raft);
      assert.throws(() => raft.start(nested(4)), RangeError, "4 levels, over 3");
      assert.throws(
        () => raft.start({ a: { b: [[1]] } }),
        RangeError,
        "objects and arrays, 4 deep",
      );
      // Refused before it is serialized (which would take most of a second).
      assert.throws(() => raft.start(nested(1_000_000)), RangeError, "a million levels");
      assert.throws(() => raft.start("x".repeat(99)), RangeError, "101 bytes of JSON");
      assert.equal(raft.status().lastLogIndex, 0, "nothing may be appended");
      assert.deepEqual(raft.start(nested(3)), { index: 1, term: 1, isLeader: true });
      await waitFor(() => applied.length === 1, "the command at the limit to apply");
    } finally {
      raft.kill();
    }
  },
);

Deno.test("make() rejects bad command limits", sanitized, async () => {
  for (const options of [{ maxCommandDepth: 0 }, { maxCommandBytes: 1.5 }]) {
    await assert.rejects(
      () => make([silent], 0, new MemoryPersister(), ignoreApply, { ...fast, ...options }),
      RangeError,
      JSON.stringify(options),
    );
  }
});

Deno.test("start() on a peer that is not leader appends nothing", sanitized, async () => {
  const raft = await make([silent, silent, silent], 0, new MemoryPersister(), ignoreApply, {
    ...fast,
    clock: new ManualClock(),
  });
  try {
    assert.deepEqual(raft.start("x"), { index: -1, term: 0, isLeader: false });
    assert.equal(raft.status().lastLogIndex, 0);
  } finally {
    raft.kill();
  }
});

// ---- Applying -------------------------------------------------------------------------------

Deno.test(
  "a single-peer cluster elects itself, commits and applies commands in order",
  sanitized,
  async () => {
    const { raft, applied } = await singlePeer();
    try {
      await untilLeader(raft);
      assert.equal(raft.getState().term, 1);
      const commands = ["a", { b: [1, 2] }, 3, null, "e"];
      commands.forEach((command, i) => {
        assert.deepEqual(raft.start(command), { index: i + 1, term: 1, isLeader: true });
      });
      await waitFor(() => applied.length >= commands.length, "5 applies");
      await sleep(20);
      assert.deepEqual(
        applied,
        commands.map((command, i) => commandMessage(command, i + 1, 1)),
      );
      assert.deepEqual(raft.status(), {
        me: 0,
        term: 1,
        role: "leader",
        leaderId: 0,
        commitIndex: 5,
        lastApplied: 5,
        lastLogIndex: 5,
      });
    } finally {
      raft.kill();
    }
  },
);

Deno.test("start() keeps its own copy of the command", sanitized, async () => {
  const { raft, applied } = await singlePeer();
  try {
    await untilLeader(raft);
    const command = { value: 1 };
    raft.start(command);
    command.value = 2;
    await waitFor(() => applied.length === 1, "the apply");
    assert.deepEqual(applied[0]!.command, { value: 1 });
  } finally {
    raft.kill();
  }
});

Deno.test("an async applyCh is awaited before the next apply", sanitized, async () => {
  const events: string[] = [];
  let running = 0;
  let maxRunning = 0;
  const raft = await make([silent], 0, new MemoryPersister(), async (msg) => {
    running++;
    maxRunning = Math.max(maxRunning, running);
    events.push(`start ${msg.commandIndex}`);
    await sleep(5);
    events.push(`end ${msg.commandIndex}`);
    running--;
  }, fast);
  try {
    await untilLeader(raft);
    for (const command of ["a", "b", "c"]) raft.start(command);
    await waitFor(() => events.length === 6, "3 applies to finish");
    assert.deepEqual(events, ["start 1", "end 1", "start 2", "end 2", "start 3", "end 3"]);
    assert.equal(maxRunning, 1, "applies must not overlap");
    assert.equal(raft.status().lastApplied, 3);
  } finally {
    raft.kill();
  }
});

// ---- kill() ---------------------------------------------------------------------------------

/** Ends that grant every vote and accept every AppendEntries, so peer 0 leads a 3-peer cluster. */
const agreeable: ClientEnd = {
  call(method, args) {
    const { term } = args as { term: number };
    return Promise.resolve(
      method === "RequestVote"
        ? { term, voteGranted: true }
        : { term, success: true, conflictTerm: 0, conflictIndex: 0 },
    );
  },
};

Deno.test(
  "after kill() no timers remain, killed() is true, and the peer does nothing",
  sanitized,
  async () => {
    const clock = new ManualClock();
    const applied: ApplyMsg[] = [];
    const raft = await make([agreeable, agreeable, agreeable], 0, new MemoryPersister(), (msg) => {
      applied.push(msg);
    }, { ...fast, clock, random: fixedRandom(0) });
    assert.equal(clock.pendingTimers, 1, "a follower has its election timer");
    await clock.advanceAsync(50);
    assert.equal(raft.getState().isLeader, true, "the agreeable peers elect peer 0");
    raft.start("x");
    await clock.advanceAsync(30);
    assert.deepEqual(applied.map((msg) => msg.command), ["x"]);
    assert.ok(clock.pendingTimers > 0, "a leader has a heartbeat timer");

    assert.equal(raft.killed(), false);
    raft.kill();
    assert.equal(raft.killed(), true);
    assert.equal(clock.pendingTimers, 0, "kill() must cancel every timer");
    assert.deepEqual(raft.start("y"), { index: -1, term: 1, isLeader: false });
    assert.equal(
      await raft.handleRpc("RequestVote", {
        term: 9,
        candidateId: 1,
        lastLogIndex: 9,
        lastLogTerm: 9,
      }),
      undefined,
    );
    await clock.advanceAsync(1000);
    assert.equal(clock.pendingTimers, 0, "a killed peer arms no timer");
    assert.equal(applied.length, 1);
    raft.kill(); // harmless twice
  },
);

Deno.test(
  "kill() on the real clock leaves nothing running (checked by the sanitizers)",
  sanitized,
  async () => {
    // Without pre-vote, so that the silent peers' missing answers still leave a candidate.
    const options = { ...fast, preVote: false };
    const raft = await make(
      [silent, silent, silent],
      1,
      new MemoryPersister(),
      ignoreApply,
      options,
    );
    await sleep(120); // past an election timeout: a candidate with a new election timer
    assert.equal(raft.status().role, "candidate");
    raft.kill();
    assert.equal(raft.killed(), true);
  },
);

Deno.test("kill() during an async apply stops later applies", sanitized, async () => {
  const applied: number[] = [];
  let raft: Raft | undefined = undefined;
  raft = await make([silent], 0, new MemoryPersister(), async (msg) => {
    applied.push(msg.commandIndex);
    if (msg.commandIndex === 2) raft?.kill();
    await settle();
  }, fast);
  try {
    await untilLeader(raft);
    for (const command of ["a", "b", "c", "d"]) raft.start(command);
    await waitFor(() => raft!.killed(), "the applier to kill the peer");
    await sleep(20);
    assert.deepEqual(applied, [1, 2], "no apply after kill()");
  } finally {
    raft.kill();
  }
});

// ---- Restart --------------------------------------------------------------------------------

Deno.test("a restarted peer re-applies its log from index 1", sanitized, async () => {
  const persister = new MemoryPersister();
  const first = await singlePeer(persister);
  try {
    await untilLeader(first.raft);
    for (const command of ["a", "b", "c"]) first.raft.start(command);
    await waitFor(() => first.applied.length === 3, "3 applies before the crash");
  } finally {
    first.raft.kill();
  }
  assert.deepEqual(persister.state(), {
    term: 1,
    votedFor: 0,
    snapshot: null,
    log: ["a", "b", "c"].map((command) => ({ term: 1, command })),
  });

  const second = await singlePeer(persister.copy());
  try {
    assert.deepEqual(second.raft.getState(), { term: 1, isLeader: false });
    assert.equal(second.raft.status().lastLogIndex, 3);
    await untilLeader(second.raft);
    assert.equal(second.raft.getState().term, 2);
    // §5.4.2: the old entries commit with the first entry of the new term.
    assert.deepEqual(second.raft.start("d"), { index: 4, term: 2, isLeader: true });
    await waitFor(() => second.applied.length === 4, "4 applies after the restart");
    assert.deepEqual(
      second.applied,
      ["a", "b", "c", "d"].map((command, i) => commandMessage(command, i + 1, i < 3 ? 1 : 2)),
    );
  } finally {
    second.raft.kill();
  }
});

// Regression: the command in an ApplyMsg was the log's own object, and MemoryPersister kept it too,
// so a service mutating it changed the log and the saved state. Commands are now handed out as
// copies and persisted as JSON.
Deno.test({
  ...sanitized,
  name: "a service that mutates an applied command changes neither the log nor the saved state",

  fn: async () => {
    const persister = new MemoryPersister();
    const raft = await make([silent], 0, persister, (msg) => {
      (msg.command as { value: number }).value = -1;
    }, fast);
    try {
      await untilLeader(raft);
      raft.start({ value: 1 });
      await waitFor(() => raft.status().lastApplied === 1, "the apply");
      assert.deepEqual(persister.state().log[0]!.command, { value: 1 });
    } finally {
      raft.kill();
    }
  },
});

Deno.test(
  "a slow disk serves many saves at once: a follower's replies wait one save, not a queue",
  sanitized,
  async () => {
    // Found by the explorer (seed 32803): saves started only after the previous one resolved, so
    // with 0-300 ms saves a busy follower fell minutes behind, and every reply waited for the pile.
    const sim = new Simulator({ seed: 1 });
    const disk = new SimPersister({
      clock: sim.clock,
      random: sim.random,
      saveDelayMs: { min: 100, max: 100 },
    });
    let inFlight = 0;
    let mostInFlight = 0;
    const persister: Persister = {
      load: () => disk.load(),
      async save(change) {
        mostInFlight = Math.max(mostInFlight, ++inFlight);
        await disk.save(change);
        inFlight--;
      },
    };
    const repliedAt = await sim.run(async () => {
      const raft = await make([silent, silent, silent], 0, persister, ignoreApply, {
        clock: sim.clock,
        random: sim.random,
        trace: null,
      });
      const replies: Promise<number>[] = [];
      for (let index = 1; index <= 10; index++) {
        const args = {
          term: 1,
          leaderId: 1,
          prevLogIndex: index - 1,
          prevLogTerm: index === 1 ? 0 : 1,
          entries: [{ term: 1, command: index }],
          leaderCommit: 0,
        };
        replies.push(raft.handleRpc("AppendEntries", args).then(() => sim.clock.now()));
      }
      const times = await Promise.all(replies);
      raft.kill();
      return times;
    });
    assert.equal(disk.state().log.length, 10);
    assert.ok(
      mostInFlight > 1,
      `expected saves to overlap, but at most ${mostInFlight} ran at once`,
    );
    assert.ok(
      Math.max(...repliedAt) <= 200,
      `expected every reply within two save times (200 ms), got ${repliedAt}`,
    );
  },
);

Deno.test(
  "a follower applies a committed entry only once its own save of it is durable",
  sanitized,
  async () => {
    // Raft is safe either way (a majority holds the entry), but a service that saves its own
    // state must never get ahead of its peer's log.
    const disk = new MemoryPersister();
    const held: (() => void)[] = [];
    const persister: Persister = {
      load: () => disk.load(),
      save: (change) =>
        new Promise<void>((resolve) => held.push(() => disk.save(change).then(resolve))),
    };
    const applied: number[] = [];
    const raft = await make([silent, silent, silent], 1, persister, (msg) => {
      applied.push(msg.commandIndex);
    }, { ...fast, clock: new ManualClock(), random: fixedRandom(0) });
    try {
      const reply = raft.handleRpc("AppendEntries", {
        term: 1,
        leaderId: 0,
        prevLogIndex: 0,
        prevLogTerm: 0,
        entries: [{ term: 1, command: "x" }],
        leaderCommit: 1,
      });
      await settle();
      assert.equal(held.length, 1, "the entry's save has started");
      assert.deepEqual(applied, [], "not applied while its save is in flight");
      held.shift()!();
      assert.deepEqual(await reply, { term: 1, success: true, conflictTerm: 0, conflictIndex: 0 });
      await settle();
      assert.deepEqual(applied, [1], "applied once durable");
    } finally {
      raft.kill();
    }
  },
);

// ---- Fatal stops ----------------------------------------------------------------------------

/** A peer that reports its fatal stop to a list instead of the console. */
async function watchedPeer(
  me: number,
  peers: ClientEnd[],
  persister: Persister,
  applyCh: (msg: ApplyMsg) => void = ignoreApply,
): Promise<{ raft: Raft; clock: ManualClock; fatal: FatalError[] }> {
  const clock = new ManualClock();
  const fatal: FatalError[] = [];
  const raft = await make(peers, me, persister, applyCh, {
    ...fast,
    clock,
    random: fixedRandom(0),
    onFatal: (error) => fatal.push(error),
  });
  return { raft, clock, fatal };
}

Deno.test(
  "a failed save stops the peer and reaches onFatal, not the console",
  sanitized,
  async () => {
    const failing: Persister = {
      load: () => Promise.resolve({ term: 0, votedFor: null, snapshot: null, log: [] }),
      save: () => Promise.reject(new Error("disk full")),
    };
    const { raft, clock, fatal } = await watchedPeer(0, [silent], failing);
    const errors: unknown[] = [];
    const consoleError = console.error;
    console.error = (...args: unknown[]) => errors.push(args);
    try {
      await clock.advanceAsync(100); // the election's save fails
    } finally {
      console.error = consoleError;
      raft.kill();
    }
    assert.equal(fatal.length, 1);
    assert.equal(fatal[0]!.reason, "save");
    assert.equal((fatal[0]!.cause as Error).message, "disk full");
    assert.match(fatal[0]!.message, /Raft peer 0 stopped/);
    assert.equal(raft.killed(), true);
    assert.deepEqual(errors, [], "nothing on the console when the service listens");
  },
);

Deno.test("an applyCh that throws stops the peer with reason apply", sanitized, async () => {
  const { raft, clock, fatal } = await watchedPeer(0, [silent], new MemoryPersister(), () => {
    throw new Error("service bug");
  });
  try {
    await clock.advanceAsync(100);
    assert.equal(raft.getState().isLeader, true);
    raft.start("x");
    await clock.advanceAsync(10);
    assert.equal(fatal.length, 1);
    assert.equal(fatal[0]!.reason, "apply");
    assert.match(fatal[0]!.message, /index 1/);
    assert.equal(raft.killed(), true);
  } finally {
    raft.kill();
  }
});

Deno.test(
  "a second leader in this peer's own term stops it with reason invariant",
  sanitized,
  async () => {
    const { raft, clock, fatal } = await watchedPeer(
      0,
      [agreeable, agreeable, agreeable],
      new MemoryPersister(),
    );
    try {
      await clock.advanceAsync(100);
      assert.equal(raft.getState().isLeader, true);
      const reply = await raft.handleRpc("AppendEntries", {
        term: raft.getState().term,
        leaderId: 2,
        prevLogIndex: 0,
        prevLogTerm: 0,
        entries: [],
        leaderCommit: 0,
      });
      assert.equal(reply, undefined, "no answer from a stopped peer");
      assert.equal(fatal.length, 1);
      assert.equal(fatal[0]!.reason, "invariant");
      assert.match(fatal[0]!.message, /Election Safety: peer 2/);
      assert.equal(raft.killed(), true);
    } finally {
      raft.kill();
    }
  },
);

Deno.test("a leader stepping down for a higher term is no safety alarm", sanitized, async () => {
  const lines: string[] = [];
  const clock = new ManualClock();
  const raft = await make([agreeable, agreeable, agreeable], 0, new MemoryPersister(), () => {}, {
    ...fast,
    clock,
    random: fixedRandom(0),
    trace: (line) => lines.push(line),
  });
  try {
    await clock.advanceAsync(100);
    assert.equal(raft.getState().isLeader, true);
    await raft.handleRpc("AppendEntries", {
      term: raft.getState().term + 1,
      leaderId: 2,
      prevLogIndex: 0,
      prevLogTerm: 0,
      entries: [],
      leaderCommit: 0,
    });
    assert.equal(raft.status().role, "follower");
    assert.equal(raft.killed(), false);
    assert.deepEqual(lines.filter((line) => /SAFETY|invariant/i.test(line)), []);
  } finally {
    raft.kill();
  }
});

Deno.test(
  "a follower asked to overwrite a committed entry stops with reason invariant",
  sanitized,
  async () => {
    const { raft, fatal } = await watchedPeer(1, [silent, silent, silent], new MemoryPersister());
    try {
      const append = (term: number, entries: LogEntry[], leaderCommit: number) =>
        raft.handleRpc("AppendEntries", {
          term,
          leaderId: 0,
          prevLogIndex: 0,
          prevLogTerm: 0,
          entries,
          leaderCommit,
        });
      await append(1, [{ term: 1, command: "a" }], 1);
      assert.equal(raft.status().commitIndex, 1);
      assert.equal(await append(2, [{ term: 2, command: "b" }], 1), undefined);
      assert.equal(fatal.length, 1);
      assert.equal(fatal[0]!.reason, "invariant");
      assert.match(fatal[0]!.message, /overwrite index 1, at or below the commit index 1/);
    } finally {
      raft.kill();
    }
  },
);

Deno.test(
  "noopOnElection: a new leader appends a no-op, delivered as commandValid false",
  sanitized,
  async () => {
    const persister = new MemoryPersister();
    const first = await singlePeer(persister);
    try {
      await untilLeader(first.raft);
      first.raft.start("a");
      await waitFor(() => first.applied.length === 1, "the first apply");
    } finally {
      first.raft.kill();
    }
    // Restarted without the option, a leader applies nothing until a client proposes.
    const quiet = await singlePeer(persister.copy());
    try {
      await untilLeader(quiet.raft);
      await sleep(50);
      assert.deepEqual(quiet.applied, [], "without a no-op, the old entry waits for a new one");
    } finally {
      quiet.raft.kill();
    }
    const applied: ApplyMsg[] = [];
    const raft = await make([silent], 0, persister.copy(), (msg) => {
      applied.push(msg);
    }, { ...fast, noopOnElection: true });
    try {
      await untilLeader(raft);
      await waitFor(() => applied.length === 2, "the old entry and the no-op");
      assert.deepEqual(applied[0], commandMessage("a", 1, 1));
      assert.deepEqual(applied[1], {
        ...commandMessage(null, 2, raft.getState().term),
        commandValid: false,
      });
      assert.deepEqual(raft.start("b"), { index: 3, term: raft.getState().term, isLeader: true });
    } finally {
      raft.kill();
    }
    await assert.rejects(
      make([silent], 0, new MemoryPersister(), ignoreApply, {
        noopOnElection: "yes" as never,
      }),
      TypeError,
    );
  },
);
