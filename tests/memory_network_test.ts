/**
 * The in-memory network (after the lab's labrpc): delivery through JSON copies, unreachable
 * servers, crashes, counts, loss, delays and reordering. A manual clock and a seeded random
 * source make every run the same.
 */

import assert from "node:assert/strict";
import { MemoryNetwork } from "../src/transport/memory_network.ts";
import type { ClientEnd, RpcHandler } from "../src/types.ts";
import { ManualClock, settle } from "./helpers/manual_clock.ts";
import { seededRandom } from "../src/sim/seeded_random.ts";
import { sanitized } from "./helpers/sanitized.ts";

/** A network on a manual clock with one end `client` connected and enabled to server `server`. */
function setup(handler: RpcHandler, seed = 1): {
  network: MemoryNetwork;
  clock: ManualClock;
  end: ClientEnd;
} {
  const clock = new ManualClock();
  const network = new MemoryNetwork({ clock, random: seededRandom(seed) });
  network.addServer("server", handler);
  const end = network.makeEnd("client");
  network.connect("client", "server");
  network.enable("client", true);
  return { network, clock, end };
}

const echo: RpcHandler = { handleRpc: (method, args) => Promise.resolve({ method, args }) };

/** A handler whose replies the test sends by hand. */
function heldHandler(): RpcHandler & { received: unknown[]; replyAll(reply: unknown): void } {
  const waiting: ((reply: unknown) => void)[] = [];
  const received: unknown[] = [];
  return {
    received,
    handleRpc(_method, args) {
      received.push(args);
      return new Promise((resolve) => waiting.push(resolve));
    },
    replyAll(reply) {
      for (const resolve of waiting.splice(0)) resolve(reply);
    },
  };
}

Deno.test("a call reaches the server and returns its reply", sanitized, async () => {
  const { network, end } = setup(echo);
  try {
    assert.deepEqual(await end.call("Echo", { x: 1 }), { method: "Echo", args: { x: 1 } });
    assert.deepEqual(await end.call("Echo", undefined), { method: "Echo" });
  } finally {
    network.close();
  }
});

Deno.test("requests and replies are copied through JSON", sanitized, async () => {
  let seen: { list: number[]; when?: unknown } | undefined;
  const kept = { answer: [1, 2] };
  const { network, end } = setup({
    handleRpc(_method, args) {
      seen = args as { list: number[] };
      seen.list.push(99);
      return Promise.resolve(kept);
    },
  });
  try {
    const sent = { list: [1], when: new Date(0), skip: undefined };
    const reply = await end.call("M", sent) as { answer: number[] };
    assert.deepEqual(seen, { list: [1, 99], when: "1970-01-01T00:00:00.000Z" }, "receiver's copy");
    assert.deepEqual(sent.list, [1], "the receiver's change must not reach the sender's object");
    assert.notEqual(reply, kept, "the caller must get a copy of the reply");
    reply.answer.push(3);
    assert.deepEqual(kept.answer, [1, 2], "the caller's change must not reach the server's object");
  } finally {
    network.close();
  }
});

Deno.test(
  "a disabled end, an unconnected end and a missing server get undefined, after a delay",
  sanitized,
  async () => {
    const { network, clock, end } = setup(echo);
    try {
      const unconnected = network.makeEnd("unconnected");
      network.enable("unconnected", true);
      const nowhere = network.makeEnd("nowhere");
      network.connect("nowhere", "no such server");
      network.enable("nowhere", true);
      network.enable("client", false);
      const calls = [end.call("M", 1), unconnected.call("M", 2), nowhere.call("M", 3)];
      const dueTimes = clock.pendingDueTimes(); // a delay of 0 runs in a microtask instead
      assert.ok(dueTimes.length >= 2, `expected simulated timeouts, saw ${dueTimes.length} timers`);
      assert.ok(
        dueTimes.every((at) => at <= 99),
        `short timeouts are at most 99 ms, saw ${dueTimes}`,
      );
      clock.advance(99);
      assert.deepEqual(await Promise.all(calls), [undefined, undefined, undefined]);
      assert.equal(network.getCount("server"), 0, "nothing was delivered");
      assert.equal(network.getTotalCount(), 3, "sent calls count even when undelivered");
    } finally {
      network.close();
    }
  },
);

Deno.test("a deleted end gets undefined, and its name can be made again", sanitized, async () => {
  const { network, clock, end } = setup(echo);
  try {
    network.deleteEnd("client");
    const call = end.call("M", 1);
    clock.advance(99);
    assert.equal(await call, undefined);
    network.makeEnd("client");
    assert.throws(() => network.makeEnd("client"), RangeError, "a duplicate end name");
    assert.throws(() => network.connect("missing", "server"), RangeError);
  } finally {
    network.close();
  }
});

