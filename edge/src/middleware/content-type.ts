/**
 * @module middleware/content-type
 * Refuses request bodies of the wrong media type before they are read (issue 14 §7): a JSON route
 * answers 415 `unsupported_media_type` to `text/plain`, a form, or no `Content-Type` at all, so a
 * browser's "simple" cross-origin POST (which cannot send `application/json` without a CORS
 * preflight) never reaches generation. Parameters (`; charset=utf-8`) are allowed. Worker-safe.
 */
import type { MiddlewareHandler } from "hono";
import { NestError } from "@nest/shared/protocol/errors";

/** The media type of a `Content-Type` value, lowercased, without parameters ("" when absent). */
export function mediaType(header: string | undefined): string {
  return (header ?? "").split(";")[0]!.trim().toLowerCase();
}

/**
 * Middleware accepting only bodies of one of `types` (default `application/json`).
 * @throws (per request) NestError `unsupported_media_type` (415) naming the accepted types
 */
export function requireContentType(types: readonly string[] = ["application/json"]): MiddlewareHandler {
  return async (c, next) => {
    const got = mediaType(c.req.header("content-type"));
    if (!types.includes(got)) {
      const accepted = types.map((t) => `\`${t}\``).join(" or ");
      throw new NestError(
        "unsupported_media_type",
        `${got ? `Content-Type \`${got.slice(0, 100)}\`` : "no Content-Type"}: send ${accepted}`,
      );
    }
    await next();
  };
}
