/**
 * @module server
 * The gpu-worker's HTTP API (Hono on Node): `POST /v1/decode` streams a decode job's events over
 * SSE; `POST /v1/retrieve` runs first-stage retrieval on the pool's local indexes; `GET /healthz`.
 * Inference runs in a worker thread (`runtime/inference-host.ts`), so the event loop stays free for
 * streams and health checks.
 */
import { Hono } from "hono";
import { streamSSE } from "hono/streaming";
import { serve } from "@hono/node-server";
import type { AddressInfo } from "node:net";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { DecodeJobSchema, RetrieveRequestSchema } from "@nest/shared/protocol/worker";
import type { PassageIndex } from "@nest/edge/retrieve/passage-index";
import { openLanceIndex } from "@nest/edge/adapters/node/lancedb-index";
import { SIGNATURE_HEADER, TIMESTAMP_HEADER, verifyRequest } from "@nest/shared/protocol/hmac";
import type { MiddlewareHandler } from "hono";
import { InferenceHost } from "./runtime/inference-host.ts";
import { startBatchService, type BatchService, type BatchServiceOptions } from "./batch/service.ts";

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
  readonly log?: (line: string) => void;
  /** Batch jobs: job API routes (/v1/batches…) + an in-process BullMQ consumer on this host; undefined = off. */
  readonly batch?: BatchServiceOptions;
  /** Shared secret the edge signs its calls with (HMAC, shared/src/protocol/hmac.ts); absent = open (tests). */
  readonly secret?: string;
}

/**
 * Refuses (401) every request but `GET /healthz` whose `x-nest-signature` is not the HMAC of the
 * request under `secret` or whose `x-nest-timestamp` is more than 5 min off.
 */
export function requireSignature(secret: string): MiddlewareHandler {
  return async (c, next) => {
    if (c.req.method === "GET" && c.req.path === "/healthz") return next();
    const url = new URL(c.req.url);
    const body = c.req.method === "GET" || c.req.method === "HEAD" ? "" : await c.req.text();
    const why = await verifyRequest(secret, { timestamp: c.req.header(TIMESTAMP_HEADER), signature: c.req.header(SIGNATURE_HEADER) }, c.req.method, url.pathname + url.search, body);
    if (why) return c.json(new NestError("unauthorized", `unsigned or badly signed pool request: ${why}`).toBody(), 401);
    return next();
  };
}

/** The worker's Hono app over a started inference host. */
export function createWorkerApp(host: InferenceHost, indexFor: (corpus: string) => Promise<PassageIndex | undefined>, secret?: string): Hono {
  const app = new Hono();
  if (secret) app.use(requireSignature(secret));

  app.get("/healthz", (c) => c.json({ status: "ok", model: host.model, ...host.load }));

  app.post("/v1/decode", async (c) => {
    const job = DecodeJobSchema.safeParse(await c.req.json().catch(() => undefined));
    if (!job.success) throw new NestError("invalid_request", `invalid decode job: ${job.error.issues[0]?.path.join(".")}: ${job.error.issues[0]?.message}`);
    const abort = new AbortController();
    c.req.raw.signal.addEventListener("abort", () => abort.abort(), { once: true });
    // A refusal (503 at capacity) is thrown here, before the stream starts.
    const events = host.run(job.data, abort.signal);
    return streamSSE(c, async (stream) => {
      stream.onAbort(() => abort.abort());
      let id = 0;
      for await (const e of events) {
        await stream.writeSSE({ event: e.event, data: JSON.stringify(e.data), id: String(id++) });
      }
    });
  });

  app.post("/v1/retrieve", async (c) => {
    const req = RetrieveRequestSchema.safeParse(await c.req.json().catch(() => undefined));
    if (!req.success) throw new NestError("invalid_request", `invalid retrieve request: ${req.error.issues[0]?.path.join(".")}: ${req.error.issues[0]?.message}`);
    const index = await indexFor(req.data.corpus);
    if (!index) throw new NestError("not_found", `unknown corpus '${req.data.corpus}'`);
    return c.json({ passages: await index.search(req.data.query, req.data.k, { fusion: req.data.fusion }) });
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
    if (!indexes.has(corpus)) indexes.set(corpus, openLanceIndex(dir, corpus));
    return indexes.get(corpus);
  };
  const app = createWorkerApp(host, indexFor, opts.secret);
  let batch: BatchService | undefined;
  try {
    batch = opts.batch ? await startBatchService(app, { decoder: host, indexFor }, { log, ...opts.batch }) : undefined;
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
      await new Promise<void>((r) => server.close(() => r()));
      await batch?.close();
      for (const i of indexes.values()) await (await i).close?.();
      await host.close();
    },
  };
}