Deno.test(
  "deleteServer resolves calls in flight to it to undefined at once",
  sanitized,
  async () => {
    const handler = heldHandler();
    const { network, end } = setup(handler);
    try {
      const call = end.call("M", { n: 1 });
      await settle();
      assert.equal(handler.received.length, 1, "the request was delivered");
      network.deleteServer("server");
      assert.equal(await call, undefined);
      handler.replyAll({ late: true }); // a reply from the crashed server goes nowhere
      await settle();
      assert.equal(network.getCount("server"), 0, "a deleted server has no count");
    } finally {
      network.close();
    }
  },
);

Deno.test("replacing a server drops the old one's calls in flight", sanitized, async () => {
  const old = heldHandler();
  const { network, end } = setup(old);
  try {
    const call = end.call("M", 1);
    await settle();
    network.addServer("server", echo);
    assert.equal(await call, undefined);
    assert.deepEqual(await end.call("M", 2), { method: "M", args: 2 }, "the new server answers");
  } finally {
    network.close();
  }
});

Deno.test(
  "a reply is dropped if the end was disabled while the server worked",
  sanitized,
  async () => {
    const handler = heldHandler();
    const { network, end } = setup(handler);
    try {
      const call = end.call("M", 1);
      await settle();
      network.enable("client", false);
      handler.replyAll({ ok: true });
      assert.equal(await call, undefined);
    } finally {
      network.close();
    }
  },
);

Deno.test(
  "a server that throws, rejects or replies non-JSON gives undefined",
  sanitized,
  async () => {
    const replies: Record<string, () => Promise<unknown>> = {
      Throw: () => {
        throw new Error("boom");
      },
      Reject: () => Promise.reject(new Error("boom")),
      BigInt: () => Promise.resolve(1n),
      Undefined: () => Promise.resolve(undefined),
    };
    const { network, end } = setup({ handleRpc: (method) => replies[method]!() });
    try {
      for (const method of Object.keys(replies)) {
        assert.equal(await end.call(method, {}), undefined, method);
      }
      assert.equal(network.getCount("server"), 4);
    } finally {
      network.close();
    }
  },
);

Deno.test("non-JSON args are not sent and not counted", sanitized, async () => {
  const { network, end } = setup(echo);
  try {
    assert.equal(await end.call("M", { big: 1n }), undefined);
    assert.equal(network.getTotalCount(), 0);
    assert.equal(network.getTotalBytes(), 0);
  } finally {
    network.close();
  }
});

Deno.test(
  "counts: per server, total calls, and bytes of args plus delivered replies",
  sanitized,
  async () => {
    const clock = new ManualClock();
    const network = new MemoryNetwork({ clock, random: seededRandom(7) });
    try {
      network.addServer("a", { handleRpc: () => Promise.resolve({ ok: 1 }) }); // 8 bytes of JSON
      network.addServer("b", { handleRpc: () => Promise.resolve("yes") }); // 5 bytes
      const toA = network.makeEnd("toA");
      const toB = network.makeEnd("toB");
      network.connect("toA", "a");
      network.connect("toB", "b");
      network.enable("toA", true);
      network.enable("toB", true);

      await toA.call("M", { n: 1 }); // 7 + 8
      await toA.call("M", [1, 2, 3]); // 7 + 8
      await toB.call("M", "hi"); // 4 + 5
      network.enable("toB", false);
      const lost = toB.call("M", 12345); // 5, never delivered
      clock.advance(99);
      await lost;

      assert.equal(network.getCount("a"), 2);
      assert.equal(network.getCount("b"), 1);
      assert.equal(network.getCount("missing"), 0);
      assert.equal(network.getTotalCount(), 4);
      assert.equal(network.getTotalBytes(), 7 + 8 + 7 + 8 + 4 + 5 + 5);
    } finally {
      network.close();
    }
  },
);

/** Sends `n` calls on an unreliable network; counts requests delivered and replies received. */
async function unreliableRun(
  seed: number,
  n: number,
): Promise<{ delivered: number; replies: number; clock: ManualClock }> {
  const { network, clock, end } = setup(echo, seed);
  try {
    network.setReliable(false);
    const calls: Promise<unknown>[] = [];
    for (let i = 0; i < n; i++) calls.push(end.call("M", i));
    await settle(); // calls with no delay
    assert.ok(
      clock.pendingDueTimes().every((at) => at <= 26),
      `expected request delays of 0-26 ms, got up to ${Math.max(...clock.pendingDueTimes())}`,
    );
    clock.advance(26);
    const results = await Promise.all(calls);
    assert.equal(clock.pendingTimers, 0);
    return {
      delivered: network.getCount("server"),
      replies: results.filter((reply) => reply !== undefined).length,
      clock,
    };
  } finally {
    network.close();
  }
}

