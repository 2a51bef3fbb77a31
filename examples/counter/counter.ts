/**
 * The state machine of a replicated counter: the guide's (docs/services.md) first step.
 *
 * @module
 */

import type { StateMachine } from "@denoraft/raft";

/** A command: add `amount` (an integer) to the counter. */
export interface Add {
  add: number;
}

/** The counter: commands add to it, and each returns the new total. */
export class Counter implements StateMachine<Add, number> {
  total = 0;

  apply(command: Add): number {
    // Commands come from the log, which any buggy client could have written to: check them.
    if (!Number.isSafeInteger(command.add)) return this.total;
    this.total += command.add;
    return this.total;
  }

  snapshot(): Uint8Array {
    return new TextEncoder().encode(JSON.stringify(this.total));
  }

  restore(data: Uint8Array): void {
    this.total = JSON.parse(new TextDecoder().decode(data));
  }
}
