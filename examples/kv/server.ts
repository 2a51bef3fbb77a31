/**
 * One peer of the replicated key/value service, as its own process:
 *
 *   RAFT_SECRET=... deno run -A examples/kv/server.ts --me 0 \
 *     --peers ws://127.0.0.1:7001,ws://127.0.0.1:7002,ws://127.0.0.1:7003 \
 *     --http http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003 \
 *     --data ./data/peer0
 *
 * HTTP API: `GET`, `PUT` (body: the value) and `DELETE /kv/:key`; `GET /status`; `GET /events`
 * (the live status stream of `observe.ts`, read-only, for the web view). Every request,
 * reads included, goes through the Raft log, so reads are linearizable. A peer that is not the
 * leader answers 421 with the leader's address, if it knows it. A client that wants a retried
 * write to apply once sends both `X-Client-Id` (non-empty, at most 256 characters) and
 * `X-Request-Seq` (a positive integer, larger for each new request, the same on a retry); a
 * request with neither is applied each time it commits, and one with only one of them, or an
 * invalid one, gets 400.
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { ApplyMsg } from "../../mod.ts";
import { WebSocketTransport } from "../../mod.ts";
import { LogTail, ObserveEndpoint, startObservedLabPeer } from "./observe.ts";
import { openPersister } from "./persister.ts";
import {
  type KvCommand,
  type KvResult,
  KvStateMachine,
  MAX_CLIENT_ID_LENGTH,
  MAX_KEY_LENGTH,
  parseCommand,
} from "./state_machine.ts";

/** How long a request waits for its entry to commit before the client is told to retry. */
const COMMIT_WAIT_MS = 3000;

/** How long shutdown waits for requests in progress before the process exits anyway. */
const SHUTDOWN_GRACE_MS = 2000;

/** Largest value accepted, in bytes. */
const MAX_VALUE_BYTES = 64 * 1024;

interface Waiter {
  command: KvCommand;
  settle(result: KvResult | undefined): void;
}

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    me: { type: "string" },
    peers: { type: "string" },
    http: { type: "string" },
    data: { type: "string" },
    "fault-injection": { type: "boolean", default: false },
    "start-cut-off": { type: "boolean", default: false },
  },
});
const me = Number(flags.me);
const peerUrls = (flags.peers ?? "").split(",");
const httpUrls = (flags.http ?? "").split(",");
const secret = Deno.env.get("RAFT_SECRET");
if (!Number.isInteger(me) || peerUrls.length !== httpUrls.length || flags.data === undefined) {
  console.error("Usage: kv/server.ts --me N --peers ws://..,.. --http http://..,.. --data DIR");
  Deno.exit(2);
}
if (secret === undefined) {
  console.error("Set RAFT_SECRET to the cluster's shared secret (16 bytes or more).");
  Deno.exit(2);
}
// Only requests carrying this token may inject faults: pages on other origins cannot send it.
const faultToken = Deno.env.get("RAFT_FAULT_TOKEN") ?? "";
if (flags["fault-injection"] && faultToken.length < 16) {
  console.error(
    "--fault-injection needs RAFT_FAULT_TOKEN (16 characters or more) in the environment.",
  );
  Deno.exit(2);
}

const state = new KvStateMachine();
const waiters = new Map<number, Waiter>();
/** Set by the first SIGINT/SIGTERM. */
let stopping = false;

function applyCommitted(message: ApplyMsg): void {
  if (!message.commandValid) return;
  const command = parseCommand(message.command);
  const result = command === undefined ? undefined : state.apply(message.commandIndex, command);
  if (command === undefined) state.skip(message.commandIndex);
  const waiter = waiters.get(message.commandIndex);
  if (waiter === undefined) return;
  waiters.delete(message.commandIndex);
  // Another leader's entry took this index: ours was lost, and the client must retry.
  const same = command !== undefined && command.proposal === waiter.command.proposal;
  waiter.settle(same ? result : undefined);
}

const transport = await WebSocketTransport.create({ me, peers: peerUrls, secret });
// Tests start a peer cut off to see what it recovered from its own disk.
if (flags["fault-injection"] && flags["start-cut-off"]) transport.cutOff();
const persister = await openPersister(flags.data);
const logTail = new LogTail();
const { raft, node } = await startObservedLabPeer(
  transport.clientEnds(),
  me,
  logTail.watch(persister),
  applyCommitted,
);
const observed = new ObserveEndpoint(node, { logTail }); // GET /events, read by examples/web/
transport.setHandler(raft);

function leader(): number | null {
  return raft.status().leaderId;
}

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

