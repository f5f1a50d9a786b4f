/**
 * Passage-encoding bench (issue 13 items 1-2). Not a test: it prints tables and writes
 * bench-results/encoding.json.
 *
 *   npm run bench -- encoding
 *   node --import tsx test/bench/encoding.bench.ts [--questions 12] [--passages 40] [--batches 1,4,8,16]
 *       [--max-new-tokens 32] [--skip-quality] [--skip-projection]
 *
 * 1. Encoding throughput: the retrieved passages of each factbook dev question (BM25, 40 each, as a
 *    request gets them), encoded per request with the old path (one `forward` per passage over the
 *    KV cache) and in right-padded batches of at most b passages (`encodeBatch`). Tokens/s counts
 *    real passage tokens (BOS included), not padding.
 * 2. Key precision: the fp32 keys of each request's store quantised to fp16 and int8 (per-row
 *    scale). Queries: the hidden states of the base LM's first 16 greedy steps on the question.
 *    Overlap of the top-k neighbours with fp32 (|top-k ∩ top-k_fp32| / k, k = 1, 10, 100 and r =
 *    min(1024, keys)) and |Δλ| of the RRC weight (α 0.2, τ 0.1).
 * 3. Answer quality: nest (greedy) on every question over a corpus store of each precision against
 *    on-the-fly fp32 encoding: identical text, identical citations, answer recall (dev answers).
 * 4. The store: bytes per token, time to load one request's keys from it (positioned reads +
 *    dequantisation + the token store), and factbook's projected size and encoding time on this
 *    machine (measured throughput × factbook's token count) and on one GPU (from FLOPs).
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { mkdtemp, rm } from "node:fs/promises";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { REPO_ROOT } from "@nest/corpus/home";
import { findCorpusDir } from "@nest/corpus/layout";
import { openLanceIndex, readIndexPassages } from "@nest/corpus/lancedb-index";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { PassageEncoder } from "@nest/gpu-worker/engine/passage-encoder";
import { Engine } from "@nest/gpu-worker/engine/engine";
import {
  bytesPerToken,
  corpusKeysDir,
  CorpusKeyStore,
  CorpusKeyWriter,
  dequantizeRows,
  quantizeRows,
  type KeyPrecision,
} from "@nest/gpu-worker/engine/corpus-key-store";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "@nest/gpu-worker/nest/token-store";
import { searchKnn } from "@nest/gpu-worker/nest/knn";
import { relativeRetrievalConfidence, rrcLambda } from "@nest/gpu-worker/nest/mixture";
import { answerRecall } from "@nest/gpu-worker/eval/metrics";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent } from "@nest/shared/protocol/events";
import type { Passage } from "@nest/shared/protocol/passage";

const { values } = parseArgs({
  options: {
    questions: { type: "string", default: "12" },
    passages: { type: "string", default: "40" },
    batches: { type: "string", default: "1,4,8,16" },
    "max-new-tokens": { type: "string", default: "32" },
    "skip-quality": { type: "boolean", default: false },
    "skip-projection": { type: "boolean", default: false },
  },
});
const PASSAGES = Number(values.passages);
const BATCHES = values.batches!.split(",").map(Number);
const MAX_NEW = Number(values["max-new-tokens"]);
const PRECISIONS: KeyPrecision[] = ["fp32", "fp16", "int8"];

const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / Math.max(1, xs.length);
const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");
const load = () =>
  loadavg()
    .map((x) => x.toFixed(1))
    .join(" ");

const QUESTIONS = readFileSync(join(REPO_ROOT, "test/fixtures/eval/factbook-dev.jsonl"), "utf8")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l) as { question: string; answers: string[] })
  .filter((q) => q.answers.length > 0)
  .slice(0, Number(values.questions));

const modelDir = await findModelDir();
const manifest = await readManifest(modelDir);
const lm = await DecoderSession.load(modelDir, manifest);
const tok = await ModelTokenizer.load(modelDir, manifest);
const H = manifest.hidden_size;
const index = await openLanceIndex(await findCorpusDir("factbook"), "factbook");
const requests: Passage[][] = [];
for (const q of QUESTIONS)
  requests.push((await index.search(q.question, PASSAGES)).map(({ id, title, text, source }) => ({ id, title, text, source })));
await index.close?.();
console.log(
  `encoding bench: ${QUESTIONS.length} questions × ${PASSAGES} passages, threads ${lm.options.threads || "auto"}, spinning ${lm.options.intraOpSpinning ? (lm.options.intraOpSpinDurationUs > 0 ? `≤ ${lm.options.intraOpSpinDurationUs} µs` : "unbounded") : "off"}, load average ${load()}`,
);

// ---- 1. throughput ------------------------------------------------------------------------------------
const bos = manifest.bos_token_id === null ? [] : [manifest.bos_token_id];
const requestTokens = requests.map((ps) =>
  ps.reduce((n, p) => n + Math.min(512, tok.tokenizeWithOffsets(p.text).ids.length) + bos.length, 0),
);
const totalTokens = requestTokens.reduce((a, b) => a + b, 0);
interface Throughput {
  path: string;
  tokS: number;
  requestMs: number;
  passesPerRequest: number;
}
/** Encodes one request's passages on path `b` (0 = the old forward-per-passage path); returns ms and LM passes. */
const encoders = new Map(
  BATCHES.map((b) => [b, new PassageEncoder(lm, tok, manifest.bos_token_id, "bench", 0, undefined, { batch: { maxBatchPassages: b } })]),
);
async function encodeOn(b: number, ps: readonly Passage[]): Promise<{ ms: number; passes: number }> {
  const t0 = performance.now();
  if (b > 0) {
    const r = await encoders.get(b)!.buildStore(ps);
    return { ms: performance.now() - t0, passes: r.numEncodePasses };
  }
  let passes = 0;
  for (const p of ps) {
    const ids = tok.tokenizeWithOffsets(p.text).ids.subarray(0, 512);
    if (ids.length < 2) continue;
    lm.reset();
    await lm.forward([...bos, ...ids], 0);
    passes++;
  }
  lm.reset();
  return { ms: performance.now() - t0, passes };
}
// Paths interleaved per request, in an order rotated per request, so load drift hits all of them alike.
const paths = [0, ...BATCHES];
const timings = new Map(paths.map((b) => [b, { ms: [] as number[], passes: [] as number[] }]));
for (const [i, ps] of requests.entries()) {
  for (let j = 0; j < paths.length; j++) {
    const b = paths[(i + j) % paths.length]!;
    const r = await encodeOn(b, ps);
    timings.get(b)!.ms.push(r.ms);
    timings.get(b)!.passes.push(r.passes);
  }
}
const throughput: Throughput[] = paths.map((b) => {
  const t = timings.get(b)!;
  return {
    path: b === 0 ? "forward per passage (before)" : `batches of ≤ ${b}`,
    tokS: totalTokens / (t.ms.reduce((a, c) => a + c, 0) / 1000),
    requestMs: median(t.ms),
    passesPerRequest: median(t.passes),
  };
});
console.log(`\n1. encoding throughput (${totalTokens} passage tokens; load average ${load()})`);
console.log("path                           tokens/s  ms per request (median)  LM passes per request");
for (const t of throughput)
  console.log(`${t.path.padEnd(30)} ${fmt(t.tokS).padStart(9)} ${fmt(t.requestMs).padStart(24)} ${fmt(t.passesPerRequest).padStart(22)}`);
