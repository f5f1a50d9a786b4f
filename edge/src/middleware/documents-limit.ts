/**
 * @module middleware/documents-limit
 * The body limit of the generation routes (issue 15): `baseBytes` for every request, raised to
 * `documentsBytes` only for a request that carries documents (`documents` on `POST /v1/generate`,
 * `nest.documents` on the OpenAI-compatible routes). A body over `baseBytes` is read (up to
 * `documentsBytes`, via hono's bodyLimit), parsed, and refused with 413 unless it has a non-empty
 * documents array; a body within `baseBytes` passes unread. Worker-safe.
 */
import type { MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { NestError } from "@nest/shared/protocol/errors";

/** Whether a parsed body carries documents: `documents` or `nest.documents`, a non-empty array. */
function carriesDocuments(body: unknown): boolean {
  if (typeof body !== "object" || body === null) return false;
  const b = body as { documents?: unknown; nest?: { documents?: unknown } | null };
  const docs = b.documents ?? (typeof b.nest === "object" && b.nest !== null ? b.nest.documents : undefined);
  return Array.isArray(docs) && docs.length > 0;
}

/**
 * The middleware.
 * @param baseBytes limit for requests without documents (bytes)
 * @param documentsBytes limit for requests with documents (bytes, ≥ baseBytes)
 * @throws (per request) NestError `payload_too_large` (413) naming the limit that applies
 */
export function documentsBodyLimit(baseBytes: number, documentsBytes: number): MiddlewareHandler {
  const outer = bodyLimit({
    maxSize: documentsBytes,
    onError: () => {
      // Not read to the end, so not known to carry documents: both limits are named.
      throw new NestError(
        "payload_too_large",
        `request body exceeds ${documentsBytes} bytes, the most accepted (with \`documents\`; ${baseBytes} without)`,
      );
    },
  });
  const tooLarge = () =>
    new NestError(
      "payload_too_large",
      `request body exceeds ${baseBytes} bytes (up to ${documentsBytes} are accepted for requests that carry \`documents\`)`,
    );
  return (c, next) =>
    outer(c, async () => {
      const length = c.req.header("content-length");
      if (!c.req.raw.body || (length !== undefined && Number(length) <= baseBytes)) return next();
      const bytes = new Uint8Array(await c.req.raw.arrayBuffer());
      c.req.raw = new Request(c.req.raw, { body: bytes });
      if (bytes.length <= baseBytes) return next();
      let body: unknown;
      try {
        body = JSON.parse(new TextDecoder().decode(bytes));
      } catch {
        throw tooLarge();
      }
      if (!carriesDocuments(body)) throw tooLarge();
      await next();
    });
}
