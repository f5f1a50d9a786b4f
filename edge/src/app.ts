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
import type { EdgeEnv } from "./env.ts";
import { bodyLimit } from "hono/body-limit";
import { HTTPException } from "hono/http-exception";
import { NestError, toNestError } from "@nest/shared/protocol/errors";
import { keyAuth, type RateLimiter } from "./middleware/keys.ts";
import { requireContentType } from "./middleware/content-type.ts";
import { documentsBodyLimit } from "./middleware/documents-limit.ts";
import { MAX_DOCUMENTS_BODY_BYTES } from "@nest/shared/protocol/documents";
import { allowedMethods } from "./middleware/methods.ts";
import type { Scope } from "./keys/keys.ts";
import type { KvStore } from "./store/kv.ts";
import { generateHandler, type GenerateDeps } from "./routes/generate.ts";
import { OPENAI_PATHS, openAiError, openAiRoutes } from "./routes/openai.ts";
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
 * Builds the edge app. Routes: `GET /healthz` (liveness: the edge runs), `GET /readyz` (readiness:
 * 200 when a gpu-worker pool answers its health check, else 503), `GET /` (playground),
 * `POST /v1/generate` (scope `generate`, SSE or JSON), `POST /v1/chat/completions`,
 * `POST /v1/completions` (scope `generate`, OpenAI shapes), `/v1/batches…` (scope `batch`),
 * `/v1/faq/warm…` (scope `admin`). Errors answer JSON `{error:{code,message}}` with their status:
 * 400 (`invalid_request` names the field, `invalid_json`), 401 (`missing_api_key`, `unauthorized`),
 * 403, 404, 405 with `Allow` (a known path, another method), 413, 415 (JSON routes need
 * `Content-Type: application/json`), 429 and 503 with `Retry-After` (s), 502. `OPTIONS` on a known
 * path answers 204 with `Allow` and no CORS headers: the API is not meant to be called from other
 * origins' pages (the playground is served from the same origin).
 */
export function createApp(deps: AppDeps): Hono<EdgeEnv> {
  const app = new Hono<EdgeEnv>();
  const log = deps.log;
  const maxSize = deps.maxBodyBytes ?? MAX_BODY_BYTES;
  const auth = (scope: Scope) => keyAuth({ staticHashes: deps.apiKeyHashes, keys: deps.keys, limiter: deps.limiter }, scope);
  const json = requireContentType();
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
  app.get("/readyz", async (c) => {
    const r = deps.pool.readiness ? await deps.pool.readiness() : { up: 1, total: 1 };
    return c.json({ status: r.up > 0 ? "ready" : "unready", pools: r }, r.up > 0 ? 200 : 503);
  });
  registerPlayground(app);

  // Requests that carry `documents` may be larger (issue 15): only they.
  const generationLimit = documentsBodyLimit(maxSize, Math.max(maxSize, MAX_DOCUMENTS_BODY_BYTES));
  app.post("/v1/generate", auth("generate"), json, generationLimit, generateHandler(deps));
  app.route("/v1", openAiRoutes(deps, [auth("generate"), json, generationLimit]));
  if (deps.batchPoolUrl) {
    registerBatchRoutes(app, { poolUrl: deps.batchPoolUrl, fetch: deps.batchFetch, auth: auth("batch") });
    registerFaqRoutes(app, deps, { poolUrl: deps.batchPoolUrl, fetch: deps.batchFetch, guard: [auth("admin"), limit], json });
  }

  app.notFound((c) => {
    const allow = allowedMethods(app, c.req.path);
    if (allow.length === 0) return c.json(new NestError("not_found", `no route for ${c.req.method} ${c.req.path}`).toBody(), 404);
    c.header("Allow", allow.join(", "));
    if (c.req.method === "OPTIONS") return c.body(null, 204);
    const e = new NestError("method_not_allowed", `${c.req.method} is not allowed on ${c.req.path}; allowed: ${allow.join(", ")}`);
    // The OpenAI-compatible routes answer every error in OpenAI's shape.
    return c.json(OPENAI_PATHS.includes(c.req.path) ? openAiError(e).body : e.toBody(), 405);
  });

  app.onError((err, c) => {
    if (err instanceof HTTPException) return err.getResponse();
    const e = toNestError(err);
    // 503s (at capacity, queue down) are expected under load: below error level.
    if (e.status === 503) log?.(`warn ${e.code}: ${e.message}`);
    else if (e.status >= 500) log?.(`error ${e.code}: ${e.message}`);
    if (e.retryAfterS !== undefined) c.header("Retry-After", String(Math.ceil(e.retryAfterS)));
    if (e.status === 401) c.header("WWW-Authenticate", 'Bearer realm="nest"');
    return c.json(e.toBody(), e.status as 400);
  });

  return app;
}