Deno.test("unreliable mode loses about 10% of requests and 10% of replies", sanitized, async () => {
  const n = 2000;
  const { delivered, replies } = await unreliableRun(42, n);
  // Binomial: standard deviations of about 13 requests and 13 replies; allow 7 of them.
  assert.ok(
    Math.abs(delivered - 0.9 * n) < 95,
    `expected about ${0.9 * n} of ${n} requests delivered, saw ${delivered}`,
  );
  assert.ok(
    Math.abs(replies - 0.9 * delivered) < 95,
    `expected about ${
      Math.round(0.9 * delivered)
    } of ${delivered} replies to arrive, saw ${replies}`,
  );
  const again = await unreliableRun(42, n);
  assert.deepEqual(
    [again.delivered, again.replies],
    [delivered, replies],
    "the same seed must lose the same calls",
  );
});

Deno.test("a reliable network loses nothing and adds no delay", sanitized, async () => {
  const { network, clock, end } = setup(echo, 3);
  try {
    const results = await Promise.all(Array.from({ length: 200 }, (_, i) => end.call("M", i)));
    assert.equal(results.filter((reply) => reply === undefined).length, 0);
    assert.equal(clock.pendingTimers, 0, "reliable delivery schedules no timers");
  } finally {
    network.close();
  }
});

Deno.test("long reordering delays about 2/3 of replies by 200-2200 ms", sanitized, async () => {
  const { network, clock, end } = setup(echo, 5);
  try {
    network.setLongReordering(true);
    const n = 900;
    let arrived = 0;
    const calls = Array.from({ length: n }, (_, i) =>
      end.call("M", i).then((reply) => {
        arrived++;
        return reply;
      }));
    await settle();
    const delayed = clock.pendingTimers;
    assert.equal(delayed + arrived, n);
    assert.ok(
      Math.abs(delayed - 600) < 100,
      `expected about 600 of ${n} replies delayed, saw ${delayed}`,
    );
    const dueTimes = clock.pendingDueTimes();
    assert.ok(dueTimes[0]! >= 200, `expected delays of at least 200 ms, saw ${dueTimes[0]}`);
    assert.ok(
      dueTimes.at(-1)! <= 2200,
      `expected delays of at most 2200 ms, saw ${dueTimes.at(-1)}`,
    );
    assert.ok(dueTimes.at(-1)! > 1500, "some delays should be long");

    clock.advance(199);
    await settle();
    assert.equal(arrived, n - delayed, "no delayed reply before 200 ms");
    clock.advance(2001);
    const replies = await Promise.all(calls);
    assert.equal(arrived, n);
    assert.ok(replies.every((reply) => reply !== undefined), "a reordered reply is late, not lost");
  } finally {
    network.close();
  }
});

Deno.test(
  "long delays make calls to unreachable servers fail after up to 7000 ms",
  sanitized,
  async () => {
    const { network, clock, end } = setup(echo, 9);
    try {
      network.enable("client", false);
      network.setLongDelays(true);
      const calls = Array.from({ length: 300 }, () => end.call("M", 0));
      const dueTimes = clock.pendingDueTimes();
      assert.ok(dueTimes.at(-1)! <= 6999, `expected at most 6999 ms, saw ${dueTimes.at(-1)}`);
      assert.ok(
        dueTimes.at(-1)! > 5000,
        `expected some delays past 5000 ms, saw ${dueTimes.at(-1)}`,
      );
      clock.advance(6999);
      assert.deepEqual(new Set(await Promise.all(calls)), new Set([undefined]));
      network.setLongDelays(false);
      end.call("M", 0);
      assert.ok(clock.pendingDueTimes()[0]! - clock.now() <= 99, "short delays once switched off");
    } finally {
      network.close();
    }
  },
);

Deno.test(
  "close() resolves pending calls to undefined and cancels their timers",
  sanitized,
  async () => {
    const handler = heldHandler();
    const { network, clock, end } = setup(handler, 11);
    network.setLongReordering(true);
    const inHandler = end.call("M", 1);
    await settle();
    const toDisabled = network.makeEnd("disabled");
    const waiting = toDisabled.call("M", 2);
    assert.equal(clock.pendingTimers, 1);

    network.close();
    assert.deepEqual(await Promise.all([inHandler, waiting]), [undefined, undefined]);
    assert.equal(clock.pendingTimers, 0, "close() must cancel every timer");
    handler.replyAll("late");
    await settle();
    assert.equal(await end.call("M", 3), undefined, "calls after close() get undefined");
    assert.equal(network.getTotalCount(), 2, "calls after close() are not counted");
    assert.equal(clock.pendingTimers, 0);
  },
);

