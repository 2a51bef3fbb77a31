/**
 * The listener under the transport and the HTTP server (`src/net/_guarded_listener.ts`): it
 * closes each connection once, whoever asks first. A second `close()` of a `Deno.Conn` throws,
 * and under a flood of connections those exceptions cost the peer more than the closes.
 */

import assert from "node:assert/strict";
import { GuardedListener, type PendingConnection } from "../src/net/_guarded_listener.ts";
import { realClock } from "../src/clock.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "guarded listener: an evicted connection, closed again by its owner, is closed once",
  sanitized,
  async () => {
    const accepted: { connection: PendingConnection; closes: number }[] = [];
    const listener = GuardedListener.listen({
      hostname: "127.0.0.1",
      port: 0,
      maxPending: 8,
      maxPendingPerAddress: 1,
      pendingTimeoutMs: 10_000,
      clock: realClock,
      log: () => {},
    }, (connection) => {
      const record = { connection, closes: 0 };
      const close = connection.conn.close.bind(connection.conn);
      connection.conn.close = () => {
        record.closes++;
        close();
      };
      accepted.push(record);
    });
    const clients: Deno.Conn[] = [];
    const waitForAccepted = async (count: number) => {
      while (accepted.length < count) await new Promise((resolve) => setTimeout(resolve, 5));
    };
    try {
      clients.push(await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }));
      await waitForAccepted(1);
      // A second connection from the same address evicts the first (one allowed per address).
      clients.push(await Deno.connect({ hostname: "127.0.0.1", port: listener.addr.port }));
      await waitForAccepted(2);
      assert.equal(listener.stats.evictedConnections, 1);
      const [evicted, newer] = accepted;
      assert.equal(evicted!.closes, 1, "evicted: closed by the listener");
      evicted!.connection.close(); // what its owner does once its read fails
      assert.equal(evicted!.closes, 1, "and not again by its owner");

      newer!.connection.close();
      newer!.connection.close();
      assert.equal(newer!.closes, 1, "closed twice by its owner, closed once");
      assert.equal(newer!.connection.admit(), false, "a closed connection cannot be admitted");
      assert.equal(listener.stats.pendingConnections, 0);
    } finally {
      for (const client of clients) client.close();
      await listener.close();
    }
  },
);
