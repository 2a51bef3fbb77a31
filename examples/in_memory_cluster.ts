// The README's example: three peers in one process. Run: deno run examples/in_memory_cluster.ts
import { type ApplyMsg, make, MemoryNetwork, MemoryPersister, type Raft } from "../mod.ts";

// Three peers in one process, on the in-memory network the tests use.
const network = new MemoryNetwork();
const rafts: Raft[] = [];
for (let i = 0; i < 3; i++) {
  const ends = [0, 1, 2].map((j) => {
    const end = network.makeEnd(`${i}->${j}`);
    network.connect(`${i}->${j}`, `peer-${j}`);
    network.enable(`${i}->${j}`, true);
    return end;
  });
  const apply = (msg: ApplyMsg) => console.log(`peer ${i} applies`, msg.commandIndex, msg.command);
  rafts.push(await make(ends, i, new MemoryPersister(), apply));
  network.addServer(`peer-${i}`, rafts[i]!);
}

// Wait for a leader, then propose a command; every peer applies it once it commits.
await new Promise((resolve) => setTimeout(resolve, 2000));
const leader = rafts.find((raft) => raft.getState().isLeader)!;
console.log(leader.start({ op: "set", key: "x", value: 1 })); // e.g. { index: 1, term: 1, isLeader: true }
await new Promise((resolve) => setTimeout(resolve, 500));
rafts.forEach((raft) => raft.kill());
network.close();
