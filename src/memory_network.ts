/**
 * Placeholder: the in-memory lossy network arrives with the Raft core.
 *
 * @module
 */
export {};
