/**
 * One peer of the replicated key/value service, as its own process:
 *
 *   RAFT_SECRET=... deno run --allow-net=127.0.0.1 --allow-read=data/peer0 \
 *     --allow-write=data/peer0 --allow-env=RAFT_SECRET examples/kv/server.ts --me 0 \
 *     --peers ws://127.0.0.1:7001,ws://127.0.0.1:7002,ws://127.0.0.1:7003 \
 *     --http http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003 \
 *     --data data/peer0
 *
 * Permissions: network access to the hosts of `--peers` and `--http` (its own addresses and its
 * peers'), read and write access to its `--data` directory, and `--allow-env=RAFT_SECRET`
 * (`RAFT_SECRET,RAFT_FAULT_TOKEN` with `--fault-injection`). It needs `--unstable-kv` too, which
 * this repository's `deno.json` turns on. `deno task cluster` starts peers this way.
 *
 * HTTP API: `GET`, `PUT` (body: the value) and `DELETE /kv/:key`; `GET /status`; `GET /metrics`
 * (Prometheus text); `GET /events` (the live status stream of `observe.ts`, read-only, for the
 * web view). Writes go through the Raft log; reads do not: a `GET` is served by the
 * leader after `RaftNode.read()` (ReadIndex), so it is linearizable without a log write. With
 * `?consistent=follower`, any peer serves it after asking the leader for the read index (a
 * follower read, still linearizable); with `?consistent=lease` (and `--lease-reads`), the leader
 * serves it on its lease. A peer that is not the leader answers other requests 421 with the
 * leader's address, if it knows it, in the JSON body and in a `Location` header. The peer runs on
 * `RaftNode`, which snapshots the map every 10 000 commands, so restarts replay little. On
 * SIGTERM a leader hands its leadership over before it exits, so a planned restart costs a round
 * trip, not an election timeout. A client that wants a retried
 * write to apply once sends both `X-Client-Id` (non-empty, at most 256 characters) and
 * `X-Request-Seq` (a positive integer, larger for each new request, the same on a retry); a
 * request with neither is applied each time it commits, and one with only one of them, or an
 * invalid one, gets 400. Sessions expire after 10 idle minutes of the log's time, or when 10 000
 * newer ones push them out; a retry of an expired session gets 409 (start a new session).
 *
 * Membership (docs/membership.md), for the operator, with the cluster's secret as a bearer token
 * (`Authorization: Bearer $RAFT_SECRET`): `GET /members`; `POST /members` with
 * `{"id": 3, "address": "ws://...", "voter": true}` (without `voter`, a learner);
 * `POST /members/3/promote`; `DELETE /members/3`. A new peer starts with `--join`, and a `--peers`
 * list (and `--http` list) that includes its own address at its id.
 *
 * Against hostile clients: the HTTP server is the library's bounded one (`src/net/_http_server.ts`:
 * connections that send no request are capped and closed after 5 s, the accept loop survives
 * running out of file descriptors); a key with a malformed percent-escape gets 400; a body is read
 * only up to 64 KiB (413 past it, the rest is never read) and must be UTF-8 (400 otherwise).
 *
 * @module
 */

import { parseArgs } from "node:util";
import {
  ChangeInProgressError,
  type Configuration,
  LastVoterError,
  MemberExistsError,
  NodeClosedError,
  NotLeaderError,
  OverloadedError,
  RaftNode,
  UnknownMemberError,
  WebSocketTransport,
} from "../../mod.ts";
import { HttpServer } from "../../src/net/_http_server.ts";
import { env, net, read, requirePermissions, write } from "../_permissions.ts";
import { LogTail, ObserveEndpoint } from "./observe.ts";
import { openPersister } from "./persister.ts";
import {
  type KvCommand,
  type KvRefusal,
  type KvResult,
  KvStateMachine,
  MAX_CLIENT_ID_LENGTH,
  MAX_KEY_LENGTH,
} from "./state_machine.ts";

