/**
 * @module adapters/workers
 * The edge on Cloudflare Workers (`wrangler.toml` at the repo root points here). Configuration from
 * `env`: var `NEST_POOL_URL` (base URL of the gpu-worker pool) and secret `NEST_API_KEY_HASHES`
 * (comma-separated hex SHA-256 hashes of the accepted keys). First-stage retrieval is answered by
 * the pool's index (`/v1/retrieve`) until a hosted index is configured.
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

export interface WorkerEnv {
  NEST_POOL_URL?: string;
  NEST_API_KEY_HASHES?: string;
  /** Extra pools, comma-separated (least-outstanding-requests routing). */
  NEST_POOL_URLS?: string;
  /** Secret: HMAC key shared with the pools. */
  NEST_POOL_SECRET?: string;
  /** JSON `{corpus: version}` for FAQ cache keys; a corpus without a version is not cached. */
  NEST_CORPUS_VERSIONS?: string;
  NEST_FAQ_TTL_S?: string;
  /** KV: key records and counters; KV: FAQ answers; Rate Limiting binding. */
  NEST_KEYS?: KvNamespaceLike;
  NEST_CACHE?: KvNamespaceLike;
  NEST_RATE_LIMITER?: RateLimitBinding;
  /** Upstash Vector (hybrid index, one namespace per corpus): when both are set, retrieval goes there. */
  UPSTASH_VECTOR_REST_URL?: string;
  UPSTASH_VECTOR_REST_TOKEN?: string;
  /** Upstash fusion: `RRF` (default) or `DBSF`. */
  UPSTASH_VECTOR_FUSION?: string;
}

let cached: { key: string; app: Hono } | undefined;

/** The app for this `env`, built once per isolate (rebuilt if the config changes). */
function appFor(env: WorkerEnv): Hono {
  const poolUrl = env.NEST_POOL_URL ?? "";
  const hashes = (env.NEST_API_KEY_HASHES ?? "").split(",").map((h) => h.trim()).filter(Boolean);
  const upstash = env.UPSTASH_VECTOR_REST_URL && env.UPSTASH_VECTOR_REST_TOKEN
    ? { url: env.UPSTASH_VECTOR_REST_URL, token: env.UPSTASH_VECTOR_REST_TOKEN, fusion: env.UPSTASH_VECTOR_FUSION === "DBSF" ? "DBSF" as const : "RRF" as const }
    : undefined;
  const key = `${poolUrl}|${hashes.join(",")}|${upstash?.url ?? ""}|${upstash?.token ?? ""}|${upstash?.fusion ?? ""}|${env.NEST_POOL_URLS ?? ""}|${env.NEST_POOL_SECRET ?? ""}|${env.NEST_CORPUS_VERSIONS ?? ""}`;
  const poolFetch = signedFetch(env.NEST_POOL_SECRET, (input, init) => fetch(input, init));
  const pools = [poolUrl, ...(env.NEST_POOL_URLS ?? "").split(",").map((u) => u.trim())].filter(Boolean);
  const versions = JSON.parse(env.NEST_CORPUS_VERSIONS || "{}") as Record<string, string>;
  if (cached?.key === key) return cached.app;
  const indexes = new Map<string, PassageIndex>();
  const app = createApp({
    apiKeyHashes: hashes,
    batchPoolUrl: poolUrl || undefined,
    batchFetch: poolFetch,
    pool: createPoolRouter({ pools: pools.length ? pools : ["http://unconfigured.invalid"], fetch: poolFetch }),
    keys: env.NEST_KEYS ? workersKv(env.NEST_KEYS) : undefined,
    limiter: env.NEST_RATE_LIMITER ? bindingRateLimiter(env.NEST_RATE_LIMITER) : undefined,
    faqCache: env.NEST_CACHE ? new FaqCache(workersKv(env.NEST_CACHE), Number(env.NEST_FAQ_TTL_S || 86_400)) : undefined,
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
