/**
 * @module server
 * The gpu-worker's HTTP API (Hono on Node): `POST /v1/decode` streams a decode job's events over
 * SSE; `POST /v1/retrieve` runs first-stage retrieval on the pool's local indexes; `GET /healthz`.
 * Inference runs in a worker thread (`engine/inference-host.ts`), so the event loop stays free for
 * streams and health checks.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { DecodeJobSchema, RetrieveRequestSchema } from "@nest/shared/protocol/worker";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import {
  NONCE_HEADER,
  ReplayGuard,
  SIGNATURE_HEADER,
  TIMESTAMP_HEADER,
  checkSignatureHeaders,
  verifyRequest,
  type SignatureHeaders,
} from "@nest/shared/protocol/hmac";
import type { Context, MiddlewareHandler } from "hono";
import { MAX_BATCH_BODY_BYTES } from "./batch/job-api.ts";
import { answerClientErrorsAsJson } from "@nest/shared/http/client-errors";
import { InferenceHost } from "./engine/inference-host.ts";
import { startBatchService, type BatchService, type BatchServiceOptions } from "./batch/service.ts";
import type { WorkerMetrics } from "./metrics.ts";
import { opsRoutes, type OpsDeps, type Readiness } from "./ops.ts";

export interface WorkerServerOptions {
  /** TCP port; 0 picks a free one. */
  readonly port: number;
  /** Bind address (default 127.0.0.1). */
  readonly host?: string;
  readonly modelDir: string;
  /** Local passage indexes by corpus name (LanceDB folders), for `/v1/retrieve`. */
  readonly corpusDirs?: Record<string, string>;
  /** onnxruntime intra-op threads (0 = its default). */
  readonly threads?: number;
  /** Fusion of a hybrid corpus index when a retrieve request names none (`NEST_FUSION`). @defaultValue `rrf` */
  readonly fusion?: FusionMethod;
  readonly log?: (line: string) => void;
  /** Batch jobs: job API routes (/v1/batches…) + an in-process BullMQ consumer on this host; undefined = off. */
  readonly batch?: BatchServiceOptions;
  /** Shared secret the edge signs its calls with (HMAC, shared/src/protocol/hmac.ts); absent = open (tests). */
  readonly secret?: string;
  /** Prometheus metrics served on `GET /metrics` (metrics.ts); absent = no metrics. */
  readonly metrics?: WorkerMetrics;
  /** Readiness served on `GET /readyz` (ops.ts); `close()` turns it to draining first. */
  readonly readiness?: Readiness;
}

/** Largest signed body the worker reads, in bytes: a batch body (16 MiB) on `POST /v1/batches`, else 4 MiB. */
export function maxPoolBodyBytes(method: string, path: string): number {
  return method === "POST" && path === "/v1/batches" ? MAX_BATCH_BODY_BYTES : 4 * 1024 * 1024;
}

/**
 * Reads a request body, refusing it once it exceeds `maxBytes` (the rest is never read).
 * @throws NestError `payload_too_large` (413) beyond `maxBytes`
 */
export async function readCappedText(body: ReadableStream<Uint8Array> | null, maxBytes: number): Promise<string> {
  if (!body) return "";
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      await reader.cancel().catch(() => {});
      throw new NestError("payload_too_large", `request body exceeds ${maxBytes} bytes`);
    }
    chunks.push(value);
  }
  const all = new Uint8Array(size);
  let at = 0;
  for (const ch of chunks) {
    all.set(ch, at);
    at += ch.byteLength;
  }
  return new TextDecoder().decode(all);
}

const unsigned = (c: Context, why: string) =>
  c.json(new NestError("unauthorized", `unsigned or badly signed pool request: ${why}`).toBody(), 401);

/**
 * Refuses every request but `GET /healthz` (and `GET /metrics`) that is not signed by the edge
 * (shared/src/protocol/hmac.ts), doing no work that grows with the body before it knows the request
 * can be genuine (issue 14 §2):
 * 1. the headers: timestamp, nonce and signature present and well-formed, the timestamp within
 *    5 min → else 401 at once, the body unread;
 * 2. the body, read while counting: a `Content-Length` over {@link maxPoolBodyBytes} → 413 unread,
 *    a streamed body → 413 as soon as it passes the cap;
 * 3. the HMAC over timestamp, nonce, method, path + query and body → else 401;
 * 4. the signature not seen before ({@link ReplayGuard}) → else 401 (a replay).
 * The body read here is handed to the route (Hono's body cache), not read twice.
 */
