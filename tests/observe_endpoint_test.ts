/**
 * The peer-side status stream of the web view (`examples/kv/observe.ts`): the log tail it keeps
 * from the persister, the snapshots and events it streams, what it refuses, and that a real
 * `RaftNode` plugs into it as it is.
 */

import assert from "node:assert/strict";
import { ManualClock } from "./helpers/manual_clock.ts";
import {
  LogTail,
  type ObservedNode,
  ObserveEndpoint,
  parseMetrics,
  parseSnapshot,
  type PeerSnapshot,
} from "../examples/kv/observe.ts";
import { MemoryPersister, type NodeStatus, RaftNode } from "../mod.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** A node whose status and metrics the test sets, and whose events it dispatches. */
class FakeNode extends EventTarget implements ObservedNode {
  current: NodeStatus = {
    id: 1,
    term: 3,
    role: "leader",
    leaderId: 1,
    commitIndex: 7,
    lastApplied: 7,
    lastLogIndex: 8,
    snapshotIndex: 0,
    followers: [{ id: 0, matchIndex: 7, nextIndex: 9, state: "replicate", inflight: 1 }],
    closed: false,
  };
  appendEntriesSent = 0;
  saves = 0;

  status(): NodeStatus {
    return structuredClone(this.current);
  }

  metrics(): string {
    return [
      "# TYPE raft_rpcs_total counter",
      `raft_rpcs_total{method="AppendEntries",direction="out"} ${this.appendEntriesSent}`,
      `raft_save_duration_seconds_bucket{le="0.001"} ${this.saves}`,
      `raft_save_duration_seconds_bucket{le="+Inf"} ${this.saves}`,
      `raft_save_duration_seconds_sum ${this.saves * 0.0005}`,
      `raft_save_duration_seconds_count ${this.saves}`,
      "raft_elections_started_total 2",
      "raft_elections_won_total 1",
      "raft_prevotes_started_total 4",
    ].join("\n");
  }
}

/** Reads server-sent events from `response` one snapshot at a time. */
function snapshots(response: Response) {
  const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  return {
    async next(): Promise<PeerSnapshot | null> {
      for (;;) {
        const end = buffer.indexOf("\n\n");
        if (end >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          if (!block.startsWith("data: ")) continue;
          return parseSnapshot(JSON.parse(block.slice(6)));
        }
        const { value, done } = await reader.read();
        if (done) return null;
        buffer += value;
      }
    },
    cancel: () => reader.cancel(),
  };
}

const get = (query = "", init: RequestInit = {}) =>
  new Request(`http://127.0.0.1/events${query}`, init);

Deno.test("observe: the log tail follows loads, appends, truncations and snapshots", async () => {
  const tail = new LogTail(4);
  const inner = new MemoryPersister();
  await inner.save({
    term: 2,
    votedFor: null,
    log: {
      from: 1,
      entries: [1, 1, 1, 2, 2, 2].map((term) => ({ term, command: "x" })),
    },
  });
  const persister = tail.watch(inner);
  await persister.load();
  assert.deepEqual(tail.entries(), [
    { index: 3, term: 1 },
    { index: 4, term: 2 },
    { index: 5, term: 2 },
    { index: 6, term: 2 },
  ]);
  // A new leader overwrites from index 5 and appends its no-op.
  await persister.save({
    term: 3,
    votedFor: 0,
    log: { from: 5, entries: [{ term: 3, command: null, type: "noop" }] },
  });
  assert.deepEqual(tail.entries(), [
    { index: 3, term: 1 },
    { index: 4, term: 2 },
    { index: 5, term: 3, noop: true },
  ]);
  // A term-only save leaves the log alone; a snapshot drops what it covers.
  await persister.save({ term: 4, votedFor: null });
  await persister.save({
    term: 4,
    votedFor: null,
    snapshot: { index: 4, term: 2, data: new Uint8Array([1]) },
  });
  assert.deepEqual(tail.entries(), [{ index: 5, term: 3, noop: true }]);
  assert.deepEqual((await inner.load()).log.length, 1, "the saves reached the inner persister");
  assert.throws(() => new LogTail(0), /capacity must be a positive integer, got 0/);
});

Deno.test("observe: metrics in the Prometheus text format are read with their labels", () => {
  const metrics = parseMetrics(
    '# HELP x y\nraft_rpcs_total{method="Append\\"Entries",direction="in"} 12\nraft_term 3\n' +
      'h_bucket{le="+Inf"} 4\n',
  );
  assert.deepEqual(metrics.get("raft_rpcs_total"), [
    { labels: { method: 'Append"Entries', direction: "in" }, value: 12 },
  ]);
  assert.deepEqual(metrics.get("raft_term"), [{ labels: {}, value: 3 }]);
  assert.deepEqual(metrics.get("h_bucket")?.[0]?.labels.le, "+Inf");
});

