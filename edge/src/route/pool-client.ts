/**
 * @module route/pool-client
 * The edge's client of a gpu-worker pool: `POST {poolUrl}/v1/decode` with a {@link DecodeJob}, read
 * back as a stream of `delta`* then `done` | `error` events. Worker-safe (fetch + web streams).
 */
import type { DecodeJob } from "@nest/shared/protocol/worker";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { ERROR_STATUS, ErrorBodySchema, NestError, type ErrorCode } from "@nest/shared/protocol/errors";
import { readGenerateEvents } from "./read-sse.ts";
import { logRejection, stopReason } from "../rejections.ts";

/** Something that decodes a job into generate events (`delta`*, then `done` or `error`). */
export interface DecodeClient {
  /**
   * Starts decoding `job` and resolves once the pool has accepted it (response headers), so a
   * refusal (503 at capacity) is known before the caller commits to a stream. Aborting `signal`
   * cancels the worker request.
   * @throws NestError `upstream_unavailable` when the pool cannot be reached or answers garbage;
   *   the pool's own JSON error (its code, and `Retry-After` as `retryAfterS`) when it refuses the
   *   job with a non-2xx status.
   */
  decode(job: DecodeJob, signal?: AbortSignal): Promise<AsyncIterable<GenerateEvent>>;
  /** Name of the model the pool serves (from its `/healthz`), for cache keys; undefined when unknown. */
  modelName?(): Promise<string | undefined>;
  /**
   * Readiness (the edge's `GET /readyz`): how many pools answer `GET /healthz` with 2xx now (each
   * checked with a 2 s timeout), of how many configured. Never throws.
   */
  readiness?(): Promise<{ up: number; total: number }>;
}

/** `GET {poolUrl}/healthz` with a 2 s timeout: the response, or undefined when unreachable. */
export async function probeHealth(poolUrl: string, fetchFn: typeof fetch): Promise<Response | undefined> {
  // A timer cleared once answered, not AbortSignal.timeout: on Workers a timeout still pending
  // when the request ends surfaces as an unhandled rejection.
  const ctl = new AbortController();
  const timer = setTimeout(() => ctl.abort(new Error("health check timed out after 2000 ms")), 2000);
  try {
    return await fetchFn(joinUrl(poolUrl, "/healthz"), { signal: ctl.signal });
  } catch {
    return undefined;
  } finally {
    clearTimeout(timer);
  }
}

/** Reads a non-2xx pool answer into the NestError it describes. */
export async function errorFromResponse(res: Response, what: string): Promise<NestError> {
  const text = await res.text().catch(() => "");
  try {
    const body = ErrorBodySchema.parse(JSON.parse(text));
    const code = Object.hasOwn(ERROR_STATUS, body.error.code) ? (body.error.code as ErrorCode) : "upstream_unavailable";
    const retryAfter = Number(res.headers.get("retry-after"));
    return new NestError(code, body.error.message, Number.isFinite(retryAfter) && retryAfter > 0 ? { retryAfterS: retryAfter } : {});
  } catch {
    return new NestError("upstream_unavailable", `${what} answered HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
}

/**
 * The pool's events, with a connection that drops mid-stream (the worker crashed or was killed)
 * turned into NestError `upstream_unavailable`, which the SSE relay sends as an `error` event.
 * A drop the caller caused (its `signal` aborted) propagates unchanged.
 */
export async function* droppedAsUnavailable(
  events: AsyncIterable<GenerateEvent>,
  poolUrl: string,
  signal?: AbortSignal,
): AsyncGenerator<GenerateEvent> {
  try {
    yield* events;
  } catch (err) {
    if (err instanceof NestError || signal?.aborted) throw err;
    const reason = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
    throw new NestError("upstream_unavailable", `the gpu-worker pool at ${poolUrl} dropped the stream: ${reason}`, { cause: err });
  }
}

/** Joins a base URL and a path without doubling slashes. */
export function joinUrl(base: string, path: string): string {
  return base.replace(/\/+$/, "") + path;
}

/**
 * A {@link DecodeClient} over HTTP to one pool address.
 * @param poolUrl base URL of the pool, e.g. `http://127.0.0.1:8788`.
 * @param fetchFn the fetch to use (defaults to the global one; a Workers service binding fits too).
 */
export function createPoolClient(poolUrl: string, fetchFn: typeof fetch = fetch): DecodeClient {
  const url = joinUrl(poolUrl, "/v1/decode");
  let model: string | undefined;
  return {
    async readiness() {
      const res = await probeHealth(poolUrl, fetchFn);
      if (res?.body)
        await logRejection(res.body.cancel(stopReason("readiness needs only the status")), "pool-client: cancel of a /healthz body");
      return { up: res?.ok ? 1 : 0, total: 1 };
    },
    async modelName() {
      if (model) return model;
      // A timer cleared once answered, not AbortSignal.timeout: on Workers a timeout still pending
      // when the request ends surfaces as an unhandled rejection.
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(new Error("health check timed out after 2000 ms")), 2000);
      try {
        const body = (await (await fetchFn(joinUrl(poolUrl, "/healthz"), { signal: ctl.signal })).json()) as { model?: unknown };
        if (typeof body.model === "string") model = body.model;
      } catch {
        // unknown for now; asked again next time
      } finally {
        clearTimeout(timer);
      }
      return model;
    },
    async decode(job, signal) {
      let res: Response;
      try {
        res = await fetchFn(url, {
          method: "POST",
          headers: { "content-type": "application/json", accept: "text/event-stream" },
          body: JSON.stringify(job),
          signal,
        });
      } catch (err) {
        if (signal?.aborted) throw err;
        const reason = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
        throw new NestError("upstream_unavailable", `gpu-worker pool unreachable at ${poolUrl}: ${reason}`, { cause: err });
      }
      if (res.status === 401) {
        if (res.body) await logRejection(res.body.cancel(stopReason("pool refused the signature")), "pool-client: cancel of a 401 body");
        throw new NestError("upstream_unavailable", "gpu-worker pool refused the edge's signature (check NEST_POOL_SECRET)");
      }
      if (!res.ok) throw await errorFromResponse(res, "gpu-worker pool");
      if (!res.body) throw new NestError("upstream_unavailable", "gpu-worker pool answered without a body");
      return droppedAsUnavailable(readGenerateEvents(res.body), poolUrl, signal);
    },
  };
}
