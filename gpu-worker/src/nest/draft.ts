/**
 * @module nest/draft
 * Dynamic span selection and draft proposal (nest-algorithm.md §5).
 *
 * Span start follows the **paper's** rule (spec §12.10): among the neighbours whose value equals
 * `argmax p_M`, take the one with the largest weight (max-pooling: the nearest one, since weights
 * fall with distance) and propose its corpus continuation. When no neighbour carries `argmax p_M`,
 * there is no span: the step is a plain token step.
 */
import type { Neighbours } from "./knn.ts";
import type { TokenStore } from "./token-store.ts";

/** A draft: up to `n` consecutive tokens of one passage. */
export interface Draft {
  /** Index into `store.passages`. */
  readonly passage: number;
  /** Position in the passage's tokens of the first draft token. */
  readonly startPos: number;
  /** Draft tokens `v_1..v_m`. @shape [m] */
  readonly tokens: Int32Array;
}

/**
 * The neighbour whose value is `token` with the largest weight, or -1.
 * @param numPassages only neighbours from the first `numPassages` store passages (first-stage rank
 *   order) qualify; default all.
 * @returns an index into `neighbours.keys`.
 */
export function bestNeighbourFor(store: TokenStore, neighbours: Neighbours, token: number, numPassages = Infinity): number {
  // Neighbours are sorted by distance, so the first match has the largest weight.
  for (let i = 0; i < neighbours.keys.length; i++) {
    const key = neighbours.keys[i]!;
    if (store.values[key] === token && store.keyPassage[key]! < numPassages) return i;
  }
  return -1;
}

/**
 * Tokens `startPos .. startPos + maxSpan − 1` of passage `p`, stopping at the passage end: a draft
 * never crosses into another passage (spec §5).
 * @returns undefined when `startPos` is past the passage end.
 */
export function spanFrom(store: TokenStore, p: number, startPos: number, maxSpan: number): Draft | undefined {
  const sp = store.passages[p];
  if (!sp || startPos < 0 || startPos >= sp.tokens.length || maxSpan < 1) return undefined;
  const end = Math.min(sp.tokens.length, startPos + maxSpan);
  return { passage: p, startPos, tokens: sp.tokens.slice(startPos, end) };
}

/**
 * Span proposal in span mode: the continuation of the best neighbour carrying `token`
 * (= `argmax p_M`), `maxSpan` tokens at most.
 * @param numPassages passage prior: only the first `numPassages` store passages may be drafted from.
 */
export function proposeSpan(
  store: TokenStore,
  neighbours: Neighbours,
  token: number,
  maxSpan: number,
  numPassages = Infinity,
): Draft | undefined {
  const i = bestNeighbourFor(store, neighbours, token, numPassages);
  if (i < 0) return undefined;
  const key = neighbours.keys[i]!;
  return spanFrom(store, store.keyPassage[key]!, store.keyValuePos[key]!, maxSpan);
}

/**
 * How many leading draft tokens may be copied without repeating an n-gram of the generated text:
 * the draft is cut before the first token that completes an `n`-gram (over `generated ⊕ draft`)
 * already present in `generated`. `n < 1` disables the check (the paper's behaviour).
 * @returns a count in 0..draft.length.
 */
export function nonRepeatingPrefix(generated: readonly number[], draft: ArrayLike<number>, n: number): number {
  if (n < 1 || generated.length < n) return draft.length;
  const seen = new Set<string>();
  for (let i = 0; i + n <= generated.length; i++) seen.add(generated.slice(i, i + n).join(","));
  const seq = [...generated];
  for (let i = 0; i < draft.length; i++) {
    seq.push(draft[i]!);
    if (seq.length >= n && seen.has(seq.slice(seq.length - n).join(","))) return i;
  }
  return draft.length;
}

/** `draft` cut to its first `count` tokens; undefined when `count` is 0. */
export function cutDraft(draft: Draft, count: number): Draft | undefined {
  if (count <= 0) return undefined;
  return count >= draft.tokens.length ? draft : { ...draft, tokens: draft.tokens.subarray(0, count) };
}
