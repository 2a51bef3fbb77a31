/**
 * The pipeline window to one follower: which AppendEntries carrying entries await replies,
 * each known by the index of its last entry.
 *
 * @module
 */

import { invariant } from "./invariants.ts";

/**
 * A bounded window of in-flight AppendEntries, keyed by the index of each request's last entry.
 * Requests are sent in index order, so the keys are increasing; an acknowledgement up to index
 * `i` frees every request that ends at or before `i`, so a late or lost reply holds no slot once a
 * later one is answered.
 */
export class Inflights {
  /** Most requests in flight at once. */
  readonly capacity: number;
  /** Last indexes of the requests in flight, ascending. At most `capacity`: a short array. */
  readonly #lastIndexes: number[] = [];

  /** An empty window of `capacity` slots (at least 1). */
  constructor(capacity: number) {
    invariant(
      Number.isInteger(capacity) && capacity >= 1,
      () => `An in-flight window needs at least one slot, got ${capacity}`,
    );
    this.capacity = capacity;
  }

  /** How many requests are in flight. */
  get count(): number {
    return this.#lastIndexes.length;
  }

  /** Whether no more requests may be sent until a reply frees a slot. */
  get full(): boolean {
    return this.#lastIndexes.length >= this.capacity;
  }

  /** Records a request whose last entry has `lastIndex`, beyond every request in flight. */
  add(lastIndex: number): void {
    invariant(!this.full, () => `AppendEntries sent past a full window of ${this.capacity}`);
    const previous = this.#lastIndexes.at(-1);
    invariant(
      previous === undefined || lastIndex > previous,
      () => `AppendEntries ending at ${lastIndex} sent after one ending at ${previous}`,
    );
    this.#lastIndexes.push(lastIndex);
  }

  /** Frees every request ending at or before `index`: the follower acknowledged up to there. */
  freeThrough(index: number): void {
    let freed = 0;
    while (freed < this.#lastIndexes.length && this.#lastIndexes[freed]! <= index) freed++;
    if (freed > 0) this.#lastIndexes.splice(0, freed);
  }

  /** Frees the request ending at `lastIndex`, if it is in flight: its reply was lost or stale. */
  free(lastIndex: number): void {
    const at = this.#lastIndexes.indexOf(lastIndex);
    if (at >= 0) this.#lastIndexes.splice(at, 1);
  }

  /** Frees every slot. */
  reset(): void {
    this.#lastIndexes.length = 0;
  }
}
