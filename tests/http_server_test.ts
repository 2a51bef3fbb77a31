/**
 * The bounded HTTP server the examples listen with (`src/net/_http_server.ts`): ordinary
 * responses go out whole with a length; an event stream goes out chunk by chunk as the handler
 * produces it, and ends for the handler when the client goes away.
 */

import assert from "node:assert/strict";
import { HttpServer } from "../src/net/_http_server.ts";
import { sanitized } from "./helpers/sanitized.ts";

Deno.test(
  "http server: an event stream is sent as it is produced, and cancelled when the client leaves",
  sanitized,
  async () => {
    const encoder = new TextEncoder();
    const stream: { push: ((text: string) => void) | null } = { push: null };
    let cancelled: () => void = () => {};
    const cancelledPromise = new Promise<void>((resolve) => cancelled = resolve);
    const server = HttpServer.listen({ hostname: "127.0.0.1", port: 0 }, (request) => {
      if (new URL(request.url).pathname === "/plain") return new Response("whole\n");
      const body = new ReadableStream<Uint8Array>({
        start(controller) {
          stream.push = (text) => controller.enqueue(encoder.encode(text));
        },
        cancel() {
          cancelled();
        },
      });
      return new Response(body, { headers: { "content-type": "text/event-stream" } });
    });
    const http = Deno.createHttpClient({});
    try {
      const base = `http://127.0.0.1:${server.addr.port}`;
      const plain = await fetch(`${base}/plain`, { client: http });
      assert.equal(plain.headers.get("content-length"), "6");
      assert.equal(await plain.text(), "whole\n");

      const response = await fetch(`${base}/events`, { client: http });
      assert.equal(response.headers.get("content-type"), "text/event-stream");
      assert.equal(response.headers.get("content-length"), null);
      const reader = response.body!.pipeThrough(new TextDecoderStream()).getReader();
      // Each piece arrives before the next exists: nothing waits for the end of the stream.
      for (const piece of ["data: one\n\n", "data: two\n\n"]) {
        while (stream.push === null) await new Promise((resolve) => setTimeout(resolve, 5));
        stream.push(piece);
        let received = "";
        while (received.length < piece.length) received += (await reader.read()).value ?? "";
        assert.equal(received, piece);
      }
      await reader.cancel();
      // The next writes fail (the first may still fit the socket's buffer): the stream ends.
      let gone = false;
      cancelledPromise.then(() => gone = true);
      for (let i = 0; i < 200 && !gone; i++) {
        stream.push!("data: after the client left\n\n");
        await new Promise((resolve) => setTimeout(resolve, 10));
      }
      assert.ok(gone, "the handler's stream was cancelled after the client left");
    } finally {
      http.close();
      await server.shutdown();
    }
  },
);
