/**
 * How much CPU idle peers use: a 5-peer cluster in one process, on the in-memory network, sits
 * idle (heartbeats only) for a while, and the process's CPU time over that stretch is reported.
 *
 * Usage: `deno task bench:idle [seconds]` (default 10), or `deno run bench/idle_cpu.ts [seconds]`:
 * it needs no permissions.
 *
 * @module
 */

import { cpuUsage } from "node:process";
import { make, MemoryNetwork, MemoryPersister, type Raft } from "../mod.ts";

const seconds = Number(Deno.args[0] ?? "10");
const peers = 5;
const network = new MemoryNetwork();
const rafts: Raft[] = [];
for (let i = 0; i < peers; i++) {
  const ends = Array.from({ length: peers }, (_, j) => {
    const name = `${i}->${j}`;
    const end = network.makeEnd(name);
    network.connect(name, `peer-${j}`);
    network.enable(name, true);
    return end;
  });
  rafts.push(await make(ends, i, new MemoryPersister(), () => {}, { trace: null }));
  network.addServer(`peer-${i}`, rafts[i]!);
}
const sleep = (ms: number) => new Promise((resolve) => setTimeout(resolve, ms));
while (!rafts.some((raft) => raft.getState().isLeader)) await sleep(50);

const rpcsBefore = network.getTotalCount();
const before = cpuUsage();
const wallBefore = performance.now();
await sleep(seconds * 1000);
const used = cpuUsage(before);
const wall = (performance.now() - wallBefore) / 1000;
const rpcs = network.getTotalCount() - rpcsBefore;
rafts.forEach((raft) => raft.kill());
network.close();

const cpuMs = (used.user + used.system) / 1000;
console.log(
  `${peers} idle peers for ${wall.toFixed(1)} s: ${rpcs} RPCs (${(rpcs / wall).toFixed(1)}/s), ` +
    `CPU ${cpuMs.toFixed(0)} ms (${(cpuMs / wall / 10).toFixed(2)}% of one core)`,
);
