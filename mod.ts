/**
 * A Raft library for Deno: leader election, log replication and persistence as in Figure 2 of
 * the extended Raft paper, behind two interfaces: {@linkcode RaftNode} for services (proposals
 * that resolve on commit, typed errors, events, metrics), and the classic Raft lab interface
 * ({@linkcode make}, `start`, `getState`, `kill`, apply messages).
 *
 * @module
 */

export type {
  ApplyMsg,
  ClientEnd,
  Configuration,
  LogEntry,
  Member,
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
export { FatalError, type FatalReason } from "./src/errors.ts";
export { type ChangeOptions } from "./src/node/membership_changes.ts";
export {
  type ConfigurationChange,
  type FollowerStatus,
  type LeaderChange,
  type NodeStatus,
  type ProposeOptions,
  RaftNode,
  type RaftNodeEventMap,
  type RaftNodeOptions,
  type ReadConsistency,
  type ReadOptions,
  type RoleChange,
  type StateMachine,
  type Transport,
} from "./src/node/raft_node.ts";
export {
  ChangeInProgressError,
  LastVoterError,
  MemberExistsError,
  NodeClosedError,
  NotLeaderError,
  OverloadedError,
  ProposalDroppedError,
  ProposalOutcomeUnknownError,
  UnknownMemberError,
} from "./src/node/errors.ts";
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