const best = throughput.slice(1).reduce((a, b) => (b.tokS > a.tokS ? b : a));
console.log(`  batched (${best.path}) ÷ before: ${fmt(best.tokS / throughput[0]!.tokS, 2)}× tokens/s`);

// ---- 2. key precision: kNN overlap and λ ----------------------------------------------------------------
const encoder = new PassageEncoder(lm, tok, manifest.bos_token_id, "bench", 0);
const entries: EncodedPassage[][] = [];
for (const ps of requests) entries.push(await encoder.encode(ps));
function requantized(es: EncodedPassage[], precision: KeyPrecision): EncodedPassage[] {
  return es.map((e) => {
    const { rows, scales } = quantizeRows(e.keys, H, precision);
    return { ...e, keys: dequantizeRows(rows, H, precision, scales) };
  });
}
async function queries(question: string): Promise<Float32Array[]> {
  const ids = tok.encodeChat([{ role: "user", content: question }]);
  lm.reset();
  let out = await lm.forward(ids, 1);
  const qs = [out.hiddenRow(ids.length - 1).slice()];
  for (let i = 0; i < 15; i++) {
    const row = out.logitsRow(out.numTokens - 1);
    let next = 0;
    for (let v = 1; v < row.length; v++) if (row[v]! > row[next]!) next = v;
    out = await lm.forward([next], 1);
    qs.push(out.hiddenRow(0).slice());
  }
  lm.reset();
  return qs;
}
const KS = [1, 10, 100, 1024];
const overlap: Record<string, Record<number, number[]>> = {};
const dLambda: Record<string, number[]> = {};
for (const p of PRECISIONS.slice(1)) {
  overlap[p] = Object.fromEntries(KS.map((k) => [k, [] as number[]]));
  dLambda[p] = [];
}
for (const [qi, q] of QUESTIONS.entries()) {
  const ref = buildTokenStore(entries[qi]!, H);
  const stores: Record<string, TokenStore> = Object.fromEntries(
    PRECISIONS.slice(1).map((p) => [p, buildTokenStore(requantized(entries[qi]!, p), H)]),
  );
  for (const query of await queries(q.question)) {
    const r = Math.min(1024, ref.numKeys);
    const nRef = searchKnn(ref, query, r);
    const lamRef = rrcLambda(relativeRetrievalConfidence(nRef), 0.2, 0.1);
    for (const p of PRECISIONS.slice(1)) {
      const n = searchKnn(stores[p]!, query, r);
      for (const k of KS) {
        const kk = Math.min(k, r);
        const a = new Set(nRef.keys.subarray(0, kk));
        let hit = 0;
        for (const j of n.keys.subarray(0, kk)) if (a.has(j)) hit++;
        overlap[p]![k]!.push(hit / kk);
      }
      dLambda[p]!.push(Math.abs(rrcLambda(relativeRetrievalConfidence(n), 0.2, 0.1) - lamRef));
    }
  }
}
console.log(`\n2. kNN with stored keys vs fp32 (${QUESTIONS.length * 16} queries; mean overlap of the top-k)`);
console.log(`precision  bytes/token  ${KS.map((k) => `top-${k === 1024 ? "r" : k}`.padStart(8)).join(" ")}  mean |Δλ|  max |Δλ|`);
for (const p of PRECISIONS.slice(1)) {
  console.log(
    `${p.padEnd(10)} ${String(bytesPerToken(p, H)).padStart(11)}  ${KS.map((k) => fmt(mean(overlap[p]![k]!), 4).padStart(8)).join(" ")}  ${fmt(mean(dLambda[p]!), 5).padStart(9)}  ${fmt(Math.max(...dLambda[p]!), 5).padStart(8)}`,
  );
}