/** The host name of `url` (without the brackets of an IPv6 address), or `url` if it is none. */
function hostOf(url: string): string {
  try {
    return new URL(url).hostname.replace(/^\[|\]$/g, "");
  } catch {
    return url;
  }
}

/** How long a request waits for its entry to commit before the client is told to retry. */
const COMMIT_WAIT_MS = 3000;

/** How long shutdown waits for requests in progress before the process exits anyway. */
const SHUTDOWN_GRACE_MS = 2000;

/** Largest value accepted, in bytes. */
const MAX_VALUE_BYTES = 64 * 1024;

const { values: flags } = parseArgs({
  args: Deno.args,
  options: {
    me: { type: "string" },
    peers: { type: "string" },
    http: { type: "string" },
    data: { type: "string" },
    "fault-injection": { type: "boolean", default: false },
    "lease-reads": { type: "boolean", default: false },
    "snapshot-every": { type: "string" },
    "start-cut-off": { type: "boolean", default: false },
    join: { type: "boolean", default: false },
  },
});
const me = Number(flags.me);
const peerUrls = (flags.peers ?? "").split(",");
const httpUrls = (flags.http ?? "").split(",");
if (!Number.isInteger(me) || peerUrls.length !== httpUrls.length || flags.data === undefined) {
  console.error("Usage: kv/server.ts --me N --peers ws://..,.. --http http://..,.. --data DIR");
  Deno.exit(2);
}
requirePermissions([
  ...[...new Set([...peerUrls, ...httpUrls].map(hostOf))].map(net),
  read(flags.data),
  write(flags.data),
  env("RAFT_SECRET"),
  ...(flags["fault-injection"] ? [env("RAFT_FAULT_TOKEN")] : []),
], { task: "deno task cluster" });
const secret = Deno.env.get("RAFT_SECRET");
if (secret === undefined) {
  console.error("Set RAFT_SECRET to the cluster's shared secret (16 bytes or more).");
  Deno.exit(2);
}
// Only requests carrying this token may inject faults: pages on other origins cannot send it.
// (Read only then: a peer without fault injection needs no access to that variable.)
const faultToken = flags["fault-injection"] ? Deno.env.get("RAFT_FAULT_TOKEN") ?? "" : "";
if (flags["fault-injection"] && faultToken.length < 16) {
  console.error(
    "--fault-injection needs RAFT_FAULT_TOKEN (16 characters or more) in the environment.",
  );
  Deno.exit(2);
}

const state = new KvStateMachine();
/** Set by the first SIGINT/SIGTERM. */
let stopping = false;
/** Aborted by the first SIGINT/SIGTERM: requests waiting for a commit or a read answer at once. */
const stopped = new AbortController();

const transport = await WebSocketTransport.create({ me, peers: peerUrls, secret });
// Tests start a peer cut off to see what it recovered from its own disk.
if (flags["fault-injection"] && flags["start-cut-off"]) transport.cutOff();
// The web view's log tail: the last entries' indexes and terms, as the persister loads and saves.
const logTail = new LogTail();
const persister = logTail.watch(await openPersister(flags.data));
// The node owns the transport and the persister, and closes them in order.
const node = await RaftNode.create<KvCommand, KvResult | KvRefusal | undefined>({
  id: me,
  peers: transport,
  persister,
  stateMachine: state,
  addresses: httpUrls,
  leaseReads: flags["lease-reads"],
  join: flags.join,
  ...(flags["snapshot-every"] === undefined
    ? {}
    : { snapshotEveryEntries: Number(flags["snapshot-every"]) }),
});
const observed = new ObserveEndpoint(node, { logTail }); // GET /events, read by examples/web/
node.closed.catch((error) => {
  console.error(`peer ${me} stopped:`, error);
  Deno.exit(1);
});
node.addEventListener("configurationchange", ({ detail }) => {
  const { voters, learners } = detail.configuration;
  const ids = (members: { id: number }[]) => members.map((member) => member.id).join(",");
  console.error(
    `peer ${me}: configuration at index ${detail.index}: voters ${ids(voters)}, learners ${
      ids(learners) || "none"
    }`,
  );
  if (![...voters, ...learners].some((member) => member.id === me) && !flags.join) {
    console.error(`peer ${me}: removed from the cluster; it can be shut down`);
  }
});

