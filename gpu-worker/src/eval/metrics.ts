/**
 * @module eval/metrics
 * Quality metrics of the evaluation harness (nest-algorithm.md §11): answer-level recall (ALR),
 * SQuAD exact match and token F1 (the official SQuAD v1.1 script's normalisation), ROUGE-1/2/L F1
 * (js-rouge), and per-token attribution built from `delta` events (spec §7).
 */
import * as rouge from "js-rouge";
import type { DeltaEvent } from "@nest/shared/protocol/events";
import type { TokenPassage } from "../nest/attribution.ts";

/** ASCII punctuation, as Python's `string.punctuation` (used by the SQuAD script). */
const PUNCTUATION = new Set("!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~");

/**
 * SQuAD v1.1 `normalize_answer`: lowercase, drop ASCII punctuation, drop the articles
 * `a`/`an`/`the` (whole words), collapse whitespace.
 */
export function normalizeAnswer(s: string): string {
  const lower = s.toLowerCase();
  const noPunc = Array.from(lower)
    .filter((c) => !PUNCTUATION.has(c))
    .join("");
  const noArticles = noPunc.replace(/\b(a|an|the)\b/g, " ");
  return noArticles
    .split(/\s+/)
    .filter((w) => w.length > 0)
    .join(" ");
}

/** SQuAD tokens: `normalizeAnswer(s).split()`. */
export function squadTokens(s: string): string[] {
  const n = normalizeAnswer(s);
  return n.length === 0 ? [] : n.split(" ");
}

/** Exact match (0 or 1) of `prediction` against the best of `golds`, after {@link normalizeAnswer}. */
export function exactMatch(prediction: string, golds: readonly string[]): number {
  const p = normalizeAnswer(prediction);
  return golds.some((g) => normalizeAnswer(g) === p) ? 1 : 0;
}

/** Token F1 of one prediction/gold pair (SQuAD `f1_score`): bag-of-tokens overlap; 0 when either side is empty. */
export function tokenF1(prediction: string, gold: string): number {
  const p = squadTokens(prediction);
  const g = squadTokens(gold);
  const counts = new Map<string, number>();
  for (const t of g) counts.set(t, (counts.get(t) ?? 0) + 1);
  let same = 0;
  for (const t of p) {
    const c = counts.get(t) ?? 0;
    if (c > 0) {
      same++;
      counts.set(t, c - 1);
    }
  }
  if (same === 0) return 0;
  const precision = same / p.length;
  const recall = same / g.length;
  return (2 * precision * recall) / (precision + recall);
}

/** Best token F1 of `prediction` over `golds` (0 with no golds). */
export function maxF1(prediction: string, golds: readonly string[]): number {
  return golds.reduce((best, g) => Math.max(best, tokenF1(prediction, g)), 0);
}

/**
 * Answer-level recall (Hit@1, spec §11): 1 if ANY gold alias occurs in the output as whole words,
 * else 0. Both sides are normalised as the SQuAD v1.1 script does ({@link normalizeAnswer}:
 * lowercase, ASCII punctuation dropped, articles dropped, whitespace collapsed) and the alias's
 * tokens must appear as a contiguous run of the output's tokens, so a gold "no" does not match
 * "known" and "1,000" matches "1000". Aliases that normalise to nothing (empty, "the", ".") are
 * ignored (they would always hit).
 */
export function answerRecall(output: string, golds: readonly string[]): number {
  const out = squadTokens(output);
  return golds.some((g) => containsRun(out, squadTokens(g))) ? 1 : 0;
}

/** True when `needle` (non-empty) occurs as a contiguous run in `haystack`. */
export function containsRun(haystack: readonly string[], needle: readonly string[]): boolean {
  if (needle.length === 0 || needle.length > haystack.length) return false;
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return true;
  }
  return false;
}

/**
 * Phrases that make an output an abstention (matched on whole words after lowercasing, with ’
 * read as '). See {@link abstains}.
 */
export const ABSTENTION_PHRASES: readonly string[] = [
  "i don't know",
  "i do not know",
  "don't know",
  "do not know",
  "not sure",
  "cannot answer",
  "can't answer",
  "unable to answer",
  "unable to find",
  "unable to determine",
  "cannot determine",
  "can't determine",
  "no information",
  "not enough information",
  "no answer",
  "not mentioned",
  "does not mention",
  "doesn't mention",
  "do not mention",
  "don't mention",
  "not provided",
  "does not provide",
  "doesn't provide",
  "not specified",
  "does not say",
  "doesn't say",
  "not stated",
  "unknown",
  "no record",
];

/**
 * The abstention rule (docs/eval.md "Abstention"): an output abstains when it is empty or blank, or
 * when it contains one of {@link ABSTENTION_PHRASES} as whole words (case-insensitive; ’ = ').
 * Used to score questions with no answer in the corpus (`answers: []`): abstaining is right.
 * @returns 1 when the output abstains, else 0.
 */
export function abstains(output: string): number {
  const text = output
    .toLowerCase()
    .replace(/[\u2018\u2019]/g, "'")
    .replace(/\s+/g, " ")
    .trim();
  if (text.length === 0) return 1;
  const words = ` ${text.replace(/[^a-z0-9' ]/g, " ").replace(/\s+/g, " ")} `;
  return ABSTENTION_PHRASES.some((p) => words.includes(` ${p} `)) ? 1 : 0;
}

/** ROUGE F1 scores in [0, 1]. */
export interface RougeScores {
  rouge1: number;
  rouge2: number;
  rougeL: number;
}

/**
 * ROUGE-1/2/L F1 (β = 1) of `generation` against `reference` with js-rouge, case-insensitive
 * (spec §11 scores completions against the 256-token target). ROUGE-L is the sentence-level LCS
 * variant of js-rouge. Empty inputs score 0.
 */
export function rougeScores(generation: string, reference: string): RougeScores {
  if (generation.trim().length === 0 || reference.trim().length === 0) return { rouge1: 0, rouge2: 0, rougeL: 0 };
  const opts = { caseSensitive: false };
  return {
    rouge1: rouge.n(generation, reference, { ...opts, n: 1 }),
    rouge2: rouge.n(generation, reference, { ...opts, n: 2 }),
    rougeL: rouge.l(generation, reference, opts),
  };
}

/**
 * Per-token sources from the `delta` events of one generation: every token of a cited delta gets
 * the delta's `passage_id`, every token of an uncited delta gets null. Length = completion tokens.
 */
export function tokenPassages(deltas: readonly DeltaEvent[]): TokenPassage[] {
  const out: TokenPassage[] = [];
  for (const d of deltas) for (let i = 0; i < d.tokens; i++) out.push(d.citation ? d.citation.passage_id : null);
  return out;
}

/** Mean of the non-null values; null when there are none. */
export function mean(values: readonly (number | null | undefined)[]): number | null {
  const xs = values.filter((v): v is number => typeof v === "number" && Number.isFinite(v));
  return xs.length === 0 ? null : xs.reduce((a, b) => a + b, 0) / xs.length;
}
