import { assertEquals } from "./assert.ts";
import { KvStateMachine, parseCommand } from "../examples/kv/state_machine.ts";

Deno.test("kv: a retried write applies once, and its retry gets the first result", () => {
  const state = new KvStateMachine();
  assertEquals(state.apply(1, { op: "put", key: "a", value: "1", clientId: "c", seq: 1 }), {
    value: null,
  });
  assertEquals(state.apply(2, { op: "put", key: "a", value: "2", clientId: "c", seq: 2 }), {
    value: "1",
  });
  // The retry of seq 2 committed again at index 3 (the client never saw the first reply).
  assertEquals(state.apply(3, { op: "put", key: "a", value: "2", clientId: "c", seq: 2 }), {
    value: "1",
  });
  assertEquals(state.apply(4, { op: "put", key: "a", value: "3", clientId: "d", seq: 1 }), {
    value: "2",
  });
  // A stale retry of seq 1, arriving after seq 2, must not undo anything.
  state.apply(5, { op: "delete", key: "a", clientId: "c", seq: 1 });
  assertEquals(state.entries(), [["a", "3"]]);
  assertEquals(state.appliedIndex, 5);
});

Deno.test("kv: commands from the log are checked", () => {
  assertEquals(parseCommand({ op: "put", key: "k", clientId: "c", seq: 1 }), undefined);
  assertEquals(parseCommand({ op: "drop", key: "k", clientId: "c", seq: 1 }), undefined);
  assertEquals(parseCommand(null), undefined);
  assertEquals(parseCommand({ op: "get", key: "k", clientId: "c", seq: 1 }), {
    op: "get",
    key: "k",
    clientId: "c",
    seq: 1,
  });
});
