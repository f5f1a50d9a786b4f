/**
 * Batch item retries by error class, on the real Redis (127.0.0.1:6379, or NEST_REDIS_URL) with a
 * random key prefix, deleted afterwards, and the real consumer (`startBatchConsumer`, as `nestlm
 * serve` runs it in process) over a real inference host and the real factbook index. A transient
 * failure (the host's inference thread is down: `internal`) keeps its exponential-backoff retries;
 * a deterministic one (`not_found`: a corpus this consumer lacks) fails after one attempt.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Queue } from "bullmq";
import { Redis } from "ioredis";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import { findCorpusDir } from "@nest/corpus/layout";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { InferenceHost } from "@nest/gpu-worker/engine/inference-host";
import { BatchQueue } from "@nest/gpu-worker/batch/batch-queue";
import { startBatchConsumer, type BatchConsumer } from "@nest/gpu-worker/batch/consumer";
import { ITEM_QUEUE } from "@nest/gpu-worker/batch/config";
import type { BatchResultLine, BatchStatus } from "@nest/gpu-worker/batch/protocol";
import { deletePrefixKeys } from "./redis-cleanup.ts";

const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const PREFIX = `nest-test-retry-${randomBytes(4).toString("hex")}`;
const BACKOFF_MS = 300;

let redis: Redis;
let bull: Queue;
let queue: BatchQueue;
let index: PassageIndex;
let consumer: BatchConsumer;

async function until(id: string, pred: (s: BatchStatus) => boolean, timeoutMs = 60_000): Promise<BatchStatus> {
  const t0 = Date.now();
  for (;;) {
    const s = await queue.status(id);
    if (pred(s)) return s;
    if (Date.now() - t0 > timeoutMs) throw new Error(`timed out; last status ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function results(id: string): Promise<BatchResultLine[]> {
  const lines: BatchResultLine[] = [];
  for await (const l of queue.results(id)) lines.push(l);
  return lines;
}

beforeAll(async () => {
  const modelDir = await prepareModel({ log: () => {} });
  await prepareCorpus({ log: () => {} });
  index = await openLanceIndex(await findCorpusDir("factbook"), "factbook");
  // An inference host whose thread is gone: every run fails with `internal` (a passing failure: another
  // consumer, or this one restarted, would serve it).
  const host = await InferenceHost.start({ modelDir });
  await host.close();
  redis = new Redis(REDIS_URL);
  bull = new Queue(ITEM_QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
  queue = await BatchQueue.open({ redisUrl: REDIS_URL, prefix: PREFIX, attempts: 3, backoffMs: BACKOFF_MS });
  consumer = await startBatchConsumer({
    redisUrl: REDIS_URL,
    prefix: PREFIX,
    decoder: host,
    indexFor: async (corpus) => (corpus === "factbook" ? index : undefined),
    concurrency: 2,
  });
}, 120_000);

afterAll(async () => {
  await consumer?.close();
  await queue?.close();
  await bull?.close();
  await index?.close?.();
  if (redis) {
    await deletePrefixKeys(redis, PREFIX);
    await redis.quit();
  }
});

describe("batch item retries by error class", () => {
  it("retries a transient failure with exponential backoff and fails a deterministic one at once", async () => {
    const request = (o: object) =>
      GenerateRequestSchema.parse({ prompt: "What is the capital of Peru?", mode: "base", max_new_tokens: 4, ...o });
    const sub = await queue.submit([
      { index: 0, custom_id: "transient", request: request({}) },
      { index: 1, custom_id: "deterministic", request: request({ corpus: "no-such-corpus" }) },
    ]);
    const end = await until(sub.id, (s) => s.status === "completed");
    expect(end.counts).toEqual({ queued: 0, running: 0, done: 0, failed: 2, canceled: 0 });
    const [transient, deterministic] = await results(sub.id);
    expect(transient).toEqual({
      index: 0,
      custom_id: "transient",
      status: "failed",
      attempts: 3,
      error: { code: "internal", message: "inference thread is down: closed" },
    });
    expect(deterministic).toEqual({
      index: 1,
      custom_id: "deterministic",
      status: "failed",
      attempts: 1,
      error: { code: "not_found", message: "unknown corpus `no-such-corpus`" },
    });
    // Exponential backoff: the retries waited 300 then 600 ms; the deterministic failure none.
    const [t, d] = await Promise.all([bull.getJob(`${sub.id}-0`), bull.getJob(`${sub.id}-1`)]);
    expect(t!.finishedOn! - t!.timestamp).toBeGreaterThanOrEqual(3 * BACKOFF_MS);
    expect(d!.attemptsMade).toBe(1);
    expect(d!.finishedOn! - d!.timestamp).toBeLessThan(BACKOFF_MS);
  }, 60_000);
});
