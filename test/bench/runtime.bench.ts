/**
 * Runtime bench (issue 3). Not a test: it prints a table and writes bench-results/runtime.json.
 *
 *   npm run bench -- runtime
 *   node --import tsx test/bench/runtime.bench.ts [--runs 3] [--threads 2] [--precisions fp32,int8,int4,fused-fp32,fused-int8,fused-int4]
 *       [--max-new-tokens 64] [--skip-llama] [--skip-nest] [--load-procs 2] [--spinning off,50,on]
 *
 * 1. Base LM per precision and intra-op spinning setting (`off`: none; a number: spinning bounded to
 *    that many µs, `session.intra_op.spin_duration_us`, 50 being the default; `on`: onnxruntime's own
 *    unbounded spinning; fresh
 *    child process each, so peak RSS is the model's own): prefill tokens/s (a 200-token prompt,
 *    logits for the last position only), decode tokens/s (64 greedy steps), peak RSS. Measured
 *    twice in one run: as the machine is ("quiet"), then with `--load-procs` busy-loop processes
 *    running beside it ("loaded", 0 skips it), llama.cpp included.
 * 2. llama.cpp (node-llama-cpp 3.21.1, CPU, same thread count) on the same weights: prefill and
 *    decode tokens/s on the same prompt. Each precision is compared with the GGUF holding its weights
 *    (fp32 with the Q4_1 file dequantised to F32, int8 with its Q8_0 rewrite, int4 with the served
 *    Q4_1 file; infra/export-onnx/gguf_variants.py writes the F32 and Q8_0 files once into
 *    `$NEST_HOME/bench-deps/gguf`), and every precision also with the Q4_1 file. node-llama-cpp is installed on first use into
 *    `$NEST_HOME/bench-deps` (it ships ~700 MB of prebuilt binaries, too much for every install).
 * 3. NEST vs base on grounded prompts through the Engine (the server's decoding code), 40 factbook
 *    passages from BM25: six factbook questions and six factbook passage continuations. Decode
 *    tokens/s = completion tokens ÷ (LM + kNN time), LM passes per token, mean accepted span,
 *    time to first token cold (empty key caches) and warm (passages cached).
 * Every figure is the median over `--runs` runs.
 */
