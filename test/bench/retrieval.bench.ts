/**
 * Retrieval latency (issue 4): p50/p99 of `search(query, 40)` on the factbook index (BM25; the
 * hybrid factbook index too when one was built with `nestlm setup --dense`) and on a synthetic
 * BM25-only corpus of `--synthetic` passages (default 1,000,000). Not a test.
 *
 *   node --import tsx test/bench/retrieval.bench.ts [--queries 200] [--synthetic 1000000] [--seed 7] [--rebuild]
 *
 * Factbook queries: the title and 6 words of 200 passages drawn with a seeded PRNG from the factbook
 * passages. Synthetic corpus: a seeded list of 30,000 pseudo-words (syllable strings), passage
 * lengths uniform in 40-100 words, words drawn Zipf(s = 1.07); passage `i` depends only on
 * `(seed, i)`, so queries (6 consecutive words of a random passage) hit real text. The synthetic
 * index lives in `$NEST_HOME/bench/synthetic-<n>-s<seed>/` and is reused by later runs (its first
 * build time is kept in `bench.json`; `--rebuild` builds again; delete the folder to free the disk).
 * Queries run one after another after 10 warm-up queries. Prints a table and writes
 * `bench-results/retrieval.json`. The 1-minute load average is printed: on a shared machine it
 * explains most of the spread.
 */
import { parseArgs } from "node:util";
import { mulberry32 } from "@nest/gpu-worker/eval/stats";
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rm, stat, writeFile } from "node:fs/promises";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import type { Passage } from "@nest/shared/protocol/passage";
import { buildLanceIndex, openLanceIndex, type LancePassageIndex } from "@nest/corpus/lancedb-index";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";
import { cachePaths, nestHome } from "@nest/corpus/home";
import { findCorpusDir } from "@nest/corpus/layout";
import { readFactbook } from "@nest/corpus/factbook";
import { readReady } from "@nest/corpus/layout";

const { values } = parseArgs({
  options: {
    queries: { type: "string", default: "200" },
    synthetic: { type: "string", default: "1000000" },
    seed: { type: "string", default: "7" },
    rebuild: { type: "boolean", default: false },
  },
});
const NUM_QUERIES = Number(values.queries);
const SYNTH_N = Number(values.synthetic);
const SEED = Number(values.seed);
const K = 40;
const WARMUP = 10;

/** The seeded PRNG of the evaluation harness (mulberry32), floats in [0, 1). */
const rng = mulberry32;

const SYLLABLES = [
  "ka",
  "lo",
  "mi",
  "ren",
  "to",
  "sa",
  "vel",
  "dor",
  "qui",
  "ne",
  "bra",
  "sto",
  "fi",
  "gul",
  "ha",
  "jor",
  "pe",
  "tri",
  "zan",
  "wo",
  "ul",
  "es",
  "ar",
  "in",
  "mon",
  "ric",
  "tes",
  "ba",
  "cu",
  "dra",
];

/** 30,000 distinct pseudo-words (2-4 syllables), seeded. */
function wordList(seed: number, n = 30_000): string[] {
  const r = rng(seed);
  const seen = new Set<string>();
  while (seen.size < n) {
    const len = 2 + Math.floor(r() * 3);
    let w = "";
    for (let i = 0; i < len; i++) w += SYLLABLES[Math.floor(r() * SYLLABLES.length)];
    seen.add(w);
  }
  return [...seen];
}

/** Zipf(s) cumulative weights over ranks 1..n. */
function zipfCdf(n: number, s = 1.07): Float64Array {
  const c = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) c[i] = sum += 1 / (i + 1) ** s;
  for (let i = 0; i < n; i++) c[i]! /= sum;
  return c;
}

