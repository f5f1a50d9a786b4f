/**
 * @module store/kv
 * The small key-value contract behind API keys, rate limits and the FAQ cache, with an in-memory
 * implementation (one process / one isolate). Redis (`adapters/node/redis-kv.ts`) and Workers KV
 * (`adapters/workers-kv.ts`) implement it too. Worker-safe.
 */

/** A string key-value store with expiry and counters. */
export interface KvStore {
  /** The value, or `null` when absent or expired. */
  get(key: string): Promise<string | null>;
  /** Stores `value`; `ttlS` (seconds) makes it expire, absent = kept. */
  put(key: string, value: string, ttlS?: number): Promise<void>;
  delete(key: string): Promise<void>;
  /**
   * Adds `by` to the integer counter at `key` (absent = 0) and returns the new value; a counter
   * created by this call expires after `ttlS` seconds. Atomic on Redis and in memory; best effort
   * (read-modify-write) on Workers KV.
   */
  incr(key: string, by: number, ttlS: number): Promise<number>;
  /** Keys starting with `prefix` (for listings; not used on hot paths). */
  list(prefix: string): Promise<string[]>;
}

/**
 * An in-memory {@link KvStore}. Expiry is checked on read.
 * @param now clock in ms (tests pass their own).
 */
export function memoryKv(now: () => number = Date.now): KvStore {
  const data = new Map<string, { value: string; expires: number }>();
  const live = (key: string) => {
    const e = data.get(key);
    if (!e) return undefined;
    if (e.expires <= now()) {
      data.delete(key);
      return undefined;
    }
    return e;
  };
  return {
    async get(key) {
      return live(key)?.value ?? null;
    },
    async put(key, value, ttlS) {
      data.set(key, { value, expires: ttlS === undefined ? Infinity : now() + ttlS * 1000 });
    },
    async delete(key) {
      data.delete(key);
    },
    async incr(key, by, ttlS) {
      const e = live(key);
      const value = (e ? Number(e.value) : 0) + by;
      data.set(key, { value: String(value), expires: e ? e.expires : now() + ttlS * 1000 });
      return value;
    },
    async list(prefix) {
      return [...data.keys()].filter((k) => k.startsWith(prefix) && live(k));
    },
  };
}
