/**
 * @module eval/summary
 * Aggregates per-example records into one row per variant: quality means, attribution (spec §7,
 * pooled over tokens), and speed (LM forward passes per token, tokens/s, mean phase times in ms).
 */
import { mean } from "./metrics.ts";
import type { ExampleRecord } from "./runner.ts";

/** One variant's aggregate. Means are over examples; ratios pool tokens over all examples. */
export interface VariantSummary {
  variant: string;
  mode: string;
  examples: number;
  alr: number | null;
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
  const m = <K extends keyof ExampleRecord["metrics"]>(k: K) => mean(rs.map((r) => r.metrics[k]));
  const tokens = sum(rs.map((r) => r.usage.completion_tokens));
  const attributed = sum(rs.map((r) => r.usage.attributed_tokens));
  const runs = sum(rs.map((r) => {
    const len = r.metrics.attribution_run_length;
    const a = (r.metrics.attribution_ratio ?? 0) * r.usage.completion_tokens;
    return len ? Math.round(a / len) : 0;
  }));
  const drafted = sum(rs.map((r) => r.usage.drafted_tokens));
  const passes = sum(rs.map((r) => r.usage.lm_forward_passes));
  const totalMs = sum(rs.map((r) => r.timings_ms.total));
  const avg = (k: "retrieval" | "encoding" | "knn" | "lm" | "total") => sum(rs.map((r) => r.timings_ms[k])) / rs.length;
  const b = { retrieval: avg("retrieval"), encoding: avg("encoding"), knn: avg("knn"), lm: avg("lm") };
  return {
    variant,
    mode: rs[0]!.mode,
    examples: rs.length,
    alr: m("alr"),
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
