/**
 * @module batch/config
 * Batch-queue configuration: the Redis address (`NEST_REDIS_URL`, default `redis://127.0.0.1:6379`),
 * the key prefix, retries and retention, and the Redis key names used beside BullMQ's own. The
 * environment's part is the `batch` slice of `@nest/shared/config/node-env`.
 */
import type { BatchEnv } from "@nest/shared/config/node-env";

/** Redis used when nothing is configured (what `nestlm serve` uses). */
export const DEFAULT_REDIS_URL = "redis://127.0.0.1:6379";

/** BullMQ key prefix used when nothing is configured. */
export const DEFAULT_PREFIX = "nest";

/** The BullMQ queue holding one job per batch item. */
export const ITEM_QUEUE = "batch-items";

/** Options shared by the job API (producer) and the consumers. */
export interface BatchQueueConfig {
  /** `redis://[user:pass@]host:port[/db]`. @defaultValue {@link DEFAULT_REDIS_URL} */
  readonly redisUrl: string;
  /** Prefix of every Redis key (BullMQ's and ours). @defaultValue {@link DEFAULT_PREFIX} */
  readonly prefix: string;
}

/** Producer-side options: how items are retried and how long batches are kept. */
export interface BatchSubmitConfig extends BatchQueueConfig {
  /** Processing attempts per item, the first included. @defaultValue 3 */
  readonly attempts: number;
  /** First retry delay in ms; exponential: the n-th retry waits `backoffMs * 2^(n-1)`. @defaultValue 2000 */
  readonly backoffMs: number;
  /** How long a batch (status, results) is kept after submission, in seconds. @defaultValue 7 days */
  readonly retentionS: number;
  /** How long an `Idempotency-Key` maps to its batch, in seconds. @defaultValue 24 h */
  readonly idempotencyTtlS: number;
  /** Most items per batch. @defaultValue 10000 */
  readonly maxItems: number;
}

export const DEFAULT_SUBMIT_CONFIG: Omit<BatchSubmitConfig, keyof BatchQueueConfig> = {
  attempts: 3,
  backoffMs: 2000,
  retentionS: 7 * 24 * 3600,
  idempotencyTtlS: 24 * 3600,
  maxItems: 10_000,
};

/**
 * Queue config from the environment's `batch` slice: `NEST_REDIS_URL` (unset:
 * {@link DEFAULT_REDIS_URL}) and `NEST_BATCH_PREFIX`.
 */
export function batchConfigFromEnv(env: BatchEnv): BatchQueueConfig {
  return { redisUrl: env.NEST_REDIS_URL ?? DEFAULT_REDIS_URL, prefix: env.NEST_BATCH_PREFIX };
}

/**
 * Consumer lock timing from the environment's `batch` slice, in ms: `NEST_BATCH_LOCK_MS` (job lock)
 * and `NEST_BATCH_STALLED_INTERVAL_MS` (stalled-job check period), 30000 each by default. An item
 * whose consumer died is taken up again within about lock + 2 × interval ms: its lock expires
 * within `lock` ms, and BullMQ's stalled-job check flags an active item at one check and moves it
 * back to the queue at the next if its lock is gone by then.
 */
export function consumerTimingFromEnv(env: BatchEnv): { lockMs: number; stalledIntervalMs: number } {
  return { lockMs: env.NEST_BATCH_LOCK_MS, stalledIntervalMs: env.NEST_BATCH_STALLED_INTERVAL_MS };
}

/** Our Redis keys (BullMQ's live under `<prefix>:batch-items:*`). */
export function batchKeys(prefix: string) {
  return {
    /** Hash: id, total, created_at (ms), canceled_at (ms), enqueued ("1"), custom_ids (JSON array). */
    meta: (batchId: string) => `${prefix}:batch-meta:${batchId}`,
    /** String: `<batchId> <body sha256>`, keyed by SHA-256 of the Idempotency-Key. */
    idempotency: (keyHash: string) => `${prefix}:batch-idem:${keyHash}`,
  };
}

/** The BullMQ job id of item `index` of `batchId` (BullMQ ids may not contain `:`). */
export function itemJobId(batchId: string, index: number): string {
  return `${batchId}-${index}`;
}
