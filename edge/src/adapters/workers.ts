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
import { createPoolClient } from "../route/pool-client.ts";
import { createPoolIndex } from "../retrieve/pool-index.ts";
import type { PassageIndex } from "../retrieve/passage-index.ts";

export interface WorkerEnv {
  NEST_POOL_URL?: string;
  NEST_API_KEY_HASHES?: string;
}

let cached: { key: string; app: Hono } | undefined;

/** The app for this `env`, built once per isolate (rebuilt if the config changes). */
function appFor(env: WorkerEnv): Hono {
  const poolUrl = env.NEST_POOL_URL ?? "";
  const hashes = (env.NEST_API_KEY_HASHES ?? "").split(",").map((h) => h.trim()).filter(Boolean);
  const key = `${poolUrl}|${hashes.join(",")}`;
  if (cached?.key === key) return cached.app;
  const indexes = new Map<string, PassageIndex>();
  const app = createApp({
    apiKeyHashes: hashes,
    batchPoolUrl: poolUrl || undefined,
    batchFetch: (input, init) => fetch(input, init),
    pool: createPoolClient(poolUrl, (input, init) => fetch(input, init)),
    indexFor: async (corpus) => {
      if (!poolUrl) throw new NestError("upstream_unavailable", "the edge has no NEST_POOL_URL configured");
      let index = indexes.get(corpus);
      if (!index) {
        index = createPoolIndex(poolUrl, corpus, (input, init) => fetch(input, init));
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
