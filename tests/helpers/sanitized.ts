/**
 * Deno's op and resource sanitizers, set explicitly: a test that leaves a timer, a pending op, a
 * socket or a file open fails. Spread into a `Deno.test` definition, or pass as its options.
 *
 * @module
 */

/** `{ sanitizeOps: true, sanitizeResources: true }`. */
export const sanitized = { sanitizeOps: true, sanitizeResources: true } as const;
