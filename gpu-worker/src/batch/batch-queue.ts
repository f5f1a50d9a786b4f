/**
 * @module batch/batch-queue
 * The producer side of batch jobs, used by the pool's job API: submit (one BullMQ job per item,
 * idempotent by key), status (counts derived from BullMQ's job states, so they are exact after
 * crashes), results in input order, cancel. Node-only (ioredis, BullMQ).
 *
 * Redis layout: BullMQ's queue `<prefix>:batch-items:*` (item job id `<batchId>-<index>`), plus
 * `<prefix>:batch-meta:<batchId>` (hash; `owner` is the submitting tenant, `custom_ids` keeps the ids
 * of items removed by cancel) and `<prefix>:batch-idem:<sha256(owner \n key)>` (string).
 *
 * Tenancy (issue 14): every batch belongs to the owner that submitted it (the edge passes the API
 * key's hash). Status, results and cancel with another owner answer `not_found`, exactly as for an
 * unknown id, and idempotency keys are scoped per owner, so no answer reveals another tenant's batch.
 */
import { createHash, randomBytes } from "node:crypto";
import { Queue, type Job } from "bullmq";
import { Redis } from "ioredis";
import { NestError } from "@nest/shared/protocol/errors";
import {
  CANCELED_CODE,
  MAX_IDEMPOTENCY_KEY_CHARS,
  splitFailure,
  type BatchItem,
  type BatchJobData,
  type BatchResultLine,
  type BatchState,
  type BatchStatus,
  type ItemOutput,
  type SubmitResponse,
} from "./protocol.ts";
import { DEFAULT_SUBMIT_CONFIG, ITEM_QUEUE, batchKeys, itemJobId, type BatchSubmitConfig } from "./config.ts";
import { assertNoEviction, redactRedisUrl } from "./redis-policy.ts";
import { connectTolerant, redisOutage, type RedisOutage } from "./redis-outage.ts";

/** Items looked up concurrently per round trip batch (status, results, cancel). */
const CHUNK = 200;

type ItemJob = Job<BatchJobData, ItemOutput>;

const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

interface Meta {
  id: string;
  total: number;
  createdAtMs: number;
  canceledAtMs: number | null;
  enqueued: boolean;
}

/** Owner ids: empty (callers of the job API without a tenant, e.g. tests) or up to 64 hex digits. */
export const OWNER_ID = /^[0-9a-f]{0,64}$/;

export class BatchQueue {
  private readonly keys;

  private constructor(
    private readonly redis: Redis,
    private readonly queue: Queue<BatchJobData, ItemOutput>,
    readonly config: BatchSubmitConfig,
    /** Outage state of this Redis (one log line per outage; failed commands → `queue_unavailable`). */
    readonly outage: RedisOutage,
  ) {
    this.keys = batchKeys(config.prefix);
  }

  /** Runs a queue operation, turning "Redis cannot be reached" into NestError `queue_unavailable`. */
  private async guarded<T>(f: () => Promise<T>): Promise<T> {
    try {
      return await f();
    } catch (err) {
      throw this.outage.translate(err);
    }
  }

  /**
   * Connects to Redis and checks its eviction policy.
   * @param config.log where outages are reported (one line each; default stderr)
   * Redis down at start does not throw: the queue opens, its commands answer 503
   * `queue_unavailable` until ioredis has reconnected (`connectTolerant`).
   * @throws RedisPolicyError when Redis is up and its `maxmemory-policy` is not `noeviction`
   */
  static async open(
    config: Partial<BatchSubmitConfig> & Pick<BatchSubmitConfig, "redisUrl" | "prefix"> & { log?: (line: string) => void },
  ): Promise<BatchQueue> {
    const { log, ...rest } = config;
    const full: BatchSubmitConfig = { ...DEFAULT_SUBMIT_CONFIG, ...rest };
    const outage = redisOutage(redactRedisUrl(full.redisUrl), log ?? ((l) => process.stderr.write(`${l}\n`)));
    // During an outage a command fails after 3 reconnection attempts (~0.3 s), not after minutes.
    const redis = new Redis(full.redisUrl, { maxRetriesPerRequest: 3, lazyConnect: true });
    outage.watch(redis);
    // Down at start is an outage like any other: the routes answer 503 until Redis is reachable.
    await connectTolerant(
      redis,
      () => assertNoEviction(redis, redactRedisUrl(full.redisUrl)),
      log ?? ((l) => process.stderr.write(`${l}\n`)),
    );
    const queue = new Queue<BatchJobData, ItemOutput>(ITEM_QUEUE, { connection: redis, prefix: full.prefix });
    queue.on("error", outage.onError);
    return new BatchQueue(redis, queue, full, outage);
  }

  /**
   * Enqueues a batch owned by `owner`. With an idempotency key this owner already used for the same
   * items (within `idempotencyTtlS`), returns that batch instead (`idempotent_replay: true`); other
   * owners' keys never collide with it.
   * @param owner the tenant (the edge passes the API key's hex SHA-256; "" = none)
   * @throws NestError `invalid_request` when the owner used the key for different items (the message
   *   names no batch id) or the key is too long
   */
  async submit(items: readonly BatchItem[], idempotencyKey?: string, owner = ""): Promise<SubmitResponse> {
    return this.guarded(() => this.submitOnce(items, idempotencyKey, owner));
  }