export function requireSignature(secret: string, replay: ReplayGuard = new ReplayGuard()): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === "GET" && (c.req.path === "/healthz" || c.req.path === "/metrics")) return next();
    const headers: SignatureHeaders = {
      timestamp: c.req.header(TIMESTAMP_HEADER),
      signature: c.req.header(SIGNATURE_HEADER),
      nonce: c.req.header(NONCE_HEADER),
    };
    const shape = checkSignatureHeaders(headers, undefined, true);
    if (shape) return unsigned(c, shape);
    const maxBytes = maxPoolBodyBytes(c.req.method, c.req.path);
    if (Number(c.req.header("content-length") ?? 0) > maxBytes) {
      throw new NestError("payload_too_large", `request body exceeds ${maxBytes} bytes`);
    }
    const body = c.req.method === "GET" || c.req.method === "HEAD" ? "" : await readCappedText(c.req.raw.body, maxBytes);
    const url = new URL(c.req.url);
    const why = await verifyRequest(secret, headers, c.req.method, url.pathname + url.search, body);
    if (why) return unsigned(c, why);
    if (replay.check(headers.signature!, Number(headers.timestamp)))
      return unsigned(c, "replayed request (this signature was already used)");
    // Hono keeps body promises in `bodyCache` (its type says string; the runtime awaits it).
    (c.req.bodyCache as unknown as { text?: Promise<string> }).text = Promise.resolve(body);
    return next();
  };
}

/**
 * Jobs the inference host takes at once: 1 decoding + 8 waiting (its queue bound); beyond that it
 * answers `at_capacity`.
 */
export const INFERENCE_SLOTS = 9;

/** How the worker's {@link INFERENCE_SLOTS} are shared between interactive and batch work. */
export interface WorkShare {
  /**
   * Slots kept for batch items (the in-process consumer's concurrency, default 1): interactive
   * `/v1/decode` requests may hold at most `INFERENCE_SLOTS - batchSlots` and get 503 `at_capacity`
   * beyond, so batch items always find a slot; batch items beyond their share wait without spending
   * an attempt (batch/consumer.ts). @defaultValue 0 (no consumer in this process)
   */
  readonly batchSlots?: number;
}

/** The worker's Hono app over a started inference host. */
export function createWorkerApp(
  host: InferenceHost,
  indexFor: (corpus: string) => Promise<PassageIndex | undefined>,
  secret?: string,
  share: WorkShare = {},
  ops: OpsDeps = {},
): Hono {
  const app = new Hono();
  if (ops.metrics) app.use(ops.metrics.middleware());
  app.use(opsRoutes(ops)); // GET /metrics, /readyz: unsigned
  if (secret) app.use(requireSignature(secret));
  const interactiveSlots = Math.max(1, INFERENCE_SLOTS - (share.batchSlots ?? 0));
  let interactive = 0;

  app.get("/healthz", (c) => c.json({ status: "ok", model: host.model, ...host.load }));

  app.post("/v1/decode", async (c) => {
    const job = DecodeJobSchema.safeParse(await c.req.json().catch(() => undefined));
    if (!job.success)
      throw new NestError("invalid_request", `invalid decode job: ${job.error.issues[0]?.path.join(".")}: ${job.error.issues[0]?.message}`);
    ops.metrics?.tagMode(c.req.raw, job.data.request.mode);
    // Interactive work's share of the slots; the refusal comes before the stream starts.
    if (interactive >= interactiveSlots) {
      throw new NestError("at_capacity", `all ${interactiveSlots} interactive inference slots are busy`, { retryAfterS: 5 });
    }
    const abort = new AbortController();
    c.req.raw.signal.addEventListener("abort", () => abort.abort(), { once: true });
    // The host's own refusal (503 at capacity) is thrown here, before the stream starts.
    const run = host.run(job.data, abort.signal);
    const events = ops.metrics ? ops.metrics.observeDecode(job.data.request.mode, run) : run;
    interactive++;
    let released = false;
    const release = () => {
      if (!released) interactive--;
      released = true;
    };
    abort.signal.addEventListener("abort", release, { once: true });
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => abort.abort());
      let id = 0;
      try {
        for await (const e of events) {
          await stream.writeSSE({ event: e.event, data: JSON.stringify(e.data), id: String(id++) });
        }
      } finally {
        release();
      }
    });
  });

  app.post("/v1/retrieve", async (c) => {
    const req = RetrieveRequestSchema.safeParse(await c.req.json().catch(() => undefined));
    if (!req.success)
      throw new NestError(
        "invalid_request",
        `invalid retrieve request: ${req.error.issues[0]?.path.join(".")}: ${req.error.issues[0]?.message}`,
      );
    const index = await indexFor(req.data.corpus);
    if (!index) throw new NestError("not_found", `unknown corpus '${req.data.corpus}'`);
    return c.json({ passages: await index.search(req.data.query, req.data.passages, { fusion: req.data.fusion }) });
  });

  app.notFound((c) => c.json(new NestError("not_found", `no route ${c.req.method} ${c.req.path}`).toBody(), 404));
  app.onError((err, c) => {
    const e = toNestError(err);
    if (e.retryAfterS !== undefined) c.header("Retry-After", String(e.retryAfterS));
    return c.json(e.toBody(), e.status as 400);
  });
  return app;
}

