/**
 * Issue 14 §3, the mechanism: a batch item refused with `at_capacity` waits in BullMQ's delayed set
 * and runs again later **without spending an attempt**. Real Redis (random prefix), real model: one
 * inference host that takes two jobs at once (one decoding, one waiting), and a consumer running
 * three items at once, so the third is refused for capacity, again and again.
 */
import { randomBytes } from "node:crypto";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Queue } from "bullmq";
import { InferenceHost } from "@nest/gpu-worker/engine/inference-host";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { BatchQueue } from "@nest/gpu-worker/batch/batch-queue";
import { startBatchConsumer, type BatchConsumer } from "@nest/gpu-worker/batch/consumer";
import { ITEM_QUEUE } from "@nest/gpu-worker/batch/config";
import { parseBatchBody } from "@nest/gpu-worker/batch/protocol";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { findCorpusDir } from "@nest/corpus/layout";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { deletePrefixKeys } from "./redis-cleanup.ts";

const REDIS_URL = process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379";
const PREFIX = `nest-h14cap-${randomBytes(4).toString("hex")}`;
let host: InferenceHost;
let index: PassageIndex;
let queue: BatchQueue;
let consumer: BatchConsumer;
let bull: Queue;
const logs: string[] = [];

beforeAll(async () => {
  host = await InferenceHost.start({ modelDir: await findModelDir(), maxQueued: 1 });
  index = await openLanceIndex(await findCorpusDir("factbook"), "factbook");
  queue = await BatchQueue.open({ redisUrl: REDIS_URL, prefix: PREFIX, attempts: 2, backoffMs: 200 });
  consumer = await startBatchConsumer({
    redisUrl: REDIS_URL,
    prefix: PREFIX,
    decoder: host,
    indexFor: async () => index,
    concurrency: 3,
    log: (l) => logs.push(l),
  });
  bull = new Queue(ITEM_QUEUE, { connection: { url: REDIS_URL }, prefix: PREFIX });
}, 120_000);

afterAll(async () => {
  await consumer?.close();
  await queue?.close();
  await bull?.close();
  await host?.close();
  await index?.close?.();
  await deletePrefixKeys(REDIS_URL, PREFIX);
});

describe("a batch item at capacity", () => {
  it("waits and runs again without spending an attempt", async () => {
    const body = ["Australia", "Brazil", "Nepal", "Canada", "Peru"]
      .map((c, i) => JSON.stringify({ custom_id: `k${i}`, prompt: `What is the capital of ${c}?`, mode: "base", max_new_tokens: 6 }))
      .join("\n");
    const sub = await queue.submit(parseBatchBody(body));
    const t0 = Date.now();
    let status = await queue.status(sub.id);
    while (status.status !== "completed" && Date.now() - t0 < 180_000) {
      await new Promise((r) => setTimeout(r, 500));
      status = await queue.status(sub.id);
    }
    expect(status.counts).toEqual({ queued: 0, running: 0, done: 5, failed: 0, canceled: 0 });
    const jobs = await Promise.all([0, 1, 2, 3, 4].map((i) => bull.getJob(`${sub.id}-${i}`)));
    // Attempts 2 would have let a capacity refusal through once; none was spent.
    expect(jobs.map((j) => j!.attemptsMade)).toEqual([1, 1, 1, 1, 1]);
    // At least one item was refused for capacity and started more than once.
    expect(Math.max(...jobs.map((j) => j!.attemptsStarted))).toBeGreaterThan(1);
    expect(logs.filter((l) => /failed/.test(l))).toEqual([]);
  }, 240_000);
});
