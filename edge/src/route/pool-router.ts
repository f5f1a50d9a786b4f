/**
 * @module route/pool-router
 * Routing over several gpu-worker pools (issue 5 §4): each request goes to the healthy pool with
 * the fewest requests in flight from this edge (least outstanding requests; ties → list order).
 * A pool at capacity (503) or unreachable is skipped for the next one; a pool that could not be
 * reached is marked down and retried after `retryDownMs` or the next health check. All at capacity
 * → 503 `at_capacity` with the smallest `Retry-After`; none reachable (or all marked down) → 502
 * `upstream_unavailable`, with `Retry-After` = `retryDownMs` when none was tried. Worker-safe (fetch only).
 */
import { NestError } from "@nest/shared/protocol/errors";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { createPoolClient, joinUrl, type DecodeClient } from "./pool-client.ts";

export interface PoolRouterOptions {
  /** Base URLs of the pools (plain URL, tunnel URL, or any URL a service-binding fetch accepts). */
  pools: readonly string[];
  /** fetch for all pool calls (e.g. {@link signedFetch}; a Workers service binding's fetch fits). */
  fetch?: typeof fetch;
  /** How long a pool that failed to answer stays skipped, ms (default 5000). */
  retryDownMs?: number;
  now?: () => number;
}

/** What the router knows of one pool. */
export interface PoolState {
  url: string;
  /** Requests this edge has in flight there. */
  outstanding: number;
  healthy: boolean;
  /** When it was marked down (ms), 0 when healthy. */
  downSince: number;
  /** Model the pool reported on `/healthz`. */
  model?: string;
}

export interface PoolRouter extends DecodeClient {
  /** Snapshot of the pools' state. */
  state(): PoolState[];
  /** `GET /healthz` on every pool (2 s timeout each); updates health and model. */
  checkHealth(): Promise<void>;
}

async function* tracked(src: AsyncIterable<GenerateEvent>, release: () => void): AsyncGenerator<GenerateEvent> {
  try {
    yield* src;
  } finally {
    release();
  }
}

/** Builds the router. @throws Error when `pools` is empty. */
export function createPoolRouter(opts: PoolRouterOptions): PoolRouter {
  if (opts.pools.length === 0) throw new Error("createPoolRouter: no pool URL configured");
  const fetchFn = opts.fetch ?? ((i, init) => fetch(i, init));
  const retryDownMs = opts.retryDownMs ?? 5000;
  const now = opts.now ?? Date.now;
  const pools = opts.pools.map((url) => ({
    state: { url, outstanding: 0, healthy: true, downSince: 0 } as PoolState,
    client: createPoolClient(url, fetchFn),
  }));

  const usable = (p: PoolState) => p.healthy || now() - p.downSince >= retryDownMs;

  async function checkOne(p: PoolState): Promise<void> {
    try {
      // A timer cleared once answered, not AbortSignal.timeout: on Workers a timeout still pending
      // when the request ends surfaces as an unhandled rejection ("Error: undefined").
      const ctl = new AbortController();
      const timer = setTimeout(() => ctl.abort(new Error("health check timed out after 2000 ms")), 2000);
      let res: Response;
      let body: { model?: unknown };
      try {
        res = await fetchFn(joinUrl(p.url, "/healthz"), { signal: ctl.signal });
        body = (await res.json()) as { model?: unknown };
      } finally {
        clearTimeout(timer);
      }
      p.healthy = res.ok;
      p.downSince = res.ok ? 0 : now();
      if (typeof body.model === "string") p.model = body.model;
    } catch {
      p.healthy = false;
      p.downSince = now();
    }
  }

  return {
    state: () => pools.map((p) => ({ ...p.state })),
    checkHealth: async () => {
      await Promise.all(pools.map((p) => checkOne(p.state)));
    },
    async readiness() {
      await Promise.all(pools.map((p) => checkOne(p.state)));
      return { up: pools.filter((p) => p.state.healthy).length, total: pools.length };
    },
    async modelName() {
      let known = pools.find((p) => p.state.healthy && p.state.model)?.state.model;
      if (!known) {
        await Promise.all(pools.filter((p) => usable(p.state)).map((p) => checkOne(p.state)));
        known = pools.find((p) => p.state.healthy && p.state.model)?.state.model;
      }
      return known;
    },
    async decode(job, signal) {
      const order = pools
        .map((p, i) => ({ p, i }))
        .filter(({ p }) => usable(p.state))
        .sort((a, b) => a.p.state.outstanding - b.p.state.outstanding || a.i - b.i);
      let retryAfterS: number | undefined;
      let lastDown: NestError | undefined;
      for (const { p } of order) {
        p.state.outstanding++;
        let released = false;
        const release = () => {
          if (!released) p.state.outstanding--;
          released = true;
        };
        try {
          const events = await p.client.decode(job, signal);
          p.state.healthy = true;
          p.state.downSince = 0;
          return tracked(events, release);
        } catch (err) {
          release();
          if (signal?.aborted) throw err;
          if (err instanceof NestError && err.code === "at_capacity") {
            retryAfterS = Math.min(retryAfterS ?? Infinity, err.retryAfterS ?? 5);
            continue;
          }
          if (err instanceof NestError && err.code === "upstream_unavailable") {
            p.state.healthy = false;
            p.state.downSince = now();
            lastDown = err;
            continue;
          }
          throw err;
        }
      }
      if (retryAfterS !== undefined) {
        throw new NestError("at_capacity", `all ${pools.length} gpu-worker pools are busy`, { retryAfterS });
      }
      throw lastDown ?? new NestError("upstream_unavailable", "no gpu-worker pool is up", { retryAfterS: Math.ceil(retryDownMs / 1000) });
    },
  };
}
