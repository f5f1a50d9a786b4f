/**
 * @module worker-main
 * The gpu-worker HTTP pool as a process of its own (the container image's default command;
 * `nestlm serve` embeds the same server next to the edge instead):
 *
 *   node --import tsx gpu-worker/src/worker-main.ts
 *
 * Configuration, from the environment (parsed once, {@link WorkerEnvSchema}):
 * `NEST_WORKER_HOST` (default 127.0.0.1; the image sets 0.0.0.0), `NEST_WORKER_PORT` (8788),
 * `NEST_POOL_SECRET` (the edge's HMAC secret, required unless `NEST_ALLOW_UNSIGNED=1`),
 * `NEST_REDIS_URL` (turns on the batch job API `/v1/batches`), `NEST_BATCH_PREFIX` (nest),
 * `NEST_BATCH_CONSUME` (1: also decode batch items here; 0: leave them to the batch consumers),
 * `NEST_MODEL_DIR` (default: the model `nestlm setup` prepared in `$NEST_HOME`), `NEST_THREADS`,
 * `NEST_WARMUP` (1). Corpora: every one prepared in `$NEST_HOME/corpora`.
 *
 * Lifecycle: load the model, listen, run one warm-up generation through its own `/v1/decode`
 * (signed like the edge's calls), then `/readyz` answers 200 and `gpu-worker ready` is printed on
 * stdout. SIGTERM/SIGINT: `/readyz` answers 503, the listener closes, running and queued streams
 * finish, exit 0; a second signal exits 1 at once. Exit 1 on a start-up failure, reason on stderr.
 */
import { pathToFileURL } from "node:url";
import { z } from "zod";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { NONCE_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, newNonce, signRequest } from "@nest/shared/protocol/hmac";
import { listCorpora } from "@nest/corpus/layout";
import { findModelDir } from "./runtime/prepare-model.ts";
import { startWorker } from "./server.ts";
import { WorkerMetrics, queueDepthSource, type QueueDepthSource } from "./metrics.ts";
import { Readiness } from "./ops.ts";

const flag = z.enum(["0", "1"]).transform((v) => v === "1");

/** The environment of a worker process. */
export const WorkerEnvSchema = z.object({
  NEST_WORKER_HOST: z.string().min(1).default("127.0.0.1"),
  NEST_WORKER_PORT: z.coerce.number().int().min(0).max(65535).default(8788),
  NEST_POOL_SECRET: z.string().min(16, "NEST_POOL_SECRET must be at least 16 characters").optional(),
  NEST_ALLOW_UNSIGNED: flag.default(false),
  NEST_REDIS_URL: z.string().regex(/^rediss?:\/\//, "NEST_REDIS_URL must be a redis:// or rediss:// URL").optional(),
  NEST_BATCH_PREFIX: z.string().min(1).default("nest"),
  NEST_BATCH_CONSUME: flag.default(true),
  NEST_MODEL_DIR: z.string().min(1).optional(),
  NEST_THREADS: z.coerce.number().int().min(0).max(256).default(0),
  NEST_WARMUP: flag.default(true),
}).refine((e) => e.NEST_POOL_SECRET !== undefined || e.NEST_ALLOW_UNSIGNED, {
  message: "NEST_POOL_SECRET is required (the edge's HMAC secret); NEST_ALLOW_UNSIGNED=1 runs an open pool (tests only)",
  path: ["NEST_POOL_SECRET"],
});
export type WorkerEnv = z.infer<typeof WorkerEnvSchema>;

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
  const parsed = WorkerEnvSchema.safeParse(Object.fromEntries(Object.entries(process.env).filter(([, v]) => v !== "")));
  if (!parsed.success) throw new Error(parsed.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; "));
  const env = parsed.data;
  const depth: QueueDepthSource | undefined = env.NEST_REDIS_URL ? queueDepthSource(env.NEST_REDIS_URL, env.NEST_BATCH_PREFIX) : undefined;
  const metrics = new WorkerMetrics({ queueDepth: depth });
  const readiness = new Readiness();
  const worker = await startWorker({
    port: env.NEST_WORKER_PORT,
    host: env.NEST_WORKER_HOST,
    modelDir: env.NEST_MODEL_DIR ?? (await findModelDir()),
    corpusDirs: await listCorpora(),
    threads: env.NEST_THREADS,
    secret: env.NEST_POOL_SECRET,
    batch: env.NEST_REDIS_URL ? { redisUrl: env.NEST_REDIS_URL, prefix: env.NEST_BATCH_PREFIX, consume: env.NEST_BATCH_CONSUME, log: err } : undefined,
    metrics,
    readiness,
    log: err,
  });

  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) {
      err(`${signal} again: exiting without draining`);
      process.exit(1);
    }
    stopping = true;
    err(`${signal}: draining (running and queued streams finish, no new connections)`);
    worker.close()
      .then(() => depth?.close())
      .then(() => {
        err("gpu-worker stopped");
        process.exit(0);
      }, (e: unknown) => {
        err(`gpu-worker: ${(e as Error).message}`);
        process.exit(1);
      });
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));

  const self = worker.url.replace("://0.0.0.0:", "://127.0.0.1:").replace("://[::]:", "://[::1]:");
  if (env.NEST_WARMUP) await warmUp(self, env.NEST_POOL_SECRET);
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
