/**
 * `nestlm ingest` → the embedded stack (issue 4): a small folder written here is ingested into a
 * temporary `NEST_HOME` (hybrid index: BM25 + all-MiniLM-L6-v2), `startStack` discovers it, and
 * `POST /v1/generate {corpus: "garden"}` retrieves from it and decodes over it. The request field
 * `fusion` reaches the index through the edge and through the pool's `/v1/retrieve`.
 *
 * The model, the embedder and the factbook index come from the real cache (prepared here if
 * needed) through symlinks; the batch consumer of the stack uses a random Redis key prefix,
 * deleted afterwards.
 */
import { mkdir, mkdtemp, rm, symlink, writeFile } from "node:fs/promises";
import { randomBytes } from "node:crypto";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { Redis } from "ioredis";
import type { RetrievalEvent } from "@nest/shared/protocol/events";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { createPoolIndex } from "@nest/edge/retrieve/pool-index";
import { signedFetch } from "@nest/edge/route/signed-fetch";
import { cachePaths, nestHome } from "@nest/corpus/home";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareEmbedder } from "@nest/corpus/prepare-embedder";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import { ingest, type IngestSummary } from "@nest/cli/ingest";
import { startStack, type Stack } from "@nest/cli/stack";
import { readFolder } from "@nest/corpus/sources";

const KEY = "ingest-e2e-key";
const SECRET = "ingest-e2e-pool-secret";
const PREFIX = `nest-test-${randomBytes(4).toString("hex")}`;
/** BM25 ranks Soil 3rd, dense ranks it 1st: RRF puts it first, the adaptive weighting puts slugs first. */
const CRAFTED = "keep the soil from drying";
const quiet = { log: () => {}, progress: { start() {}, update() {}, stop() {} } };

const DOCS: Record<string, string> = {
  "tomato.md": "# Tomatoes\n\nTomatoes need full sun and regular watering. Stake the plants so the fruit stays off the soil.\n",
  "frost.md": "# Frost\n\nCover tender seedlings with fleece when a cold night is forecast; frost kills young leaves.\n",
  "compost.txt": "Compost is made from kitchen scraps, grass clippings and dry leaves, turned every few weeks.\n",
  "bees.md": "# Bees\n\nBees pollinate fruit trees. Plant lavender and clover to attract them to the garden.\n",
  "slugs.txt": "Slugs eat lettuce at night. Beer traps and copper tape keep them away from the beds.\n",
  "pruning.md": "# Pruning\n\nPrune apple trees in late winter, removing crossing branches and dead wood.\n",
  "watering.md": "# Watering\n\nWater deeply in the early morning so roots grow down and leaves dry before evening.\n",
  "soil.html":
    "<html><head><title>Soil</title></head><body><p>Clay soil holds water; sandy soil drains quickly. Add organic matter to both.</p></body></html>",
};

let home: string;
let src: string;
let summary: IngestSummary;
let stack: Stack;

