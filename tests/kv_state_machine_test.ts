import assert from "node:assert/strict";
import { KvStateMachine, parseCommand } from "../examples/kv/state_machine.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "kv: a retried write applies once, and its retry gets the first result",
  sanitized,
  () => {
    const state = new KvStateMachine();
    assert.deepEqual(state.apply(1, { op: "put", key: "a", value: "1", clientId: "c", seq: 1 }), {
      value: null,
    });
    assert.deepEqual(state.apply(2, { op: "put", key: "a", value: "2", clientId: "c", seq: 2 }), {
      value: "1",
    });
    // The retry of seq 2 committed again at index 3 (the client never saw the first reply).
    assert.deepEqual(state.apply(3, { op: "put", key: "a", value: "2", clientId: "c", seq: 2 }), {
      value: "1",
    });
    assert.deepEqual(state.apply(4, { op: "put", key: "a", value: "3", clientId: "d", seq: 1 }), {
      value: "2",
    });
    // A stale retry of seq 1, arriving after seq 2, must not undo anything.
    state.apply(5, { op: "delete", key: "a", clientId: "c", seq: 1 });
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

Deno.test("kv: a command's proposal tag survives the log, and is checked", sanitized, () => {
  const command = { op: "get", key: "k", clientId: "", seq: 0, proposal: "p-1" };
  assert.deepEqual(parseCommand(command), command);
  assert.deepEqual(parseCommand({ ...command, proposal: 7 }), undefined);
});
