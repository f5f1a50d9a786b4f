/**
 * @module batch/consumer
 * The consumer side of batch jobs: a BullMQ Worker over the item queue. Each item runs first-stage
 * retrieval on the local passage index of its corpus (nest-algorithm.md §1), then decodes on an
 * inference host (a worker thread, so the event loop stays free and BullMQ keeps renewing job
 * locks). Transient failures (5xx codes such as `upstream_unavailable`, `internal`,
 * `model_not_prepared`, and `rate_limited`, `cancelled`) retry with exponential backoff (options set at submission); deterministic ones, the
 * request's own fault (4xx codes such as `invalid_request`, `not_found`: see {@link failsEveryTime}),
 * fail at once after one attempt (BullMQ `UnrecoverableError`). A decoder at capacity (`at_capacity`: interactive requests hold its slots) is not a
 * failure: the item goes back to the delayed set for {@link capacityDelayMs} without spending an
 * attempt (BullMQ `moveToDelayed` + `DelayedError`). A consumer killed mid-item leaves the item's lock to expire, and the stalled-job
 * check of any live consumer puts it back in the queue: BullMQ flags the active items at one check and
 * moves those still without a lock at the next, so recovery takes up to about `lockMs` + 2 ×
 * `stalledIntervalMs` after the kill. `close()` drains: running items finish.
 */
import { DelayedError, UnrecoverableError, Worker, type Job } from "bullmq";
import { Redis } from "ioredis";
import { toNestError, type ErrorCode, type NestError } from "@nest/shared/protocol/errors";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import type { Citation, GenerateEvent } from "@nest/shared/protocol/events";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { collectGeneration, decodeJob, generationEvents, requestIndex, retrieve } from "@nest/shared/generation/pipeline";
import { CANCELED_CODE, type BatchJobData, type ItemOutput } from "./protocol.ts";
import { ITEM_QUEUE, batchKeys, type BatchQueueConfig } from "./config.ts";
import { assertNoEviction, redactRedisUrl } from "./redis-policy.ts";
import { connectTolerant, redisOutage } from "./redis-outage.ts";

/**
 * How long an item refused with `at_capacity` waits before it is tried again, in ms: the
 * refusal's `Retry-After` (capped at 5 s), else 1 s, plus up to 50 % jitter so that waiting items do
 * not all come back at once.
 */
export function capacityDelayMs(retryAfterS: number | undefined, random: () => number = Math.random): number {
  const baseMs = Math.min(5, retryAfterS ?? 1) * 1000;
  return Math.round(baseMs * (1 + 0.5 * random()));
}

/** 4xx codes that pass: a limit that resets, a stop that was not the request's fault. */
const PASSING_4XX: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["rate_limited", "cancelled"]);

/**
 * Whether an item's error would come back on every attempt, so retrying only delays its failure:
 * the 4xx codes (the request's own fault, e.g. `invalid_request`, `not_found` for a corpus this
 * consumer lacks, `payload_too_large`) except `rate_limited` and `cancelled`.
 */
export function failsEveryTime(e: NestError): boolean {
  return e.status >= 400 && e.status < 500 && !PASSING_4XX.has(e.code);
}

/** Something that decodes a job into events (`delta`*, then `done` or `error`): an InferenceHost or a pool of them. */
export interface Decoder {
  run(job: DecodeJob, signal?: AbortSignal): AsyncIterable<GenerateEvent>;
}

/** What one item needs. */
export interface ItemDeps {
  decoder: Decoder;
  /** The passage index of a corpus, or undefined when this consumer does not have it. */
  indexFor(corpus: string): Promise<PassageIndex | undefined>;
}

export interface ConsumerOptions extends BatchQueueConfig, ItemDeps {
  /** Items processed at once by this consumer. @defaultValue 1 */
  concurrency?: number;
  /** Job lock duration in ms; renewed every half of it while an item runs. @defaultValue 30000 */
  lockMs?: number;
  /**
   * Period of the stalled-job check in ms: an item whose consumer died is back in the queue within
   * about `lockMs` + 2 × this (flagged at one check, moved at the next once its lock expired).
   * @defaultValue 30000
   */
  stalledIntervalMs?: number;
  /** Times an item may be recovered after its consumer died before it fails. @defaultValue 2 */
  maxStalledCount?: number;
  log?: (line: string) => void;
}

/**
 * Decodes one batch item through the generation pipeline (`@nest/shared/generation/pipeline`):
 * retrieval (skipped in mode `base`), then the decode job, collected.
 * @throws NestError `not_found` for a corpus this consumer has no index for; the decoder's
 *   `error` event as a NestError with its code; `upstream_unavailable` if the stream ends without `done`
 */