function json(body: unknown, status = 200): Response {
  return new Response(JSON.stringify(body) + "\n", {
    status,
    headers: { "content-type": "application/json" },
  });
}

/** The answer to a request that failed with `error` (from `propose()` or `read()`). */
function failure(error: unknown, path: string): Response {
  if (stopping || error instanceof NodeClosedError) {
    return json({ error: "peer shutting down; retry" }, 503);
  }
  if (error instanceof NotLeaderError) {
    const leader = error.leaderAddress;
    const response = json({ error: "not the leader", leader }, 421);
    if (leader !== null) response.headers.set("location", new URL(path, leader).href);
    return response;
  }
  if (error instanceof OverloadedError) {
    const response = json({ error: "overloaded; retry" }, 503);
    response.headers.set("retry-after", "1");
    return response;
  }
  // Dropped by a leader change, timed out, or covered by a snapshot: the client retries (with
  // X-Client-Id and X-Request-Seq, a retried write applies once).
  return json({ error: "not committed (leadership changed or timed out); retry" }, 503);
}

async function propose(command: KvCommand, path: string): Promise<Response> {
  // E.g. a PUT whose body arrived after the signal: Raft is stopped.
  if (stopping) return json({ error: "peer shutting down; retry" }, 503);
  let result: KvResult | KvRefusal | undefined;
  try {
    result = await node.propose({ ...command, time: Date.now() }, {
      timeoutMs: COMMIT_WAIT_MS,
      signal: stopped.signal,
    });
  } catch (error) {
    return failure(error, path);
  }
  if (result === undefined) return json({ error: "malformed command" }, 400);
  if ("error" in result) {
    return json({ error: "session expired; start a new session (a new X-Client-Id)" }, 409);
  }
  return json({ key: command.key, previous: result.value });
}

/**
 * A linearizable read without a log write: after `read()` this peer's state reflects every write
 * committed before the request came. Only the leader serves reads, unless the client asks for a
 * follower read (`?consistent=follower`) or a lease read (`?consistent=lease`).
 */
async function get(key: string, consistent: string | null, path: string): Promise<Response> {
  if (stopping) return json({ error: "peer shutting down; retry" }, 503);
  if (consistent !== null && !["linearizable", "follower", "lease"].includes(consistent)) {
    return json({
      error: `consistent must be linearizable, follower or lease, got ${
        JSON.stringify(consistent.slice(0, 40))
      }`,
    }, 400);
  }
  if (consistent === "lease" && !flags["lease-reads"]) {
    return json({ error: "lease reads are off on this peer (start it with --lease-reads)" }, 400);
  }
  try {
    if (consistent !== "follower" && node.status().role !== "leader") {
      const leader = node.status().leaderId;
      throw new NotLeaderError(leader, leader === null ? null : httpUrls[leader] ?? null);
    }
    await node.read({
      consistency: consistent === "lease" ? "lease" : "linearizable",
      timeoutMs: COMMIT_WAIT_MS,
      signal: stopped.signal,
    });
  } catch (error) {
    return failure(error, path);
  }
  const value = state.get(key);
  return json({ key, value }, value === null ? 404 : 200);
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

/**
 * The request's body as text, or the response refusing it: 413 as soon as it passes
 * {@linkcode MAX_VALUE_BYTES} (the rest is never read), 400 if it is not UTF-8. Nothing is ever
 * stored altered.
 */
async function readValue(request: Request): Promise<string | Response> {
  const tooLarge = () => json({ error: `value over ${MAX_VALUE_BYTES} bytes` }, 413);
  if (Number(request.headers.get("content-length") ?? 0) > MAX_VALUE_BYTES) return tooLarge();
  const chunks: Uint8Array[] = [];
  let length = 0;
  if (request.body !== null) {
    const reader = request.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      length += value.length;
      if (length > MAX_VALUE_BYTES) {
        await reader.cancel();
        return tooLarge();
      }
      chunks.push(value);
    }
  }
  const bytes = new Uint8Array(length);
  let offset = 0;
  for (const chunk of chunks) {
    bytes.set(chunk, offset);
    offset += chunk.length;
  }
  try {
    return new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    return json({ error: "value is not valid UTF-8" }, 400);
  }
}

