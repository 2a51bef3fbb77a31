/**
 * A command-line client for the key/value example:
 *
 *   deno task kv --http http://127.0.0.1:8001,http://127.0.0.1:8002 put greeting hello
 *   export RAFT_HTTP=http://127.0.0.1:8001,http://127.0.0.1:8002
 *   deno task kv get greeting                  # linearizable, served by the leader
 *   deno task kv get greeting --consistent follower
 *   deno task kv del greeting
 *   deno task kv status                        # each peer's role, term and indexes
 *   RAFT_SECRET=... deno task kv members       # voters and learners: needs the cluster's secret
 *
 * `deno task cluster` prints the line to use with its addresses. Writes and reads go through
 * {@linkcode KvClient}, which finds the leader and retries with the same request id, so a write
 * applies once. Exit codes: 0 done, 1 refused or failed (a missing key, an unreachable cluster),
 * 2 a usage error.
 *
 * Permissions, as `deno task kv` grants them: `--allow-net=127.0.0.1` (the cluster's addresses:
 * network access to their hosts) and `--allow-env=RAFT_HTTP,RAFT_SECRET`.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { env, net, requirePermissions } from "../_permissions.ts";
import { KvClient } from "./client.ts";

const USAGE = `Usage: deno task kv [--http URL,...] <command>

Commands:
  put <key> <value>      set key to value
  get <key>              print key's value (linearizable: the leader answers)
      [--consistent follower|lease]
                         follower: any peer answers, after asking the leader;
                         lease: the leader answers on its lease (peers run with --lease-reads)
  del <key>              delete key
  status                 each peer's role, term and log indexes
  members                the cluster's voters and learners (needs the cluster's secret in
                         RAFT_SECRET)

The cluster's HTTP addresses come from --http, or else from the RAFT_HTTP environment variable:
  --http http://127.0.0.1:8001,http://127.0.0.1:8002,http://127.0.0.1:8003
(deno task cluster prints the line to use.)`;

/** How long a put, get or del may take, retries included. */
const DEADLINE_MS = 5000;
/** How long one peer may take to answer `status` or `members`. */
const REQUEST_TIMEOUT_MS = 2000;

/** A usage error: says what is wrong, points at the usage, exits 2. */
function usageError(message: string): never {
  console.error(`${message}\n\n${USAGE}`);
  Deno.exit(2);
}

/** A failure: says what failed, exits 1. */
function fail(message: string): never {
  console.error(message);
  Deno.exit(1);
}

/** The host of `url` as `--allow-net` names it. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, "");
}

let parsed;
try {
  parsed = parseArgs({
    args: Deno.args,
    allowPositionals: true,
    options: {
      http: { type: "string" },
      consistent: { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
  });
} catch (error) {
  usageError(error instanceof Error ? error.message : String(error));
}
const { values, positionals } = parsed;
if (values.help) {
  console.log(USAGE);
  Deno.exit(0);
}
const [command, ...operands] = positionals;
const arity: Record<string, string[]> = {
  put: ["key", "value"],
  get: ["key"],
  del: ["key"],
  status: [],
  members: [],
};
if (command === undefined) usageError("No command given.");
const expected = arity[command];
if (expected === undefined) {
  usageError(`Unknown command ${JSON.stringify(command)}: use put, get, del, status or members.`);
}
if (operands.length !== expected.length) {
  const shape = [command, ...expected.map((name) => `<${name}>`)].join(" ");
  usageError(
    `${command} takes ${expected.length || "no"} operand${
      expected.length === 1 ? "" : "s"
    } (${shape}), got ${operands.length}: ${JSON.stringify(operands)}.`,
  );
}
if (values.consistent !== undefined) {
  if (command !== "get") usageError("--consistent applies to get only.");
  if (values.consistent !== "follower" && values.consistent !== "lease") {
    usageError(`--consistent must be follower or lease, got ${JSON.stringify(values.consistent)}.`);
  }
}

if (values.http === undefined) requirePermissions([env("RAFT_HTTP")], { task: "deno task kv" });
const addressList = values.http ?? Deno.env.get("RAFT_HTTP");
if (addressList === undefined || addressList.trim() === "") {
  usageError("No cluster address: pass --http URL,... or set RAFT_HTTP.");
}
const urls: URL[] = [];
for (const address of addressList.split(",").map((text) => text.trim())) {
  let url: URL | undefined;
  try {
    url = new URL(address);
  } catch {
    // Said below.
  }
  if (url === undefined || (url.protocol !== "http:" && url.protocol !== "https:")) {
    usageError(`${JSON.stringify(address)} is not an http:// address.`);
  }
  urls.push(url);
}
// The form KvClient compares a leader's hint with: the peers give their addresses without a
// trailing slash.
const httpUrls = urls.map((url) => url.href.replace(/\/$/, ""));
requirePermissions([
  ...[...new Set(urls.map(hostOf))].map(net),
  ...(command === "members" ? [env("RAFT_SECRET")] : []),
], { task: "deno task kv" });

const key = operands[0] ?? ""; // for put, get and del
const tried = `no peer answered at ${httpUrls.join(", ")}`;

switch (command) {
  case "put": {
    const previous = await keyValue((client) => client.put(key, operands[1]!));
    console.log(previous === null ? "OK (a new key)" : `OK (replaced ${JSON.stringify(previous)})`);
    break;
  }
  case "get": {
    const consistent = values.consistent as "follower" | "lease" | undefined;
    const value = await keyValue((client) =>
      client.get(key, consistent === undefined ? {} : { consistent })
    );
    if (value === null) fail(`Key ${JSON.stringify(key)} is not set.`);
    console.log(value);
    break;
  }
  case "del": {
    const previous = await keyValue((client) => client.delete(key));
    console.log(
      previous === null
        ? "Nothing deleted: the key was not set"
        : `Deleted (it was ${JSON.stringify(previous)})`,
    );
    break;
  }
  case "status":
    await status();
    break;
  case "members":
    await members();
    break;
}

/** Runs one KvClient operation; on failure, says whether the cluster was reachable at all. */
async function keyValue<T>(operation: (client: KvClient) => Promise<T>): Promise<T> {
  const reasons: string[] = [];
  const client = new KvClient(httpUrls, {
    deadlineMs: DEADLINE_MS,
    onRetry: (_peer, reason) => reasons.push(reason),
  });
  try {
    return await operation(client);
  } catch (error) {
    if (reasons.length > 0 && reasons.every((reason) => reason.includes("unreachable"))) {
      fail(`Cannot reach the cluster: ${tried} within ${DEADLINE_MS / 1000} s. Is it running?`);
    }
    fail(`The cluster did not answer in time: ${error instanceof Error ? error.message : error}`);
  } finally {
    client.close();
  }
}