import { spawn, spawnSync } from "node:child_process";
import { existsSync } from "node:fs";
import { mkdir, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { parseArgs } from "node:util";
import { loadavg } from "node:os";
import { createRequire } from "node:module";
import { findModelDir, prepareExporterPython } from "@nest/gpu-worker/runtime/prepare-model";
import { findCorpusDir } from "@nest/corpus/layout";
import { cachePaths, REPO_ROOT } from "@nest/corpus/home";
import { DEFAULT_MODEL } from "@nest/gpu-worker/config";
import { readManifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { runtimeOptions, type Precision } from "@nest/gpu-worker/runtime/session-options";

const { values } = parseArgs({
  options: {
    runs: { type: "string", default: "3" },
    threads: { type: "string", default: "2" },
    precisions: { type: "string", default: "fp32,int8,int4,fused-fp32,fused-int8,fused-int4" },
    "max-new-tokens": { type: "string", default: "64" },
    "skip-llama": { type: "boolean", default: false },
    "skip-nest": { type: "boolean", default: false },
    "load-procs": { type: "string", default: "2" },
    spinning: { type: "string", default: "off,50,on" },
    child: { type: "string" },
    "child-spinning": { type: "string", default: "off" },
  },
});
const RUNS = Number(values.runs);
const THREADS = Number(values.threads);
const MAX_NEW = Number(values["max-new-tokens"]);
const PREFILL_TOKENS = 200;
const DECODE_STEPS = 64;

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length === 0 ? NaN : s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : "–");

/** A fixed ~200-token prompt (factbook-like prose) for prefill and decode figures. */
async function benchPrompt(tok: ModelTokenizer): Promise<number[]> {
  const text =
    "Australia is a country comprising the mainland of the Australian continent, the island of Tasmania and numerous smaller islands. ".repeat(
      12,
    );
  return tok.encodeChat([{ role: "user", content: `Summarise: ${text}` }]).slice(0, PREFILL_TOKENS);
}

// ---- 1. base LM in a child process --------------------------------------------------------------
/** A `--spinning` entry as session options: `off`, `on` (no time bound) or a bound in µs (checked by `runtimeOptions`). */
function spinOptions(spinning: string): { intraOpSpinning: boolean; intraOpSpinDurationUs: number } {
  if (spinning === "off") return { intraOpSpinning: false, intraOpSpinDurationUs: 0 };
  if (spinning === "on") return { intraOpSpinning: true, intraOpSpinDurationUs: 0 };
  return { intraOpSpinning: true, intraOpSpinDurationUs: Number(spinning) };
}

async function baseChild(precision: Precision, spinning: string): Promise<void> {
  const dir = await findModelDir();
  const manifest = await readManifest(dir);
  const lm = await DecoderSession.load(dir, manifest, { precision, threads: THREADS, ...spinOptions(spinning) });
  const tok = await ModelTokenizer.load(dir, manifest);
  const prompt = await benchPrompt(tok);
  const prefill: number[] = [];
  const decode: number[] = [];
  const kvBytesPerToken: number[] = [];
  for (let r = 0; r < RUNS; r++) {
    lm.reset();
    let t = performance.now();
    let out = await lm.forward(prompt, 1);
    prefill.push(prompt.length / ((performance.now() - t) / 1000));
    let next = argmax(out.logitsRow(prompt.length - 1));
    const before = lm.copies.kvOutBytes;
    t = performance.now();
    for (let i = 0; i < DECODE_STEPS; i++) {
      out = await lm.forward([next], 1);
      next = argmax(out.logitsRow(0));
    }
    decode.push(DECODE_STEPS / ((performance.now() - t) / 1000));
    kvBytesPerToken.push((lm.copies.kvOutBytes - before) / DECODE_STEPS);
  }
  const rssMb = process.resourceUsage().maxRSS / 1024;
  process.stdout.write(
    JSON.stringify({
      precision,
      spinning: spinning === "off" || spinning === "on" ? spinning : `${spinning}us`,
      prefillTokS: median(prefill),
      decodeTokS: median(decode),
      peakRssMb: rssMb,
      kvBytesPerToken: median(kvBytesPerToken),
    }),
  );
}

function argmax(x: Float32Array): number {
  let a = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[a]!) a = i;
  return a;
}

function runChild(precision: string, spinning: string): Record<string, number | string> | undefined {
  const r = spawnSync(
    process.execPath,
    [
      "--import",
      "tsx",
      new URL(import.meta.url).pathname,
      "--child",
      precision,
      "--child-spinning",
      spinning,
      "--runs",
      String(RUNS),
      "--threads",
      String(THREADS),
    ],
    { encoding: "utf8", maxBuffer: 1 << 24 },
  );
  if (r.status !== 0) {
    console.error(`base ${precision}: child failed (${r.status}): ${r.stderr.split("\n").slice(-5).join("\n")}`);
    return undefined;
  }
  return JSON.parse(r.stdout.trim().split("\n").at(-1)!) as Record<string, number | string>;
}

// ---- 2. llama.cpp ---------------------------------------------------------------------------------
/** The slice of node-llama-cpp's API used here (it is installed outside the project, on first use). */
interface LlamaLike {
  loadModel(o: { modelPath: string }): Promise<{
    tokenize(text: string, specialTokens: boolean): number[];
    createContext(o: { threads: number; contextSize: number }): Promise<{
      getSequence(): { evaluate(tokens: number[], o: { temperature: number }): AsyncIterable<number> };
      dispose(): Promise<void>;
    }>;
    dispose(): Promise<void>;
  }>;
}
/** llama.cpp's weights per bit width: the served Q4_1 GGUF, and its F32 / Q8_0 rewrites (gguf_variants.py). */
type GgufKind = "q4_1" | "q8_0" | "f32";
/** Which llama.cpp file holds the same weights as each of our precisions (fp32 = the Q4_1 file dequantised). */
const SAME_WEIGHTS: Partial<Record<string, GgufKind>> = {
  fp32: "f32",
  "fused-fp32": "f32",
  int8: "q8_0",
  "fused-int8": "q8_0",
  int4: "q4_1",
  "fused-int4": "q4_1",
};
const GGUF_VARIANTS_SCRIPT = join(REPO_ROOT, "infra", "export-onnx", "gguf_variants.py");

