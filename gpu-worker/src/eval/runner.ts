/**
 * @module eval/runner
 * Runs a task's examples through the server's decoding path (`Engine.run`, the same code a
 * `POST /v1/generate` reaches) once per variant, and scores each generation (metrics.ts).
 * Examples are the outer loop so that the passage encoder's cache serves every variant of one
 * example; first-stage retrieval runs once per example and its time is charged to every variant
 * that uses retrieval.
 */
import type { Citation, DeltaEvent, DoneEvent } from "@nest/shared/protocol/events";
import { GenerateRequestSchema, usesRetrieval, type Mode } from "@nest/shared/protocol/request";
import type { ScoredPassage } from "@nest/shared/protocol/passage";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import type { Engine } from "../engine/engine.ts";
import type { EvalExample, EvalTask } from "./tasks.ts";
import { answerRecall, exactMatch, maxF1, rougeScores, tokenPassages } from "./metrics.ts";
import { attributionStats } from "../nest/attribution.ts";

/** One decoding configuration: a mode plus request parameters (e.g. `{ gamma: 0.05 }`). */
export interface Variant {
  /** Unique label, e.g. `nest`, `nest γ=5e-2`, `+RRC`. */
  name: string;
  mode: Mode;
  params: Record<string, number | string>;
}

/** Scores of one generation; null where the metric does not apply. */
export interface ExampleMetrics {
  alr: number | null;
  em: number | null;
  f1: number | null;
  rouge1: number | null;
  rouge2: number | null;
  rougeL: number | null;
  /** Share of distinct cited passages that belong to the gold paragraph (SQuAD); null without citations. */
  citation_precision: number | null;
  /** 1 when a citation of the gold paragraph covers a gold answer span (SQuAD), else 0. */
  gold_covered: number | null;
  attribution_ratio: number | null;
  /** Mean attributed run length, tokens (spec §7); null without attributed tokens. */
  attribution_run_length: number | null;
  /** Completion tasks: Σ −ln p of the reference continuation under p_M (nats) and its token count. */
  nll: number | null;
  nll_tokens: number | null;
}

/** One line of the per-example JSONL. */
export interface ExampleRecord {
  variant: string;
  mode: Mode;
  id: string;
  query: string;
  output: string;
  answers: string[];
  metrics: ExampleMetrics;
  usage: DoneEvent["usage"];
  /** Phase times in ms; `retrieval` is first-stage search, `total` includes it. */
  timings_ms: DoneEvent["timings_ms"];
  finish_reason: DoneEvent["finish_reason"];
  citations: Array<Pick<Citation, "passage_id" | "passage_start" | "passage_end" | "text_start" | "text_end">>;
}

export interface RunOptions {
  engine: Engine;
  /** First-stage index; may be undefined only when every variant is `base`. */
  index?: PassageIndex;
  task: EvalTask;
  variants: readonly Variant[];
  maxNewTokens: number;
  /** First-stage passages b per example (spec §1). */
  passages: number;
  /** Called after every generation (e.g. to append the JSONL line and print progress). */
  onRecord?: (r: ExampleRecord, done: number, total: number) => void;
  signal?: AbortSignal;
}

/**
 * Runs every example × variant.
 * @returns the records in run order.
 * @throws NestError `invalid_request` when a variant's parameters fail the request schema; the
 *   engine's errors otherwise.
 */