/** GETs `path` from `url`: the parsed reply and its status, or why there was none. */
async function getJson(
  url: string,
  path: string,
  headers: HeadersInit = {},
): Promise<{ status: number; body: Record<string, unknown> } | { error: string }> {
  const http = Deno.createHttpClient({});
  try {
    const response = await fetch(`${url}${path}`, {
      headers,
      client: http,
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
    const body: unknown = await response.json().catch(() => ({}));
    return {
      status: response.status,
      body: typeof body === "object" && body !== null ? body as Record<string, unknown> : {},
    };
  } catch (error) {
    const timedOut = error instanceof DOMException && error.name === "TimeoutError";
    return { error: timedOut ? `no answer within ${REQUEST_TIMEOUT_MS / 1000} s` : "unreachable" };
  } finally {
    http.close();
  }
}

/** One line per address: the peer's role, term and indexes, or why it did not answer. */
async function status(): Promise<void> {
  const replies = await Promise.all(httpUrls.map((url) => getJson(url, "/status")));
  const width = Math.max(...httpUrls.map((url) => url.length));
  let answered = 0;
  replies.forEach((reply, i) => {
    const where = httpUrls[i]!.padEnd(width);
    if ("error" in reply) return console.log(`${where}  ${reply.error}`);
    if (reply.status !== 200) return console.log(`${where}  answered ${reply.status}`);
    answered++;
    const { me, role, term, leader, commitIndex, appliedIndex } = reply.body;
    console.log(
      `${where}  peer ${me}  ${String(role).padEnd(9)}  term ${term}  leader ${leader ?? "none"}` +
        `  commit ${commitIndex}  applied ${appliedIndex}`,
    );
  });
  if (answered === 0) fail(`Cannot reach the cluster: ${tried}. Is it running?`);
}

/** The configuration, from the first peer that answers, with the cluster's secret. */
async function members(): Promise<void> {
  const secret = Deno.env.get("RAFT_SECRET");
  if (secret === undefined || secret === "") {
    usageError(
      "members needs the cluster's secret: set RAFT_SECRET to the secret the peers run with.",
    );
  }
  for (const url of httpUrls) {
    const reply = await getJson(url, "/members", { authorization: `Bearer ${secret}` });
    if ("error" in reply) continue;
    if (reply.status === 401) {
      fail(`${url} refused the secret in RAFT_SECRET: it is not the one the peers run with.`);
    }
    if (reply.status !== 200) {
      fail(`${url} answered ${reply.status}: ${JSON.stringify(reply.body.error ?? reply.body)}`);
    }
    const { voters, learners } = reply.body.configuration as {
      voters: { id: number; address: string }[];
      learners: { id: number; address: string }[];
    };
    const list = (members: { id: number; address: string }[]) =>
      members.length === 0
        ? "none"
        : members.map(({ id, address }) => `${id} (${address})`).join(", ");
    console.log(`voters:   ${list(voters)}`);
    console.log(`learners: ${list(learners)}`);
    console.log(`leader:   ${reply.body.leader ?? "none known"}`);
    return;
  }
  fail(`Cannot reach the cluster: ${tried}. Is it running?`);
}
