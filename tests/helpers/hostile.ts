/**
 * Helpers for the hostile-client tests and `bench/hostile.ts`: key/value peers as processes, an
 * insider that holds the cluster's secret in one peer's slot, and the raw attacks (silent
 * sockets, forged upgrades, oversized frames) that need no secret.
 *
 * @module
 */

import { LocalCluster, type LocalClusterOptions } from "../../examples/cluster.ts";
import { KvClient } from "../../examples/kv/client.ts";
import { WebSocketTransport } from "../../src/transport/websocket_transport.ts";
import { waitFor } from "./websocket.ts";

/** The secret the hostile tests give their clusters, so that an insider can hold it too. */
export const HOSTILE_SECRET = "hostile-tests-secret-0123456789abcdef";

/**
 * Peers 0 and 1 of a 3-peer cluster as `examples/kv/server.ts` processes, and peer 2's slot held
 * by an insider: a transport in this process that knows the secret and sends what it likes.
 */
export interface InsiderCluster {
  cluster: LocalCluster;
  /** The transport in peer 2's slot; its links to peers 0 and 1 are up. */
  insider: WebSocketTransport;
  /** Sends one request from the insider to `peer`; resolves to the reply (or `undefined`). */
  call(peer: number, method: string, args: unknown): Promise<unknown>;
  close(): Promise<void>;
}

/** Starts an {@linkcode InsiderCluster} and waits until peers 0 and 1 agree on a leader. */
export async function startInsiderCluster(
  options: Omit<LocalClusterOptions, "peers" | "secret" | "absent"> = {},
): Promise<InsiderCluster> {
  const cluster = await LocalCluster.start({
    ...options,
    peers: 3,
    secret: HOSTILE_SECRET,
    absent: [2],
  });
  let insider: WebSocketTransport | undefined;
  try {
    insider = await WebSocketTransport.create({
      me: 2,
      peers: cluster.peerUrls,
      secret: HOSTILE_SECRET,
      log: () => {},
    });
    const transport = insider;
    await waitFor("the insider's links", () => transport.connectedPeers().length === 2, 10000);
    await cluster.waitForLeader();
  } catch (error) {
    await insider?.close();
    await stopCluster(cluster);
    throw error;
  }
  const transport = insider;
  return {
    cluster,
    insider: transport,
    call: (peer, method, args) => transport.clientEnds()[peer]!.call(method, args),
    close: async () => {
      await transport.close();
      await stopCluster(cluster);
    },
  };
}

/** Stops every peer of `cluster` and removes its data directory. */
export async function stopCluster(cluster: LocalCluster): Promise<void> {
  await cluster.stop();
  await Deno.remove(cluster.dataDir, { recursive: true });
}

/**
 * Writes `key` through the cluster's HTTP API and reads it back, within `deadlineMs`; throws
 * saying so if the cluster does not commit in time.
 */
export async function assertCommits(
  cluster: LocalCluster,
  key: string,
  deadlineMs = 8000,
): Promise<void> {
  const client = new KvClient(cluster.httpUrls.filter((_, peer) => cluster.isRunning(peer)), {
    deadlineMs,
    attemptTimeoutMs: 2000,
  });
  try {
    const value = `value of ${key}`;
    await client.put(key, value);
    const read = await client.get(key);
    if (read !== value) throw new Error(`Read ${JSON.stringify(read)} back from ${key}`);
  } finally {
    client.close();
  }
}

/** An array nested `depth` levels deep around the number 1: `[[[1]]]` for 3. */
export function nestedArray(depth: number): unknown {
  let value: unknown = 1;
  for (let i = 0; i < depth; i++) value = [value];
  return value;
}

/** Whether `reply` is an RPC error reply `{ error }` whose text contains `text`. */
export function isErrorReply(reply: unknown, text: string): boolean {
  return typeof reply === "object" && reply !== null &&
    typeof (reply as { error?: unknown }).error === "string" &&
    (reply as { error: string }).error.includes(text);
}
