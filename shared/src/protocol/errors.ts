/**
 * @module protocol/errors
 * Error codes, the JSON error body and the one error class used across edge and gpu-worker.
 * Worker-safe (no Node-only imports).
 */
import { z } from "zod";

/** Every error code the API can answer with, and its HTTP status. */
export const ERROR_STATUS = {
  /** The body breaks the schema; the message names the field. */
  invalid_request: 400,
  /** The body is not JSON at all. */
  invalid_json: 400,
  /** A malformed or unknown API key. */
  unauthorized: 401,
  /** No `Authorization` header. */
  missing_api_key: 401,
  forbidden: 403,
  not_found: 404,
  /** The path exists, the method does not (the answer carries `Allow`). */
  method_not_allowed: 405,
  payload_too_large: 413,
  /** A body that is not `application/json` (JSONL too on `/v1/batches`). */
  unsupported_media_type: 415,
  rate_limited: 429,
  /** Request headers over the server's limit (Node: 16 KiB). */
  headers_too_large: 431,
  /**
   * Stopped on purpose: the client closed the connection (or the edge stopped reading a body it
   * no longer needed). No client reads this answer; its 499 (nginx's "client closed request") keeps
   * the edge's logs and metrics from counting it as an upstream failure.
   */
  cancelled: 499,
  internal: 500,
  upstream_unavailable: 502,
  at_capacity: 503,
  model_not_prepared: 503,
  /** The batch queue's Redis cannot be reached; retry after `Retry-After` seconds. */
  queue_unavailable: 503,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** JSON body of every error response: `{ error: { code, message } }`. */
export const ErrorBodySchema = z.object({
  error: z.object({
    code: z.string(),
    message: z.string(),
  }),
});
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/**
 * The project's error: carries a stable `code`, the HTTP `status` derived from it, and an optional
 * `retryAfterS` (seconds) for 429/503 answers.
 */
export class NestError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly retryAfterS: number | undefined;

  constructor(code: ErrorCode, message: string, options: { cause?: unknown; retryAfterS?: number } = {}) {
    super(message, { cause: options.cause });
    this.name = "NestError";
    this.code = code;
    this.status = ERROR_STATUS[code];
    this.retryAfterS = options.retryAfterS;
  }

  /** The JSON body for this error. */
  toBody(): ErrorBody {
    return { error: { code: this.code, message: this.message } };
  }
}

/** Turns anything thrown into a `NestError` (unknown errors become `internal`). */
export function toNestError(err: unknown): NestError {
  if (err instanceof NestError) return err;
  const message = err instanceof Error ? err.message : String(err);
  return new NestError("internal", message, { cause: err });
}
