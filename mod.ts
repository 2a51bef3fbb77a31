/**
 * A Raft library for Deno: leader election, log replication and persistence as in Figure 2 of
 * the extended Raft paper, behind the classic Raft lab interface.
 *
 * @module
 */

export type {
  ApplyMsg,
  ClientEnd,
  LogEntry,
  PersistChange,
  PersistentState,
  Persister,
  Raft,
  RaftOptions,
  RaftStatus,
  Role,
  RpcHandler,
  Snapshot,
  TraceSink,
} from "./src/types.ts";
export { type CancelTimer, type Clock, type RandomSource, realClock } from "./src/clock.ts";
export { MemoryPersister } from "./src/storage/memory_persister.ts";
export { make } from "./src/driver.ts";
export {
  type EndFaults,
  MemoryNetwork,
  type MemoryNetworkOptions,
} from "./src/transport/memory_network.ts";
export {
  type FiredTimer,
  seededRandom,
  SimPersister,
  type SimPersisterOptions,
  SimulationStalledError,
  SimulationTimeLimitError,
  Simulator,
  type SimulatorOptions,
  type SimulatorRunOptions,
  TraceDigest,
  VirtualClock,
} from "./src/sim/mod.ts";
export { KvPersister } from "./src/storage/kv_persister.ts";
export { FilePersister, type FilePersisterOptions } from "./src/storage/file_persister.ts";
export {
  PersisterClosedError,
  PersisterCorruptError,
  PersisterLockedError,
} from "./src/storage/errors.ts";
export {
  type TransportLog,
  type TransportStats,
  WebSocketTransport,
  type WebSocketTransportOptions,
} from "./src/transport/websocket_transport.ts";
