/**
 * Vitest global setup of the workerd run (Node side): starts the real gpu-worker (model and corpus
 * as prepared by `nestlm setup`, HMAC secret on) on 127.0.0.1 so the Worker under test, inside
 * workerd, routes to a real pool. Provides `poolUrl`, `poolSecret` (fresh per run) and
 * `corpusVersions` (JSON `{factbook: <version>}`) to the config's binding function.
 */
import { randomBytes } from "node:crypto";
import type { TestProject } from "vitest/node";
import { startWorker } from "@nest/gpu-worker/server";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { DEFAULT_CORPUS, findCorpusDir } from "@nest/corpus/layout";
import { corpusVersion } from "@nest/edge/adapters/node/server";

declare module "vitest" {
  export interface ProvidedContext {
    poolUrl: string;
    poolSecret: string;
    corpusVersions: string;
  }
}

export default async function setup(project: TestProject): Promise<() => Promise<void>> {
  const secret = randomBytes(24).toString("base64url");
  const corpusDirs = { [DEFAULT_CORPUS]: await findCorpusDir(DEFAULT_CORPUS) };
  const worker = await startWorker({ port: 0, host: "127.0.0.1", modelDir: await findModelDir(), corpusDirs, secret });
  project.provide("poolUrl", worker.url);
  project.provide("poolSecret", secret);
  project.provide("corpusVersions", JSON.stringify({ [DEFAULT_CORPUS]: corpusVersion(corpusDirs, DEFAULT_CORPUS) }));
  return () => worker.close();
}
