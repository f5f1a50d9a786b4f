/**
 * @module adapters/workers-kv
 * {@link KvStore} over a Workers KV namespace (key records, FAQ answers, token counters) and a
 * {@link RateLimiter} over the Workers Rate Limiting binding. KV is eventually consistent and
 * `incr` is read-modify-write, so token quotas are approximate on Workers; KV TTLs are at least
 * 60 s. Worker-safe.
 */
import type { KvStore } from "../store/kv.ts";
import type { RateLimiter } from "../middleware/keys.ts";

/** The part of `KVNamespace` used here. */
export interface KvNamespaceLike {
  get(key: string): Promise<string | null>;
  put(key: string, value: string, opts?: { expirationTtl?: number }): Promise<void>;
  delete(key: string): Promise<void>;
  list(opts: { prefix: string; cursor?: string }): Promise<{ keys: { name: string }[]; list_complete: boolean; cursor?: string }>;
}

export function workersKv(ns: KvNamespaceLike): KvStore {
  return {
    get: (key) => ns.get(key),
    put: (key, value, ttlS) => ns.put(key, value, ttlS === undefined ? undefined : { expirationTtl: Math.max(60, Math.ceil(ttlS)) }),
    delete: (key) => ns.delete(key),
    async incr(key, by, ttlS) {
      const n = Number((await ns.get(key)) ?? 0) + by;
      await ns.put(key, String(n), { expirationTtl: Math.max(60, Math.ceil(ttlS)) });
      return n;
    },
    async list(prefix) {
      const out: string[] = [];
      let cursor: string | undefined;
      for (;;) {
        const page = await ns.list({ prefix, cursor });
        out.push(...page.keys.map((k) => k.name));
        if (page.list_complete || !page.cursor) return out;
        cursor = page.cursor;
      }
    },
  };
}

/** The Rate Limiting binding (`[[ratelimits]]` in wrangler.toml; its limit and period are fixed there). */
export interface RateLimitBinding {
  limit(opts: { key: string }): Promise<{ success: boolean }>;
}

/** Per-key limiting by the binding: the binding's configured limit applies, not the record's `rpm`. */
export function bindingRateLimiter(binding: RateLimitBinding): RateLimiter {
  return {
    async hit(id) {
      return { ok: (await binding.limit({ key: id })).success, retryAfterS: 60 };
    },
  };
}
