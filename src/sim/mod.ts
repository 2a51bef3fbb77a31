/**
 * The deterministic simulator: run a whole cluster in one process, in virtual time, with every
 * timeout, delay, loss and crash fixed by one seed, so that any failure replays exactly.
 *
 * - {@linkcode Simulator}: the run loop, the virtual clock, the seeded random source and the
 *   trace digest.
 * - {@linkcode SimPersister}: a persister whose saves take virtual time and may be lost in a
 *   crash while in flight.
 * - {@linkcode seededRandom}, {@linkcode VirtualClock}, {@linkcode TraceDigest}: the parts, for
 *   simulators of your own.
 *
 * Pair them with {@linkcode MemoryNetwork} (given the simulator's clock, random source and
 * `record`), whose {@linkcode MemoryNetwork.setEndFaults} adds one-way cuts, clogs, duplication
 * and delays.
 *
 * @module
 */

export {
  SimulationStalledError,
  SimulationTimeLimitError,
  Simulator,
  type SimulatorOptions,
  type SimulatorRunOptions,
} from "./simulator.ts";
export { type FiredTimer, VirtualClock } from "./virtual_clock.ts";
export { seededRandom } from "./seeded_random.ts";
export { TraceDigest } from "./trace_digest.ts";
export { SimPersister, type SimPersisterOptions } from "./sim_persister.ts";
export {
  type EndFaults,
  MemoryNetwork,
  type MemoryNetworkOptions,
} from "../transport/memory_network.ts";
