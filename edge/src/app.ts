/**
 * @module app
 * The edge's Hono app, the same on Node and on Workers (design README §2, §5): API keys with scopes
 * and limits, body limit, validation, the FAQ answer cache, first-stage retrieval and the SSE relay
 * of the gpu-worker pools, plus the OpenAI-compatible routes. Platform specifics (index, pools,
 * stores) come in through {@link AppDeps}. Worker-safe.
 *
 * @example
 * const app = createApp({ indexFor, pool: createPoolClient("http://127.0.0.1:8788"), apiKeyHashes: [hash] });
 * const res = await app.request("/healthz");
 */
import { Hono, type MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { keyAuth, type RateLimiter } from "./middleware/keys.ts";
import type { Scope } from "./keys/keys.ts";
import type { KvStore } from "./store/kv.ts";
import { generateHandler, type GenerateDeps } from "./routes/generate.ts";
import { openAiRoutes } from "./routes/openai.ts";
import { registerPlayground } from "./routes/playground.ts";
import { registerBatchRoutes } from "./routes/batches.ts";
import { registerFaqRoutes } from "./routes/faq.ts";

/** Largest accepted request body, in bytes (64 KiB). */
export const MAX_BODY_BYTES = 64 * 1024;

/** Everything the app needs from its platform. */
export interface AppDeps extends GenerateDeps {
  /** Hex SHA-256 hashes of keys with every scope and no limits (e.g. the key `nestlm serve` generates). */
  apiKeyHashes: string[];
  /** Key records, rate-limit and quota counters (`nestlm keys`); absent = static keys only. */
  keys?: KvStore;
  /** Per-minute limiter; default fixed-window counters in `keys`. */
  limiter?: RateLimiter;
  /** One line per request (`POST /v1/generate 200 12.3ms`) and per server-side error. Never keys. */
  log?: (line: string) => void;
  /** Body limit in bytes; defaults to {@link MAX_BODY_BYTES}. */
  maxBodyBytes?: number;
  /** Base URL of the pool's job API for /v1/batches and /v1/faq/warm; absent = no such routes. */
  batchPoolUrl?: string;
  /** fetch used for the job API (signed; Workers: `(i, init) => fetch(i, init)`). */
  batchFetch?: typeof fetch;
}

/**
 * Builds the edge app. Routes: `GET /healthz`, `GET /` (playground), `POST /v1/generate` (scope
 * `generate`, SSE or JSON), `POST /v1/chat/completions`, `POST /v1/completions` (scope `generate`,
 * OpenAI shapes), `/v1/batches…` (scope `batch`), `/v1/faq/warm…` (scope `admin`). Errors answer
 * JSON `{error:{code,message}}` with their status: 400 (names the field), 401, 403, 404, 413,
 * 429 and 503 with `Retry-After` (s), 502.
 */
export function createApp(deps: AppDeps): Hono {
  const app = new Hono();
  const log = deps.log;
  const maxSize = deps.maxBodyBytes ?? MAX_BODY_BYTES;
  const auth = (scope: Scope) => keyAuth({ staticHashes: deps.apiKeyHashes, keys: deps.keys, limiter: deps.limiter }, scope);
  const limit: MiddlewareHandler = bodyLimit({
    maxSize,
    onError: () => {
      throw new NestError("payload_too_large", `request body exceeds ${maxSize} bytes`);
    },
  });

  if (log) {
    app.use(async (c, next) => {
      const t0 = performance.now();
      await next();
      log(`${c.req.method} ${c.req.path} ${c.res.status} ${(performance.now() - t0).toFixed(1)}ms`);
    });
  }

  app.get("/healthz", (c) => c.json({ status: "ok" }));
  registerPlayground(app);

  app.post("/v1/generate", auth("generate"), limit, generateHandler(deps));
  app.route("/v1", openAiRoutes(deps, [auth("generate"), limit]));
  if (deps.batchPoolUrl) {
    registerBatchRoutes(app, { poolUrl: deps.batchPoolUrl, fetch: deps.batchFetch, auth: auth("batch") });
    registerFaqRoutes(app, deps, { poolUrl: deps.batchPoolUrl, fetch: deps.batchFetch, guard: [auth("admin"), limit] });
  }

  app.notFound((c) => c.json(new NestError("not_found", `no route for ${c.req.method} ${c.req.path}`).toBody(), 404));

  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse();
    const e = toNestError(err);
    if (e.status >= 500) log?.(`error ${e.code}: ${e.message}`);
    if (e.retryAfterS !== undefined) c.header("Retry-After", String(Math.ceil(e.retryAfterS)));
    if (e.status === 401) c.header("WWW-Authenticate", 'Bearer realm="nest"');
    return c.json(e.toBody(), e.status as 400);
  });

  return app;
}
