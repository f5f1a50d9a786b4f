/**
 * @module stack
 * The embedded default stack: the edge on Node in this process and the gpu-worker HTTP server in a
 * supervised child process (restarted when it dies: supervisor.ts), with the model and corpus
 * prepared by `nestlm setup` (design README §2).
 */
import { startEdge } from "@nest/edge/adapters/node/server";
import { superviseWorker } from "./supervisor.ts";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { DEFAULT_CORPUS, findCorpusDir, listCorpora } from "@nest/corpus/layout";
import { randomBytes } from "node:crypto";
import { join } from "node:path";
import { batchConfigFromEnv, consumerTimingFromEnv } from "@nest/gpu-worker/batch/config";
import { nodeEnv, type NodeEnv } from "@nest/shared/config/node-env";

export { DEFAULT_CORPUS };

export interface StackOptions {
  home: string;
  /** Edge port (0 = any free port). */
  port: number;
  /** gpu-worker port (0 = any free port); the worker always binds 127.0.0.1. */
  workerPort: number;
  /** Interface the edge binds. */
  host: string;
  /** Hex SHA-256 hashes of keys with every scope and no limits (the generated serve key). */
  apiKeyHashes: string[];
  /** Edge → worker HMAC secret; default `NEST_POOL_SECRET`, else a fresh random one per start. */
  poolSecret?: string;
  /**
   * The parsed environment (`stack`: pool secret, FAQ TTL; `batch`: Redis, prefix, consumer
   * timing; `corpus`: fusion). @defaultValue `nodeEnv(process.env)`, parsed at this start (the
   * worker child's inference thread parses its copy of the environment for the decoder and the
   * passage encoder: `runtime`, `encode`)
   */
  env?: NodeEnv;
  log?: (line: string) => void;
}

export interface Stack {
  edgeUrl: string;
  workerUrl: string;
  modelDir: string;
  corpusDirs: Record<string, string>;
  /** Process id of the gpu-worker child running now (undefined while it restarts). */
  workerPid(): number | undefined;
  /** Stops the edge, then the worker (SIGTERM: running batch items drain). */
  close(): Promise<void>;
}

/**
 * Starts the supervised worker, then the edge. Resolves once both listen.
 * @throws RangeError naming a malformed environment variable; NestError `model_not_prepared`
 *   (model) or `not_found` (corpus) when `nestlm setup` has not run; listen errors.
 */
export async function startStack(opts: StackOptions): Promise<Stack> {
  const env = opts.env ?? nodeEnv(process.env);
  const modelDir = await findModelDir(opts.home, env.runtime.NEST_PRECISION);
  // The default corpus must be prepared; corpora added by `nestlm ingest` are discovered in $NEST_HOME/corpora.
  const corpusDirs = { ...(await listCorpora(opts.home)), [DEFAULT_CORPUS]: await findCorpusDir(DEFAULT_CORPUS, opts.home) };
  const secret = opts.poolSecret ?? env.stack.NEST_POOL_SECRET ?? randomBytes(32).toString("base64url");
  const batch = batchConfigFromEnv(env.batch);
  const fusion = env.corpus.NEST_FUSION;
  const worker = await superviseWorker(
    {
      secret,
      port: opts.workerPort,
      host: "127.0.0.1",
      modelDir,
      corpusDirs,
      fusion,
      batch: { ...batch, ...consumerTimingFromEnv(env.batch) },
    },
    opts.log,
  );
  try {
    const edge = await startEdge({
      port: opts.port,
      host: opts.host,
      poolUrl: worker.url,
      corpusDirs,
      fusion,
      apiKeyHashes: opts.apiKeyHashes,
      poolSecret: secret,
      keysFile: join(opts.home, "keys.json"),
      redisUrl: batch.redisUrl,
      faqTtlS: env.stack.NEST_FAQ_TTL_S,
      log: opts.log,
    });
    return {
      edgeUrl: edge.url,
      workerUrl: worker.url,
      modelDir,
      corpusDirs,
      workerPid: worker.pid,
      close: async () => {
        try {
          await edge.close();
        } finally {
          await worker.close();
        }
      },
    };
  } catch (err) {
    await worker.close();
    throw err;
  }
}