/** The GGUF of one bit width, written once into `$NEST_HOME/bench-deps/gguf` (the Q4_1 file is the download). */
async function benchGguf(kind: GgufKind): Promise<string> {
  const src = join(cachePaths().downloads, DEFAULT_MODEL.ggufFile);
  if (kind === "q4_1") return src;
  const out = join(cachePaths().home, "bench-deps", "gguf", DEFAULT_MODEL.ggufFile.replace(/\.Q4_1\./, `.${kind.toUpperCase()}.`));
  if (!existsSync(out)) {
    await mkdir(dirname(out), { recursive: true });
    const py = await prepareExporterPython();
    const r = spawnSync(py, [GGUF_VARIANTS_SCRIPT, "--gguf", src, "--type", kind, "--out", out], { stdio: "inherit" });
    if (r.status !== 0) throw new Error(`gguf_variants.py --type ${kind} exited with ${r.status}`);
  }
  return out;
}

async function llamaCpp(kinds: GgufKind[]): Promise<Partial<Record<GgufKind, Record<string, number>>> | undefined> {
  const deps = join(cachePaths().home, "bench-deps");
  if (!existsSync(join(deps, "node_modules", "node-llama-cpp"))) {
    console.error("installing node-llama-cpp@3.21.1 into", deps, "(first bench run only)");
    await mkdir(deps, { recursive: true });
    const r = spawnSync(
      "npm",
      ["install", "--prefix", deps, "--no-save", "--ignore-scripts", "--no-audit", "--no-fund", "-E", "node-llama-cpp@3.21.1"],
      { stdio: "inherit" },
    );
    if (r.status !== 0) return undefined;
  }
  const require = createRequire(join(deps, "package.json"));
  const entry = require.resolve("node-llama-cpp");
  const { getLlama } = (await import(entry)) as { getLlama: (o: object) => Promise<LlamaLike> };
  const llama = await getLlama({ gpu: false, build: "never", logLevel: "error" as never });
  const dir = await findModelDir();
  const tok = await ModelTokenizer.load(dir, await readManifest(dir));
  const promptText = tok.decode(await benchPrompt(tok));
  const result: Partial<Record<GgufKind, Record<string, number>>> = {};
  for (const kind of kinds) {
    let modelPath: string;
    try {
      modelPath = await benchGguf(kind);
    } catch (err) {
      console.error(`llama.cpp ${kind}: ${(err as Error).message} (skipped)`);
      continue;
    }
    const model = await llama.loadModel({ modelPath });
    const prefill: number[] = [];
    const decode: number[] = [];
    for (let r = 0; r < RUNS; r++) {
      const context = await model.createContext({ threads: THREADS, contextSize: 1024 });
      const seq = context.getSequence();
      const tokens = model.tokenize(promptText, true);
      const t0 = performance.now();
      let first = 0;
      let n = 0;
      for await (const _ of seq.evaluate(tokens, { temperature: 0 })) {
        if (n === 0) first = performance.now();
        if (++n > DECODE_STEPS) break;
      }
      prefill.push(tokens.length / ((first - t0) / 1000));
      decode.push(DECODE_STEPS / ((performance.now() - first) / 1000));
      await context.dispose();
    }
    await model.dispose();
    result[kind] = { prefillTokS: median(prefill), decodeTokS: median(decode) };
  }
  return result;
}

// ---- 3. NEST vs base on grounded prompts ------------------------------------------------------------
const QUESTIONS = [
  "What is the capital of Australia?",
  "What is the highest point in Nepal?",
  "What are the national symbols of Canada?",
  "When did Brazil become independent?",
  "Where is Kiribati located?",
  "What languages are spoken in Belgium?",
];
const CONTINUATION_QUERIES = [
  "Australia capital",
  "Nepal elevation extremes",
  "Canada national symbols",
  "Brazil independence",
  "Kiribati location",
  "Belgium languages",
];

interface NestRow {
  mode: string;
  set: string;
  tokS: number;
  passesPerToken: number;
  meanSpan: number;
  ttftColdMs: number;
  ttftWarmMs: number;
  attribution: number;
}