  private async submitOnce(items: readonly BatchItem[], idempotencyKey: string | undefined, owner: string): Promise<SubmitResponse> {
    const cfg = this.config;
    const id = `batch_${randomBytes(12).toString("hex")}`;
    const itemsHash = sha256(JSON.stringify(items));
    const metaKey = this.keys.meta(id);
    await this.redis
      .multi()
      .hset(metaKey, {
        id,
        owner,
        total: items.length,
        created_at: Date.now(),
        custom_ids: JSON.stringify(items.map((it) => it.custom_id)),
      })
      .expire(metaKey, cfg.retentionS)
      .exec();
    let idemKey: string | undefined;
    if (idempotencyKey !== undefined) {
      if (idempotencyKey.length === 0 || idempotencyKey.length > MAX_IDEMPOTENCY_KEY_CHARS) {
        await this.redis.del(metaKey);
        throw new NestError("invalid_request", `Idempotency-Key must be 1..${MAX_IDEMPOTENCY_KEY_CHARS} characters`);
      }
      idemKey = this.keys.idempotency(sha256(`${owner}\n${idempotencyKey}`));
      const won = await this.redis.set(idemKey, `${id} ${itemsHash}`, "EX", cfg.idempotencyTtlS, "NX");
      if (won === null) {
        await this.redis.del(metaKey);
        const [prevId, prevHash] = ((await this.redis.get(idemKey)) ?? "").split(" ");
        if (!prevId) return this.submitOnce(items, idempotencyKey, owner); // expired in between: try again
        if (prevHash !== itemsHash) {
          throw new NestError("invalid_request", "Idempotency-Key was already used for a different batch");
        }
        return { ...(await this.status(prevId, owner)), idempotent_replay: true };
      }
    }
    try {
      for (let i = 0; i < items.length; i += 1000) {
        await this.queue.addBulk(
          items.slice(i, i + 1000).map((it) => ({
            name: "generate",
            data: { batch_id: id, index: it.index, custom_id: it.custom_id, request: it.request },
            opts: {
              jobId: itemJobId(id, it.index),
              attempts: cfg.attempts,
              backoff: { type: "exponential", delay: cfg.backoffMs },
              removeOnComplete: { age: cfg.retentionS },
              removeOnFail: { age: cfg.retentionS },
            },
          })),
        );
      }
      await this.redis.hset(metaKey, "enqueued", 1);
    } catch (err) {
      // Remove what was enqueued and forget the key, so a resubmission starts afresh.
      await this.cancelOnce(id, owner).catch(() => undefined);
      await this.redis.del(metaKey, ...(idemKey ? [idemKey] : [])).catch(() => undefined);
      throw new NestError("internal", `could not enqueue batch ${id}: ${(err as Error).message}`, { cause: err });
    }
    return { ...(await this.status(id, owner)), idempotent_replay: false };
  }

  /**
   * Status and item counts of a batch. O(total) Redis calls (one state lookup per item, pipelined in
   * chunks of 200).
   * @throws NestError `not_found` for an unknown or expired batch id, or one of another owner
   */
  async status(batchId: string, owner = ""): Promise<BatchStatus> {
    return this.guarded(async () => this.statusOf(await this.meta(batchId, owner)));
  }

  private async statusOf(meta: Meta): Promise<BatchStatus> {
    const batchId = meta.id;
    const counts = { queued: 0, running: 0, done: 0, failed: 0, canceled: 0 };
    if (!meta.enqueued) counts.queued = meta.total;
    else {
      await this.forEachChunk(meta.total, async (indices) => {
        const ids = indices.map((i) => itemJobId(batchId, i));
        const states = await Promise.all(ids.map((id) => this.queue.getJobState(id)));
        const failedIds: string[] = [];
        states.forEach((s, k) => {
          if (s === "completed") counts.done++;
          else if (s === "failed") failedIds.push(ids[k]!);
          else if (s === "active") counts.running++;
          else if (s === "unknown") counts[meta.canceledAtMs !== null ? "canceled" : "failed"]++;
          else counts.queued++;
        });
        for (const job of await Promise.all(failedIds.map((id) => this.queue.getJob(id)))) {
          counts[splitFailure(job?.failedReason).code === CANCELED_CODE ? "canceled" : "failed"]++;
        }
      });
    }
    const finished = counts.done + counts.failed + counts.canceled;
    let status: BatchState;
    if (meta.canceledAtMs !== null) status = finished === meta.total ? "canceled" : "canceling";
    else if (finished === meta.total) status = "completed";
    else status = counts.running > 0 || finished > 0 ? "running" : "queued";
    return {
      id: batchId,
      status,
      created_at: new Date(meta.createdAtMs).toISOString(),
      canceled_at: meta.canceledAtMs === null ? null : new Date(meta.canceledAtMs).toISOString(),
      total: meta.total,
      counts,
      progress: finished / meta.total,
    };
  }

