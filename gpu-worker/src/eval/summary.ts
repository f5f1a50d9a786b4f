/**
 * @module eval/summary
 * Aggregates per-example records into one row per variant: quality means, attribution (spec §7,
 * pooled over tokens), and speed (LM forward passes per token, tokens/s, mean phase times in ms).
 */
import { mean } from "./metrics.ts";
import type { ExampleRecord } from "./runner.ts";
import { bootstrapMean, pairedBootstrap, BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, type BootstrapOptions } from "./stats.ts";

/** One variant's aggregate. Means are over examples; ratios pool tokens over all examples. */
export interface VariantSummary {
  variant: string;
  mode: string;
  examples: number;
  /** Examples with at least one gold answer (ALR, EM, F1 are over these). */
  answerable: number;
  /** Whole-word ALR over answerable examples. */
  alr: number | null;
  /** 95 % percentile-bootstrap interval of `alr` over questions (stats.ts, fixed seed). */
  alr_ci: { low: number; high: number } | null;
  /** Examples without an answer in the corpus (`answers: []`). */
  unanswerable: number;
  /** Share of unanswerable examples whose output abstains; null when there are none. */
  abstention: number | null;
  /** Share of answerable examples whose output abstains (false abstention); null when there are none. */
  false_abstention: number | null;
  /** Σ citations ÷ examples. */
  citations_per_example: number;
  /** Σ single-token citations ÷ Σ citations (records that know their citations' token counts). */
  single_token_citation_share: number | null;
  em: number | null;
  f1: number | null;
  rouge1: number | null;
  rouge2: number | null;
  rougeL: number | null;
  /** Completion tasks: exp(Σ NLL ÷ Σ target tokens) of the reference continuations under p_M (spec §11). */
  perplexity: number | null;
  /** Mean over examples that cite anything. */
  citation_precision: number | null;
  /** Share of examples with a gold span covered by a citation. */
  gold_covered: number | null;
  /** Σ attributed tokens ÷ Σ completion tokens. */
  attribution_ratio: number | null;
  /** Σ attributed tokens ÷ Σ attributed runs (tokens). */
  attribution_run_length: number | null;
  /** Σ accepted draft tokens ÷ Σ completion tokens: the share copied through verified spans (token-mode matches excluded). */
  copied_ratio: number | null;
  /** Σ accepted ÷ Σ drafted draft tokens. */
  draft_acceptance: number | null;
  mean_completion_tokens: number;
  /** Σ LM forward passes (prefill excluded) ÷ Σ completion tokens. */
  forward_passes_per_token: number | null;
  /** Σ completion tokens ÷ Σ total seconds. */
  tokens_per_s: number | null;
  /** Mean per-example latency, ms (retrieval included). */
  latency_ms: number;
  /** Mean phase times, ms; `other` = total − the named phases (mixture, verification, detokenising, prompt). */
  breakdown_ms: { retrieval: number; encoding: number; knn: number; lm: number; other: number };
}

const sum = (xs: readonly number[]) => xs.reduce((a, b) => a + b, 0);

/** exp(Σ nll ÷ Σ nll_tokens) over the records that were scored; null when none was. */
export function perplexity(rs: readonly Pick<ExampleRecord, "metrics">[]): number | null {
  const scored = rs.filter((r) => r.metrics.nll !== null && r.metrics.nll_tokens);
  const tokens = sum(scored.map((r) => r.metrics.nll_tokens!));
  return tokens === 0 ? null : Math.exp(sum(scored.map((r) => r.metrics.nll!)) / tokens);
}

/** Summaries in first-seen variant order. */
export function summarize(records: readonly ExampleRecord[]): VariantSummary[] {
  const byVariant = new Map<string, ExampleRecord[]>();
  for (const r of records) {
    const list = byVariant.get(r.variant) ?? [];
    list.push(r);
    byVariant.set(r.variant, list);
  }
  return [...byVariant.entries()].map(([variant, rs]) => summarizeOne(variant, rs));
}

