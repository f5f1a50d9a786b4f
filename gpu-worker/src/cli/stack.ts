/**
 * @module cli/stack
 * The embedded default stack in one process: the gpu-worker HTTP server and the edge on Node, with
 * the model and corpus prepared by `nestlm setup` (design README §2).
 */
import { startEdge } from "@nest/edge/adapters/node/server";
import { startWorker } from "../server.ts";
import { findModelDir } from "./prepare-model.ts";
import { DEFAULT_CORPUS, findCorpusDir } from "../corpus/prepare-corpus.ts";
import { batchConfigFromEnv } from "../batch/config.ts";

export { DEFAULT_CORPUS };

export interface StackOptions {
  home: string;
  /** Edge port (0 = any free port). */
  port: number;
  /** gpu-worker port (0 = any free port); the worker always binds 127.0.0.1. */
  workerPort: number;
  /** Interface the edge binds. */
  host: string;
  /** Hex SHA-256 hashes of the accepted API keys. */
  apiKeyHashes: string[];
  log?: (line: string) => void;
}

export interface Stack {
  edgeUrl: string;
  workerUrl: string;
  modelDir: string;
  corpusDirs: Record<string, string>;
  /** Stops the edge, then the worker. */
  close(): Promise<void>;
}

/**
 * Starts worker then edge. Resolves once both listen.
 * @throws NestError `model_not_prepared` (model) or `not_found` (corpus) when `nestlm setup` has not
 *   run; listen errors.
 */
export async function startStack(opts: StackOptions): Promise<Stack> {
  const modelDir = await findModelDir(opts.home);
  const corpusDirs = { [DEFAULT_CORPUS]: await findCorpusDir(DEFAULT_CORPUS, opts.home) };
  const worker = await startWorker({
    port: opts.workerPort,
    host: "127.0.0.1",
    modelDir,
    corpusDirs,
    log: opts.log,
    batch: batchConfigFromEnv(),
  });
  try {
    const edge = await startEdge({
      port: opts.port,
      host: opts.host,
      poolUrl: worker.url,
      corpusDirs,
      apiKeyHashes: opts.apiKeyHashes,
      log: opts.log,
    });
    return {
      edgeUrl: edge.url,
      workerUrl: worker.url,
      modelDir,
      corpusDirs,
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
