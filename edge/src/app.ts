/**
 * @module app
 * The edge's Hono app, the same on Node and on Workers: auth, body limit, validation, first-stage
 * retrieval and the SSE relay of the gpu-worker pool (design README §2, §5). Platform specifics
 * (index, pool address, keys) come in through {@link AppDeps}. Worker-safe.
 *
 * @example
 * const app = createApp({ indexFor, pool: createPoolClient("http://127.0.0.1:8788"), apiKeyHashes: [hash] });
 * const res = await app.request("/healthz");
 */
import { Hono } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { apiKeyAuth } from "./middleware/auth.ts";
import { generateHandler, type GenerateDeps } from "./routes/generate.ts";
import { registerPlayground } from "./routes/playground.ts";
import { registerBatchRoutes } from "./routes/batches.ts";

/** Largest accepted request body, in bytes (64 KiB). */
export const MAX_BODY_BYTES = 64 * 1024;

/** Everything the app needs from its platform. */
export interface AppDeps extends GenerateDeps {
  /** Hex SHA-256 hashes of the accepted API keys (the keys themselves never reach the edge's config). */
  apiKeyHashes: string[];
  /** One line per request (`POST /v1/generate 200 12.3ms`) and per server-side error. */
  log?: (line: string) => void;
  /** Body limit in bytes; defaults to {@link MAX_BODY_BYTES}. */
  maxBodyBytes?: number;
  /** Base URL of the pool's job API for /v1/batches (usually the pool URL); absent = no batch routes. */
  batchPoolUrl?: string;
  /** fetch used for the job API (Workers: `(i, init) => fetch(i, init)`). */
  batchFetch?: typeof fetch;
}

/**
 * Builds the edge app. Routes: `GET /healthz`, `POST /v1/generate` (bearer key, JSON body ≤
 * `maxBodyBytes`, SSE answer). Every error answers JSON `{error:{code,message}}` with its status
 * (unknown routes 404, oversized bodies 413); `Retry-After` (s) is set when the error carries one.
 */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const log = deps.log;
  const maxSize = deps.maxBodyBytes ?? MAX_BODY_BYTES;

  if (log) {
    app.use(async (c, next) => {
      const t0 = performance.now();
      await next();
      log(`${c.req.method} ${c.req.path} ${c.res.status} ${(performance.now() - t0).toFixed(1)}ms`);
    });
  }

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  registerPlayground(app);

  app.post(
    "/v1/generate",
    apiKeyAuth(deps.apiKeyHashes),
    bodyLimit({
      maxSize,
      onError: (c) =>
        c.json(new NestError("payload_too_large", `request body exceeds ${maxSize} bytes`).toBody(), 413),
    }),
    generateHandler(deps),
  );
  if (deps.batchPoolUrl) {
    registerBatchRoutes(app, { poolUrl: deps.batchPoolUrl, apiKeyHashes: deps.apiKeyHashes, fetch: deps.batchFetch });
  }

  app.notFound((c) => c.json(new NestError("not_found", `no route for ${c.req.method} ${c.req.path}`).toBody(), 404));

  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse();
    const e = toNestError(err);
    if (e.status >= 500) log?.(`error ${e.code}: ${e.message}`);
    if (e.retryAfterS !== undefined) c.header("Retry-After", String(Math.ceil(e.retryAfterS)));
    return c.json(e.toBody(), e.status as 400);
  });

  return app;
}