function drawRank(cdf: Float64Array, u: number): number {
  let lo = 0;
  let hi = cdf.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (cdf[mid]! < u) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

const WORDS = wordList(SEED);
const CDF = zipfCdf(WORDS.length);

/** Synthetic passage `i` (depends only on seed and i). */
function synthPassage(i: number): Passage {
  const r = rng(Math.imul(SEED, 0x9e3779b1) ^ Math.imul(i + 1, 0x85ebca6b));
  const len = 40 + Math.floor(r() * 61);
  const words = Array.from({ length: len }, () => WORDS[drawRank(CDF, r())]!);
  return { id: `s-${i}`, title: `${words[0]} ${words[1]}`, text: words.join(" "), source: `synthetic#${i}` };
}

function* synthPassages(n: number): Generator<Passage> {
  for (let i = 0; i < n; i++) yield synthPassage(i);
}

async function dirBytes(dir: string): Promise<number> {
  let total = 0;
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    total += e.isDirectory() ? await dirBytes(p) : (await stat(p)).size;
  }
  return total;
}

function quantile(sorted: number[], q: number): number {
  return sorted[Math.min(sorted.length - 1, Math.ceil(q * sorted.length) - 1)]!;
}

interface Row {
  corpus: string;
  passages: number;
  retriever: string;
  queries: number;
  p50_ms: number;
  p99_ms: number;
  mean_ms: number;
  mean_hits: number;
  build_s?: number;
  index_mb?: number;
  load1: number;
}

async function measure(index: LancePassageIndex, queries: string[], fusion?: FusionMethod) {
  for (const q of queries.slice(0, WARMUP)) await index.search(q, K, { fusion });
  const ms: number[] = [];
  let hits = 0;
  for (const q of queries) {
    const t0 = performance.now();
    hits += (await index.search(q, K, { fusion })).length;
    ms.push(performance.now() - t0);
  }
  const sorted = [...ms].sort((a, b) => a - b);
  const r1 = (x: number) => Math.round(x * 10) / 10;
  return {
    queries: ms.length,
    p50_ms: r1(quantile(sorted, 0.5)),
    p99_ms: r1(quantile(sorted, 0.99)),
    mean_ms: r1(ms.reduce((a, b) => a + b, 0) / ms.length),
    mean_hits: r1(hits / ms.length),
    load1: r1(loadavg()[0]!),
  };
}

async function factbookQueries(): Promise<{ queries: string[]; passages: number }> {
  const all: Passage[] = [];
  for await (const p of readFactbook()) all.push(p);
  const r = rng(SEED);
  const queries = Array.from({ length: NUM_QUERIES }, () => {
    const p = all[Math.floor(r() * all.length)]!;
    const words = p.text.split(/\s+/);
    const s = Math.floor(r() * Math.max(1, words.length - 6));
    return `${p.title} ${words.slice(s, s + 6).join(" ")}`;
  });
  return { queries, passages: all.length };
}

/** A complete hybrid factbook index in the cache (built with `--dense`), if any. */
async function hybridFactbookDir(): Promise<string | undefined> {
  const root = join(cachePaths().corpora, "factbook");
  for (const name of existsSync(root) ? (await readdir(root)).sort() : []) {
    const ready = await readReady(join(root, name));
    if (ready?.embedderKey && ready.embedderKey !== "bm25-only") return join(root, name);
  }
  return undefined;
}

const rows: Row[] = [];
const log = (s: string) => console.log(s);
log(`retrieval latency: search(q, ${K}), ${NUM_QUERIES} queries, ${cpus().length} cores, load ${loadavg()[0]!.toFixed(1)}`);

// --- factbook
const fb = await factbookQueries();
const bm25Dir = await findCorpusDir("factbook");
const bm25Ready = await readReady(bm25Dir);
{
  const index = await openLanceIndex(bm25Dir, "factbook");
  try {
    const label = index.hybrid ? `hybrid ${index.defaultFusion} (current index)` : "BM25";
    rows.push({ corpus: "factbook", passages: await index.count(), retriever: label, ...(await measure(index, fb.queries)) });
  } finally {
    index.close();
  }
}
const hybridDir = bm25Ready?.embedderKey === "bm25-only" ? await hybridFactbookDir() : undefined;
if (hybridDir) {
  const index = await openLanceIndex(hybridDir, "factbook");
  try {
    for (const fusion of ["rrf", "adaptive"] as const) {
      rows.push({
        corpus: "factbook",
        passages: await index.count(),
        retriever: `hybrid ${fusion}`,
        ...(await measure(index, fb.queries, fusion)),
      });
    }
  } finally {
    index.close();
  }
} else {
  log("factbook: no hybrid index in the cache (`nestlm setup --dense` builds one); BM25 only");
}