export async function runEval(opts: RunOptions): Promise<ExampleRecord[]> {
  const requests = opts.variants.map((v) => ({ v, base: { mode: v.mode, max_new_tokens: opts.maxNewTokens, passages: opts.passages, ...v.params } }));
  for (const { v, base } of requests) {
    const r = GenerateRequestSchema.safeParse({ ...base, prompt: "x" });
    if (!r.success) throw new Error(`variant ${v.name}: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  const needsIndex = opts.variants.some((v) => usesRetrieval(v.mode));
  if (needsIndex && !opts.index) throw new Error("a retrieval index is needed for modes other than base");
  const total = opts.task.examples.length * opts.variants.length;
  const records: ExampleRecord[] = [];
  for (const ex of opts.task.examples) {
    let retrieved: ScoredPassage[] = [];
    let retrievalMs = 0;
    if (needsIndex) {
      const t = performance.now();
      retrieved = await opts.index!.search(ex.query, opts.passages);
      retrievalMs = performance.now() - t;
    }
    const exampleRecords: ExampleRecord[] = [];
    for (const { v, base } of requests) {
      opts.signal?.throwIfAborted();
      const request = GenerateRequestSchema.parse({ ...base, prompt: ex.prompt });
      const useRetrieval = usesRetrieval(v.mode);
      const deltas: DeltaEvent[] = [];
      let done: DoneEvent | undefined;
      await opts.engine.run(
        { request, passages: useRetrieval ? retrieved : [] },
        { delta: (d) => deltas.push(d), done: (d) => (done = d) },
        opts.signal,
      );
      if (!done) throw new Error(`example ${ex.id}, variant ${v.name}: no done event`);
      const record = scoreRecord(opts.task, ex, v, deltas, done, useRetrieval ? retrievalMs : 0);
      if (opts.task.kind === "completion" && ex.reference !== undefined && ex.reference.length > 0) {
        const s = await opts.engine.score({ request, passages: useRetrieval ? retrieved : [] }, ex.reference);
        record.metrics.nll = s.nll;
        record.metrics.nll_tokens = s.tokens;
      }
      exampleRecords.push(record);
    }
    for (const rec of chargeColdEncoding(exampleRecords)) {
      records.push(rec);
      opts.onRecord?.(rec, records.length, total);
    }
  }
  return records;
}

/**
 * The passage encoder's cache lets only the first store-using variant of an example pay for
 * encoding its passages. For a fair comparison every store-using variant (`store_keys > 0`) is
 * charged that cold cost (spec §11: latency includes token-index building): its `encoding` becomes
 * the example's largest encoding time and `total` grows by the difference.
 */
export function chargeColdEncoding(records: readonly ExampleRecord[]): ExampleRecord[] {
  const cold = Math.max(0, ...records.filter((r) => r.usage.store_keys > 0).map((r) => r.timings_ms.encoding));
  return records.map((r) => {
    if (r.usage.store_keys === 0) return r;
    const extra = cold - r.timings_ms.encoding;
    return { ...r, timings_ms: { ...r.timings_ms, encoding: cold, total: Math.round((r.timings_ms.total + extra) * 10) / 10 } };
  });
}

/** Builds the record of one generation and computes its metrics. */
export function scoreRecord(task: EvalTask, ex: EvalExample, v: Variant, deltas: readonly DeltaEvent[], done: DoneEvent, retrievalMs: number): ExampleRecord {
  const output = deltas.map((d) => d.text).join("");
  const citations = deltas.flatMap((d) => (d.citation ? [d.citation] : []));
  const attribution = attributionStats(tokenPassages(deltas));
  const qa = task.kind === "qa";
  const rouge = ex.reference !== undefined ? rougeScores(output, ex.reference) : null;
  const metrics: ExampleMetrics = {
    alr: qa ? answerRecall(output, ex.answers) : null,
    em: qa ? exactMatch(output, ex.answers) : null,
    f1: qa ? maxF1(output, ex.answers) : null,
    rouge1: rouge?.rouge1 ?? null,
    rouge2: rouge?.rouge2 ?? null,
    rougeL: rouge?.rougeL ?? null,
    ...citationMetrics(task, ex, citations),
    attribution_ratio: attribution.ratio,
    attribution_run_length: attribution.runLength,
    nll: null,
    nll_tokens: null,
  };
  const r1 = (x: number) => Math.round(x * 10) / 10;
  return {
    variant: v.name,
    mode: v.mode,
    id: ex.id,
    query: ex.query,
    output,
    answers: ex.answers,
    metrics,
    usage: done.usage,
    timings_ms: { ...done.timings_ms, retrieval: r1(retrievalMs), total: r1(done.timings_ms.total + retrievalMs) },
    finish_reason: done.finish_reason,
    citations: citations.map(({ passage_id, passage_start, passage_end, text_start, text_end }) => ({ passage_id, passage_start, passage_end, text_start, text_end })),
  };
}

/**
 * Citation precision and gold-span coverage (SQuAD only: needs passage origins and a gold paragraph).
 * A gold span is covered when one citation's paragraph range `[origin + passage_start, origin +
 * passage_end)` contains it.
 */
export function citationMetrics(
  task: Pick<EvalTask, "origins">, ex: Pick<EvalExample, "gold">, citations: readonly Pick<Citation, "passage_id" | "passage_start" | "passage_end">[],
): Pick<ExampleMetrics, "citation_precision" | "gold_covered"> {
  const gold = ex.gold;
  if (!gold) return { citation_precision: null, gold_covered: null };
  const cited = [...new Set(citations.map((c) => c.passage_id))];
  const inGold = (id: string) => task.origins.get(id)?.paragraph === gold.paragraph;
  const covered = citations.some((c) => {
    const o = task.origins.get(c.passage_id);
    if (!o || o.paragraph !== gold.paragraph) return false;
    const s = o.start + c.passage_start;
    const e = o.start + c.passage_end;
    return gold.spans.some((g) => s <= g.start && g.end <= e);
  });
  return {
    citation_precision: cited.length === 0 ? null : cited.filter(inGold).length / cited.length,
    gold_covered: covered ? 1 : 0,
  };
}
