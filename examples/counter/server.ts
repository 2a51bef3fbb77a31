/**
 * One peer of the replicated counter, as its own process: the guide's (docs/services.md) last
 * step. `POST /add` with a JSON number adds it; `GET /total` reads the total through the log.
 *
 *   RAFT_SECRET=... deno run --allow-net=127.0.0.1 --allow-read=data --allow-write=data \
 *     --allow-env=RAFT_SECRET examples/counter/server.ts 0 data/counter0
 *
 * @module
 */

import { NotLeaderError, RaftNode, WebSocketTransport } from "@denoraft/raft";
import { FilePersister } from "@denoraft/raft/file-persister";
import { type Add, Counter } from "./counter.ts";

// Three peers on this machine: Raft on ports 7101-7103, HTTP on 8101-8103.
const raftUrls = ["ws://127.0.0.1:7101", "ws://127.0.0.1:7102", "ws://127.0.0.1:7103"];
const httpUrls = ["http://127.0.0.1:8101", "http://127.0.0.1:8102", "http://127.0.0.1:8103"];
const id = Number(Deno.args[0]);
const dataDirectory = Deno.args[1];
if (!(id >= 0 && id < 3) || dataDirectory === undefined) {
  console.error("Usage: RAFT_SECRET=... server.ts <id 0..2> <data directory>");
  Deno.exit(2);
}
// Name any missing permission up front, rather than prompt or fail on first use.
const permissions: [string, Deno.PermissionDescriptor][] = [
  ["--allow-net=127.0.0.1", { name: "net", host: "127.0.0.1" }],
  [`--allow-read=${dataDirectory}`, { name: "read", path: dataDirectory }],
  [`--allow-write=${dataDirectory}`, { name: "write", path: dataDirectory }],
  ["--allow-env=RAFT_SECRET", { name: "env", variable: "RAFT_SECRET" }],
];
const missing = permissions.filter(([, descriptor]) =>
  Deno.permissions.querySync(descriptor).state !== "granted"
);
if (missing.length > 0) {
  const flags = (list: typeof permissions) => list.map(([flag]) => flag).join(" ");
  console.error(`This example needs ${flags(missing)}: run it with ${flags(permissions)}.`);
  Deno.exit(2);
}
const secret = Deno.env.get("RAFT_SECRET");
if (secret === undefined) {
  console.error("Set RAFT_SECRET to the cluster's shared secret (the same on every peer).");
  Deno.exit(2);
}

await Deno.mkdir(dataDirectory, { recursive: true });
const node = await RaftNode.create<Add, number>({
  id,
  peers: await WebSocketTransport.create({ me: id, peers: raftUrls, secret }),
  persister: await FilePersister.open(dataDirectory),
  stateMachine: new Counter(),
  addresses: httpUrls,
});

const server = Deno.serve(
  { hostname: "127.0.0.1", port: 8101 + id, onListen: () => {} },
  async (request) => {
    const url = new URL(request.url);
    try {
      if (request.method === "POST" && url.pathname === "/add") {
        const amount = await request.json();
        if (!Number.isSafeInteger(amount)) {
          return Response.json({ error: "not an integer" }, { status: 400 });
        }
        return Response.json({ total: await node.propose({ add: amount }, { timeoutMs: 3000 }) });
      }
      if (request.method === "GET" && url.pathname === "/total") {
        // Adding 0 goes through the log like any write: the total it returns is linearizable.
        return Response.json({ total: await node.propose({ add: 0 }, { timeoutMs: 3000 }) });
      }
      return Response.json({ error: "not found" }, { status: 404 });
    } catch (error) {
      if (error instanceof NotLeaderError) {
        return Response.json({ error: "not the leader", leader: error.leaderAddress }, {
          status: 421,
        });
      }
      return Response.json({ error: "not committed; retry" }, { status: 503 });
    }
  },
);
console.log(`counter peer ${id} listening on ${httpUrls[id]}`);

// Ctrl-C or SIGTERM: stop the node (transport, then disk), then the HTTP server.
for (const signal of ["SIGINT", "SIGTERM"] as const) {
  Deno.addSignalListener(signal, async () => {
    await node.close();
    await server.shutdown();
    Deno.exit(0);
  });
}