Deno.test(
  "observe: a stream sends snapshots with rates, events, and ends when the node closes",
  sanitized,
  async () => {
    const node = new FakeNode();
    const tail = new LogTail();
    // Time moves only when the test says, so the rates below are exact, whatever the load.
    const clock = new ManualClock(1000);
    const endpoint = new ObserveEndpoint(node, { logTail: tail, pid: 4242, clock });
    const stream = snapshots(endpoint.serve(get("?interval=50")));
    const first = (await stream.next())!;
    assert.deepEqual(first.id, 1);
    assert.deepEqual(first.pid, 4242);
    assert.deepEqual(first.status, node.current);
    assert.deepEqual(first.elections, { preVotesStarted: 4, started: 2, won: 1 });
    assert.deepEqual(first.events, []);

    // A sample, then a burst of 50 RPCs and 10 saves of 0.5 ms, then the next sample 50 ms on.
    clock.advance(50);
    node.appendEntriesSent = 50;
    node.saves = 10;
    node.dispatchEvent(new CustomEvent("leaderchange", { detail: { leaderId: 2, term: 4 } }));
    clock.advance(50);
    let withEvent: PeerSnapshot | null = null;
    while (withEvent === null) {
      const next = await stream.next();
      assert.ok(next !== null, "the stream ended before the event arrived");
      if (next.events.length > 0) withEvent = next;
    }
    assert.deepEqual(withEvent.events, [{ type: "leaderchange", leaderId: 2, term: 4 }]);
    // Weighted with a time constant of 1 s, a burst of N between samples dt apart reads as
    // N (1 - e^-dt) / dt a second: 48.77 for N = 50 and dt = 50 ms.
    const rate = withEvent.messagesPerSecond["AppendEntries sent"]!;
    const expected = 50 * (1 - Math.exp(-0.05)) / 0.05;
    assert.ok(
      Math.abs(rate - expected) < 0.01,
      `expected ${expected.toFixed(2)} AppendEntries a second, got ${rate}`,
    );
    assert.deepEqual(withEvent.saves.meanMs, 0.5);
    assert.deepEqual(withEvent.saves.p99Ms, 1);

    node.current = { ...node.current, closed: true };
    clock.advance(1000);
    let last: PeerSnapshot | null = withEvent;
    for (let next = await stream.next(); next !== null; next = await stream.next()) last = next;
    assert.deepEqual(last.status.closed, true, "the last snapshot says the node closed");
    assert.deepEqual(endpoint.streams, 0);
  },
);

Deno.test("observe: refuses what the page does not need", sanitized, async () => {
  const endpoint = new ObserveEndpoint(new FakeNode(), { maxStreams: 1 });
  const refusals: [Request, number, RegExp][] = [
    [get("", { method: "POST" }), 405, /Only GET/],
    [get("", { headers: { origin: "http://evil.example" } }), 403, /not for browsers/],
    [get("?interval=10"), 400, /from 50 to 10000, got "10"/],
    [get("?interval=1e3"), 400, /got "1e3"/],
    [get("?interval="), 400, /got ""/],
  ];
  for (const [request, status, message] of refusals) {
    const response = endpoint.serve(request);
    assert.deepEqual(response.status, status, `${request.method} ${request.url}`);
    assert.match(await response.text(), message);
  }
  const open = endpoint.serve(get());
  const full = endpoint.serve(get());
  assert.deepEqual(full.status, 503);
  assert.match(await full.text(), /Too many streams open \(1\)/);
  await open.body!.cancel();
  assert.deepEqual(endpoint.streams, 0, "a cancelled stream is forgotten");
});

Deno.test("observe: a malformed snapshot is refused, naming the field", () => {
  const good = new ObserveEndpoint(new FakeNode()).snapshot();
  assert.deepEqual(parseSnapshot(JSON.parse(JSON.stringify(good))), good);
  const bad = (change: (s: Record<string, unknown>) => void) => {
    const copy = JSON.parse(JSON.stringify(good));
    change(copy);
    return () => parseSnapshot(copy);
  };
  assert.throws(bad((s) => (s.status as { role: string }).role = "king"), /status\.role.*"king"/);
  assert.throws(bad((s) => s.log = [{ index: -1, term: 1 }]), /log\[0\]\.index.*-1/);
  assert.throws(bad((s) => s.messagesPerSecond = { "rm -rf": 1 }), /messagesPerSecond/);
  assert.throws(bad((s) => s.events = [{ type: "boom" }]), /events\[0\]\.type/);
  assert.throws(() => parseSnapshot(null), /\(the snapshot\).*null/);
});

Deno.test(
  "observe: a RaftNode is an ObservedNode; its snapshot shows leadership and saves",
  sanitized,
  async () => {
    const tail = new LogTail();
    await using node = await RaftNode.create<string, string>({
      id: 0,
      peers: [{ call: () => Promise.resolve(undefined) }],
      persister: tail.watch(new MemoryPersister()),
      stateMachine: { apply: (command) => command },
      electionTimeoutMinMs: 50,
      electionTimeoutMaxMs: 100,
      heartbeatIntervalMs: 20,
    });
    const endpoint = new ObserveEndpoint(node, { logTail: tail });
    await new Promise((resolve) => node.addEventListener("leaderchange", resolve, { once: true }));
    endpoint.snapshot(); // rates compare two samples: this is the first
    await node.propose("a");
    await node.propose("b");
    const snapshot = endpoint.snapshot();
    assert.deepEqual(snapshot.status.role, "leader");
    assert.deepEqual(snapshot.elections.won, 1);
    assert.deepEqual(snapshot.log, [
      { index: 1, term: 1, noop: true },
      { index: 2, term: 1 },
      { index: 3, term: 1 },
    ]);
    assert.ok(snapshot.saves.perSecond > 0, `saves: ${JSON.stringify(snapshot.saves)}`);
  },
);
