/**
 * @module batch/job-api
 * The pool's job API (the edge forwards to it; Workers cannot hold a Redis connection):
 * - `POST /v1/batches`: JSONL or JSON-array body of generation requests (each with an optional
 *   `custom_id`), optional `Idempotency-Key` header → 201 with the batch status (200 on an
 *   idempotent replay); a bad line answers 400 and a line naming a corpus the pool does not serve
 *   404 `not_found`, both naming the line, before anything is enqueued;
 * - `GET /v1/batches/:id` → status, counts and progress;
 * - `GET /v1/batches/:id/results` → `application/x-ndjson`, one line per finished item in input
 *   order; header `x-batch-status` carries the batch state read before the first line: while it is
 *   `queued`, `running` or `canceling` the lines are the items finished so far (possibly none); once
 *   it is `completed` or `canceled` they are final, one per item;
 * - `POST /v1/batches/:id/cancel` → status after removing the items not started.
 * Errors answer `{error:{code,message}}` through the app's `onError`; a Redis outage answers 503
 * `queue_unavailable` with `Retry-After`. No user auth: like `/v1/decode`, the job API sits on the
 * pool's private address behind the edge's HMAC signature; the edge authenticates users and names
 * the tenant in the signed query `?owner=<hex>` (the key's SHA-256): every route sees only that
 * owner's batches (batch-queue.ts).
 */
import type { Hono } from "hono";
import { stream } from "hono/streaming";
import type { Context } from "hono";
import { NestError } from "@nest/shared/protocol/errors";
import { parseBatchBody, parseServableBatchBody } from "./protocol.ts";
import { OWNER_ID, type BatchQueue } from "./batch-queue.ts";

/** The tenant named by the signed query `owner` ("" when absent). @throws NestError `invalid_request` */
function ownerOf(c: Context): string {
  const owner = c.req.query("owner") ?? "";
  if (!OWNER_ID.test(owner)) throw new NestError("invalid_request", "query `owner` must be up to 64 hex digits");
  return owner;
}

/** Largest batch body the job API reads, in bytes (16 MiB). */
export const MAX_BATCH_BODY_BYTES = 16 * 1024 * 1024;

export interface JobApiOptions {
  /**
   * Whether the pool serves `corpus` (has its passage index): submissions naming another are
   * refused with 404 `not_found`. Without it no corpus is checked (items then fail when consumed).
   */
  hasCorpus?: (corpus: string) => Promise<boolean>;
  /** Larger bodies answer 413. @defaultValue {@link MAX_BATCH_BODY_BYTES} */
  maxBodyBytes?: number;
}

/** Adds the job API routes to `app` (the worker's Hono app). */
export function registerJobApiRoutes(app: Hono, queue: BatchQueue, opts: JobApiOptions = {}): void {
  const maxBodyBytes = opts.maxBodyBytes ?? MAX_BATCH_BODY_BYTES;
  const hasCorpus = opts.hasCorpus;
  app.post("/v1/batches", async (c) => {
    const declared = Number(c.req.header("content-length") ?? "0");
    if (declared > maxBodyBytes) throw new NestError("payload_too_large", `batch body exceeds ${maxBodyBytes} bytes`);
    const body = await c.req.text();
    if (new TextEncoder().encode(body).length > maxBodyBytes) {
      throw new NestError("payload_too_large", `batch body exceeds ${maxBodyBytes} bytes`);
    }
    const maxItems = queue.config.maxItems;
    const items = hasCorpus ? await parseServableBatchBody(body, hasCorpus, maxItems) : parseBatchBody(body, maxItems);
    const res = await queue.submit(items, c.req.header("idempotency-key"), ownerOf(c));
    return c.json(res, res.idempotent_replay ? 200 : 201);
  });

  app.get("/v1/batches/:id", async (c) => c.json(await queue.status(c.req.param("id"), ownerOf(c))));

  app.post("/v1/batches/:id/cancel", async (c) => c.json(await queue.cancel(c.req.param("id"), ownerOf(c))));

  app.get("/v1/batches/:id/results", async (c) => {
    const id = c.req.param("id");
    const owner = ownerOf(c);
    const status = await queue.status(id, owner); // 404 before streaming starts
    c.header("content-type", "application/x-ndjson");
    c.header("x-batch-status", status.status);
    return stream(c, async (out) => {
      for await (const line of queue.results(id, owner)) await out.write(`${JSON.stringify(line)}\n`);
    });
  });
}