// ---- End faults (for fault injection; the lab's tests never set them) -----------------------

Deno.test(
  "end faults: request loss never reaches the server; reply loss does, then drops the reply",
  sanitized,
  async () => {
    const { network, end } = setup(echo, 12);
    network.setEndFaults("client", { requestLoss: 1 });
    assert.equal(await end.call("M", 1), undefined);
    assert.equal(network.getCount("server"), 0, "a lost request is not delivered");
    network.setEndFaults("client", { replyLoss: 1 });
    assert.equal(await end.call("M", 2), undefined);
    assert.equal(network.getCount("server"), 1, "the request arrived; its reply was lost");
    network.setEndFaults("client", {});
    assert.deepEqual(await end.call("M", 3), { method: "M", args: 3 });
  },
);

Deno.test(
  "end faults: a clog holds requests and replies until lifted, then lets them through",
  sanitized,
  async () => {
    const { network, clock, end } = setup(echo, 13);
    network.setEndFaults("client", { requestsClogged: true });
    let first: unknown = "pending";
    const firstCall = end.call("M", 1).then((reply) => first = reply);
    await clock.advanceAsync(60_000);
    assert.equal(first, "pending", "a clogged request neither arrives nor fails");
    assert.equal(network.getCount("server"), 0);
    network.setEndFaults("client", { repliesClogged: true });
    await clock.advanceAsync(20);
    assert.equal(
      network.getCount("server"),
      1,
      "lifting the request clog lets the request through",
    );
    assert.equal(first, "pending", "but its reply is now held");
    network.setEndFaults("client", {});
    await clock.advanceAsync(20);
    await firstCall;
    assert.deepEqual(first, { method: "M", args: 1 });
  },
);

Deno.test(
  "end faults: duplication delivers a request twice; the caller sees one reply",
  sanitized,
  async () => {
    const handler = heldHandler();
    const { network, clock, end } = setup(handler, 14);
    network.setEndFaults("client", { duplication: 1 });
    const call = end.call("M", { n: 1 });
    await clock.advanceAsync(20);
    assert.deepEqual(handler.received, [{ n: 1 }, { n: 1 }]);
    assert.equal(network.getCount("server"), 2);
    handler.replyAll("ok");
    assert.equal(await call, "ok");
    network.close();
  },
);

Deno.test(
  "end faults: maxDelayMs delays requests and replies by up to that much",
  sanitized,
  async () => {
    const { network, clock, end } = setup(echo, 15);
    network.setEndFaults("client", { maxDelayMs: 500 });
    const delays: number[] = [];
    for (let i = 0; i < 6; i++) {
      const started = clock.now();
      let done = false;
      end.call("M", i).then(() => done = true);
      while (!done) await clock.advanceAsync(25);
      delays.push(clock.now() - started);
    }
    assert.ok(delays.every((ms) => ms <= 1025), `delays above 2 x 500 ms: ${delays}`);
    assert.ok(delays.some((ms) => ms > 100), `no delay above 100 ms: ${delays}`);
  },
);

Deno.test("end faults: bad probabilities and unknown ends are refused", sanitized, () => {
  const { network } = setup(echo);
  assert.throws(() => network.setEndFaults("client", { requestLoss: 2 }), RangeError);
  assert.throws(() => network.setEndFaults("client", { maxDelayMs: -1 }), RangeError);
  assert.throws(() => network.setEndFaults("nobody", {}), RangeError);
});

Deno.test("close() cancels the timers that release clogged messages", sanitized, async () => {
  const { network, clock, end } = setup(echo, 16);
  network.setEndFaults("client", { requestsClogged: true });
  const call = end.call("M", 1);
  await settle();
  network.setEndFaults("client", {});
  assert.equal(clock.pendingTimers, 1, "the release waits for its timer");
  network.close();
  assert.equal(await call, undefined);
  assert.equal(clock.pendingTimers, 0);
});

Deno.test("the record option reports each delivered request and reply", sanitized, async () => {
  const clock = new ManualClock();
  const lines: string[] = [];
  const network = new MemoryNetwork({
    clock,
    random: seededRandom(1),
    record: (l) => lines.push(l),
  });
  network.addServer("server", echo);
  const end = network.makeEnd("client");
  network.connect("client", "server");
  network.enable("client", true);
  await end.call("M", { x: 1 });
  assert.deepEqual(lines, [
    'client request M {"x":1}',
    'client reply {"method":"M","args":{"x":1}}',
  ]);
});
