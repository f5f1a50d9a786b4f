/**
 * @module test/bench/retrieval-quality
 * Retrieval quality report (docs/retrieval.md): on SQuAD v1.1 dev (`../shared/eval/squad-dev/dev-v1.1.json`,
 * corpus = its 913 paragraphs as passages titled by article, queries = its 4,961 questions... every
 * question counted) recall@1/5/40 of the gold paragraph for BM25, dense, adaptive fusion (spec §1) and RRF.
 * Both retrievers return 200 candidates per query; the fusions are computed from the same two lists.
 * Needs the embedder (`nestlm setup`). Run: `node --import tsx test/bench/retrieval-quality.ts [--limit N]`.
 */
import { mkdtemp, readFile, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Passage } from "@nest/shared/protocol/passage";
import { buildLanceIndex, openLanceIndex } from "@nest/corpus/lancedb-index";
import { SentenceEmbedder } from "@nest/corpus/embedder";
import { FUSION_METHODS, DEFAULT_FUSION_DEPTH, fuse } from "@nest/shared/retrieve/fusion";
import { REPO_ROOT } from "@nest/corpus/home";
import { findEmbedderDir } from "@nest/corpus/prepare-embedder";

const file = join(REPO_ROOT, "..", "shared", "eval", "squad-dev", "dev-v1.1.json");
const limitArg = process.argv.indexOf("--limit");
const limit = limitArg > 0 ? Number(process.argv[limitArg + 1]) : Infinity;

type Squad = { data: Array<{ title: string; paragraphs: Array<{ context: string; qas: Array<{ question: string }> }> }> };
const squad = JSON.parse(await readFile(file, "utf8")) as Squad;
const passages: Passage[] = [];
const questions: Array<{ q: string; gold: string }> = [];
for (const art of squad.data) {
  for (const para of art.paragraphs) {
    const id = `squad-${passages.length}`;
    passages.push({ id, title: art.title.replace(/_/g, " "), text: para.context, source: `squad-dev#${passages.length}` });
    for (const qa of para.qas) questions.push({ q: qa.question, gold: id });
  }
}
const qs = questions.slice(0, limit);
console.log(`squad-dev: ${passages.length} passages, ${qs.length} questions`);

const emb = await findEmbedderDir();
const embedder = await SentenceEmbedder.load(emb.dir, 2);
const dir = await mkdtemp(join(tmpdir(), "nest-squad-"));
try {
  let t = performance.now();
  await buildLanceIndex(dir, passages, { embedder, embedderInfo: emb });
  console.log(`index built in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  const index = await openLanceIndex(dir, "squad-dev", { embedder });
  const ks = [1, 5, 40];
  const hits: Record<string, number[]> = Object.fromEntries(FUSION_METHODS.map((m) => [m, ks.map(() => 0)]));
  t = performance.now();
  for (const { q, gold } of qs) {
    const [dense, sparse] = await Promise.all([index.searchDense(q, DEFAULT_FUSION_DEPTH), index.searchSparse(q, DEFAULT_FUSION_DEPTH)]);
    for (const m of FUSION_METHODS) {
      const ranked = fuse(m, dense, sparse, 40).map((h) => h.id);
      const r = ranked.indexOf(gold);
      ks.forEach((k, i) => (hits[m]![i]! += r >= 0 && r < k ? 1 : 0));
    }
  }
  console.log(`queried in ${((performance.now() - t) / 1000).toFixed(1)} s`);
  console.log("\n| retriever | recall@1 | recall@5 | recall@40 |\n| --- | --- | --- | --- |");
  for (const m of FUSION_METHODS) console.log(`| ${m} | ${hits[m]!.map((h) => (h / qs.length).toFixed(3)).join(" | ")} |`);
  index.close();
} finally {
  await embedder.close();
  await rm(dir, { recursive: true, force: true });
}
