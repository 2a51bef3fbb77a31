/**
 * Closing a connection that may already be closed (by a timer, the other side, or an earlier
 * refusal), which `Deno.Conn.close()` reports by throwing.
 *
 * @module
 */

/** Closes `conn`, ignoring that it may be closed already. */
export function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