// ---- 3. answers over stores of each precision ---------------------------------------------------------
const unionById = new Map<string, EncodedPassage>();
entries.flat().forEach((e) => unionById.set(e.passage.id, e));
const home = await mkdtemp(join(tmpdir(), "nest-encoding-bench-"));
const probe = await Engine.load(modelDir, { home, diskKeyCache: false, corpusKeys: false });
const modelKey = probe.passageEncoder.modelKey;
await probe.session.release();
for (const p of PRECISIONS) {
  const w = await CorpusKeyWriter.open(join(home, p, "keys", modelKey, "corpora", "factbook"), {
    corpus: "factbook",
    modelKey,
    hiddenSize: H,
    precision: p,
  });
  await w.append([...unionById.values()]);
}
interface Answer {
  text: string;
  citations: string;
  recall: number;
}
async function answers(engine: Engine): Promise<Answer[]> {
  const out: Answer[] = [];
  for (const [qi, q] of QUESTIONS.entries()) {
    const request = GenerateRequestSchema.parse({ prompt: q.question, mode: "nest", max_new_tokens: MAX_NEW, passages: PASSAGES });
    const deltas: DeltaEvent[] = [];
    await engine.run({ request, passages: requests[qi]! }, { delta: (d) => deltas.push(d), done: () => {} });
    const text = deltas.map((d) => d.text).join("");
    out.push({
      text,
      citations: JSON.stringify(deltas.flatMap((d) => (d.citation ? [d.citation] : []))),
      recall: answerRecall(text, q.answers),
    });
  }
  await engine.session.release();
  return out;
}
const quality: { precision: string; sameText: number; sameCitations: number; answerRecall: number }[] = [];
if (!values["skip-quality"]) {
  const fly = await answers(await Engine.load(modelDir, { home, diskKeyCache: false, corpusKeys: false }));
  quality.push({
    precision: "on the fly (fp32)",
    sameText: fly.length,
    sameCitations: fly.length,
    answerRecall: mean(fly.map((a) => a.recall)),
  });
  for (const p of PRECISIONS) {
    const got = await answers(await Engine.load(modelDir, { home: join(home, p), diskKeyCache: false }));
    quality.push({
      precision: `${p} store`,
      sameText: got.filter((a, i) => a.text === fly[i]!.text).length,
      sameCitations: got.filter((a, i) => a.citations === fly[i]!.citations).length,
      answerRecall: mean(got.map((a) => a.recall)),
    });
  }
  console.log(`\n3. nest answers (greedy, ${MAX_NEW} new tokens) over a store of each precision vs on-the-fly encoding`);
  console.log("keys                 same text  same citations  answer recall");
  for (const q of quality)
    console.log(
      `${q.precision.padEnd(20)} ${`${q.sameText}/${QUESTIONS.length}`.padStart(9)} ${`${q.sameCitations}/${QUESTIONS.length}`.padStart(15)} ${fmt(q.answerRecall, 3).padStart(14)}`,
    );
}

