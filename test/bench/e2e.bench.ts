/**
 * End-to-end bench (issue 13 item 5): ordinary grounded factbook questions over HTTP through the
 * whole stack (edge + gpu-worker as `nestlm serve` starts them, `startStack`), each question asked in
 * every mode in turn, paired per question. Not a test: it prints tables and writes
 * bench-results/e2e.json.
 *
 *   npm run bench -- e2e                       # 12 questions, 48 new tokens, 40 passages
 *   node --import tsx test/bench/e2e.bench.ts [--prompts 12] [--max-new-tokens 48] [--passages 40]
 *       [--precision fp16] [--skip-encode]
 *
 * Modes, per question, in this order:
 *   base      the LM alone
 *   rag       top-3 passages in the prompt
 *   nest-cold nest with nothing cached: a stack whose worker has no memory LRU, no disk key cache and
 *             no encoded corpus (NEST_KEY_CACHE_MB=0, NEST_KEY_CACHE=0, NEST_CORPUS_KEYS=0), so every
 *             store passage (the request default `store_passages`: 10 of the 40) is LM-encoded (in
 *             batches) inside the request
 *   nest-cold-b  the same with the paper's store, all of the `--passages` first-stage passages
 *             (`store_passages` = passages): the cold cost before the store-size deviation (docs §14)
 *   nest-enc  nest over the encoded corpus (`nestlm encode --corpus factbook`), first ask: keys read
 *             from the store, no LM encoding
 *   nest-warm the same request again: keys from the worker's memory LRU
 *   rag-nest  rag prompt + nest decoding, on the encoded-corpus stack
 * The passages the edge retrieves for the questions (read from a 1-token `rag` request) are encoded
 * into the corpus store first unless already there (a full `nestlm encode --corpus factbook` covers
 * them; otherwise only these passages are added).
 * Two stacks run side by side (the cold one and the encoded one); only one works at a time.
 *
 * Per request: latency (request sent → `done` read), TTFT (→ first `delta`), completion tokens,
 * tokens/s (completion ÷ latency), per-token latency (latency ÷ completion), LM passes per token,
 * the worker's encoding time. Ratios to base are per question (paired), then the median; besides
 * per-token and whole-answer latency, "equal length" compares each answer's time to the shorter
 * answer's token count with base's time to the same count (deltas carry their token counts). Every
 * request sends `Cache-Control: no-store`, so the FAQ cache never answers. The 1-minute load
 * average is printed: on a shared machine it explains most of the spread.
 */
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startStack, type Stack } from "@nest/cli/stack";
import { hashApiKey } from "@nest/cli/api-key";
import { encodeCorpus } from "@nest/cli/encode";
import { nestHome, REPO_ROOT } from "@nest/corpus/home";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import type { DoneEvent } from "@nest/shared/protocol/events";
import type { Passage } from "@nest/shared/protocol/passage";
import type { KeyPrecision } from "@nest/gpu-worker/engine/corpus-key-store";

const { values } = parseArgs({
  options: {
    prompts: { type: "string", default: "12" },
    "max-new-tokens": { type: "string", default: "48" },
    passages: { type: "string", default: "40" },
    precision: { type: "string", default: "fp16" },
    "skip-encode": { type: "boolean", default: false },
  },
});
const NUM_PROMPTS = Number(values.prompts);
const MAX_NEW = Number(values["max-new-tokens"]);
const PASSAGES = Number(values.passages);

const MODES = ["base", "rag", "nest-cold", "nest-cold-b", "nest-enc", "nest-warm", "rag-nest"] as const;
type BenchMode = (typeof MODES)[number];
/** Execution order per question (warm must follow the first encoded-corpus ask). */
const RUN_ORDER: readonly BenchMode[] = ["base", "rag", "nest-cold", "nest-cold-b", "nest-enc", "nest-warm", "rag-nest"];
const API_MODE: Record<BenchMode, string> = {
  base: "base",
  rag: "rag",
  "nest-cold": "nest",
  "nest-cold-b": "nest",
  "nest-enc": "nest",
  "nest-warm": "nest",
  "rag-nest": "rag-nest",
};

/** Ordinary grounded questions: the factbook dev set's answerable ones, in file order. */
const QUESTIONS = readFileSync(join(REPO_ROOT, "test/fixtures/eval/factbook-dev.jsonl"), "utf8")
  .split("\n")
  .filter(Boolean)
  .map((l) => JSON.parse(l) as { question: string; answers: string[] })
  .filter((q) => q.answers.length > 0)
  .slice(0, NUM_PROMPTS)
  .map((q) => q.question);

