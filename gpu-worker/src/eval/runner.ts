/**
 * @module eval/runner
 * Runs a task's examples through the server's decoding path (the generation pipeline's decode job
 * and collection around `Engine.run`, the same code a `POST /v1/generate` reaches) once per variant, and scores each generation (metrics.ts).
 * Examples are the outer loop so that the passage encoder's cache serves every variant of one
 * example; first-stage retrieval runs once per example and its time is charged to every variant
 * that uses retrieval.
 */
import type { Citation, DeltaEvent, DoneEvent, GenerateEvent } from "@nest/shared/protocol/events";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import { collectGeneration, decodeJob, withTimings } from "@nest/shared/generation/pipeline";
import { GenerateRequestSchema, usesRetrieval, type Mode } from "@nest/shared/protocol/request";
import type { ScoredPassage } from "@nest/shared/protocol/passage";
import type { PassageIndex } from "@nest/shared/retrieve/passage-index";
import type { Engine } from "../engine/engine.ts";
import type { EvalExample, EvalTask } from "./tasks.ts";
import { abstains, answerRecall, containsRun, exactMatch, maxF1, rougeScores, squadTokens, tokenPassages } from "./metrics.ts";
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
  /** Whole-word answer recall; null for a question without an answer (`answers: []`). */
  alr: number | null;
  em: number | null;
  f1: number | null;
  /** QA: 1 when the output abstains (metrics.ts `abstains`), else 0; null for completion tasks. */
  abstained?: number | null;
  /** Citations (cited deltas) in the output. */
  citations?: number;
  /** Citations that cover a single generated token; null when the record does not know token counts. */
  single_token_citations?: number | null;
  rouge1: number | null;
  rouge2: number | null;
  rougeL: number | null;
  /**
   * Share of distinct cited passages that are gold (SQuAD: from the gold paragraph; factbook: one of
   * `gold_passages`); null without citations or without gold passages.
   */
  citation_precision: number | null;
  /** 1 when a run of contiguous citations of a gold passage covers a gold answer, else 0 (see {@link citationMetrics}). */
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
  citations: RecordCitation[];
}

/** A citation as stored in the JSONL: its ranges and the number of generated tokens it covers. */
export type RecordCitation = Pick<Citation, "passage_id" | "passage_start" | "passage_end" | "text_start" | "text_end"> & {
  tokens?: number;
};

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
  /** Resume: true for an (example id, variant name) already in the JSONL; it is not run again. */
  skip?: (id: string, variant: string) => boolean;
  signal?: AbortSignal;
}

/** Extra first-stage passages fetched when an example excludes its own window (WikiText). */
const EXCLUDE_OVERFETCH = 16;

/** Drops the passages that overlap the example's excluded window (WikiText held-out continuation). */
export function excludeWindow(
  task: Pick<EvalTask, "origins">,
  ex: Pick<EvalExample, "exclude">,
  passages: readonly ScoredPassage[],
): ScoredPassage[] {
  const w = ex.exclude;
  if (!w) return [...passages];
  return passages.filter((p) => {
    const o = task.origins.get(p.id);
    if (!o || o.paragraph !== w.paragraph) return true;
    return o.start + p.text.length <= w.start || o.start >= w.end;
  });
}

/**
 * The engine as the job runner of the generation pipeline (`@nest/shared/generation/pipeline`):
 * in-process, so its events are gathered while it runs and yielded after.
 */
async function* engineEvents(engine: Engine, job: DecodeJob, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
  const events: GenerateEvent[] = [];
  await engine.run(
    job,
    { delta: (data) => events.push({ event: "delta", data }), done: (data) => events.push({ event: "done", data }) },
    signal,
  );
  yield* events;
}

/**
 * Runs every example × variant.
 * @returns the records in run order.
 * @throws NestError `invalid_request` when a variant's parameters fail the request schema; the
 *   engine's errors otherwise.
 */