/** Whether the request carries the cluster's secret: `Authorization: Bearer <RAFT_SECRET>`. */
function isAdmin(request: Request): boolean {
  const given = new TextEncoder().encode(request.headers.get("authorization") ?? "");
  const expected = new TextEncoder().encode(`Bearer ${secret}`);
  if (given.length !== expected.length) return false;
  let difference = 0;
  for (let i = 0; i < given.length; i++) difference |= given[i]! ^ expected[i]!;
  return difference === 0;
}

/** The answer to a membership change that failed with `error`. */
function membershipFailure(error: unknown, path: string): Response {
  if (error instanceof NotLeaderError) return failure(error, path);
  if (error instanceof UnknownMemberError) return json({ error: error.message }, 404);
  if (
    error instanceof ChangeInProgressError || error instanceof MemberExistsError ||
    error instanceof LastVoterError
  ) {
    return json({ error: error.message }, 409);
  }
  if (error instanceof RangeError || error instanceof TypeError) {
    return json({ error: error.message }, 400);
  }
  if (error instanceof DOMException && error.name === "TimeoutError") {
    return json({ error: `${error.message}; the change may still commit` }, 504);
  }
  return failure(error, path);
}

/**
 * The membership API, for the cluster's operator (the cluster's secret as a bearer token):
 * `GET /members`; `POST /members` with `{ id, address, voter? }` (a learner, or with `voter`
 * caught up and promoted); `POST /members/ID/promote`; `DELETE /members/ID`. Changes are made
 * on the leader; a follower answers 421 with its address.
 */
async function serveMembers(request: Request, url: URL): Promise<Response> {
  if (!isAdmin(request)) {
    return json({ error: "membership changes need the cluster's secret" }, 401);
  }
  const configurationBody = (configuration: Configuration) =>
    json({ configuration, leader: node.status().leaderId });
  if (url.pathname === "/members" && request.method === "GET") {
    return configurationBody(node.configuration());
  }
  if (stopping) return json({ error: "peer shutting down; retry" }, 503);
  const options = { signal: stopped.signal, timeoutMs: 60_000 };
  try {
    if (url.pathname === "/members" && request.method === "POST") {
      let body: { id?: unknown; address?: unknown; voter?: unknown };
      try {
        body = await request.json();
      } catch {
        return json({ error: "the body must be JSON: { id, address, voter? }" }, 400);
      }
      const { id, address, voter } = body ?? {};
      const add = voter === true ? node.addVoter : node.addLearner;
      return configurationBody(await add.call(node, id as number, address as string, options));
    }
    const match = url.pathname.match(/^\/members\/([0-9]+)(\/promote)?$/);
    if (match !== null) {
      const id = Number(match[1]);
      if (match[2] !== undefined && request.method === "POST") {
        return configurationBody(await node.promote(id, options));
      }
      if (match[2] === undefined && request.method === "DELETE") {
        return configurationBody(await node.removeServer(id, options));
      }
    }
  } catch (error) {
    return membershipFailure(error, url.pathname);
  }
  return json({ error: "not found" }, 404);
}