async function nestVsBase(): Promise<NestRow[]> {
  const dir = await findModelDir();
  const index = await openLanceIndex(await findCorpusDir("factbook"), "factbook");
  const sets: { name: string; prompts: { prompt: string; query: string }[] }[] = [
    { name: "questions", prompts: QUESTIONS.map((q) => ({ prompt: q, query: q })) },
    {
      name: "continuations",
      prompts: await Promise.all(
        CONTINUATION_QUERIES.map(async (q) => {
          const [top] = await index.search(q, 1);
          const head = top!.text.slice(0, Math.max(20, Math.floor(top!.text.length * 0.3)));
          return { prompt: `Continue this text exactly: ${head}`, query: q };
        }),
      ),
    },
  ];
  const rows: NestRow[] = [];
  for (const mode of ["base", "nest"] as const) {
    for (const set of sets) {
      const tokS: number[] = [],
        ppt: number[] = [],
        span: number[] = [],
        cold: number[] = [],
        warm: number[] = [],
        attr: number[] = [];
      for (let r = 0; r < RUNS; r++) {
        // A fresh engine per run: empty memory cache, no disk cache, no encoded corpus, so the first request is cold.
        const engine = await Engine.load(dir, { threads: THREADS, diskKeyCache: false, corpusKeys: false });
        for (const p of set.prompts) {
          const passages = (await index.search(p.query, 40)).map(({ id, title, text, source }) => ({ id, title, text, source }));
          const request = GenerateRequestSchema.parse({ prompt: p.prompt, mode, max_new_tokens: MAX_NEW });
          for (const phase of ["cold", "warm"] as const) {
            const t0 = performance.now();
            let ttft = NaN;
            let done: import("@nest/shared/protocol/events").DoneEvent | undefined;
            await engine.run(
              { request, passages },
              {
                delta: () => {
                  if (Number.isNaN(ttft)) ttft = performance.now() - t0;
                },
                done: (d) => (done = d),
              },
            );
            (phase === "cold" ? cold : warm).push(ttft);
            if (phase === "warm" && done) {
              const u = done.usage;
              tokS.push(u.completion_tokens / ((done.timings_ms.lm + done.timings_ms.knn) / 1000));
              ppt.push(u.lm_forward_passes / Math.max(1, u.completion_tokens));
              span.push(u.num_drafts > 0 ? u.accepted_tokens / u.num_drafts : 0);
              attr.push(u.attribution_ratio ?? 0);
            }
          }
        }
        await engine.session.release();
      }
      rows.push({
        mode,
        set: set.name,
        tokS: median(tokS),
        passesPerToken: median(ppt),
        meanSpan: median(span),
        ttftColdMs: median(cold),
        ttftWarmMs: median(warm),
        attribution: median(attr),
      });
    }
  }
  await index.close?.();
  return rows;
}

// ---- main ------------------------------------------------------------------------------------------
if (values.child) {
  await baseChild(values.child as Precision, values["child-spinning"]!);
  process.exit(0);
}

/** Starts `n` busy-loop processes (a concurrent CPU load); returns a function that stops them. */
function startLoad(n: number): () => void {
  const procs = Array.from({ length: n }, () =>
    spawn(process.execPath, ["-e", "for(;;){let x=0;for(let i=0;i<1e7;i++)x+=i;}"], { stdio: "ignore" }),
  );
  return () => procs.forEach((p) => p.kill());
}

