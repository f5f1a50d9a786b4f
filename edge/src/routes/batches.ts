/**
 * @module routes/batches
 * Batch routes of the edge (issue 6). Workers cannot hold a Redis connection, so the edge
 * authenticates, caps the body and forwards to the gpu-worker pool's job API, which enqueues on
 * BullMQ (gpu-worker/src/batch/job-api.ts):
 * - `POST /v1/batches`: JSONL or JSON-array body of generation requests (each with an optional
 *   `custom_id`), optional `Idempotency-Key` header → 201 `{id, status, counts, …}` (200 when the
 *   key was already used for the same items); the job API checks every line (400 for a bad one, 404
 *   for a corpus the pool does not serve, naming the line) and its answer is relayed;
 * - `GET /v1/batches/:id` → status, counts (queued, running, done, failed, canceled), progress;
 * - `GET /v1/batches/:id/results` → `application/x-ndjson`, one line per finished item in input
 *   order (`custom_id`, `status`, text, citations, usage | error); header `x-batch-status`: the
 *   lines are final once it is `completed` or `canceled`, the items finished so far before;
 * - `POST /v1/batches/:id/cancel` → status; items not started end `canceled`.
 * Auth: an API key with scope `batch` (issue 5; see middleware/keys.ts). Tenancy (issue 14): a
 * batch belongs to the key that submitted it. The edge names the tenant (the key's SHA-256) in the
 * signed query `?owner=` of every job-API call; another key's batch answers 404 exactly like an
 * unknown id, and `Idempotency-Key`s are scoped per key.
 * Worker-safe (fetch only).
 */
import type { Context, Hono, MiddlewareHandler } from "hono";
import type { EdgeEnv } from "../env.ts";
import { bodyLimit } from "hono/body-limit";
import { NestError } from "@nest/shared/protocol/errors";
import { errorFromResponse, joinUrl } from "../route/pool-client.ts";
import { authedKey } from "../middleware/keys.ts";
import { requireContentType } from "../middleware/content-type.ts";

/** Body types `POST /v1/batches` accepts (JSONL or a JSON array). */
export const BATCH_CONTENT_TYPES = ["application/x-ndjson", "application/jsonl", "application/json"] as const;

/**
 * The job-API path for the tenant of `c`: `path?owner=<key sha256>`. Every batch call goes through
 * it, so none can reach another tenant's batch.
 * @throws NestError `internal` when no key was authenticated (a route registered without `auth`)
 */
export function ownedPath(c: Context, path: string): string {
  const key = authedKey(c);
  if (!key) throw new NestError("internal", "batch route without an authenticated key");
  return `${path}?owner=${key.record.hash}`;
}

/** Largest batch body the edge forwards, in bytes (16 MiB). */
export const MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024;

/** Shape of a batch id (`batch_` + 24 hex digits); anything else answers 404 without a pool call. */
const BATCH_ID = /^batch_[0-9a-f]{24}$/;

/** Response headers relayed from the pool. */
const RELAYED = ["content-type", "x-batch-status"];

export interface BatchRouteDeps {
  /** Base URL of the pool's job API, e.g. `http://127.0.0.1:8788`. */
  poolUrl: string;
  /** The fetch to use (default the global one; a Workers service binding fits too). */
  fetch?: typeof fetch;
  /** Auth middleware (app.ts passes `keyAuth(…, "batch")`). */
  auth: MiddlewareHandler;
  /** Body limit in bytes; default {@link MAX_BATCH_BODY_BYTES}. */
  maxBodyBytes?: number;
}

/**
 * Adds the batch routes to the edge app (call after `createApp`; its `onError` and `notFound` apply).
 * @throws (per request) NestError `upstream_unavailable` (502) when the pool cannot be reached; the
 *   pool's own error (its code and status) when it refuses; 401 without a valid key; 413 over the limit
 */
export function registerBatchRoutes(app: Hono<EdgeEnv>, deps: BatchRouteDeps): void {
  const fetchFn = deps.fetch ?? fetch;
  const maxSize = deps.maxBodyBytes ?? MAX_BATCH_BODY_BYTES;
  const auth = deps.auth;

  async function forward(c: Context, path: string, init: RequestInit = {}): Promise<Response> {
    let res: Response;
    try {
      res = await fetchFn(joinUrl(deps.poolUrl, ownedPath(c, path)), { ...init, signal: c.req.raw.signal });
    } catch (err) {
      const reason = err instanceof Error ? (err.cause instanceof Error ? err.cause.message : err.message) : String(err);
      throw new NestError("upstream_unavailable", `batch job API unreachable at ${deps.poolUrl}: ${reason}`, { cause: err });
    }
    if (!res.ok) throw await errorFromResponse(res, "batch job API");
    const headers = new Headers();
    for (const h of RELAYED) {
      const v = res.headers.get(h);
      if (v !== null) headers.set(h, v);
    }
    return new Response(res.body, { status: res.status, headers });
  }

  function batchId(c: Context): string {
    const id = c.req.param("id") ?? "";
    if (!BATCH_ID.test(id)) throw new NestError("not_found", `no batch \`${id.slice(0, 64)}\``);
    return id;
  }

  app.post(
    "/v1/batches",
    auth,
    requireContentType(BATCH_CONTENT_TYPES),
    bodyLimit({
      maxSize,
      onError: (c) => c.json(new NestError("payload_too_large", `batch body exceeds ${maxSize} bytes`).toBody(), 413),
    }),
    async (c) => {
      const headers: Record<string, string> = { "content-type": c.req.header("content-type")! };
      const key = c.req.header("idempotency-key");
      if (key !== undefined) headers["idempotency-key"] = key;
      return forward(c, "/v1/batches", { method: "POST", headers, body: await c.req.arrayBuffer() });
    },
  );
  app.get("/v1/batches/:id", auth, (c) => forward(c, `/v1/batches/${batchId(c)}`));
  app.get("/v1/batches/:id/results", auth, (c) => forward(c, `/v1/batches/${batchId(c)}/results`));
  app.post("/v1/batches/:id/cancel", auth, (c) => forward(c, `/v1/batches/${batchId(c)}/cancel`, { method: "POST" }));
}
