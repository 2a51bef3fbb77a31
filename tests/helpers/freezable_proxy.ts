/**
 * A TCP proxy whose connections can be frozen: a frozen connection stays open on both ends but
 * carries nothing more, and an end that closes is not told to the other. That is what a peer
 * sees of a host that crashed or was cut off by a partition, with no FIN or RST.
 *
 * @module
 */

/** Forwards each connection on `port` to `targetPort` on 127.0.0.1. */
export class FreezableProxy {
  readonly #listener: Deno.Listener<Deno.TcpConn, Deno.NetAddr>;
  readonly #targetPort: number;
  readonly #connections: { ends: Deno.Conn[]; frozen: boolean }[] = [];
  readonly #running: Promise<void>[] = [];
  readonly #accepting: Promise<void>;

  constructor(targetPort: number) {
    this.#targetPort = targetPort;
    this.#listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#accepting = this.#accept();
  }

  /** The `ws://` URL that reaches the target through this proxy. */
  get url(): string {
    return `ws://127.0.0.1:${this.#listener.addr.port}`;
  }

  /**
   * Freezes every connection open now, and drops its target end as a crashed host would: the
   * client's end stays open and hears nothing more. Later connections are forwarded as usual.
   */
  freeze(): void {
    for (const connection of this.#connections) {
      connection.frozen = true;
      closeQuietly(connection.ends[1]!);
    }
  }

  /** Closes the listener and every connection, and waits until all forwarding has stopped. */
  async close(): Promise<void> {
    this.#listener.close();
    await this.#accepting;
    for (const { ends } of this.#connections) for (const end of ends) closeQuietly(end);
    await Promise.all(this.#running);
  }

  async #accept(): Promise<void> {
    try {
      for await (const inbound of this.#listener) {
        let outbound: Deno.Conn;
        try {
          outbound = await Deno.connect({ hostname: "127.0.0.1", port: this.#targetPort });
        } catch {
          inbound.close();
          continue;
        }
        const connection = { ends: [inbound, outbound], frozen: false };
        this.#connections.push(connection);
        this.#running.push(
          this.#forward(inbound, outbound, connection),
          this.#forward(outbound, inbound, connection),
        );
      }
    } catch {
      // The listener was closed.
    }
  }

  async #forward(from: Deno.Conn, to: Deno.Conn, connection: { frozen: boolean }): Promise<void> {
    const buffer = new Uint8Array(64 * 1024);
    try {
      while (true) {
        const count = await from.read(buffer);
        if (count === null) break;
        if (!connection.frozen) await to.write(buffer.subarray(0, count));
      }
    } catch {
      // Closed by close(), or the other end reset.
    }
    if (!connection.frozen) closeQuietly(to);
  }
}

function closeQuietly(conn: Deno.Conn): void {
  try {
    conn.close();
  } catch {
    // Already closed.
  }
}
