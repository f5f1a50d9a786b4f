/**
 * @module batch/redis-policy
 * Start-up check that Redis will never evict BullMQ's keys: with any `maxmemory-policy` other than
 * `noeviction`, Redis may silently drop queued jobs, locks or results under memory pressure.
 */
import type { Redis } from "ioredis";
import { NestError } from "@nest/shared/protocol/errors";

/** Thrown when Redis's `maxmemory-policy` is not `noeviction`. */
export class RedisPolicyError extends NestError {
  constructor(
    readonly policy: string,
    where: string,
  ) {
    super(
      "internal",
      `Redis at ${where} has maxmemory-policy \`${policy}\`; batch jobs need \`noeviction\` (any other policy ` +
        `can evict queued jobs and results). Fix: \`redis-cli -u ${where} CONFIG SET maxmemory-policy noeviction\` ` +
        `and put \`maxmemory-policy noeviction\` in redis.conf (on a managed Redis, pick the noeviction policy).`,
    );
    this.name = "RedisPolicyError";
  }
}

/**
 * Reads `maxmemory_policy` from `INFO memory` (works where `CONFIG` is disabled, e.g. managed Redis).
 * @throws whatever the Redis call throws (connection errors)
 */
export async function readMaxmemoryPolicy(redis: Redis): Promise<string> {
  const info = await redis.info("memory");
  const m = /^maxmemory_policy:(\S+)/m.exec(info);
  if (!m) throw new NestError("internal", "Redis INFO memory has no maxmemory_policy line");
  return m[1]!;
}

/**
 * Resolves when the policy is `noeviction`.
 * @param where the Redis address, for the message (no credentials)
 * @throws RedisPolicyError otherwise
 */
export async function assertNoEviction(redis: Redis, where: string): Promise<void> {
  const policy = await readMaxmemoryPolicy(redis);
  if (policy !== "noeviction") throw new RedisPolicyError(policy, where);
}

/** The Redis URL without its password, for logs and messages. */
export function redactRedisUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString().replace(/\/$/, "");
  } catch {
    return "(invalid Redis URL)";
  }
}
