import assert from "node:assert/strict";
import { KvStateMachine, parseCommand } from "../examples/kv/state_machine.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "kv: a retried write applies once, and its retry gets the first result",
  sanitized,
  () => {
    const state = new KvStateMachine();
    assert.deepEqual(state.apply({ op: "put", key: "a", value: "1", clientId: "c", seq: 1 }, 1), {
      value: null,
    });
    assert.deepEqual(state.apply({ op: "put", key: "a", value: "2", clientId: "c", seq: 2 }, 2), {
      value: "1",
    });
    // The retry of seq 2 committed again at index 3 (the client never saw the first reply).
    assert.deepEqual(state.apply({ op: "put", key: "a", value: "2", clientId: "c", seq: 2 }, 3), {
      value: "1",
    });
    assert.deepEqual(state.apply({ op: "put", key: "a", value: "3", clientId: "d", seq: 1 }, 4), {
      value: "2",
    });
    // A stale retry of seq 1, arriving after seq 2, must not undo anything.
    state.apply({ op: "delete", key: "a", clientId: "c", seq: 1 }, 5);
    assert.deepEqual(state.entries(), [["a", "3"]]);
    assert.deepEqual(state.appliedIndex, 5);
  },
);

Deno.test("kv: commands from the log are checked", sanitized, () => {
  assert.deepEqual(parseCommand({ op: "put", key: "k", clientId: "c", seq: 1 }), undefined);
  assert.deepEqual(parseCommand({ op: "drop", key: "k", clientId: "c", seq: 1 }), undefined);
  assert.deepEqual(parseCommand(null), undefined);
  assert.deepEqual(parseCommand({ op: "get", key: "k", clientId: "c", seq: 1 }), {
    op: "get",
    key: "k",
    clientId: "c",
    seq: 1,
  });
});

Deno.test("kv: a snapshot restores the data and the sessions", sanitized, () => {
  const state = new KvStateMachine();
  state.apply({ op: "put", key: "a", value: "1", clientId: "c", seq: 1 }, 1);
  state.apply({ op: "put", key: "b", value: "2", clientId: "", seq: 0 }, 2);
  const restored = new KvStateMachine();
  restored.restore(state.snapshot(), 2);
  assert.deepEqual(restored.entries(), [["a", "1"], ["b", "2"]]);
  assert.equal(restored.appliedIndex, 2);
  assert.deepEqual(
    restored.apply({ op: "put", key: "a", value: "1", clientId: "c", seq: 1 }, 3),
    { value: null },
    "a retry after the snapshot still gets its first result",
  );
  assert.deepEqual(restored.entries(), [["a", "1"], ["b", "2"]]);
  assert.equal(
    restored.apply("not a command", 4),
    undefined,
    "a malformed command changes nothing",
  );
});

Deno.test(
  "kv: sessions expire by the log's time and by count, the same way on every peer",
  sanitized,
  () => {
    const state = new KvStateMachine({ sessionTtlMs: 1000, maxSessions: 2 });
    const put = (clientId: string, seq: number, time: number, value = "v") =>
      state.apply({ op: "put", key: "k", value, clientId, seq, time }, seq);
    assert.deepEqual(put("a", 1, 0), { value: null });
    assert.deepEqual(put("a", 1, 500), { value: null }, "a retry within the TTL: its first result");
    assert.equal(state.sessionCount, 1);
    put("b", 1, 1600); // the log's time passes a's TTL (last used at 0)
    assert.equal(state.sessionCount, 1, "a's session expired");
    assert.deepEqual(
      put("a", 2, 1700),
      { error: "session expired" },
      "a later request of an expired session is refused, not applied: it could be a retry",
    );
    put("c", 1, 1700);
    put("d", 1, 1700);
    assert.equal(state.sessionCount, 2, "past maxSessions the least recently used goes");
    assert.deepEqual(put("b", 2, 1700), { error: "session expired" }, "b was the oldest");
    // The same log gives the same sessions: a snapshot carries them, and the log's clock.
    const copy = new KvStateMachine({ sessionTtlMs: 1000, maxSessions: 2 });
    copy.restore(state.snapshot(), 9);
    assert.equal(copy.sessionCount, 2);
    assert.deepEqual(
      copy.apply({ op: "put", key: "k", value: "v", clientId: "d", seq: 1, time: 1700 }, 10),
      { value: "v" },
      "d's retry still gets its first result after the snapshot",
    );
  },
);
