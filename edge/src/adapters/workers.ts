/**
 * @module adapters/workers
 * The edge on Cloudflare Workers (`wrangler.toml` at the repo root points here). Configuration from
 * `env`: the string settings of `@nest/shared/config/workers-env` (parsed once per isolate; e.g.
 * var `NEST_POOL_URL`, the base URL of the gpu-worker pool, and secret `NEST_API_KEY_HASHES`) and
 * the KV / rate-limiter bindings. First-stage retrieval is answered by Upstash Vector when it is
 * configured, else by the pool's index (`/v1/retrieve`).
 */
import type { Hono } from "hono";
import { NestError } from "@nest/shared/protocol/errors";
import { createApp } from "../app.ts";
import { createPoolRouter } from "../route/pool-router.ts";
import { signedFetch } from "../route/signed-fetch.ts";
import { FaqCache } from "../cache/faq-cache.ts";
import { bindingRateLimiter, workersKv, type KvNamespaceLike, type RateLimitBinding } from "./workers-kv.ts";
import { createPoolIndex } from "../retrieve/pool-index.ts";
import { createUpstashIndex } from "../retrieve/upstash-index.ts";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { WorkersVarsSchema, parseWorkersVars, type WorkersVarsInput } from "@nest/shared/config/workers-env";
import type { EdgeEnv } from "../env.ts";

/** The Worker's `env`: the string settings of `WorkersVarsSchema` plus the bindings. */
export interface WorkerEnv extends WorkersVarsInput {
  /** KV: key records and counters; KV: FAQ answers; Rate Limiting binding. */
  NEST_KEYS?: KvNamespaceLike;
  NEST_CACHE?: KvNamespaceLike;
  NEST_RATE_LIMITER?: RateLimitBinding;
}

/** The string settings the app depends on, in a fixed order (a change rebuilds the app). */
const SETTINGS = Object.keys(WorkersVarsSchema.shape) as Array<keyof WorkersVarsInput>;

let cached: { key: string; app: Hono<EdgeEnv> } | undefined;

/**
 * The app for this `env`, built once per isolate: the settings are parsed (zod) only when they
 * differ from the last build's.
 * @throws RangeError naming a malformed setting (e.g. NEST_CORPUS_VERSIONS that is not JSON)
 */
function appFor(env: WorkerEnv): Hono<EdgeEnv> {
  const key = SETTINGS.map((k) => env[k] ?? "").join("\u0000");
  if (cached?.key === key) return cached.app;
  const vars = parseWorkersVars(env);
  const poolUrl = vars.NEST_POOL_URL;
  const upstash =
    vars.UPSTASH_VECTOR_REST_URL && vars.UPSTASH_VECTOR_REST_TOKEN
      ? { url: vars.UPSTASH_VECTOR_REST_URL, token: vars.UPSTASH_VECTOR_REST_TOKEN, fusion: vars.UPSTASH_VECTOR_FUSION }
      : undefined;
  const poolFetch = signedFetch(vars.NEST_POOL_SECRET, (input, init) => fetch(input, init));
  const pools = [poolUrl, ...vars.NEST_POOL_URLS].filter(Boolean);
  const versions = vars.NEST_CORPUS_VERSIONS;
  const indexes = new Map<string, PassageIndex>();
  const app = createApp({
    apiKeyHashes: vars.NEST_API_KEY_HASHES,
    batchPoolUrl: poolUrl || undefined,
    batchFetch: poolFetch,
    pool: createPoolRouter({ pools: pools.length ? pools : ["http://unconfigured.invalid"], fetch: poolFetch }),
    keys: env.NEST_KEYS ? workersKv(env.NEST_KEYS) : undefined,
    limiter: env.NEST_RATE_LIMITER ? bindingRateLimiter(env.NEST_RATE_LIMITER) : undefined,
    faqCache: env.NEST_CACHE ? new FaqCache(workersKv(env.NEST_CACHE), vars.NEST_FAQ_TTL_S, (line) => console.log(line)) : undefined,
    corpusVersion: async (corpus) => (Object.hasOwn(versions, corpus) ? versions[corpus] : undefined),
    indexFor: async (corpus) => {
      if (upstash) {
        let index = indexes.get(corpus);
        if (!index) {
          index = createUpstashIndex({ ...upstash, corpus, fetchFn: (input, init) => fetch(input, init) });
          indexes.set(corpus, index);
        }
        return index;
      }
      if (!poolUrl) throw new NestError("upstream_unavailable", "the edge has no NEST_POOL_URL configured");
      let index = indexes.get(corpus);
      if (!index) {
        index = createPoolIndex(poolUrl, corpus, poolFetch);
        indexes.set(corpus, index);
      }
      return index;
    },
    log: (line) => console.log(line),
  });
  cached = { key, app };
  return app;
}

export default {
  fetch(request: Request, env: WorkerEnv, ctx: unknown): Response | Promise<Response> {
    return appFor(env).fetch(request, env, ctx as never);
  },
};