// ---- 4. loading a request's keys; factbook projection ---------------------------------------------------
console.log(
  `\n4. loading one request's ${PASSAGES} passages from the store (median over ${QUESTIONS.length} requests, second read: page cache warm)`,
);
console.log("precision  read+dequantise ms  + token store ms");
const loadMs: Record<string, number> = {};
for (const p of PRECISIONS) {
  const store = (await CorpusKeyStore.open(corpusKeysDir(join(home, p, "keys", modelKey), "factbook"), { modelKey, hiddenSize: H }))!;
  const readMs: number[] = [];
  const buildMs: number[] = [];
  for (let round = 0; round < 2; round++) {
    for (const ps of requests) {
      const t0 = performance.now();
      const got = await store.getMany(ps);
      const t1 = performance.now();
      buildTokenStore(
        got.map((g) => g!),
        H,
      );
      if (round === 1) {
        readMs.push(t1 - t0);
        buildMs.push(performance.now() - t1);
      }
    }
  }
  loadMs[p] = median(readMs) + median(buildMs);
  console.log(`${p.padEnd(10)} ${fmt(median(readMs), 1).padStart(18)} ${fmt(median(buildMs), 1).padStart(17)}`);
}
await rm(home, { recursive: true, force: true });

let projection: Record<string, number> | undefined;
if (!values["skip-projection"]) {
  const all = await readIndexPassages(await findCorpusDir("factbook"));
  let tokens = 0;
  for (const p of all) tokens += Math.min(512, tok.tokenizeWithOffsets(p.text).ids.length);
  const seconds = (tokens + all.length * bos.length) / best.tokS;
  // Non-embedding parameters of a Llama-style block: q, o (h×h), k, v (h × kv·hd), gate/up/down (3 × h × ffn).
  const flopsPerToken = 2 * (tokens > 0 ? approxBlockParams() : 0);
  const gpuTflops = 20; // assumed effective fp32 TFLOP/s on one H200 (~30 % of its 67 TFLOP/s fp32 FMA peak)
  projection = { passages: all.length, tokens, seconds, flopsPerToken, gpuSeconds: (tokens * flopsPerToken) / (gpuTflops * 1e12) };
  console.log(`\nfactbook: ${all.length} passages, ${tokens} tokens (≤ 512 per passage, BOS not counted)`);
  for (const p of PRECISIONS)
    console.log(`  ${p} store: ${fmt((tokens * bytesPerToken(p, H)) / 2 ** 30, 2)} GiB (${bytesPerToken(p, H)} bytes/token)`);
  console.log(
    `  encoding on this machine at the measured ${fmt(best.tokS)} tokens/s (${best.path}): ${fmt(seconds / 60, 0)} min (projected from section 1, load average ${load()})`,
  );
  console.log(
    `  projected on one GPU: ~${fmt(flopsPerToken / 1e9, 2)} GFLOP/token × ${tokens} tokens at an assumed ${gpuTflops} TFLOP/s effective = ${fmt(projection.gpuSeconds!, 0)} s of compute (a projection, not a measurement)`,
  );
}
await lm.release();

function approxBlockParams(): number {
  const h = H;
  const kv = manifest.num_kv_heads * manifest.head_dim;
  const ffn = 1536; // SmolLM2-135M intermediate size (not in the manifest)
  return manifest.num_layers * (2 * h * h + 2 * h * kv + 3 * h * ffn);
}

mkdirSync(join(REPO_ROOT, "bench-results"), { recursive: true });
writeFileSync(
  join(REPO_ROOT, "bench-results", "encoding.json"),
  JSON.stringify({ loadavg: loadavg(), throughput, overlap, dLambda, quality, loadMs, projection }, null, 2),
);
console.log("\nwrote bench-results/encoding.json");