export async function runEval(opts: RunOptions): Promise<ExampleRecord[]> {
  const requests = opts.variants.map((v) => ({
    v,
    base: { mode: v.mode, max_new_tokens: opts.maxNewTokens, passages: opts.passages, ...v.params },
  }));
  for (const { v, base } of requests) {
    const r = GenerateRequestSchema.safeParse({ ...base, prompt: "x" });
    if (!r.success) throw new Error(`variant ${v.name}: ${r.error.issues.map((i) => `${i.path.join(".")}: ${i.message}`).join("; ")}`);
  }
  const needsIndex = opts.variants.some((v) => usesRetrieval(v.mode));
  if (needsIndex && !opts.index) throw new Error("a retrieval index is needed for modes other than base");
  const total = opts.task.examples.length * opts.variants.length;
  const records: ExampleRecord[] = [];
  let completed = 0;
  for (const ex of opts.task.examples) {
    const todo = requests.filter(({ v }) => !opts.skip?.(ex.id, v.name));
    completed += requests.length - todo.length;
    if (todo.length === 0) continue;
    let retrieved: ScoredPassage[] = [];
    let retrievalMs = 0;
    if (todo.some(({ v }) => usesRetrieval(v.mode))) {
      const t = performance.now();
      retrieved = ex.exclude
        ? excludeWindow(opts.task, ex, await opts.index!.search(ex.query, opts.passages + EXCLUDE_OVERFETCH)).slice(0, opts.passages)
        : await opts.index!.search(ex.query, opts.passages);
      retrievalMs = performance.now() - t;
    }
    const exampleRecords: ExampleRecord[] = [];
    for (const { v, base } of todo) {
      opts.signal?.throwIfAborted();
      const request = GenerateRequestSchema.parse({ ...base, prompt: ex.prompt });
      const useRetrieval = usesRetrieval(v.mode);
      const job = decodeJob(request, useRetrieval ? retrieved : []);
      const { deltas, done } = await collectGeneration(engineEvents(opts.engine, job, opts.signal));
      const record = scoreRecord(opts.task, ex, v, deltas, done, useRetrieval ? retrievalMs : 0);
      if (opts.task.kind === "completion" && ex.reference !== undefined && ex.reference.length > 0) {
        const s = await opts.engine.score(job, ex.reference);
        record.metrics.nll = s.nll;
        record.metrics.nll_tokens = s.tokens;
      }
      exampleRecords.push(record);
    }
    for (const rec of chargeColdEncoding(exampleRecords)) {
      records.push(rec);
      opts.onRecord?.(rec, ++completed, total);
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
export function scoreRecord(
  task: EvalTask,
  ex: EvalExample,
  v: Variant,
  deltas: readonly DeltaEvent[],
  done: DoneEvent,
  retrievalMs: number,
): ExampleRecord {
  const output = deltas.map((d) => d.text).join("");
  // One citation per cited run: the pieces of a streamed run (`continues`) are joined.
  const citations: Array<Citation & { tokens: number }> = joinContinuedCitations(
    deltas.flatMap((d) => (d.citation ? [{ ...d.citation, tokens: d.tokens }] : [])),
  );
  const attribution = attributionStats(tokenPassages(deltas));
  const rouge = ex.reference !== undefined ? rougeScores(output, ex.reference) : null;
  const metrics: ExampleMetrics = {
    ...answerMetrics(task, ex, output, citations),
    rouge1: rouge?.rouge1 ?? null,
    rouge2: rouge?.rouge2 ?? null,
    rougeL: rouge?.rougeL ?? null,
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
    timings_ms: withTimings(done, r1(retrievalMs), r1(done.timings_ms.total + retrievalMs)).timings_ms,
    finish_reason: done.finish_reason,
    citations: citations.map(({ passage_id, passage_start, passage_end, text_start, text_end, tokens }) => ({
      passage_id,
      passage_start,
      passage_end,
      text_start,
      text_end,
      tokens,
    })),
  };
}

/** The metrics computed from the output text and its citations alone (so a stored record can be re-scored). */
type AnswerMetrics = Pick<
  ExampleMetrics,
  "alr" | "em" | "f1" | "abstained" | "citations" | "single_token_citations" | "citation_precision" | "gold_covered"
>;

/**
 * QA answer metrics (ALR, EM, F1 over answerable questions; abstention) and citation metrics of
 * one output. Citation counts: `single_token_citations` is null when a citation lacks `tokens`.
 */
export function answerMetrics(
  task: Pick<EvalTask, "kind" | "origins">,
  ex: Pick<EvalExample, "answers" | "gold" | "goldPassages">,
  output: string,
  citations: readonly RecordCitation[],
): AnswerMetrics {
  const qa = task.kind === "qa";
  const answerable = qa && ex.answers.length > 0;
  return {
    alr: answerable ? answerRecall(output, ex.answers) : null,
    em: answerable ? exactMatch(output, ex.answers) : null,
    f1: answerable ? maxF1(output, ex.answers) : null,
    abstained: qa ? abstains(output) : null,
    citations: citations.length,
    single_token_citations: citations.every((c) => c.tokens !== undefined) ? citations.filter((c) => c.tokens === 1).length : null,
    ...citationMetrics(task, ex, citations, output),
  };
}

/**
 * Re-scores a stored record with the current metric code (e.g. whole-word ALR over a JSONL written
 * by an older harness): the answer and citation metrics are recomputed from `output` and
 * `citations`; attribution, usage and timings are kept.
 */
export function rescoreRecord(
  task: Pick<EvalTask, "kind" | "origins">,
  ex: Pick<EvalExample, "answers" | "gold" | "goldPassages">,
  r: ExampleRecord,
): ExampleRecord {
  return { ...r, answers: ex.answers, metrics: { ...r.metrics, ...answerMetrics(task, ex, r.output, r.citations) } };
}

/**
 * Joins citations that continue each other (same passage, the next starts where the previous ends
 * in both the passage and the output) into runs: a copied span committed over several decoding
 * steps arrives as several cited deltas.
 */
export function citationRuns<
  C extends Pick<Citation, "passage_id" | "passage_start" | "passage_end"> & Partial<Pick<Citation, "text_start" | "text_end">>,
>(citations: readonly C[]): C[] {
  const out: C[] = [];
  for (const c of citations) {
    const prev = out.at(-1);
    if (
      prev &&
      prev.passage_id === c.passage_id &&
      prev.passage_end === c.passage_start &&
      (prev.text_end === undefined || prev.text_end === c.text_start)
    ) {
      out[out.length - 1] = { ...prev, passage_end: c.passage_end, ...(c.text_end !== undefined ? { text_end: c.text_end } : {}) };
    } else out.push({ ...c });
  }
  return out;
}

/**
 * Citation precision and gold coverage.
 * - SQuAD (`ex.gold`): a passage is gold when it comes from the gold paragraph; a gold span is
 *   covered when one run of contiguous citations ({@link citationRuns}) of a gold-paragraph passage,
 *   `[origin + passage_start, origin + passage_end)`, contains it.
 * - factbook / jsonl with `goldPassages`: a passage is gold when it is listed; a gold answer is
 *   covered when a citation run of a gold passage quotes it as whole words (its text is
 *   `output.slice(text_start, text_end)`, equal to the cited passage range).
 * Precision = gold share of the distinct cited passages (null without citations); both are null
 * when the example has no gold passage (e.g. a question without an answer).
 */
export function citationMetrics(
  task: Pick<EvalTask, "origins">,
  ex: Pick<EvalExample, "gold" | "goldPassages" | "answers">,
  citations: readonly (Pick<Citation, "passage_id" | "passage_start" | "passage_end"> &
    Partial<Pick<Citation, "text_start" | "text_end">>)[],
  output = "",
): Pick<ExampleMetrics, "citation_precision" | "gold_covered"> {
  const gold = ex.gold;
  const goldIds = ex.goldPassages && ex.goldPassages.length > 0 ? new Set(ex.goldPassages) : undefined;
  if (!gold && !goldIds) return { citation_precision: null, gold_covered: null };
  const inGold = (id: string) => (gold ? task.origins.get(id)?.paragraph === gold.paragraph : goldIds!.has(id));
  const cited = [...new Set(citations.map((c) => c.passage_id))];
  const runs = citationRuns(citations).filter((c) => inGold(c.passage_id));
  const covered = gold
    ? runs.some((c) => {
        const o = task.origins.get(c.passage_id)!;
        const s = o.start + c.passage_start;
        const e = o.start + c.passage_end;
        return gold.spans.some((g) => s <= g.start && g.end <= e);
      })
    : runs.some(
        (c) =>
          c.text_start !== undefined &&
          c.text_end !== undefined &&
          ex.answers.some((a) => containsRun(squadTokens(output.slice(c.text_start, c.text_end)), squadTokens(a))),
      );
  return {
    citation_precision: cited.length === 0 ? null : cited.filter(inGold).length / cited.length,
    gold_covered: covered ? 1 : 0,
  };
}