interface Measure {
  latencyMs: number;
  ttftMs: number;
  tokens: number;
  passes: number;
  encodingMs: number;
  text: string;
  /** Cumulative completion tokens at each delta and when it arrived, ms after the request was sent. */
  arrivals: { tokens: number; ms: number }[];
}

/** When `m` had streamed `n` tokens, ms after the request was sent (its latency when it never did). */
const timeToTokens = (m: Measure, n: number) => m.arrivals.find((a) => a.tokens >= n)?.ms ?? m.latencyMs;
/**
 * `m`'s time to `k` tokens ÷ `base`'s time to the same `k`, k = the shorter of the two answers: a
 * paired speed ratio that does not spread a short complete answer's fixed costs (its prefill) over
 * fewer tokens than base produced, as per-token latency does.
 */
const equalLengthVsBase = (m: Measure, base: Measure) => {
  const k = Math.min(m.tokens, base.tokens);
  return k === 0 ? NaN : timeToTokens(m, k) / timeToTokens(base, k); // an empty answer has no pace
};

const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number, d = 0) => (Number.isFinite(x) ? x.toFixed(d) : "–");

// ---- 2. two stacks ------------------------------------------------------------------------------------
const KEY = `bench-${randomBytes(8).toString("hex")}`;
const quiet = { home: nestHome(), port: 0, workerPort: 0, host: "127.0.0.1", apiKeyHashes: [hashApiKey(KEY)] };
/** Starts a stack with `env` set while its worker thread starts (the thread copies process.env then). */
async function stackWith(env: Record<string, string>): Promise<Stack> {
  const saved = Object.fromEntries(Object.keys(env).map((k) => [k, process.env[k]]));
  Object.assign(process.env, env);
  try {
    return await startStack(quiet);
  } finally {
    for (const [k, v] of Object.entries(saved))
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
  }
}
const cold = await stackWith({ NEST_KEY_CACHE_MB: "0", NEST_KEY_CACHE: "0", NEST_CORPUS_KEYS: "0" });
const encoded = await stackWith({ NEST_KEY_CACHE: "0", NEST_CORPUS_KEYS: "1" });

