/**
 * The RPC handlers' trust boundary: malformed requests get an `{ error }` reply that names the bad
 * field and change nothing; valid ones are answered only once the state they report is saved.
 */

import assert from "node:assert/strict";
import { make } from "../src/driver.ts";
import { MemoryPersister } from "../src/storage/memory_persister.ts";
import type { PersistChange, PersistentState, Persister, Raft } from "../src/types.ts";
import { fixedRandom, ManualClock, settle } from "./helpers/manual_clock.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** Term 3, no vote, log terms 1 3 at indexes 1-2. */
function initialState(): PersistentState {
  return {
    term: 3,
    votedFor: null,
    snapshot: null,
    log: [{ term: 1, command: "a" }, { term: 3, command: "b" }],
  };
}

/**
 * Peer 0 of 3 on a clock that never moves, so that only the requests under test change it. Its
 * ends answer nothing.
 */
async function newPeer(persister: Persister): Promise<Raft> {
  const silent = { call: () => Promise.resolve(undefined) };
  return await make([silent, silent, silent], 0, persister, () => {}, {
    clock: new ManualClock(),
    random: fixedRandom(0),
    heartbeatIntervalMs: 100,
    electionTimeoutMinMs: 60_000,
    electionTimeoutMaxMs: 60_000,
    trace: null,
  });
}

const validRequestVote = { term: 4, candidateId: 1, lastLogIndex: 2, lastLogTerm: 3 };
const validAppendEntries = {
  term: 4,
  leaderId: 1,
  prevLogIndex: 2,
  prevLogTerm: 3,
  entries: [{ term: 4, command: "c" }],
  leaderCommit: 2,
};

interface BadRequest {
  why: string;
  method: unknown;
  args: unknown;
  /** A piece of text the error must contain: the field's name, quoted, or the bad method. */
  names: string;
}

function without(object: Record<string, unknown>, field: string): Record<string, unknown> {
  const copy = { ...object };
  delete copy[field];
  return copy;
}

