/**
 * A process for the file-descriptor test: `deno run -A bounded_server.ts`, best under a low
 * `ulimit -n`. Serves `GET /stats` (the server's own counters) with caps so high that only the
 * open-file limit bounds the connections it holds; prints its port once it listens.
 */

import { HttpServer } from "../../src/net/_http_server.ts";

const server: HttpServer = HttpServer.listen({
  hostname: "127.0.0.1",
  port: 0,
  maxPendingConnections: 1_000_000,
  maxPendingConnectionsPerAddress: 1_000_000,
  readTimeoutMs: 30_000,
  log: () => {},
}, () => Response.json(server.stats));
console.log(server.addr.port);