// ---- the encoded corpus covers the passages the edge retrieves for the questions ----------------
/** The passages the edge retrieves for `question` (one `rag` request of 1 token, cold stack: no encoding). */
async function retrieved(question: string): Promise<Passage[]> {
  const res = await fetch(`${cold.edgeUrl}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "cache-control": "no-store" },
    body: JSON.stringify({ prompt: question, mode: "rag", max_new_tokens: 1, passages: PASSAGES }),
  });
  if (res.status !== 200) throw new Error(`edge answered ${res.status}: ${await res.text()}`);
  let out: Passage[] = [];
  for await (const ev of readGenerateEvents(res.body!)) {
    if (ev.event === "retrieval") out = ev.data.passages.map(({ id, title, source, text }) => ({ id, title, source, text: text ?? "" }));
  }
  if (out.some((p) => p.text === "")) throw new Error("the retrieval event carries no passage text");
  return out;
}
if (!values["skip-encode"]) {
  const wanted = new Map<string, Passage>();
  for (const q of QUESTIONS) for (const p of await retrieved(q)) wanted.set(p.id, p);
  const r = await encodeCorpus({
    corpus: "factbook",
    passages: [...wanted.values()],
    precision: values.precision as KeyPrecision,
    log: () => {},
  });
  console.log(
    `corpus store (${r.precision}): ${wanted.size} passages of the questions, ${r.encoded} encoded now, ${r.cached} already stored (${r.dir})`,
  );
}

/** Request fields a bench mode adds to the request defaults. */
const EXTRA: Partial<Record<BenchMode, Record<string, unknown>>> = { "nest-cold-b": { store_passages: PASSAGES } };

async function ask(stack: Stack, question: string, mode: string, extra: Record<string, unknown> = {}): Promise<Measure> {
  const body = { prompt: question, mode, max_new_tokens: MAX_NEW, passages: PASSAGES, ...extra };
  const t0 = performance.now();
  const res = await fetch(`${stack.edgeUrl}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", "cache-control": "no-store" },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`edge answered ${res.status}: ${await res.text()}`);
  let ttftMs = NaN;
  let done: DoneEvent | undefined;
  let text = "";
  const arrivals: Measure["arrivals"] = [];
  for await (const ev of readGenerateEvents(res.body!)) {
    if (ev.event === "delta") {
      const ms = performance.now() - t0;
      if (Number.isNaN(ttftMs)) ttftMs = ms;
      text += ev.data.text;
      arrivals.push({ tokens: (arrivals.at(-1)?.tokens ?? 0) + ev.data.tokens, ms });
    } else if (ev.event === "done") done = ev.data;
    else if (ev.event === "error") throw new Error(`${mode}: ${JSON.stringify(ev.data)}`);
  }
  const latencyMs = performance.now() - t0;
  if (!done) throw new Error(`${mode}: stream ended without done`);
  return {
    latencyMs,
    ttftMs,
    tokens: done.usage.completion_tokens,
    passes: done.usage.lm_forward_passes,
    encodingMs: done.timings_ms.encoding,
    text,
    arrivals,
  };
}

// ---- 3. the run ---------------------------------------------------------------------------------------
console.log(
  `e2e bench: ${QUESTIONS.length} questions × ${MODES.length} modes, ${PASSAGES} passages (token store: the request default, nest-cold-b all ${PASSAGES}), max ${MAX_NEW} new tokens, load average ${loadavg()
    .map((x) => x.toFixed(1))
    .join(" ")}`,
);
// One warm-up request per stack (first-pass allocations, JIT), not measured.
await ask(cold, "What is the capital of France?", "base");
await ask(encoded, "What is the capital of France?", "base");

const results: Record<BenchMode, Measure>[] = [];
for (const [i, q] of QUESTIONS.entries()) {
  const row = {} as Record<BenchMode, Measure>;
  for (const mode of RUN_ORDER) row[mode] = await ask(mode.startsWith("nest-cold") ? cold : encoded, q, API_MODE[mode], EXTRA[mode]);
  results.push(row);
  const perTok = (m: Measure) => m.latencyMs / Math.max(1, m.tokens);
  console.log(`\n[${i + 1}] ${q}  (load ${loadavg()[0]!.toFixed(1)})`);
  console.log("  mode         latency ms  TTFT ms  tokens  tok/s  ms/token  passes/token  encoding ms  ÷ base (per token)");
  for (const mode of MODES) {
    const m = row[mode];
    console.log(
      `  ${mode.padEnd(11)} ${fmt(m.latencyMs).padStart(11)} ${fmt(m.ttftMs).padStart(8)} ${String(m.tokens).padStart(7)} ${fmt(m.tokens / (m.latencyMs / 1000), 1).padStart(6)} ${fmt(perTok(m), 1).padStart(9)} ${fmt(m.passes / Math.max(1, m.tokens), 2).padStart(13)} ${fmt(m.encodingMs).padStart(12)} ${fmt(perTok(m) / perTok(row.base), 2).padStart(10)}×`,
    );
  }
  console.log(
    `  nest-enc text: ${JSON.stringify(row["nest-enc"].text.slice(0, 100))}${row["nest-enc"].text === row["nest-cold"].text ? " (= nest-cold)" : " (≠ nest-cold)"}`,
  );
}
await Promise.all([cold.close(), encoded.close()]);

// ---- 4. summary ---------------------------------------------------------------------------------------
const perToken = (m: Measure) => m.latencyMs / Math.max(1, m.tokens);
const summary = MODES.map((mode) => {
  const ms = results.map((r) => r[mode]);
  return {
    mode,
    latencyMs: median(ms.map((m) => m.latencyMs)),
    ttftMs: median(ms.map((m) => m.ttftMs)),
    tokS: median(ms.map((m) => m.tokens / (m.latencyMs / 1000))),
    msPerToken: median(ms.map(perToken)),
    passesPerToken: median(ms.map((m) => m.passes / Math.max(1, m.tokens))),
    encodingMs: median(ms.map((m) => m.encodingMs)),
    perTokenVsBase: median(results.map((r) => perToken(r[mode]) / perToken(r.base))),
    latencyVsBase: median(results.map((r) => r[mode].latencyMs / r.base.latencyMs)),
    equalLengthVsBase: median(results.map((r) => equalLengthVsBase(r[mode], r.base))),
  };
});
console.log(
  `\nmedians over ${QUESTIONS.length} questions (ratios paired per question), load average ${loadavg()
    .map((x) => x.toFixed(1))
    .join(" ")}`,
);
console.log(
  "mode         latency ms  TTFT ms  tok/s  ms/token  passes/token  encoding ms  per-token ÷ base  latency ÷ base  equal length ÷ base",
);
for (const s of summary) {
  console.log(
    `${s.mode.padEnd(11)} ${fmt(s.latencyMs).padStart(11)} ${fmt(s.ttftMs).padStart(8)} ${fmt(s.tokS, 1).padStart(6)} ${fmt(s.msPerToken, 1).padStart(9)} ${fmt(s.passesPerToken, 2).padStart(13)} ${fmt(s.encodingMs).padStart(12)} ${fmt(s.perTokenVsBase, 2).padStart(16)}× ${fmt(s.latencyVsBase, 2).padStart(14)}× ${fmt(s.equalLengthVsBase, 2).padStart(19)}×`,
  );
}
const get = (mode: BenchMode) => summary.find((s) => s.mode === mode)!;
const target = (label: string, value: number, limit: number, unit = "×") =>
  console.log(`  ${value <= limit ? "MET " : "MISS"} ${label}: ${fmt(value, unit === "×" ? 2 : 0)}${unit} (target ≤ ${limit}${unit})`);
console.log("targets (issue 13):");
target("per-token nest ÷ base over the encoded corpus", get("nest-enc").perTokenVsBase, 0.5);
target("per-token nest ÷ base with nothing cached", get("nest-cold").perTokenVsBase, 1.0);
target(`  the same with the paper's ${PASSAGES}-passage store (nest-cold-b)`, get("nest-cold-b").perTokenVsBase, 1.0);
target(`TTFT with ${PASSAGES} passages over the encoded corpus`, get("nest-enc").ttftMs, 150, " ms");
// speculation "auto" (the request default) must never cost more than plain decoding once the keys exist.
const warmModes: BenchMode[] = ["nest-enc", "nest-warm", "rag-nest"];
const pairs = results.flatMap((r, i) => warmModes.map((m) => ({ i, m, ratio: perToken(r[m]) / perToken(r.base), r })));
const worst = pairs.reduce((a, b) => (b.ratio > a.ratio ? b : a));
target(`slowest prompt per token ÷ base in auto, keys available (${warmModes.join(", ")})`, worst.ratio, 1.05);
// Per token, a short complete answer carries its fixed costs (prefill) over few tokens: say which it was.
console.log(
  `       that is [${worst.i + 1}] ${worst.m}: ${worst.r[worst.m].tokens} tokens in ${fmt(worst.r[worst.m].latencyMs)} ms against base's ${worst.r.base.tokens} in ${fmt(worst.r.base.latencyMs)} ms (latency ${fmt(worst.r[worst.m].latencyMs / worst.r.base.latencyMs, 2)}×; base's first ${Math.min(worst.r[worst.m].tokens, worst.r.base.tokens)} tokens took ${fmt(timeToTokens(worst.r.base, Math.min(worst.r[worst.m].tokens, worst.r.base.tokens)))} ms)`,
);
// The same prompts compared at equal length (each answer's time to the shorter answer's token count).
const worstEqual = results
  .flatMap((r, i) => warmModes.map((m) => ({ i, m, ratio: equalLengthVsBase(r[m], r.base) })))
  .filter((x) => Number.isFinite(x.ratio))
  .reduce((a, b) => (b.ratio > a.ratio ? b : a));
target(
  `  the same at equal length (time to the shorter answer's tokens ÷ base's), [${worstEqual.i + 1}] ${worstEqual.m}`,
  worstEqual.ratio,
  1.05,
);
// Against decoding the same prompt without NEST: rag-nest's prompt is rag's, not base's.
const worstOwn = results
  .flatMap((r, i) => warmModes.map((m) => ({ i, m, ratio: perToken(r[m]) / perToken(m === "rag-nest" ? r.rag : r.base) })))
  .reduce((a, b) => (b.ratio > a.ratio ? b : a));
target(
  `  the same per token against the same prompt without NEST (nest ÷ base, rag-nest ÷ rag), [${worstOwn.i + 1}] ${worstOwn.m}`,
  worstOwn.ratio,
  1.05,
);
const same = results.filter((r) => r["nest-enc"].text === r["nest-cold"].text).length;
console.log(`  nest over the encoded corpus gave the same text as cold nest on ${same}/${results.length} questions`);

mkdirSync(join(REPO_ROOT, "bench-results"), { recursive: true });
writeFileSync(
  join(REPO_ROOT, "bench-results", "e2e.json"),
  JSON.stringify({ questions: QUESTIONS, maxNewTokens: MAX_NEW, passages: PASSAGES, loadavg: loadavg(), summary, results }, null, 2),
);
console.log("\nwrote bench-results/e2e.json");
