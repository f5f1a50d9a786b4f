/**
 * @module http/client-errors
 * JSON answers for requests a Node HTTP server refuses before any handler runs (issue 14 §7):
 * headers over the limit (Node: 16 KiB) → 431 `headers_too_large`, a request that took too long
 * → 408, any other malformed request → 400 `invalid_request`, each as `{error:{code,message}}` and
 * `Connection: close`, instead of Node's bare status line. Typed structurally (no Node import), so
 * both the edge's and the gpu-worker's Node servers use it; nothing here runs on Workers.
 */

/** The parts of a Node `Socket` used here. */
interface ClientSocket {
  readonly writable: boolean;
  end(data: string): void;
  destroy(): void;
}

/** The part of a Node `http.Server` used here. */
interface ServerWithClientErrors {
  on(event: "clientError", listener: (err: Error & { code?: string }, socket: ClientSocket) => void): unknown;
}

/** The raw HTTP/1.1 response for a refused request. */
export function rawJsonResponse(status: number, reason: string, code: string, message: string): string {
  const body = JSON.stringify({ error: { code, message } });
  return `HTTP/1.1 ${status} ${reason}\r\ncontent-type: application/json\r\ncontent-length: ${new TextEncoder().encode(body).length}\r\nconnection: close\r\n\r\n${body}`;
}

/** Installs the JSON answers on `server` (replacing Node's default `clientError` answer). */
export function answerClientErrorsAsJson(server: ServerWithClientErrors): void {
  server.on("clientError", (err, socket) => {
    if (err.code === "ECONNRESET" || !socket.writable) {
      socket.destroy();
      return;
    }
    if (err.code === "HPE_HEADER_OVERFLOW") {
      socket.end(
        rawJsonResponse(
          431,
          "Request Header Fields Too Large",
          "headers_too_large",
          "request headers exceed the server's limit (16 KiB in all)",
        ),
      );
    } else if (err.code === "ERR_HTTP_REQUEST_TIMEOUT") {
      socket.end(rawJsonResponse(408, "Request Timeout", "invalid_request", "the request took too long to arrive"));
    } else {
      socket.end(rawJsonResponse(400, "Bad Request", "invalid_request", "malformed HTTP request"));
    }
  });
}