export async function decodeItem(deps: ItemDeps, data: BatchJobData, signal?: AbortSignal): Promise<ItemOutput> {
  const t0 = performance.now();
  const req = data.request;
  const index = await requestIndex(req, (corpus) => deps.indexFor(corpus));
  const retrieval = await retrieve(index, req, t0);
  const events = generationEvents(deps.decoder.run(decodeJob(req, retrieval.passages), signal), retrieval, t0, signal);
  const { text, deltas, done: d } = await collectGeneration(events);
  // One citation per cited run: the pieces of a streamed run (`continues`) are joined.
  const citations: Citation[] = joinContinuedCitations(deltas.flatMap((delta) => (delta.citation ? [delta.citation] : [])));
  return { text, citations, finish_reason: d.finish_reason, mode: d.mode, model: d.model, usage: d.usage, timings_ms: d.timings_ms };
}

/** A running consumer. */
export interface BatchConsumer {
  /** BullMQ's worker; undefined until Redis has been reachable once. */
  readonly worker: Worker<BatchJobData, ItemOutput> | undefined;
  /** Stops taking items, waits for the running ones to finish (drain), closes Redis. */
  close(): Promise<void>;
}

/**
 * Starts consuming the item queue.
 * Redis down at start does not throw: the consumer starts taking items once it is reachable.
 * @throws RedisPolicyError when Redis is up and its `maxmemory-policy` is not `noeviction`
 */
export async function startBatchConsumer(opts: ConsumerOptions): Promise<BatchConsumer> {
  const log = opts.log ?? (() => {});
  const where = redactRedisUrl(opts.redisUrl);
  const outage = redisOutage(where, log);
  // BullMQ workers need `maxRetriesPerRequest: null` (blocking commands are retried forever).
  const redis = new Redis(opts.redisUrl, { maxRetriesPerRequest: null, lazyConnect: true });
  outage.watch(redis);
  // Down at start: BullMQ's worker waits for the connection, which ioredis keeps retrying.
  await connectTolerant(redis, () => assertNoEviction(redis, where), log);
  const keys = batchKeys(opts.prefix);

  const processItem = async (job: Job<BatchJobData, ItemOutput>, token?: string, signal?: AbortSignal) => {
    if (await redis.hexists(keys.meta(job.data.batch_id), "canceled_at")) {
      throw new UnrecoverableError(`${CANCELED_CODE}: the batch was canceled before this item started`);
    }
    try {
      return await decodeItem(opts, job.data, signal);
    } catch (err) {
      const e = toNestError(err);
      if (e.code === "at_capacity" && token !== undefined) {
        // Capacity is not a failure: wait and try again without spending an attempt.
        await job.moveToDelayed(Date.now() + capacityDelayMs(e.retryAfterS), token);
        throw new DelayedError();
      }
      const reason = `${e.code}: ${e.message}`;
      // A request refused for what it is fails the same way every time: no retry.
      throw failsEveryTime(e) ? new UnrecoverableError(reason) : new Error(reason);
    }
  };

  const makeWorker = () => {
    const w = new Worker<BatchJobData, ItemOutput>(ITEM_QUEUE, processItem, {
      connection: redis,
      prefix: opts.prefix,
      concurrency: opts.concurrency ?? 1,
      lockDuration: opts.lockMs ?? 30_000,
      stalledInterval: opts.stalledIntervalMs ?? 30_000,
      maxStalledCount: opts.maxStalledCount ?? 2,
      autorun: false,
    });
    w.on("failed", (job, err) => {
      if (!job) return;
      const final = job.finishedOn !== undefined;
      log(`batch item ${job.id} ${final ? "failed" : `attempt ${job.attemptsMade} failed, retrying`}: ${err.message}`);
    });
    // Connection errors: one line per outage (redis-outage.ts); anything else as it comes.
    w.on("error", (err) => (outage.translate(err) === err ? log(`batch consumer error: ${err.message}`) : undefined));
    return w;
  };
  let worker: Worker<BatchJobData, ItemOutput> | undefined;
  let closing = false;
  const start = async () => {
    if (closing) return;
    const w = makeWorker();
    worker = w;
    void w.run().catch((err: unknown) => log(`batch consumer stopped: ${(err as Error).message}`));
    await w.waitUntilReady();
    log(`batch consumer: queue ${opts.prefix}:${ITEM_QUEUE} on ${where}, concurrency ${opts.concurrency ?? 1}`);
  };
  if (redis.status === "ready") await start();
  else {
    // Redis down at start: BullMQ's worker (and the blocking connection it duplicates) is made once
    // ioredis has reconnected; starting the process does not wait for it.
    redis.once("ready", () => void start().catch((err: unknown) => log(`batch consumer: ${(err as Error).message}`)));
  }
  return {
    get worker() {
      return worker;
    },
    close: async () => {
      closing = true;
      await worker?.close();
      await redis.quit().catch(() => redis.disconnect());
    },
  };
}
