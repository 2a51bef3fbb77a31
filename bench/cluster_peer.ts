/**
 * One peer process of the cluster benchmark: a Raft peer on a {@linkcode WebSocketTransport} with
 * a durable persister, driven by its parent through JSON lines on stdin, answering on stdout.
 *
 *   deno run --unstable-kv --allow-net=127.0.0.1 --allow-read=DIR --allow-write=DIR \
 *     bench/cluster_peer.ts '<config JSON>'      (DIR: the config's dataDir)
 *
 * Requests (one JSON object a line, each with an `id` that its answer repeats):
 * - `{ "op": "status" }` answers `{ "term", "isLeader", "connected" }`.
 * - `{ "op": "load", "inFlight", "warmupMs", "durationMs", "latencies" }`: runs the closed-loop
 *   load of `cluster_load.ts` against this peer (the leader, or every proposal is refused) and
 *   answers its result.
 * - `{ "op": "commitAfterTerm", "term" }`: answers `{ "committed": term }` once this peer leads a
 *   term above `term` and has committed and applied a command of its own in it.
 * - `{ "op": "cancelWaits" }`: the `commitAfterTerm` waits in progress give up without answering.
 *
 * @module
 */

import { join } from "node:path";
import {
  FilePersister,
  type FilePersisterOptions,
  KvPersister,
  make,
  type Persister,
  type RaftOptions,
  WebSocketTransport,
} from "../mod.ts";
import { ApplyWaiters, command, runLoad } from "./cluster_load.ts";

/** What the parent passes as the one argument. */
export interface PeerConfig {
  me: number;
  peers: string[];
  secret: string;
  dataDir: string;
  persister: "file" | "kv";
  /** Options for `FilePersister.open`, when `persister` is "file". */
  fileOptions: FilePersisterOptions;
  /** Every option but the clock, the random source and the trace (which are not JSON). */
  raftOptions: Omit<RaftOptions, "clock" | "random" | "trace">;
}

const config = JSON.parse(Deno.args[0]!) as PeerConfig;
await Deno.mkdir(config.dataDir, { recursive: true });
const persister: Persister = config.persister === "file"
  ? await FilePersister.open(config.dataDir, config.fileOptions)
  : await KvPersister.open(join(config.dataDir, "raft.kv"));
const transport = await WebSocketTransport.create({
  me: config.me,
  peers: config.peers,
  secret: config.secret,
  log: () => {},
});
const waiters = new ApplyWaiters();
const raft = await make(transport.clientEnds(), config.me, persister, waiters.applyCh, {
  ...config.raftOptions,
  trace: null,
});
transport.setHandler(raft);

const encoder = new TextEncoder();
function answer(id: number, value: object): void {
  Deno.stdout.writeSync(encoder.encode(JSON.stringify({ id, ...value }) + "\n"));
}

let probe = 0;
let waitGeneration = 0;
async function commitAfterTerm(id: number, term: number): Promise<void> {
  const generation = ++waitGeneration;
  while (generation === waitGeneration) {
    const state = raft.getState();
    if (state.isLeader && state.term > term) {
      const started = raft.start(command(-1 - probe++));
      if (started.isLeader) {
        await waiters.until(started.index);
        if (raft.getState().term === started.term) {
          answer(id, { committed: started.term });
          return;
        }
      }
    }
    await new Promise((resolve) => setTimeout(resolve, 1));
  }
}

const lines = Deno.stdin.readable.pipeThrough(new TextDecoderStream());
let buffered = "";
for await (const chunk of lines) {
  buffered += chunk;
  let newline: number;
  while ((newline = buffered.indexOf("\n")) >= 0) {
    const request = JSON.parse(buffered.slice(0, newline));
    buffered = buffered.slice(newline + 1);
    const id = request.id;
    if (request.op === "status") {
      const { term, isLeader } = raft.getState();
      answer(id, { term, isLeader, connected: transport.connectedPeers().length });
    } else if (request.op === "load") {
      const result = await runLoad(
        raft,
        waiters,
        request.inFlight,
        request.warmupMs,
        request.durationMs,
        request.latencies,
      );
      answer(id, result);
    } else if (request.op === "commitAfterTerm") {
      commitAfterTerm(id, request.term);
    } else if (request.op === "cancelWaits") {
      waitGeneration++;
      answer(id, {});
    }
  }
}
