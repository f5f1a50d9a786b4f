/**
 * @module batch/consumer-main
 * A standalone batch consumer process:
 *
 *   node --import tsx gpu-worker/src/batch/consumer-main.ts [--concurrency 1] [--hosts 1] [--threads 0]
 *     [--prefix nest] [--redis-url redis://127.0.0.1:6379] [--lock-ms 30000] [--stalled-interval-ms 30000]
 *     [--max-stalled 2]
 *
 * `--hosts` inference hosts (one model copy and worker thread each, `--threads` onnxruntime threads
 * each) serve `--concurrency` items at once.
 *
 * The environment is parsed once at start (`@nest/shared/config/node-env`; a malformed variable
 * exits 1 naming it): Redis address and prefix default to `NEST_REDIS_URL` / `NEST_BATCH_PREFIX`,
 * else `redis://127.0.0.1:6379` / `nest`; `--lock-ms` / `--stalled-interval-ms` to
 * `NEST_BATCH_LOCK_MS` / `NEST_BATCH_STALLED_INTERVAL_MS` (30000 each); the decoder reads the
 * `runtime` and `encode` variables, indexes `NEST_FUSION`. The model and corpora are the ones
 * `nestlm setup` prepared in `$NEST_HOME`. It checks Redis's eviction policy before loading the model, prints
 * `batch consumer ready` on stdout once consuming, and on SIGTERM/SIGINT drains (running items
 * finish, nothing new starts) and exits 0; a second signal exits 1 at once. Exit code 1 on start-up
 * failure, with the reason on stderr. With `NEST_METRICS_PORT` set, `/healthz`, `/readyz` (ready
 * once consuming) and `/metrics` (`nest_batch_queue_jobs`, decode metrics) answer on that port
 * (`NEST_METRICS_HOST`, default 0.0.0.0).
 */
import { parseArgs } from "node:util";
import { Redis } from "ioredis";
import { nodeEnv } from "@nest/shared/config/node-env";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";
import { nestHome } from "@nest/corpus/home";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { findModelDir } from "../runtime/prepare-model.ts";
import { findCorpusDir } from "@nest/corpus/layout";
import { batchConfigFromEnv, consumerTimingFromEnv } from "./config.ts";
import { assertNoEviction, redactRedisUrl } from "./redis-policy.ts";
import { DecoderPool } from "./decoder-pool.ts";
import { startBatchConsumer } from "./consumer.ts";
import { WorkerMetrics, queueDepthSource } from "../metrics.ts";
import { Readiness, drainOnSignals, serveOps } from "../ops.ts";

const err = (line: string) => process.stderr.write(`${line}\n`);

function positiveInt(name: string, v: string | undefined, dflt: number, min = 1): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be an integer ≥ ${min}, got ${v}`);
  return n;
}

/** Opens local corpus indexes in `home` on first use; a corpus not prepared here is unknown (undefined). */
function corpusIndexes(home: string, fusion: FusionMethod) {
  const open = new Map<string, Promise<PassageIndex>>();
  return {
    indexFor: async (corpus: string): Promise<PassageIndex | undefined> => {
      let p = open.get(corpus);
      if (!p) {
        let dir: string;
        try {
          dir = await findCorpusDir(corpus, home);
        } catch {
          return undefined;
        }
        p = openLanceIndex(dir, corpus, { fusion });
        p.catch(() => open.delete(corpus));
        open.set(corpus, p);
      }
      return p;
    },
    close: async () => {
      for (const r of await Promise.allSettled(open.values())) if (r.status === "fulfilled") await r.value.close?.();
    },
  };
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      "redis-url": { type: "string" },
      prefix: { type: "string" },
      concurrency: { type: "string" },
      hosts: { type: "string" },
      threads: { type: "string" },
      "lock-ms": { type: "string" },
      "stalled-interval-ms": { type: "string" },
      "max-stalled": { type: "string" },
    },
  });
  const env = nodeEnv(process.env);
  const home = nestHome(env.home);
  const queue = batchConfigFromEnv(env.batch);
  const timing = consumerTimingFromEnv(env.batch);
  const redisUrl = values["redis-url"] ?? queue.redisUrl;
  const prefix = values.prefix ?? queue.prefix;
  const concurrency = positiveInt("concurrency", values.concurrency, 1);
  const hosts = positiveInt("hosts", values.hosts, 1);

  // Refuse to start on an evicting Redis before spending seconds on the model.
  const probe = new Redis(redisUrl, { lazyConnect: true, maxRetriesPerRequest: 1 });
  try {
    await probe.connect();
    await assertNoEviction(probe, redactRedisUrl(redisUrl));
  } finally {
    probe.disconnect();
  }

  // Probes and /metrics (queue depth, decode metrics) on NEST_METRICS_PORT, up before the model loads.
  const depth = queueDepthSource(redisUrl, prefix);
  const metrics = new WorkerMetrics({ queueDepth: depth });
  const readiness = new Readiness();
  const { NEST_METRICS_PORT: opsPort, NEST_METRICS_HOST: opsHost } = env.metrics;
  const ops = opsPort !== undefined ? await serveOps(opsPort, opsHost, { metrics, readiness }) : undefined;
  const decoder = await DecoderPool.start(await findModelDir(home), hosts, positiveInt("threads", values.threads, 0, 0));
  const corpora = corpusIndexes(home, env.corpus.NEST_FUSION);
  const consumer = await startBatchConsumer({
    redisUrl,
    prefix,
    decoder: metrics.observed(decoder, "batch"),
    indexFor: corpora.indexFor,
    concurrency,
    lockMs: positiveInt("lock-ms", values["lock-ms"], timing.lockMs),
    stalledIntervalMs: positiveInt("stalled-interval-ms", values["stalled-interval-ms"], timing.stalledIntervalMs),
    maxStalledCount: positiveInt("max-stalled", values["max-stalled"], 2),
    log: err,
  });
  readiness.markReady();
  process.stdout.write(`batch consumer ready pid=${process.pid} model=${decoder.model} hosts=${hosts}\n`);

  drainOnSignals(
    "batch consumer",
    "running items finish, nothing new starts",
    async () => {
      readiness.drain();
      await consumer.close();
      await Promise.all([decoder.close(), corpora.close(), depth.close(), ops?.close()]);
    },
    err,
  );
}

main().catch((e: unknown) => {
  err(`batch consumer: ${e instanceof Error ? e.message : String(e)}`);
  process.exit(1);
});