/**
 * Starts the inference thread and the HTTP server.
 * @throws NestError `model_not_prepared` when the model is missing; the listen error (e.g.
 * `EADDRINUSE`) when the port is taken.
 */
export async function startWorker(opts: WorkerServerOptions): Promise<{ url: string; close(): Promise<void> }> {
  const log = opts.log ?? (() => {});
  const host = await InferenceHost.start({ modelDir: opts.modelDir, threads: opts.threads });
  const indexes = new Map<string, Promise<PassageIndex>>();
  const indexFor = async (corpus: string) => {
    const dirs = opts.corpusDirs ?? {};
    if (!Object.hasOwn(dirs, corpus)) return undefined;
    const dir = dirs[corpus]!;
    if (!indexes.has(corpus)) indexes.set(corpus, openLanceIndex(dir, corpus, { fusion: opts.fusion }));
    return indexes.get(corpus);
  };
  const consume = opts.batch !== undefined && opts.batch.consume !== false;
  opts.metrics?.bindLoad(() => host.load);
  const app = createWorkerApp(host, indexFor, opts.secret, { batchSlots: consume ? (opts.batch?.concurrency ?? 1) : 0 }, opts);
  let batch: BatchService | undefined;
  try {
    batch = opts.batch
      ? await startBatchService(
          app,
          { decoder: opts.metrics ? opts.metrics.observed(host, "batch") : host, indexFor },
          { log, ...opts.batch },
        )
      : undefined;
  } catch (err) {
    await host.close();
    throw err;
  }
  const hostname = opts.host ?? "127.0.0.1";
  let server: ReturnType<typeof serve>;
  try {
    server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
      const s = serve({ fetch: app.fetch, port: opts.port, hostname }, () => resolve(s));
      s.once("error", reject);
      answerClientErrorsAsJson(s);
    });
  } catch (err) {
    await batch?.close();
    await host.close();
    throw err;
  }
  const { port } = server.address() as AddressInfo;
  const url = `http://${hostname}:${port}`;
  log(`gpu-worker: model ${host.model} ready at ${url}`);
  return {
    url,
    close: async () => {
      opts.readiness?.drain();
      // Streams still running finish; keep-alive connections that go idle after close() are
      // closed too (close() alone only closes the ones idle at the time of the call).
      const idle = setInterval(() => (server as { closeIdleConnections?: () => void }).closeIdleConnections?.(), 250);
      await new Promise<void>((r) => server.close(() => r()));
      clearInterval(idle);
      await batch?.close();
      for (const i of indexes.values()) await (await i).close?.();
      await host.close();
    },
  };
}
