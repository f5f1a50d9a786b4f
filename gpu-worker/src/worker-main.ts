/**
 * @module worker-main
 * The gpu-worker HTTP pool as a process of its own (the container image's default command;
 * `nestlm serve` embeds the same server next to the edge instead):
 *
 *   node --import tsx gpu-worker/src/worker-main.ts
 *
 * Configuration, from the environment, parsed once at start (`@nest/shared/config/node-env`, where
 * each variable's default and meaning live; a malformed one exits 1 naming it): the `worker` slice
 * (`NEST_WORKER_HOST`, `NEST_WORKER_PORT`, `NEST_POOL_SECRET`, required unless
 * `NEST_ALLOW_UNSIGNED=1`, `NEST_BATCH_CONSUME`, `NEST_MODEL_DIR`, `NEST_WARMUP`), the `batch` slice
 * (`NEST_REDIS_URL` turns on the batch job API `/v1/batches`; `NEST_BATCH_PREFIX`), `NEST_THREADS`
 * of the `runtime` slice and `NEST_FUSION`; the inference thread reads the `runtime` and `encode`
 * slices. Corpora: every one prepared in `$NEST_HOME/corpora`.
 *
 * Lifecycle: load the model, listen, run one warm-up generation through its own `/v1/decode`
 * (signed like the edge's calls), then `/readyz` answers 200 and `gpu-worker ready` is printed on
 * stdout. SIGTERM/SIGINT: `/readyz` answers 503, the listener closes, running and queued streams
 * finish, exit 0; a second signal exits 1 at once; an uncaught error drains the same way and
 * exits 1 ({@link drainOnSignals}). Exit 1 on a start-up failure, reason on stderr.
 */
import { pathToFileURL } from "node:url";
import { nodeEnv, type WorkerEnv } from "@nest/shared/config/node-env";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, newNonce, signRequest } from "@nest/shared/protocol/hmac";
import { listCorpora } from "@nest/corpus/layout";
import { nestHome } from "@nest/corpus/home";
import { findModelDir } from "./runtime/prepare-model.ts";
import { startWorker } from "./server.ts";
import { consumerTimingFromEnv } from "./batch/config.ts";
import { WorkerMetrics, queueDepthSource, type QueueDepthSource } from "./metrics.ts";
import { Readiness, drainOnSignals } from "./ops.ts";

/**
 * The pool's HMAC secret: a worker process refuses to start open unless asked to.
 * @throws Error when `NEST_POOL_SECRET` is unset and `NEST_ALLOW_UNSIGNED` is not `1`
 */
export function poolSecret(env: WorkerEnv): string | undefined {
  if (env.NEST_POOL_SECRET === undefined && !env.NEST_ALLOW_UNSIGNED) {
    throw new Error("NEST_POOL_SECRET is required (the edge's HMAC secret); NEST_ALLOW_UNSIGNED=1 runs an open pool (tests only)");
  }
  return env.NEST_POOL_SECRET;
}

const err = (line: string) => process.stderr.write(`${line}\n`);

/**
 * One short generation (mode `base`, 2 tokens) through the pool's own `/v1/decode`: the ONNX
 * session's first run allocates its buffers, so the first real request is not the slow one.
 * @throws Error when the answer is not a stream ending in `done`
 */
export async function warmUp(url: string, secret: string | undefined): Promise<void> {
  const body = JSON.stringify({ request: GenerateRequestSchema.parse({ prompt: "Hello", mode: "base", max_new_tokens: 2 }), passages: [] });
  const headers: Record<string, string> = { "content-type": "application/json" };
  if (secret) {
    const ts = Math.floor(Date.now() / 1000);
    const nonce = newNonce();
    headers[TIMESTAMP_HEADER] = String(ts);
    headers[NONCE_HEADER] = nonce;
    headers[SIGNATURE_HEADER] = await signRequest(secret, ts, "POST", "/v1/decode", body, nonce);
  }
  const res = await fetch(`${url}/v1/decode`, { method: "POST", headers, body });
  const text = await res.text();
  if (!res.ok || !/^event: done$/m.test(text)) throw new Error(`warm-up generation failed: HTTP ${res.status} ${text.slice(0, 300)}`);
}

async function main(): Promise<void> {
  // An empty variable counts as unset (e.g. `NEST_REDIS_URL=` in a manifest).
  const env = nodeEnv(process.env);
  const { worker: w, batch: b } = env;
  const secret = poolSecret(w);
  const home = nestHome(env.home);
  const depth: QueueDepthSource | undefined = b.NEST_REDIS_URL ? queueDepthSource(b.NEST_REDIS_URL, b.NEST_BATCH_PREFIX) : undefined;
  const metrics = new WorkerMetrics({ queueDepth: depth });
  const readiness = new Readiness();
  const worker = await startWorker({
    port: w.NEST_WORKER_PORT,
    host: w.NEST_WORKER_HOST,
    modelDir: w.NEST_MODEL_DIR ?? (await findModelDir(home, env.runtime.NEST_PRECISION)),
    corpusDirs: await listCorpora(home),
    threads: env.runtime.NEST_THREADS,
    fusion: env.corpus.NEST_FUSION,
    secret,
    batch: b.NEST_REDIS_URL
      ? { redisUrl: b.NEST_REDIS_URL, prefix: b.NEST_BATCH_PREFIX, ...consumerTimingFromEnv(b), consume: w.NEST_BATCH_CONSUME, log: err }
      : undefined,
    metrics,
    readiness,
    log: err,
  });

  drainOnSignals(
    "gpu-worker",
    "running and queued streams finish, no new connections",
    async () => {
      await worker.close();
      await depth?.close();
    },
    err,
  );

  const self = worker.url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:");
  if (w.NEST_WARMUP) await warmUp(self, secret);
  metrics.registry.resetMetrics(); // counters start at ready: the warm-up is not traffic
  readiness.markReady();
  process.stdout.write(`gpu-worker ready ${worker.url} pid=${process.pid}\n`);
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  main().catch((e: unknown) => {
    err(`gpu-worker: ${e instanceof Error ? e.message : String(e)}`);
    process.exit(1);
  });
}