// --- synthetic
if (SYNTH_N > 0) {
  const dir = join(nestHome(), "bench", `synthetic-${SYNTH_N}-s${SEED}`);
  const marker = join(dir, "bench.json");
  let built: { passages: number; build_s: number } | undefined;
  if (!values.rebuild && existsSync(marker)) {
    built = JSON.parse(await readFile(marker, "utf8")) as { passages: number; build_s: number };
    log(`synthetic: reusing ${dir} (built in ${built.build_s} s)`);
  } else {
    await rm(dir, { recursive: true, force: true });
    await mkdir(dir, { recursive: true });
    log(`synthetic: building ${SYNTH_N} passages into ${dir}`);
    const t0 = performance.now();
    let last = t0;
    const { rows: n } = await buildLanceIndex(dir, synthPassages(SYNTH_N), {
      batchSize: 20_000,
      onProgress: (done, phase) => {
        const now = performance.now();
        if (phase === "index") log(`  rows added in ${((now - t0) / 1000).toFixed(0)} s; building the full-text index`);
        else if (now - last > 30_000) {
          last = now;
          log(`  ${done} rows, ${((now - t0) / 1000).toFixed(0)} s, load ${loadavg()[0]!.toFixed(1)}`);
        }
      },
    });
    built = { passages: n, build_s: Math.round((performance.now() - t0) / 100) / 10 };
    await writeFile(
      marker,
      `${JSON.stringify({ ...built, seed: SEED, words: WORDS.length, createdAt: new Date().toISOString() }, null, 2)}\n`,
    );
    log(`synthetic: built in ${built.build_s} s`);
  }
  const r = rng(SEED + 1);
  const queries = Array.from({ length: NUM_QUERIES }, () => {
    const words = synthPassage(Math.floor(r() * SYNTH_N)).text.split(" ");
    const s = Math.floor(r() * (words.length - 6));
    return words.slice(s, s + 6).join(" ");
  });
  const index = await openLanceIndex(dir, "synthetic");
  try {
    const m = await measure(index, queries);
    rows.push({
      corpus: "synthetic",
      passages: await index.count(),
      retriever: "BM25",
      ...m,
      build_s: built.build_s,
      index_mb: Math.round((await dirBytes(dir)) / 1e5) / 10,
    });
  } finally {
    index.close();
  }
}

// --- report
const head = ["corpus", "passages", "retriever", "p50 ms", "p99 ms", "mean ms", "hits", "build s", "index MB", "load1"];
const table = rows.map((r) => [
  r.corpus,
  String(r.passages),
  r.retriever,
  String(r.p50_ms),
  String(r.p99_ms),
  String(r.mean_ms),
  String(r.mean_hits),
  r.build_s === undefined ? "" : String(r.build_s),
  r.index_mb === undefined ? "" : String(r.index_mb),
  String(r.load1),
]);
const widths = head.map((h, i) => Math.max(h.length, ...table.map((t) => t[i]!.length)));
const line = (cells: string[]) => cells.map((c, i) => c.padEnd(widths[i]!)).join("  ");
log(`\n${line(head)}\n${table.map(line).join("\n")}`);
await mkdir("bench-results", { recursive: true });
await writeFile(
  "bench-results/retrieval.json",
  `${JSON.stringify(
    {
      bench: "retrieval",
      k: K,
      warmup: WARMUP,
      cores: cpus().length,
      seed: SEED,
      date: new Date().toISOString(),
      rows,
    },
    null,
    2,
  )}\n`,
);
log("wrote bench-results/retrieval.json");