function summarizeOne(variant: string, rs: readonly ExampleRecord[]): VariantSummary {
  const m = <K extends keyof ExampleRecord["metrics"]>(k: K) => mean(rs.map((r) => r.metrics[k] as number | null | undefined));
  const answerable = rs.filter((r) => r.answers.length > 0);
  const unanswerable = rs.filter((r) => r.answers.length === 0);
  const alrs = answerable.map((r) => r.metrics.alr).filter((x): x is number => typeof x === "number");
  const ci = bootstrapMean(alrs);
  const withCounts = rs.filter((r) => typeof r.metrics.single_token_citations === "number");
  const citedInCounts = sum(withCounts.map((r) => r.metrics.citations ?? r.citations.length));
  const tokens = sum(rs.map((r) => r.usage.completion_tokens));
  const attributed = sum(rs.map((r) => r.usage.attributed_tokens));
  const runs = sum(
    rs.map((r) => {
      const len = r.metrics.attribution_run_length;
      const a = (r.metrics.attribution_ratio ?? 0) * r.usage.completion_tokens;
      return len ? Math.round(a / len) : 0;
    }),
  );
  const drafted = sum(rs.map((r) => r.usage.drafted_tokens));
  const passes = sum(rs.map((r) => r.usage.lm_forward_passes));
  const totalMs = sum(rs.map((r) => r.timings_ms.total));
  const avg = (k: "retrieval" | "encoding" | "knn" | "lm" | "total") => sum(rs.map((r) => r.timings_ms[k])) / rs.length;
  const b = { retrieval: avg("retrieval"), encoding: avg("encoding"), knn: avg("knn"), lm: avg("lm") };
  return {
    variant,
    mode: rs[0]!.mode,
    examples: rs.length,
    answerable: answerable.length,
    alr: m("alr"),
    alr_ci: ci ? { low: ci.low, high: ci.high } : null,
    unanswerable: unanswerable.length,
    abstention: mean(unanswerable.map((r) => r.metrics.abstained)),
    false_abstention: mean(answerable.map((r) => r.metrics.abstained)),
    citations_per_example: sum(rs.map((r) => r.metrics.citations ?? r.citations.length)) / rs.length,
    single_token_citation_share: citedInCounts === 0 ? null : sum(withCounts.map((r) => r.metrics.single_token_citations!)) / citedInCounts,
    em: m("em"),
    f1: m("f1"),
    rouge1: m("rouge1"),
    rouge2: m("rouge2"),
    rougeL: m("rougeL"),
    perplexity: perplexity(rs),
    citation_precision: m("citation_precision"),
    gold_covered: m("gold_covered"),
    attribution_ratio: tokens === 0 ? null : attributed / tokens,
    attribution_run_length: runs === 0 ? null : attributed / runs,
    copied_ratio: tokens === 0 ? null : sum(rs.map((r) => r.usage.accepted_tokens)) / tokens,
    draft_acceptance: drafted === 0 ? null : sum(rs.map((r) => r.usage.accepted_tokens)) / drafted,
    mean_completion_tokens: tokens / rs.length,
    forward_passes_per_token: tokens === 0 ? null : passes / tokens,
    tokens_per_s: totalMs === 0 ? null : tokens / (totalMs / 1000),
    latency_ms: avg("total"),
    breakdown_ms: { ...b, other: Math.max(0, avg("total") - b.retrieval - b.encoding - b.knn - b.lm) },
  };
}

/** The ALR differences the issue asks about (a − b), in report order. */
export const PAIRED_COMPARISONS: ReadonlyArray<readonly [string, string]> = [
  ["rag-nest", "rag"],
  ["nest", "rag"],
  ["nest", "knnlm"],
  ["rag", "base"],
  ["nest", "base"],
  ["rag-nest", "base"],
];

/** One paired comparison of two variants' ALR on the questions both answered. */
export interface PairedAlr {
  a: string;
  b: string;
  /** Questions in the pair (answerable, scored by both). */
  n: number;
  /** mean ALR(a) − mean ALR(b), and its 95 % paired-bootstrap interval. */
  diff: number;
  low: number;
  high: number;
  /** Share of bootstrap resamples with difference ≤ 0 (one-sided p for "a beats b"). */
  p_not_greater: number;
  resamples: number;
  seed: number;
}

/**
 * Paired bootstrap (stats.ts) of ALR differences: questions are the unit; both variants' scores of a
 * resampled question move together. Pairs whose variants are absent are skipped.
 */
export function pairedAlr(
  records: readonly ExampleRecord[],
  pairs: ReadonlyArray<readonly [string, string]> = PAIRED_COMPARISONS,
  opts: BootstrapOptions = {},
): PairedAlr[] {
  const byVariant = new Map<string, Map<string, number>>();
  for (const r of records) {
    if (typeof r.metrics.alr !== "number" || r.answers.length === 0) continue;
    const m = byVariant.get(r.variant) ?? new Map<string, number>();
    m.set(r.id, r.metrics.alr);
    byVariant.set(r.variant, m);
  }
  const out: PairedAlr[] = [];
  for (const [a, b] of pairs) {
    const ma = byVariant.get(a);
    const mb = byVariant.get(b);
    if (!ma || !mb) continue;
    const ids = [...ma.keys()].filter((id) => mb.has(id));
    const r = pairedBootstrap(
      ids.map((id) => ma.get(id)!),
      ids.map((id) => mb.get(id)!),
      opts,
    );
    if (!r) continue;
    out.push({
      a,
      b,
      n: r.n,
      diff: r.estimate,
      low: r.low,
      high: r.high,
      p_not_greater: r.pNotGreater,
      resamples: opts.resamples ?? BOOTSTRAP_RESAMPLES,
      seed: opts.seed ?? BOOTSTRAP_SEED,
    });
  }
  return out;
}
