/**
 * @module adapters/node/server
 * The edge on Node (`@hono/node-server`): the app of {@link createApp} with local LanceDB passage
 * indexes (opened lazily, once per corpus) and the pool client over HTTP.
 */
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createApp } from "../../app.ts";
import { createPoolRouter } from "../../route/pool-router.ts";
import { signedFetch } from "../../route/signed-fetch.ts";
import { FaqCache, DEFAULT_FAQ_TTL_S } from "../../cache/faq-cache.ts";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";
import { readReadySync } from "@nest/corpus/layout";
import { jsonFileKv } from "./json-file-kv.ts";
import { redisKv, type RedisKv } from "./redis-kv.ts";
import { EdgeMetrics } from "./metrics.ts";
import { answerClientErrorsAsJson } from "@nest/shared/http/client-errors";

export interface EdgeOptions {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Interface to bind; default `127.0.0.1`. */
  host?: string;
  /** Base URL of the gpu-worker pool, e.g. `http://127.0.0.1:8788` (also the batch job API). */
  poolUrl: string;
  /** More pools to route to (least outstanding requests); `poolUrl` is always the first. */
  extraPoolUrls?: string[];
  /** Shared secret signing edge → worker calls (HMAC); absent = unsigned (tests only). */
  poolSecret?: string;
  /** JSON file of API key records (`nestlm keys`), e.g. `$NEST_HOME/keys.json`; absent = static keys only. */
  keysFile?: string;
  /** Redis URL of the FAQ cache; absent = no cache. */
  redisUrl?: string;
  /** FAQ cache TTL in seconds (default 1 day). */
  faqTtlS?: number;
  /** Heartbeat interval of SSE streams, ms. */
  heartbeatMs?: number;
  /** Health-check interval of the pools, ms (default 5000; 0 = none). */
  healthCheckMs?: number;
  /** Corpus name → folder of its LanceDB index (as prepared by `nestlm setup`). */
  corpusDirs: Record<string, string>;
  /** Fusion of a hybrid corpus index when a request names none (`NEST_FUSION`). @defaultValue `rrf` */
  fusion?: FusionMethod;
  /** Hex SHA-256 hashes of the accepted API keys. */
  apiKeyHashes: string[];
  log?: (line: string) => void;
  /** Serve Prometheus metrics on `GET /metrics` (./metrics.ts). @defaultValue true */
  metrics?: boolean;
}

export interface RunningEdge {
  /** Base URL actually bound, e.g. `http://127.0.0.1:8787`. */
  url: string;
  /** Stops accepting connections, closes open ones, waits for the server, then closes the indexes. */
  close(): Promise<void>;
}

/**
 * Starts the edge and resolves once it listens.
 * @throws the listen error (e.g. `EADDRINUSE`).
 */
export async function startEdge(opts: EdgeOptions): Promise<RunningEdge> {
  const host = opts.host ?? "127.0.0.1";
  const indexes = new Map<string, Promise<PassageIndex>>();
  const indexFor = (corpus: string): Promise<PassageIndex | undefined> => {
    const dir = Object.hasOwn(opts.corpusDirs, corpus) ? opts.corpusDirs[corpus] : undefined;
    if (dir === undefined) return Promise.resolve(undefined);
    let index = indexes.get(corpus);
    if (!index) {
      index = openLanceIndex(dir, corpus, { fusion: opts.fusion });
      index.catch(() => indexes.delete(corpus)); // retry on the next request
      indexes.set(corpus, index);
    }
    return index;
  };
  const poolFetch = signedFetch(opts.poolSecret);
  const pool = createPoolRouter({ pools: [opts.poolUrl, ...(opts.extraPoolUrls ?? [])], fetch: poolFetch });
  const healthTimer = opts.healthCheckMs === 0 ? undefined : setInterval(() => void pool.checkHealth(), opts.healthCheckMs ?? 5000);
  healthTimer?.unref();
  const cacheKv: RedisKv | undefined = opts.redisUrl ? redisKv(opts.redisUrl) : undefined;
  const app = createApp({
    indexFor,
    pool,
    apiKeyHashes: opts.apiKeyHashes,
    keys: opts.keysFile ? jsonFileKv(opts.keysFile) : undefined,
    faqCache: cacheKv ? new FaqCache(cacheKv, opts.faqTtlS ?? DEFAULT_FAQ_TTL_S, opts.log) : undefined,
    corpusVersion: async (corpus) => corpusVersion(opts.corpusDirs, corpus),
    heartbeatMs: opts.heartbeatMs,
    batchPoolUrl: opts.poolUrl,
    batchFetch: poolFetch,
    log: opts.log,
  });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const metrics = opts.metrics === false ? undefined : new EdgeMetrics({ pools: () => pool.state() });
    const s = serve({ fetch: metrics ? metrics.instrument(app.fetch) : app.fetch, port: opts.port, hostname: host }, () => resolve(s));
    s.once("error", reject);
    answerClientErrorsAsJson(s); // e.g. a 20 KB header: JSON 431 `headers_too_large`, not Node's bare one
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
  return {
    url: `http://${urlHost}:${port}`,
    close: async () => {
      if (healthTimer) clearInterval(healthTimer);
      await cacheKv?.close();
      await new Promise<void>((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve()));
        if ("closeAllConnections" in server) server.closeAllConnections();
      });
      const opened = await Promise.allSettled(indexes.values());
      indexes.clear();
      for (const r of opened) if (r.status === "fulfilled") await r.value.close?.();
    },
  };
}

/**
 * A corpus's version: the `version` in its index folder's `READY.json` (written by `nestlm setup` /
 * ingest); re-ingesting makes a new folder and version. `undefined` when unknown.
 */
export function corpusVersion(corpusDirs: Record<string, string>, corpus: string): string | undefined {
  if (!Object.hasOwn(corpusDirs, corpus)) return undefined;
  return readReadySync(corpusDirs[corpus]!)?.version;
}
