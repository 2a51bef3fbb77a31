/**
 * `HistoryRecorder`: what a test's clients use to write down the history the checker reads.
 *
 * @module
 */

import {
  type CasInput,
  type ClientId,
  type Operation,
  type OperationKind,
  validateOperation,
  type Value,
} from "./history.ts";

/** Options for {@linkcode HistoryRecorder}. */
export interface HistoryRecorderOptions {
  /**
   * Where call and return times come from. Default `performance.now`. Every client of one
   * history must share it; pass a simulator's virtual clock (`() => sim.clock.now()`) to record
   * in virtual time.
   */
  now?: () => number;
}

/**
 * An operation that was invoked and has not returned yet. Settle it exactly once, with what the
 * client learned.
 */
export interface PendingOperation<Output> {
  /**
   * The operation took effect and returned `output`: the value read (`null` for an absent key),
   * whether a cas swapped, or nothing for a write or delete. Records the return time.
   *
   * @throws {TypeError} If `output` does not fit the operation's kind.
   */
  ok(output: Output): void;
  /**
   * The operation certainly did not take effect, e.g. the service refused it (HTTP 4xx, a 421
   * "not the leader" answer): it is left out of the history.
   */
  fail(): void;
  /**
   * The client cannot know whether the operation took effect (a timeout, a dropped connection,
   * a 5xx after the request was sent): it is kept with an unknown outcome, and may take effect
   * at any time after its call, or never.
   */
  unknown(): void;
}

interface Recorded {
  operation: Operation;
  settled: "pending" | "ok" | "failed" | "unknown";
}

/**
 * Records the operations clients invoke, with call and return times from one clock, as a
 * history for {@linkcode checkLinearizable}.
 *
 * @example
 * ```ts
 * import { checkLinearizable, HistoryRecorder } from "@denoraft/raft/linearizability";
 *
 * const recorder = new HistoryRecorder();
 * // A client of your service: one invoke per request, settled with what the client learned.
 * async function put(client: number, key: string, value: string): Promise<void> {
 *   const operation = recorder.invoke(client, key, "write", value);
 *   try {
 *     const response = await fetch(`http://127.0.0.1:8080/kv/${key}`, { method: "PUT", body: value });
 *     await response.body?.cancel();
 *     if (response.ok) operation.ok();
 *     else if (response.status < 500) operation.fail(); // refused: it did not happen
 *     else operation.unknown(); // e.g. a 503 after a timeout: it may still commit
 *   } catch {
 *     operation.unknown(); // the connection dropped: the write may have taken effect
 *   }
 * }
 * // ... run the clients, then:
 * const result = checkLinearizable(recorder.history());
 * if (result.ok !== true) throw new Error(result.ok === false ? result.explanation : "timed out");
 * ```
 */
export class HistoryRecorder {
  readonly #now: () => number;
  readonly #recorded: Recorded[] = [];

  /** Makes an empty recorder. */
  constructor(options: HistoryRecorderOptions = {}) {
    const now = options.now ?? (() => performance.now());
    if (typeof now !== "function") {
      throw new TypeError(`The clock must be a function returning a time, got ${String(now)}`);
    }
    this.#now = now;
  }

  /** Records that `client` sent a read of `key`; settle with the value read, or `null`. */
  invoke(client: ClientId, key: string, kind: "read"): PendingOperation<Value | null>;
  /** Records that `client` sent a write of `value` to `key`; settle with `ok()`. */
  invoke(client: ClientId, key: string, kind: "write", value: Value): PendingOperation<void>;
  /** Records that `client` sent a delete of `key`; settle with `ok()`. */
  invoke(client: ClientId, key: string, kind: "delete"): PendingOperation<void>;
  /** Records that `client` sent a compare-and-set of `key`; settle with whether it swapped. */
  invoke(client: ClientId, key: string, kind: "cas", input: CasInput): PendingOperation<boolean>;
  /**
   * Records that `client` sent an operation, at the clock's current time.
   *
   * @throws {TypeError} If `kind` is not an operation kind, or `key` or `input` do not fit it.
   */
  invoke(
    client: ClientId,
    key: string,
    kind: OperationKind,
    input?: Value | CasInput,
  ): PendingOperation<Value | null | boolean | void> {
    const index = this.#recorded.length;
    const operation = {
      client,
      key,
      kind,
      ...(input === undefined ? {} : { input }),
      output: undefined,
      call: this.#now(),
      return: Infinity,
    };
    validateOperation(operation, index);
    const recorded: Recorded = { operation, settled: "pending" };
    this.#recorded.push(recorded);
    const settle = (settled: Recorded["settled"]) => {
      if (recorded.settled !== "pending") {
        throw new Error(
          `This ${kind} of ${JSON.stringify(key)} by client ${String(client)} was already ` +
            `settled as ${recorded.settled}; settle each operation once`,
        );
      }
      recorded.settled = settled;
    };
    return {
      ok: (output) => {
        const returned = this.#now();
        const done = {
          ...operation,
          output: kind === "write" || kind === "delete" ? "ok" : output,
          return: returned,
        };
        validateOperation(done, index);
        settle("ok");
        recorded.operation = done;
      },
      fail: () => settle("failed"),
      unknown: () => settle("unknown"),
    };
  }

  /**
   * The history so far, in call order: every operation except those that failed. An operation
   * still pending is given an unknown outcome, as its client has not learned it.
   */
  history(): Operation[] {
    return this.#recorded.filter((recorded) => recorded.settled !== "failed")
      .map((recorded) => ({ ...recorded.operation }));
  }

  /** How many operations were invoked and not yet settled. */
  get pendingCount(): number {
    return this.#recorded.filter((recorded) => recorded.settled === "pending").length;
  }
}
