/**
 * Runs the PassageIndex contract (`passage-index.case.ts`) on every implementation: LanceDB (a
 * temporary BM25 index), Upstash Vector through the thin fake of its REST API, and the pool index
 * over a real gpu-worker (`startWorker`, the prepared model, `POST /v1/retrieve` on the LanceDB
 * index). Needs `nestlm setup` (model) for the pool subject.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { buildLanceIndex, openLanceIndex } from "@nest/corpus/lancedb-index";
import { createUpstashIndex, upsertPassages, upstashClient } from "@nest/edge/retrieve/upstash-index";
import { createPoolIndex } from "@nest/edge/retrieve/pool-index";
import { startWorker } from "@nest/gpu-worker/server";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { startFakeUpstash } from "../fixtures/fake-upstash.ts";
import { CONTRACT_CORPUS, CONTRACT_PASSAGES, passageIndexContract } from "./passage-index.case.ts";

async function lanceDir(): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "nest-contract-lance-"));
  await buildLanceIndex(dir, CONTRACT_PASSAGES);
  return dir;
}

passageIndexContract("LanceDB", async () => {
  const dir = await lanceDir();
  const index = await openLanceIndex(dir, CONTRACT_CORPUS);
  return {
    index,
    close: async () => {
      index.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});

passageIndexContract("Upstash Vector (fake REST API)", async () => {
  const fake = await startFakeUpstash();
  await upsertPassages(upstashClient({ url: fake.url, token: fake.token }), CONTRACT_CORPUS, [...CONTRACT_PASSAGES]);
  return { index: createUpstashIndex({ url: fake.url, token: fake.token, corpus: CONTRACT_CORPUS }), close: () => fake.close() };
});

passageIndexContract("pool index → gpu-worker /v1/retrieve", async () => {
  const dir = await lanceDir();
  const worker = await startWorker({ port: 0, modelDir: await findModelDir(), corpusDirs: { [CONTRACT_CORPUS]: dir } });
  return {
    index: createPoolIndex(worker.url, CONTRACT_CORPUS),
    close: async () => {
      await worker.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
