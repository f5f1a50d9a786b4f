/**
 * Test clean-up: deletes every key under a test's BullMQ prefix (`${prefix}:*`), 500 per DEL,
 * so a run leaves the shared Redis as it found it.
 */
import { Redis } from "ioredis";

/** Deletes the keys `${prefix}:*` through `redis` (or a connection to `url`, closed afterwards). */
export async function deletePrefixKeys(target: Redis | string, prefix: string): Promise<void> {
  const redis = typeof target === "string" ? new Redis(target) : target;
  const keys: string[] = [];
  for await (const batch of redis.scanStream({ match: `${prefix}:*`, count: 1000 })) keys.push(...(batch as string[]));
  for (let i = 0; i < keys.length; i += 500) await redis.del(...keys.slice(i, i + 500));
  if (typeof target === "string") await redis.quit();
}