/** Base LM per precision × spinning, then llama.cpp, printed as one table. */
async function runtimeRound(
  label: string,
): Promise<{ base: Record<string, number | string>[]; llama?: Awaited<ReturnType<typeof llamaCpp>> }> {
  const spinnings = values.spinning!.split(",").map((s) => s.trim());
  for (const s of spinnings) runtimeOptions(spinOptions(s)); // a bad entry stops the bench here, not in every child
  const base = values
    .precisions!.split(",")
    .flatMap((p) => spinnings.map((s) => runChild(p.trim(), s)))
    .filter((x) => x !== undefined);
  console.log(
    `\nbase LM, ${label} (median; load average ${loadavg()
      .map((x) => x.toFixed(1))
      .join(" ")})`,
  );
  console.log("precision  spinning  prefill tok/s  decode tok/s  peak RSS MB  KV bytes out/token");
  for (const b of base)
    console.log(
      `${String(b.precision).padEnd(10)} ${String(b.spinning).padEnd(8)} ${fmt(Number(b.prefillTokS)).padStart(13)} ${fmt(Number(b.decodeTokS)).padStart(13)} ${fmt(Number(b.peakRssMb), 0).padStart(12)} ${fmt(Number(b.kvBytesPerToken), 0).padStart(19)}`,
    );
  let llama: Awaited<ReturnType<typeof llamaCpp>>;
  if (!values["skip-llama"]) {
    const kinds = [...new Set(["q4_1" as GgufKind, ...base.flatMap((b) => SAME_WEIGHTS[String(b.precision)] ?? [])])];
    try {
      llama = await llamaCpp(kinds);
    } catch (err) {
      console.error(`llama.cpp: ${(err as Error).message}`);
    }
  }
  if (llama) {
    for (const [kind, r] of Object.entries(llama))
      console.log(
        `llama.cpp ${kind.toUpperCase().padEnd(4)} (node-llama-cpp 3.21.1, ${THREADS} threads), ${label}: prefill ${fmt(r.prefillTokS!)} tok/s, decode ${fmt(r.decodeTokS!)} tok/s${kind === "q4_1" ? " (the served GGUF)" : ""}`,
      );
    const q41 = llama.q4_1;
    for (const b of base) {
      const kind = SAME_WEIGHTS[String(b.precision)] ?? "q4_1"; // fp16: no GGUF of its own here
      const same = llama[kind];
      const vs = (r: Record<string, number> | undefined, what: "decodeTokS" | "prefillTokS") =>
        fmt(Number(b[what]) / (r?.[what] ?? NaN), 2);
      console.log(
        `  ours ${String(b.precision).padEnd(10)} spinning ${String(b.spinning).padEnd(4)} / llama.cpp ${kind.toUpperCase()} (same weights): decode ${vs(same, "decodeTokS")}× (target ≥ 1.0), prefill ${vs(same, "prefillTokS")}× (target ≥ 1.5); / llama.cpp Q4_1: decode ${vs(q41, "decodeTokS")}×, prefill ${vs(q41, "prefillTokS")}×`,
      );
    }
  }
  return { base, llama };
}

console.log(
  `runtime bench: ${RUNS} runs, ${THREADS} threads, load average ${loadavg()
    .map((x) => x.toFixed(1))
    .join(" ")}`,
);
const quiet = await runtimeRound("as the machine is");
const { base, llama } = quiet;
let loaded: Awaited<ReturnType<typeof runtimeRound>> | undefined;
const LOAD_PROCS = Number(values["load-procs"]);
if (LOAD_PROCS > 0) {
  const stop = startLoad(LOAD_PROCS);
  try {
    loaded = await runtimeRound(`with ${LOAD_PROCS} busy-loop processes beside it`);
  } finally {
    stop();
  }
}

const nest = values["skip-nest"] ? [] : await nestVsBase();
console.log(
  `\nNEST vs base on grounded prompts (default precision: fused-fp32 on the CPU, 40 passages, max ${MAX_NEW} new tokens; median)`,
);
console.log("mode  set            decode tok/s  LM passes/token  mean accepted span  TTFT cold ms  TTFT warm ms  attribution");
for (const r of nest)
  console.log(
    `${r.mode.padEnd(5)} ${r.set.padEnd(14)} ${fmt(r.tokS).padStart(12)} ${fmt(r.passesPerToken, 2).padStart(16)} ${fmt(r.meanSpan, 2).padStart(19)} ${fmt(r.ttftColdMs, 0).padStart(13)} ${fmt(r.ttftWarmMs, 0).padStart(13)} ${fmt(r.attribution, 2).padStart(12)}`,
  );
for (const set of nest.length > 0 ? ["questions", "continuations"] : []) {
  const b = nest.find((r) => r.mode === "base" && r.set === set)!;
  const n = nest.find((r) => r.mode === "nest" && r.set === set)!;
  console.log(`  NEST/base decode tok/s on ${set}: ${fmt(n.tokS / b.tokS, 2)}×`);
}

await mkdir(join(REPO_ROOT, "bench-results"), { recursive: true });
await writeFile(
  join(REPO_ROOT, "bench-results", "runtime.json"),
  JSON.stringify({ runs: RUNS, threads: THREADS, loadavg: loadavg(), base, llama, loaded, nest }, null, 2),
);
console.log("\nwrote bench-results/runtime.json");
