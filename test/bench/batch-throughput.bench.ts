/**
 * Batch throughput (issue 6): requests/min through BullMQ on the local Redis, consumer in this
 * process, at consumer concurrency 1 and 2 (and 2 with two inference hosts). Not a test.
 *
 *   node --import tsx test/bench/batch-throughput.bench.ts [--items 20] [--mode nest] [--max-new-tokens 16] [--passages 8]
 *
 * Each configuration gets a fresh random key prefix (deleted afterwards), a one-item warm-up, then
 * `items` requests ("What is the capital of <country>?") submitted at once; the time is from
 * submission until the batch is `completed`. The 1-minute load average is printed beside each figure:
 * on a shared machine it explains most of the spread between runs.
 */
import { parseArgs } from "node:util";
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { Redis } from "ioredis";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { findCorpusDir } from "@nest/corpus/layout";
import { BatchQueue } from "@nest/gpu-worker/batch/batch-queue";
import { startBatchConsumer } from "@nest/gpu-worker/batch/consumer";
import { DecoderPool } from "@nest/gpu-worker/batch/decoder-pool";
import { parseBatchBody } from "@nest/gpu-worker/batch/protocol";
import { DEFAULT_REDIS_URL } from "@nest/gpu-worker/batch/config";
import { COUNTRIES } from "./countries.ts";

const { values } = parseArgs({
  options: {
    items: { type: "string", default: "20" },
    mode: { type: "string", default: "nest" },
    "max-new-tokens": { type: "string", default: "16" },
    passages: { type: "string", default: "8" },
  },
});
const numItems = Number(values.items);
const redisUrl = process.env.NEST_REDIS_URL || DEFAULT_REDIS_URL;
const modelDir = await findModelDir();
const corpusDir = await findCorpusDir("factbook");
const index = await openLanceIndex(corpusDir, "factbook");
const indexFor = async (c: string) => (c === "factbook" ? index : undefined);

function body(n: number, offset: number): string {
  return Array.from({ length: n }, (_, i) =>
    JSON.stringify({
      custom_id: `q${i}`,
      prompt: `What is the capital of ${COUNTRIES[(i + offset) % COUNTRIES.length]}?`,
      mode: values.mode,
      max_new_tokens: Number(values["max-new-tokens"]),
      passages: Number(values.passages),
    }),
  ).join("\n");
}

async function waitDone(queue: BatchQueue, id: string): Promise<void> {
  for (;;) {
    const s = await queue.status(id);
    if (s.status === "completed") {
      if (s.counts.failed > 0) throw new Error(`${s.counts.failed} items failed`);
      return;
    }
    await new Promise((r) => setTimeout(r, 100));
  }
}

async function run(concurrency: number, hosts: number): Promise<number> {
  const prefix = `nest-bench-${randomBytes(4).toString("hex")}`;
  const decoder = await DecoderPool.start(modelDir, hosts, hosts > 1 ? 1 : 0);
  const queue = await BatchQueue.open({ redisUrl, prefix });
  const consumer = await startBatchConsumer({ redisUrl, prefix, decoder, indexFor, concurrency });
  try {
    const warm = await queue.submit(parseBatchBody(body(hosts, 7)));
    await waitDone(queue, warm.id);
    const t0 = performance.now();
    const batch = await queue.submit(parseBatchBody(body(numItems, 0)));
    await waitDone(queue, batch.id);
    const s = (performance.now() - t0) / 1000;
    return (numItems / s) * 60;
  } finally {
    await consumer.close();
    await queue.close();
    await decoder.close();
    const redis = new Redis(redisUrl);
    const keys = await redis.keys(`${prefix}:*`);
    if (keys.length) await redis.del(...keys);
    await redis.quit();
  }
}

console.log(
  `batch throughput: ${numItems} items, mode ${values.mode}, max_new_tokens ${values["max-new-tokens"]}, passages ${values.passages}`,
);
for (const [concurrency, hosts] of [
  [1, 1],
  [2, 1],
  [2, 2],
] as const) {
  const rpm = await run(concurrency, hosts);
  console.log(
    `concurrency ${concurrency}, ${hosts} inference host${hosts > 1 ? "s (1 thread each)" : ""}: ${rpm.toFixed(1)} requests/min` +
      ` (load average ${loadavg()[0]!.toFixed(1)} on ${cpus().length} cores)`,
  );
}
await index.close?.();