async function generate(body: Record<string, unknown>): Promise<Response> {
  return fetch(`${stack.edgeUrl}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify(body),
  });
}

beforeAll(async () => {
  const log = () => {};
  await prepareModel({ log });
  await prepareEmbedder({ log });
  await prepareCorpus({ log });
  const real = cachePaths(nestHome());
  home = await mkdtemp(join(tmpdir(), "nest-ingest-e2e-"));
  await symlink(real.models, join(home, "models"));
  await mkdir(join(home, "corpora"), { recursive: true });
  await symlink(join(real.corpora, "factbook"), join(home, "corpora", "factbook"));
  src = join(home, "garden");
  await mkdir(src);
  for (const [name, text] of Object.entries(DOCS)) await writeFile(join(src, name), text);
  summary = await ingest({ source: src, target: "local", home, ...quiet });
  process.env.NEST_BATCH_PREFIX = PREFIX;
  stack = await startStack({ home, port: 0, workerPort: 0, host: "127.0.0.1", apiKeyHashes: [await sha256Hex(KEY)], poolSecret: SECRET });
});

afterAll(async () => {
  await stack?.close();
  const redis = new Redis(process.env.NEST_REDIS_URL || "redis://127.0.0.1:6379");
  const keys = await redis.keys(`${PREFIX}:*`);
  if (keys.length) await redis.del(...keys);
  await redis.quit();
  if (home) await rm(home, { recursive: true, force: true });
});

describe("nestlm ingest → POST /v1/generate {corpus}", () => {
  it("ingests the folder as corpus `garden` (one passage per file) and the stack serves it", () => {
    expect(summary).toMatchObject({ target: "local", namespace: "garden", passages: 8, written: 8 });
    expect(stack.corpusDirs.garden).toBe(summary.dir);
    expect(Object.keys(stack.corpusDirs).sort()).toEqual(["factbook", "garden"]);
  });

  it("retrieves from the ingested passages and decodes in nest mode, citing them", async () => {
    const res = await generate({
      prompt: "How do I keep slugs away from lettuce?",
      corpus: "garden",
      mode: "nest",
      passages: 8,
      max_new_tokens: 16,
    });
    expect(res.status).toBe(200);
    const out = (await res.json()) as {
      retrieval: RetrievalEvent;
      deltas: Array<{ citation?: { passage_id: string } }>;
      done: { mode: string };
    };
    const ids = new Set((await readFolder(src)).map((p) => p.id));
    expect(out.retrieval.corpus).toBe("garden");
    expect(out.retrieval.passages).toHaveLength(8);
    expect(out.retrieval.passages[0]).toMatchObject({ title: "slugs", rank: 1 });
    for (const p of out.retrieval.passages) expect(ids.has(p.id)).toBe(true);
    for (const d of out.deltas) if (d.citation) expect(ids.has(d.citation.passage_id)).toBe(true);
    expect(out.done.mode).toBe("nest");
  });

  it("`fusion` picks the fusion of the hybrid index: rrf and adaptive rank the crafted query differently", async () => {
    const index = await openLanceIndex(summary.dir!, "garden");
    try {
      expect(index.hybrid).toBe(true);
      // BM25 order: slugs, compost, Soil, …; dense order: Soil, Watering, … (checked below)
      expect((await index.search(CRAFTED, 3, { fusion: "bm25" })).map((p) => p.title)).toEqual(["slugs", "compost", "Soil"]);
      expect((await index.search(CRAFTED, 2, { fusion: "dense" })).map((p) => p.title)).toEqual(["Soil", "Watering"]);
      const byFusion: Record<string, string[]> = {};
      for (const fusion of ["rrf", "adaptive"] as const) {
        const res = await generate({ prompt: CRAFTED, corpus: "garden", mode: "rag", passages: 8, max_new_tokens: 2, fusion });
        expect(res.status).toBe(200);
        const got = ((await res.json()) as { retrieval: RetrievalEvent }).retrieval.passages;
        const direct = await index.search(CRAFTED, 8, { fusion });
        expect(got.map((p) => p.id)).toEqual(direct.map((p) => p.id));
        byFusion[fusion] = got.map((p) => p.title);
        if (fusion === "rrf") expect(got[0]!.score).toBeCloseTo(1 / 61 + 1 / 63, 12); // dense rank 1, BM25 rank 3
      }
      expect(byFusion.rrf![0]).toBe("Soil");
      expect(byFusion.adaptive![0]).toBe("slugs");
    } finally {
      index.close();
    }
  });

  it("the pool's /v1/retrieve takes `fusion` too (pool-backed index)", async () => {
    const pool = createPoolIndex(stack.workerUrl, "garden", signedFetch(SECRET));
    expect((await pool.search(CRAFTED, 3, { fusion: "rrf" }))[0]!.title).toBe("Soil");
    expect((await pool.search(CRAFTED, 3, { fusion: "adaptive" }))[0]!.title).toBe("slugs");
    expect((await pool.search(CRAFTED, 3, { fusion: "bm25" })).map((p) => p.title)).toEqual(["slugs", "compost", "Soil"]);
  });

  it("an unknown fusion is a 400 naming the field", async () => {
    const res = await generate({ prompt: CRAFTED, corpus: "garden", fusion: "dbsf" });
    expect(res.status).toBe(400);
    const body = (await res.json()) as { error: { code: string; message: string } };
    expect(body.error.code).toBe("invalid_request");
    expect(body.error.message).toContain("fusion");
  });

  it("`fusion` on the factbook: ignored by the default BM25-only index, used by a hybrid one", async () => {
    const q = "What is the capital of Australia?";
    const res = await generate({ prompt: q, mode: "rag", passages: 5, max_new_tokens: 2, fusion: "adaptive" });
    expect(res.status).toBe(200);
    const got = ((await res.json()) as { retrieval: RetrievalEvent }).retrieval.passages.map((p) => p.id);
    const index = await openLanceIndex(stack.corpusDirs.factbook!, "factbook");
    try {
      expect(got).toEqual((await index.search(q, 5, { fusion: "adaptive" })).map((p) => p.id));
      if (!index.hybrid) expect(got).toEqual((await index.search(q, 5)).map((p) => p.id));
    } finally {
      index.close();
    }
  });
});