async function propose(request: Omit<KvCommand, "proposal">): Promise<Response> {
  // E.g. a PUT whose body arrived after the signal: Raft is stopped.
  if (stopping) return json({ error: "peer shutting down; retry" }, 503);
  const command: KvCommand = { ...request, proposal: crypto.randomUUID() };
  const { index, isLeader } = raft.start(command);
  if (!isLeader) {
    const known = leader();
    return json({ error: "not the leader", leader: known === null ? null : httpUrls[known] }, 421);
  }
  const result = await new Promise<KvResult | undefined>((resolve) => {
    const timer = setTimeout(() => {
      waiters.delete(index);
      resolve(undefined);
    }, COMMIT_WAIT_MS);
    waiters.get(index)?.settle(undefined); // an older proposal this index replaced
    waiters.set(index, {
      command,
      settle: (outcome) => {
        clearTimeout(timer);
        resolve(outcome);
      },
    });
  });
  if (result === undefined) {
    if (stopping) return json({ error: "peer shutting down; retry" }, 503);
    return json({ error: "not committed (leadership changed or timed out); retry" }, 503);
  }
  if (command.op === "get") {
    return json({ key: command.key, value: result.value }, result.value === null ? 404 : 200);
  }
  return json({ key: command.key, previous: result.value });
}

/**
 * The request's duplicate-detection identity: both headers, checked, or neither (clientId "",
 * which the state machine never takes for a duplicate). A string is what is wrong with them.
 */
function requestIdentity(headers: Headers): { clientId: string; seq: number } | string {
  const clientId = headers.get("x-client-id");
  const seqHeader = headers.get("x-request-seq");
  if (clientId === null && seqHeader === null) return { clientId: "", seq: 0 };
  if (clientId === null || seqHeader === null) {
    return "send both X-Client-Id and X-Request-Seq (a retried write then applies once), or neither";
  }
  if (clientId === "" || clientId.length > MAX_CLIENT_ID_LENGTH) {
    return `X-Client-Id must be 1 to ${MAX_CLIENT_ID_LENGTH} characters`;
  }
  const seq = Number(seqHeader);
  if (!/^[1-9][0-9]*$/.test(seqHeader) || !Number.isSafeInteger(seq)) {
    return "X-Request-Seq must be a positive integer (at most 2^53 - 1)";
  }
  return { clientId, seq };
}

async function serveHttp(request: Request): Promise<Response> {
  const url = new URL(request.url);
  if (url.pathname === "/status" && request.method === "GET") {
    const status = raft.status();
    return json({
      me,
      pid: Deno.pid,
      term: status.term,
      role: status.role,
      leader: status.leaderId,
      commitIndex: status.commitIndex,
      appliedIndex: state.appliedIndex,
      lastLogIndex: status.lastLogIndex,
    });
  }
  if (url.pathname === "/events") return observed.serve(request);
  if (url.pathname === "/debug/data" && request.method === "GET") {
    return json({ appliedIndex: state.appliedIndex, data: state.entries() });
  }
  if (
    flags["fault-injection"] && request.method === "POST" &&
    request.headers.get("x-fault-token") === faultToken
  ) {
    if (url.pathname === "/admin/cut-off") return (transport.cutOff(), json({ cutOff: true }));
    if (url.pathname === "/admin/heal") return (transport.heal(), json({ cutOff: false }));
  }
  const match = url.pathname.match(/^\/kv\/(.+)$/);
  if (match === null) return json({ error: "not found" }, 404);
  const key = decodeURIComponent(match[1]!);
  if (key.length > MAX_KEY_LENGTH) return json({ error: "key too long" }, 400);
  const identity = requestIdentity(request.headers);
  if (typeof identity === "string") return json({ error: identity }, 400);
  const { clientId, seq } = identity;
  switch (request.method) {
    case "GET":
      return await propose({ op: "get", key, clientId, seq });
    case "DELETE":
      return await propose({ op: "delete", key, clientId, seq });
    case "PUT": {
      const value = await request.text();
      if (new TextEncoder().encode(value).length > MAX_VALUE_BYTES) {
        return json({ error: `value over ${MAX_VALUE_BYTES} bytes` }, 413);
      }
      return await propose({ op: "put", key, value, clientId, seq });
    }
    default:
      return json({ error: "method not allowed" }, 405);
  }
}

const ownHttp = new URL(httpUrls[me]!);
const server = Deno.serve(
  { hostname: ownHttp.hostname, port: Number(ownHttp.port), onListen: () => {} },
  serveHttp,
);
console.log(`peer ${me} ready: raft ${peerUrls[me]}, http ${httpUrls[me]}, pid ${Deno.pid}`);

/**
 * First SIGINT/SIGTERM: stop Raft, answer every request waiting for a commit (503), give other
 * requests in progress up to {@linkcode SHUTDOWN_GRACE_MS} (a client can hold one open forever,
 * e.g. a PUT whose body never ends), close the persister, exit. A second signal exits at once.
 */
async function shutdown(): Promise<void> {
  if (stopping) Deno.exit(1);
  stopping = true;
  raft.kill();
  for (const [index, waiter] of waiters) {
    waiters.delete(index);
    waiter.settle(undefined);
  }
  await transport.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    server.shutdown().then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), SHUTDOWN_GRACE_MS)),
  ]);
  clearTimeout(timer);
  if (!drained) {
    console.error(`requests still in progress after ${SHUTDOWN_GRACE_MS} ms; exiting anyway`);
  }
  await persister.close();
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", shutdown);
Deno.addSignalListener("SIGINT", shutdown);
