/**
 * Membership (thesis chapter 4): checking configurations, and the history of the configurations
 * in a server's log. A configuration takes effect as soon as its entry is appended, committed or
 * not (§4.1), so a server whose log loses the entry to a conflicting leader goes back to the
 * configuration before it: the history keeps every configuration entry after the snapshot, and
 * the configuration the snapshot carries.
 *
 * @module
 */

import { invariant } from "./invariants.ts";
import type { Configuration, Member } from "./types.ts";

/** Most members a configuration may have: far beyond any sensible cluster, and bounded. */
export const MAX_MEMBERS = 1000;

/** Most characters of a member's address. */
export const MAX_ADDRESS_LENGTH = 1024;

/** The configuration of a cluster whose voters are `0..count-1`, with no addresses. */
export function fixedConfiguration(count: number): Configuration {
  return {
    voters: Array.from({ length: count }, (_, id) => ({ id, address: "" })),
    learners: [],
  };
}

/**
 * Checks that `value` is a well-formed configuration (from the wire, the disk or a caller) and
 * returns a plain copy, members sorted by id; or returns a sentence saying what is wrong. A
 * configuration needs at least one voter, at most {@linkcode MAX_MEMBERS} members, and no id
 * twice (a server is a voter or a learner, not both).
 */
export function parseConfiguration(value: unknown): Configuration | string {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    return `a configuration must be an object { voters, learners }, got ${describe(value)}`;
  }
  const { voters, learners } = value as Record<string, unknown>;
  if (!Array.isArray(voters) || !Array.isArray(learners)) {
    return `a configuration's voters and learners must be arrays`;
  }
  if (voters.length === 0) return `a configuration must have at least one voter`;
  if (voters.length + learners.length > MAX_MEMBERS) {
    return `a configuration may have at most ${MAX_MEMBERS} members, got ${
      voters.length + learners.length
    }`;
  }
  const seen = new Set<number>();
  const copy = (list: unknown[], kind: string): Member[] | string => {
    const members: Member[] = [];
    for (const member of list) {
      const { id, address } = (member ?? {}) as Record<string, unknown>;
      if (!Number.isSafeInteger(id) || (id as number) < 0) {
        return `a ${kind}'s id must be a non-negative integer, got ${describe(id)}`;
      }
      if (typeof address !== "string" || address.length > MAX_ADDRESS_LENGTH) {
        return `member ${id}'s address must be a string of at most ${MAX_ADDRESS_LENGTH} characters, got ${
          describe(address)
        }`;
      }
      if (seen.has(id as number)) return `member ${id} appears twice in the configuration`;
      seen.add(id as number);
      members.push({ id: id as number, address });
    }
    return members.sort((a, b) => a.id - b.id);
  };
  const checkedVoters = copy(voters, "voter");
  if (typeof checkedVoters === "string") return checkedVoters;
  const checkedLearners = copy(learners, "learner");
  if (typeof checkedLearners === "string") return checkedLearners;
  return { voters: checkedVoters, learners: checkedLearners };
}

/** Whether `id` is a voter of `configuration`. */
export function isVoter(configuration: Configuration, id: number): boolean {
  return configuration.voters.some((member) => member.id === id);
}

/** Whether `id` is a member (voter or learner) of `configuration`. */
export function isMember(configuration: Configuration, id: number): boolean {
  return isVoter(configuration, id) || configuration.learners.some((member) => member.id === id);
}

/**
 * Whether `next` is at most one server's change from `current` (thesis §4.1): the voters of the
 * two differ by at most one server, so that any majority of one overlaps any majority of the
 * other. Learners come and go freely. Returns why not, or null.
 */
export function singleServerChange(current: Configuration, next: Configuration): string | null {
  const before = new Set(current.voters.map((member) => member.id));
  const after = new Set(next.voters.map((member) => member.id));
  let changed = 0;
  for (const id of before) if (!after.has(id)) changed++;
  for (const id of after) if (!before.has(id)) changed++;
  if (changed > 1) {
    return `the voters would change by ${changed} servers at once; change one at a time`;
  }
  return null;
}

/** Whether two configurations have the same members in the same roles, at the same addresses. */
export function sameConfiguration(a: Configuration, b: Configuration): boolean {
  const same = (x: Member[], y: Member[]) =>
    x.length === y.length &&
    x.every((member, i) => member.id === y[i]!.id && member.address === y[i]!.address);
  return same(a.voters, b.voters) && same(a.learners, b.learners);
}

/** A configuration in a few words, for traces: `voters 0,1,2 learners 3`. */
export function describeConfiguration(configuration: Configuration): string {
  const ids = (members: Member[]) => members.map((member) => member.id).join(",");
  const learners = configuration.learners.length > 0
    ? ` learners ${ids(configuration.learners)}`
    : "";
  return `voters ${ids(configuration.voters)}${learners}`;
}

function describe(value: unknown): string {
  if (value === undefined) return "undefined";
  try {
    const text = JSON.stringify(value);
    return text === undefined ? String(value) : text.length > 60 ? text.slice(0, 57) + "..." : text;
  } catch {
    return String(value);
  }
}

/**
 * The configurations of a server's log: the one its snapshot carries (or the one it started
 * with), then one per configuration entry after the snapshot. The latest is in effect.
 */
export class ConfigurationHistory {
  /** Index 0 (or the snapshot's last index) first; then ascending indexes of config entries. */
  #entries: { index: number; configuration: Configuration }[];

  /** A history starting from `base`, in effect through `index` (the snapshot's last index). */
  constructor(base: Configuration, index = 0) {
    this.#entries = [{ index, configuration: base }];
  }

  /** The configuration in effect: the latest in the log. */
  get current(): Configuration {
    return this.#entries.at(-1)!.configuration;
  }

  /** The index of the entry holding {@linkcode current}, or the base's index. */
  get currentIndex(): number {
    return this.#entries.at(-1)!.index;
  }

  /** The configuration in effect at `index`: the latest whose entry is at or before it. */
  at(index: number): Configuration {
    for (let i = this.#entries.length - 1; i > 0; i--) {
      if (this.#entries[i]!.index <= index) return this.#entries[i]!.configuration;
    }
    return this.#entries[0]!.configuration;
  }

  /** A configuration entry was appended at `index`. */
  append(index: number, configuration: Configuration): void {
    invariant(
      index > this.currentIndex,
      () => `a configuration entry at ${index} is not after the last one (${this.currentIndex})`,
    );
    this.#entries.push({ index, configuration });
  }

  /**
   * The entries from `index` on were dropped from the log: their configurations go with them.
   * Returns whether the configuration in effect changed.
   */
  truncateFrom(index: number): boolean {
    const before = this.#entries.length;
    while (this.#entries.length > 1 && this.#entries.at(-1)!.index >= index) this.#entries.pop();
    return this.#entries.length !== before;
  }

  /**
   * The log was compacted through `index`: the configuration in effect there becomes the base
   * (or `base`, when given: a snapshot from the leader that carries one), and later entries stay.
   */
  compact(index: number, base: Configuration = this.at(index)): void {
    const later = this.#entries.filter((entry, i) => i > 0 && entry.index > index);
    this.#entries = [{ index, configuration: base }, ...later];
  }

  /** Forgets every entry and starts over from `base` at `index` (the whole log was replaced). */
  reset(base: Configuration, index: number): void {
    this.#entries = [{ index, configuration: base }];
  }
}
