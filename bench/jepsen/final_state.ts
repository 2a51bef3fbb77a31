/**
 * The end of a Jepsen run, once every fault is healed and the clients have stopped: wait until
 * every peer has applied the same committed log with nothing uncommitted left anywhere, read
 * every peer's data (`GET /debug/data`), and check that they hold the same data, on the run's
 * keys only.
 *
 * Each peer's data then goes into the history as one read per key, taken after every client
 * operation was called. So the linearizability check also decides whether the data the cluster
 * kept is what the clients' operations left: for each key, the final value must be the value of
 * some order of all the operations (the last acknowledged write or delete when no operation of
 * unknown outcome, nor a concurrent acknowledged one, could come after it; otherwise one of
 * those). An acknowledged write that was lost, or a write that was never acknowledged and
 * overwrote a later acknowledged one, fails the check.
 *
 * @module
 */

import type { PeerStatus } from "../../examples/cluster.ts";
import type { HistoryRecorder } from "../../src/linearizability/mod.ts";
import { type JepsenCluster, type PeerData, sleep } from "./cluster.ts";

/** What the end of the run found. */
export interface FinalState {
  /** Whether the peers converged and hold the same data, on the run's keys only. */
  ok: boolean;
  /** What was wrong, for a person; empty when `ok`. */
  problems: string[];
  /** How long the peers took to converge after the clients stopped, in ms. */
  convergedAfterMs: number;
  /** The commit index every peer reached, or null if they did not converge. */
  commitIndex: number | null;
  /** Each peer's data, as read at the end (null for a peer that did not answer). */
  data: (PeerData | null)[];
}

/** How often the peers' statuses are polled while waiting, in ms. */
const POLL_MS = 200;

/** Why the statuses do not show one converged cluster, or null if they do. */
function divergence(statuses: (PeerStatus | undefined)[]): string | null {
  const missing = statuses.flatMap((status, peer) => (status === undefined ? [peer] : []));
  if (missing.length > 0) return `peers ${missing.join(", ")} did not answer GET /status`;
  const all = statuses as PeerStatus[];
  const leaders = all.filter((status) => status.role === "leader");
  if (leaders.length !== 1) return `${leaders.length} peers say they lead`;
  const { me, term, commitIndex } = leaders[0]!;
  for (const status of all) {
    if (status.term !== term || status.leader !== me) {
      return `peer ${status.me} is in term ${status.term} with leader ${status.leader}, not ${term} with ${me}`;
    }
    if (
      status.commitIndex !== commitIndex || status.appliedIndex !== commitIndex ||
      status.lastLogIndex !== commitIndex
    ) {
      return `peer ${status.me} has commit ${status.commitIndex}, applied ${status.appliedIndex}, last log ${status.lastLogIndex}; the leader commits ${commitIndex}`;
    }
  }
  return null;
}

/**
 * Waits up to `timeoutMs` for the peers to converge, reads their data, checks it, and records
 * each peer's value of each key in `recorder` as a read by client `"peer N at the end"`.
 */
export async function checkFinalState(
  cluster: JepsenCluster,
  recorder: HistoryRecorder,
  keys: readonly string[],
  timeoutMs: number,
): Promise<FinalState> {
  const peers = Array.from({ length: cluster.size }, (_, peer) => peer);
  const started = performance.now();
  const problems: string[] = [];
  let commitIndex: number | null = null;
  let why: string | null = "not polled yet";
  // Converged means: twice in a row, with the same commit index.
  let previous: number | null = null;
  while (performance.now() - started < timeoutMs) {
    const statuses = await Promise.all(peers.map((peer) => cluster.status(peer)));
    why = divergence(statuses);
    const index = why === null ? statuses[0]!.commitIndex : null;
    if (index !== null && index === previous) {
      commitIndex = index;
      break;
    }
    previous = index;
    await sleep(POLL_MS);
  }
  const convergedAfterMs = performance.now() - started;
  if (commitIndex === null) {
    problems.push(`the peers did not converge within ${timeoutMs} ms: ${why}`);
  }
  const data: (PeerData | null)[] = [];
  for (const peer of peers) {
    const reads = keys.map((key) => recorder.invoke(`peer ${peer} at the end`, key, "read"));
    const answer = await cluster.data(peer);
    if (answer === undefined) {
      for (const read of reads) read.fail();
      problems.push(`peer ${peer} did not answer GET /debug/data`);
      data.push(null);
      continue;
    }
    data.push(answer);
    // Only the state of a peer that applied the whole converged log is what the cluster kept.
    if (commitIndex === null || answer.appliedIndex !== commitIndex) {
      for (const read of reads) read.fail();
    } else {
      const values = new Map(answer.data);
      reads.forEach((read, i) => read.ok(values.get(keys[i]!) ?? null));
    }
    const strangers = answer.data.filter(([key]) => !keys.includes(key)).map(([key]) => key);
    if (strangers.length > 0) {
      problems.push(`peer ${peer} holds keys no client wrote: ${JSON.stringify(strangers)}`);
    }
    if (commitIndex !== null && answer.appliedIndex !== commitIndex) {
      problems.push(
        `peer ${peer} had applied ${answer.appliedIndex} when read, not the converged ${commitIndex}`,
      );
    }
  }
  const reference = data.find((answer) => answer !== null);
  for (const [peer, answer] of data.entries()) {
    if (answer === null || reference === undefined) continue;
    if (JSON.stringify(answer.data) !== JSON.stringify(reference.data)) {
      problems.push(
        `peer ${peer} holds ${JSON.stringify(answer.data)}, another ${
          JSON.stringify(reference.data)
        }`,
      );
    }
  }
  return { ok: problems.length === 0, problems, convergedAfterMs, commitIndex, data };
}
