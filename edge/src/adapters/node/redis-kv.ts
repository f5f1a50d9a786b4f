/**
 * @module adapters/node/redis-kv
 * A {@link KvStore} on Redis (ioredis): the embedded default store of the FAQ answer cache (Redis
 * runs beside `nestlm serve`, as for batch jobs). Every key is prefixed (`nest:` by default).
 * Commands fail fast (no offline queue) so a Redis outage costs a cache miss, not a stalled request.
 */
import { Redis } from "ioredis";
import type { KvStore } from "../../store/kv.ts";

export interface RedisKv extends KvStore {
  close(): Promise<void>;
}

/** Connects lazily to `url` (e.g. `redis://127.0.0.1:6379`). */
export function redisKv(url: string, prefix = "nest:"): RedisKv {
  const redis = new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 1000 });
  redis.on("error", () => {}); // surfaced per command
  let connecting: Promise<void> | undefined;
  const ready = async () => {
    if (redis.status === "ready") return;
    connecting ??= redis.connect().finally(() => (connecting = undefined));
    await connecting;
  };
  return {
    async get(key) {
      await ready();
      return redis.get(prefix + key);
    },
    async put(key, value, ttlS) {
      await ready();
      if (ttlS !== undefined) await redis.set(prefix + key, value, "EX", Math.max(1, Math.ceil(ttlS)));
      else await redis.set(prefix + key, value);
    },
    async delete(key) {
      await ready();
      await redis.del(prefix + key);
    },
    async incr(key, by, ttlS) {
      await ready();
      const [[, n]] = (await redis
        .multi()
        .incrby(prefix + key, by)
        .expire(prefix + key, Math.ceil(ttlS), "NX")
        .exec()) as [[unknown, number]];
      return n;
    },
    async list(p) {
      await ready();
      const out: string[] = [];
      let cursor = "0";
      do {
        const [next, keys] = await redis.scan(cursor, "MATCH", `${prefix}${p}*`, "COUNT", 500);
        cursor = next;
        out.push(...keys.map((k) => k.slice(prefix.length)));
      } while (cursor !== "0");
      return out;
    },
    async close() {
      redis.disconnect();
    },
  };
}