  /**
   * The result lines of the finished items, in input order (unfinished items are skipped: read
   * again once `status` is `completed` or `canceled`).
   * @throws NestError `not_found` for an unknown or expired batch id, or one of another owner
   *   (before the first line)
   */
  async *results(batchId: string, owner = ""): AsyncGenerator<BatchResultLine> {
    const meta = await this.guarded(() => this.meta(batchId, owner));
    if (!meta.enqueued) return;
    let customIds: (string | null)[] | undefined; // read once, only if a job was removed (canceled)
    for (let start = 0; start < meta.total; start += CHUNK) {
      const indices = Array.from({ length: Math.min(CHUNK, meta.total - start) }, (_, k) => start + k);
      const jobs = await Promise.all(indices.map((i) => this.queue.getJob(itemJobId(batchId, i)) as Promise<ItemJob | undefined>));
      if (!customIds && jobs.includes(undefined)) {
        customIds = JSON.parse((await this.redis.hget(this.keys.meta(batchId), "custom_ids")) ?? "[]") as (string | null)[];
      }
      for (let k = 0; k < jobs.length; k++) {
        const line = toResultLine(jobs[k], indices[k]!, meta, customIds?.[indices[k]!] ?? null);
        if (line) yield line;
      }
    }
  }

  /**
   * Cancels a batch: items not started yet are removed (and end `canceled`); running items finish.
   * Canceling twice, or a batch already `completed`, changes nothing (its status stays).
   * @throws NestError `not_found` for an unknown or expired batch id, or one of another owner
   */
  async cancel(batchId: string, owner = ""): Promise<BatchStatus> {
    return this.guarded(() => this.cancelOnce(batchId, owner));
  }

  private async cancelOnce(batchId: string, owner: string): Promise<BatchStatus> {
    const meta = await this.meta(batchId, owner);
    const before = await this.statusOf(meta);
    if (before.status === "completed" || before.status === "canceled") return before;
    await this.redis.hsetnx(this.keys.meta(batchId), "canceled_at", Date.now());
    await this.forEachChunk(meta.total, async (indices) => {
      const ids = indices.map((i) => itemJobId(batchId, i));
      const states = await Promise.all(ids.map((id) => this.queue.getJobState(id)));
      await Promise.all(
        ids.map((id, k) => {
          const s = states[k];
          // A job that turned active in between is locked: remove() leaves it (it then runs to its end).
          return s === "waiting" || s === "delayed" || s === "prioritized" ? this.queue.remove(id).catch(() => 0) : 0;
        }),
      );
    });
    return this.status(batchId, owner);
  }

  /** Closes the queue and the Redis connection. */
  async close(): Promise<void> {
    await this.queue.close();
    await this.redis.quit().catch(() => this.redis.disconnect());
  }

  /** The batch's meta, when `owner` owns it. @throws NestError `not_found` otherwise (same answer as unknown) */
  private async meta(batchId: string, owner: string): Promise<Meta> {
    const [total, createdAt, canceledAt, enqueued, storedOwner] = /^batch_[0-9a-f]{24}$/.test(batchId)
      ? await this.redis.hmget(this.keys.meta(batchId), "total", "created_at", "canceled_at", "enqueued", "owner")
      : [];
    if (!total || (storedOwner ?? "") !== owner)
      throw new NestError("not_found", `no batch \`${batchId.slice(0, 64)}\` (unknown or expired)`);
    return {
      id: batchId,
      total: Number(total),
      createdAtMs: Number(createdAt),
      canceledAtMs: canceledAt ? Number(canceledAt) : null,
      enqueued: enqueued === "1",
    };
  }

  private async forEachChunk(total: number, fn: (indices: number[]) => Promise<void>): Promise<void> {
    for (let start = 0; start < total; start += CHUNK) {
      await fn(Array.from({ length: Math.min(CHUNK, total - start) }, (_, k) => start + k));
    }
  }
}

/** The result line of one item, or undefined while it is unfinished. */
function toResultLine(job: ItemJob | undefined, index: number, meta: Meta, removedCustomId: string | null): BatchResultLine | undefined {
  const custom_id = job ? job.data.custom_id : removedCustomId;
  if (!job) {
    if (meta.canceledAtMs !== null) return { index, custom_id, status: "canceled" };
    return { index, custom_id, status: "failed", error: { code: "internal", message: "item missing from the queue" }, attempts: 0 };
  }
  if (job.finishedOn === undefined) return undefined;
  if (job.returnvalue !== null && job.returnvalue !== undefined) {
    return { index, custom_id, status: "done", ...job.returnvalue, attempts: Math.max(1, job.attemptsMade) };
  }
  const error = splitFailure(job.failedReason);
  if (error.code === CANCELED_CODE) return { index, custom_id, status: "canceled" };
  return { index, custom_id, status: "failed", error, attempts: job.attemptsMade };
}