/** An array nested `depth` levels deep. */
function nested(depth: number): unknown {
  let value: unknown = 0;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

const RV = "RequestVote";
const AE = "AppendEntries";

const badRequests: BadRequest[] = [
  // RequestVote
  ...[null, undefined, 5, "text", [], true].map((args) => ({
    why: `RequestVote args ${JSON.stringify(args) ?? String(args)}`,
    method: RV,
    args,
    names: "'args'",
  })),
  ...["term", "candidateId", "lastLogIndex", "lastLogTerm"].map((field) => ({
    why: `RequestVote without ${field}`,
    method: RV,
    args: without(validRequestVote, field),
    names: `'${field}'`,
  })),
  ...[-1, 1.5, 2 ** 53, 1e300, Infinity, NaN, "4", null, [4]].map((term) => ({
    why: `RequestVote term ${String(term)}`,
    method: RV,
    args: { ...validRequestVote, term },
    names: "'term'",
  })),
  {
    why: "lastLogIndex -3",
    method: RV,
    args: { ...validRequestVote, lastLogIndex: -3 },
    names: "'lastLogIndex'",
  },
  {
    why: "lastLogTerm true",
    method: RV,
    args: { ...validRequestVote, lastLogTerm: true },
    names: "'lastLogTerm'",
  },
  ...[3, -1, 0.5, "1", 99].map((candidateId) => ({
    why: `RequestVote candidateId ${JSON.stringify(candidateId)}`,
    method: RV,
    args: { ...validRequestVote, candidateId },
    names: "'candidateId'",
  })),
  // Terms that would leave no room to elect (the peer is at term 3).
  ...[2 ** 53 - 1, 2 ** 52 + 2 ** 20 + 1].map((term) => ({
    why: `RequestVote term ${term}`,
    method: RV,
    args: { ...validRequestVote, term },
    names: "'term'",
  })),
  {
    why: "lastLogTerm above the candidate's term",
    method: RV,
    args: { ...validRequestVote, lastLogTerm: 5 },
    names: "'lastLogTerm'",
  },
  // AppendEntries
  ...[2 ** 53 - 1, 2 ** 52 + 2 ** 20 + 1].map((term) => ({
    why: `AppendEntries term ${term}`,
    method: AE,
    args: { ...validAppendEntries, term, entries: [] },
    names: "'term'",
  })),
  ...[
    ["nested 65 deep", nested(65)],
    ["of 2 MiB", "x".repeat(2 << 20)],
    ["holding Infinity", [Infinity]],
    ["holding a Map", new Map()],
  ].map(([what, command]) => ({
    why: `a command ${what}`,
    method: AE,
    args: { ...validAppendEntries, entries: [{ term: 4, command }] },
    names: "'entries[0].command'",
  })),
  ...[null, 7, "text", [validAppendEntries]].map((args) => ({
    why: `AppendEntries args ${JSON.stringify(args)}`,
    method: AE,
    args,
    names: "'args'",
  })),
  ...["term", "leaderId", "prevLogIndex", "prevLogTerm", "entries", "leaderCommit"].map((
    field,
  ) => ({
    why: `AppendEntries without ${field}`,
    method: AE,
    args: without(validAppendEntries, field),
    names: `'${field}'`,
  })),
  {
    why: "leaderId 3",
    method: AE,
    args: { ...validAppendEntries, leaderId: 3 },
    names: "'leaderId'",
  },
  {
    why: "leaderId -1",
    method: AE,
    args: { ...validAppendEntries, leaderId: -1 },
    names: "'leaderId'",
  },
  {
    why: "prevLogIndex -1",
    method: AE,
    args: { ...validAppendEntries, prevLogIndex: -1 },
    names: "'prevLogIndex'",
  },
  {
    why: "prevLogIndex 0.5",
    method: AE,
    args: { ...validAppendEntries, prevLogIndex: 0.5 },
    names: "'prevLogIndex'",
  },
  {
    why: "prevLogTerm 1e300",
    method: AE,
    args: { ...validAppendEntries, prevLogTerm: 1e300 },
    names: "'prevLogTerm'",
  },
  {
    why: "prevLogTerm above term (heartbeat)",
    method: AE,
    args: { ...validAppendEntries, prevLogTerm: 5, entries: [] },
    names: "'prevLogTerm'",
  },
  {
    why: "leaderCommit 2.5",
    method: AE,
    args: { ...validAppendEntries, leaderCommit: 2.5 },
    names: "'leaderCommit'",
  },
  {
    why: "leaderCommit 2**53",
    method: AE,
    args: { ...validAppendEntries, leaderCommit: 2 ** 53 },
    names: "'leaderCommit'",
  },
  ...["entries", { 0: { term: 4, command: "c" } }, null, 3].map((entries) => ({
    why: `entries ${JSON.stringify(entries)}`,
    method: AE,
    args: { ...validAppendEntries, entries },
    names: "'entries'",
  })),
  ...[
    null,
    5,
    [{ term: 4, command: "c" }],
    { term: 0, command: "c" },
    { term: -1, command: "c" },
    { term: 4.5, command: "c" },
    { term: "4", command: "c" },
    { term: 5, command: "c" },
    { term: 2, command: "c" }, // below prevLogTerm 3
    { term: 4 },
    { term: 4, command: undefined },
  ].map((entry) => ({
    why: `entry ${JSON.stringify(entry)}`,
    method: AE,
    args: { ...validAppendEntries, entries: [entry] },
    names: "'entries[0]'",
  })),
  {
    why: "entries with decreasing terms",
    method: AE,
    args: {
      ...validAppendEntries,
      entries: [{ term: 4, command: "c" }, { term: 3, command: "d" }],
    },
    names: "'entries[1]'",
  },
  // Methods
  {
    why: "unknown method",
    method: "InstallSnapshot",
    args: validRequestVote,
    names: "InstallSnapshot",
  },
  {
    why: "method in the wrong case",
    method: "requestVote",
    args: validRequestVote,
    names: "requestVote",
  },
  { why: "numeric method", method: 42, args: validRequestVote, names: "42" },
  { why: "null method", method: null, args: validRequestVote, names: "null" },
  { why: "object method", method: { name: RV }, args: validRequestVote, names: "RequestVote" },
];

Deno.test(
  "malformed requests get an error naming the field, and change nothing",
  sanitized,
  async () => {
    const persister = new MemoryPersister(initialState());
    const raft = await newPeer(persister);
    try {
      const status = raft.status();
      assert.deepEqual(status, {
        me: 0,
        term: 3,
        role: "follower",
        leaderId: null,
        commitIndex: 0,
        lastApplied: 0,
        lastLogIndex: 2,
      });
      for (const { why, method, args, names } of badRequests) {
        const reply = await raft.handleRpc(method as string, args);
        assert.ok(
          typeof reply === "object" && reply !== null && Object.keys(reply).length === 1 &&
            typeof (reply as { error?: unknown }).error === "string",
          `${why}: expected a reply { error: string }, got ${JSON.stringify(reply)}`,
        );
        const { error } = reply as { error: string };
        assert.ok(
          error.includes(names),
          `${why}: expected the error to name ${names}, got "${error}"`,
        );
        assert.deepEqual(raft.status(), status, `${why}: status changed`);
        assert.deepEqual(persister.state(), initialState(), `${why}: saved state changed`);
        assert.equal(persister.saveCount, 0, `${why}: expected no save`);
      }

      // The peer still works.
      assert.deepEqual(await raft.handleRpc(RV, validRequestVote), { term: 4, voteGranted: true });
      assert.deepEqual(persister.state(), { ...initialState(), term: 4, votedFor: 1 });
      assert.deepEqual(
        await raft.handleRpc(RV, { ...validRequestVote, candidateId: 2 }),
        { term: 4, voteGranted: false },
        "the vote of term 4 is already given",
      );
    } finally {
      raft.kill();
    }
  },
);

Deno.test("a valid AppendEntries after malformed ones is applied as usual", sanitized, async () => {
  const persister = new MemoryPersister(initialState());
  const raft = await newPeer(persister);
  try {
    await raft.handleRpc(AE, {
      ...validAppendEntries,
      entries: [{ term: 4, command: "c" }, { term: 3 }],
    });
    assert.deepEqual(await raft.handleRpc(AE, validAppendEntries), {
      term: 4,
      success: true,
      conflictTerm: 0,
      conflictIndex: 0,
    });
    assert.deepEqual(persister.state().log.map((entry) => entry.command), ["a", "b", "c"]);
    assert.equal(raft.status().leaderId, 1);
  } finally {
    raft.kill();
  }
});

// Regression: messages.ts checked the entries before prevLogTerm <= term, so a request whose only
// fault was prevLogTerm > term was blamed on its first entry, with an impossible range.
Deno.test({
  ...sanitized,
  name: "a prevLogTerm above the term is named as such even when entries follow",

  fn: async () => {
    const persister = new MemoryPersister(initialState());
    const raft = await newPeer(persister);
    try {
      const reply = await raft.handleRpc(AE, { ...validAppendEntries, prevLogTerm: 5 });
      const error = String((reply as { error?: unknown }).error);
      assert.ok(
        error.includes("'prevLogTerm'"),
        `expected the error to name 'prevLogTerm', got "${error}"`,
      );
    } finally {
      raft.kill();
    }
  },
});

/** A persister whose saves take effect only when the test releases them, one by one. */
class GatedPersister implements Persister {
  readonly inner = new MemoryPersister(initialState());
  readonly #waiting: { change: PersistChange; resolve: () => void }[] = [];

  load(): Promise<PersistentState> {
    return this.inner.load();
  }

  save(change: PersistChange): Promise<void> {
    return new Promise((resolve) => this.#waiting.push({ change, resolve }));
  }

  /** Saves not released yet. */
  get waiting(): number {
    return this.#waiting.length;
  }

  /** Completes the oldest waiting save. */
  async releaseOne(): Promise<void> {
    const next = this.#waiting.shift();
    assert.ok(next !== undefined, "expected a save to be waiting");
    await this.inner.save(next.change);
    next.resolve();
  }
}

/** Tracks whether `promise` has settled. */
function track<T>(promise: Promise<T>): { settled: () => boolean; promise: Promise<T> } {
  let settled = false;
  promise.then(() => settled = true, () => settled = true);
  return { settled: () => settled, promise };
}

Deno.test(
  "a granted vote is replied only after the persister's save resolved",
  sanitized,
  async () => {
    const persister = new GatedPersister();
    const raft = await newPeer(persister);
    try {
      const reply = track(raft.handleRpc(RV, validRequestVote));
      await settle();
      assert.equal(persister.waiting, 1, "expected the vote to be saving");
      assert.equal(reply.settled(), false, "the reply must wait for the vote to be durable");

      // A repeated request needs no new save, but reports the same unsaved vote: it waits too.
      const repeated = track(raft.handleRpc(RV, validRequestVote));
      await settle();
      assert.equal(repeated.settled(), false, "a repeated request must wait for the earlier save");

      await persister.releaseOne();
      assert.deepEqual(await reply.promise, { term: 4, voteGranted: true });
      assert.deepEqual(await repeated.promise, { term: 4, voteGranted: true });
      assert.deepEqual(persister.inner.state(), { ...initialState(), term: 4, votedFor: 1 });
    } finally {
      raft.kill();
    }
  },
);

Deno.test(
  "an AppendEntries success is replied only after its entries are saved",
  sanitized,
  async () => {
    const persister = new GatedPersister();
    const raft = await newPeer(persister);
    try {
      const reply = track(raft.handleRpc(AE, validAppendEntries));
      await settle();
      assert.equal(reply.settled(), false, "the reply must wait for the new entry to be durable");
      await persister.releaseOne();
      assert.deepEqual(await reply.promise, {
        term: 4,
        success: true,
        conflictTerm: 0,
        conflictIndex: 0,
      });
      assert.deepEqual(persister.inner.state().log.at(-1), { term: 4, command: "c" });
    } finally {
      raft.kill();
    }
  },
);

Deno.test(
  "a malformed request is refused at once even while a save is pending",
  sanitized,
  async () => {
    const persister = new GatedPersister();
    const raft = await newPeer(persister);
    try {
      const granted = track(raft.handleRpc(RV, validRequestVote));
      const refused = await raft.handleRpc(RV, { ...validRequestVote, term: -1 });
      assert.equal(typeof (refused as { error?: unknown }).error, "string");
      assert.equal(granted.settled(), false);
      await persister.releaseOne();
      await granted.promise;
    } finally {
      raft.kill();
    }
  },
);