async function serveHttp(request: Request): Promise<Response> {
  const url = new URL(request.url);
  if (url.pathname === "/status" && request.method === "GET") {
    const status = node.status();
    return json({
      me,
      pid: Deno.pid,
      term: status.term,
      role: status.role,
      leader: status.leaderId,
      commitIndex: status.commitIndex,
      appliedIndex: status.lastApplied,
      lastLogIndex: status.lastLogIndex,
      snapshotIndex: status.snapshotIndex,
      followers: status.followers,
      configuration: node.configuration(),
      sessions: state.sessionCount,
      links: transport.connectedPeers(),
      memory: Deno.memoryUsage(),
      transport: transport.stats,
      http: server.stats,
    });
  }
  if (url.pathname === "/metrics" && request.method === "GET") {
    return new Response(node.metrics(), {
      headers: { "content-type": "text/plain; version=0.0.4; charset=utf-8" },
    });
  }
  if (url.pathname === "/members" || url.pathname.startsWith("/members/")) {
    return await serveMembers(request, url);
  }
  if (url.pathname === "/debug/data" && request.method === "GET") {
    return json({ appliedIndex: node.status().lastApplied, data: state.entries() });
  }
  if (url.pathname === "/events") return observed.serve(request);
  if (
    flags["fault-injection"] && request.method === "POST" &&
    request.headers.get("x-fault-token") === faultToken
  ) {
    if (url.pathname === "/admin/cut-off") return (transport.cutOff(), json({ cutOff: true }));
    if (url.pathname === "/admin/heal") return (transport.heal(), json({ cutOff: false }));
    if (url.pathname === "/admin/disconnect") {
      return (transport.disconnect(), json({ disconnected: true }));
    }
  }
  const match = url.pathname.match(/^\/kv\/(.+)$/);
  if (match === null) return json({ error: "not found" }, 404);
  let key: string;
  try {
    key = decodeURIComponent(match[1]!);
  } catch {
    return json(
      { error: `key ${JSON.stringify(match[1]!.slice(0, 80))} has a malformed %-escape` },
      400,
    );
  }
  if (key.length > MAX_KEY_LENGTH) return json({ error: "key too long" }, 400);
  const identity = requestIdentity(request.headers);
  if (typeof identity === "string") return json({ error: identity }, 400);
  const { clientId, seq } = identity;
  switch (request.method) {
    case "GET":
      return await get(key, url.searchParams.get("consistent"), url.pathname);
    case "DELETE":
      return await propose({ op: "delete", key, clientId, seq }, url.pathname);
    case "PUT": {
      const value = await readValue(request);
      if (typeof value !== "string") return value;
      return await propose({ op: "put", key, value, clientId, seq }, url.pathname);
    }
    default:
      return json({ error: "method not allowed" }, 405);
  }
}

const ownHttp = new URL(httpUrls[me]!);
const server = HttpServer.listen(
  { hostname: ownHttp.hostname.replace(/^\[|\]$/g, ""), port: Number(ownHttp.port) },
  serveHttp,
);
console.log(`peer ${me} ready: raft ${peerUrls[me]}, http ${httpUrls[me]}, pid ${Deno.pid}`);

/**
 * First SIGINT/SIGTERM: close the node (every request waiting for a commit gets 503; the node
 * closes the transport and then the persister), give other requests in progress up to
 * {@linkcode SHUTDOWN_GRACE_MS} (a client can hold one open forever, e.g. a PUT whose body never
 * ends), exit. A second signal exits at once.
 */
async function shutdown(): Promise<void> {
  if (stopping) Deno.exit(1);
  stopping = true;
  stopped.abort();
  if (node.status().role === "leader") {
    // A planned stop: hand leadership over first, so the cluster does not wait out an election
    // timeout. It fails if no follower is up to date; then the others elect a leader as usual.
    await node.transferLeadership().catch(() => {});
  }
  await node.close();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const drained = await Promise.race([
    server.shutdown().then(() => true),
    new Promise<false>((resolve) => timer = setTimeout(() => resolve(false), SHUTDOWN_GRACE_MS)),
  ]);
  clearTimeout(timer);
  if (!drained) {
    console.error(`requests still in progress after ${SHUTDOWN_GRACE_MS} ms; exiting anyway`);
  }
  Deno.exit(0);
}
Deno.addSignalListener("SIGTERM", shutdown);
Deno.addSignalListener("SIGINT", shutdown);
