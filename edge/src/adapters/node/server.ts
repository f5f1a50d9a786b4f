/**
 * @module adapters/node/server
 * The edge on Node (`@hono/node-server`): the app of {@link createApp} with local LanceDB passage
 * indexes (opened lazily, once per corpus) and the pool client over HTTP.
 */
import type { AddressInfo } from "node:net";
import { serve } from "@hono/node-server";
import { createApp } from "../../app.ts";
import { createPoolClient } from "../../route/pool-client.ts";
import type { PassageIndex } from "../../retrieve/passage-index.ts";
import { openLanceIndex } from "./lancedb-index.ts";

export interface EdgeOptions {
  /** TCP port; 0 picks a free one. */
  port: number;
  /** Interface to bind; default `127.0.0.1`. */
  host?: string;
  /** Base URL of the gpu-worker pool, e.g. `http://127.0.0.1:8788`. */
  poolUrl: string;
  /** Corpus name → folder of its LanceDB index (as prepared by `nestlm setup`). */
  corpusDirs: Record<string, string>;
  /** Hex SHA-256 hashes of the accepted API keys. */
  apiKeyHashes: string[];
  log?: (line: string) => void;
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
      index = openLanceIndex(dir, corpus);
      index.catch(() => indexes.delete(corpus)); // retry on the next request
      indexes.set(corpus, index);
    }
    return index;
  };
  const app = createApp({
    indexFor,
    pool: createPoolClient(opts.poolUrl),
    apiKeyHashes: opts.apiKeyHashes,
    batchPoolUrl: opts.poolUrl,
    log: opts.log,
  });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: opts.port, hostname: host }, () => resolve(s));
    s.once("error", reject);
  });
  const { port } = server.address() as AddressInfo;
  const urlHost = host.includes(":") ? `[${host}]` : host === "0.0.0.0" ? "127.0.0.1" : host;
  return {
    url: `http://${urlHost}:${port}`,
    close: async () => {
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
