/**
 * @module batch/service
 * Batch jobs inside a gpu-worker process: the job API routes on its Hono app plus, unless turned
 * off, a consumer decoding on the same inference host (its worker thread keeps the event loop free
 * for HTTP and for BullMQ's lock renewal).
 */
import type { Hono } from "hono";
import { BatchQueue } from "./batch-queue.ts";
import { startBatchConsumer, type BatchConsumer, type ConsumerOptions, type ItemDeps } from "./consumer.ts";
import { registerJobApiRoutes } from "./job-api.ts";
import type { BatchSubmitConfig } from "./config.ts";

export type BatchServiceOptions = Partial<BatchSubmitConfig> &
  Pick<BatchSubmitConfig, "redisUrl" | "prefix"> &
  Pick<ConsumerOptions, "concurrency" | "lockMs" | "stalledIntervalMs" | "maxStalledCount" | "log"> & {
    /** Run a consumer in this process. @defaultValue true */
    consume?: boolean;
  };

export interface BatchService {
  readonly queue: BatchQueue;
  readonly consumer: BatchConsumer | undefined;
  /** Drains the consumer (running items finish), then closes the queue. */
  close(): Promise<void>;
}

/**
 * Opens the queue (checking Redis's eviction policy), adds the job API routes to `app` and starts
 * the consumer.
 * Redis down at start does not throw: the routes answer 503 `queue_unavailable` and the consumer
 * starts once Redis is reachable.
 * @throws RedisPolicyError when Redis is up and its `maxmemory-policy` is not `noeviction`
 */
export async function startBatchService(app: Hono, deps: ItemDeps, opts: BatchServiceOptions): Promise<BatchService> {
  const queue = await BatchQueue.open(opts);
  let consumer: BatchConsumer | undefined;
  try {
    if (opts.consume !== false) consumer = await startBatchConsumer({ ...opts, ...deps });
  } catch (err) {
    await queue.close();
    throw err;
  }
  // Submissions are checked against the corpora this worker serves (the consumers share its home).
  registerJobApiRoutes(app, queue, { hasCorpus: async (corpus) => (await deps.indexFor(corpus)) !== undefined });
  return {
    queue,
    consumer,
    close: async () => {
      await consumer?.close();
      await queue.close();
    },
  };
}
