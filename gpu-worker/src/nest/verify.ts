/**
 * @module nest/verify
 * Relaxed speculative verification (nest-algorithm.md §6; paper Eq. 7 and Algorithm 1).
 */
import type { Mixture } from "./mixture.ts";

/**
 * Accept draft token `v` at a position iff `min(1, p_M(v) / (γ·max_w p_M(w))) > 0.5`, i.e.
 * `p_M(v) > 0.5·γ·max_w p_M(w)` (strict). Deterministic: no random draw.
 */
export function acceptsToken(mixture: Mixture, token: number, gamma: number): boolean {
  return mixture.probs[token]! > 0.5 * gamma * mixture.max;
}

/**
 * Exact (greedy) acceptance, the non-relaxed baseline of the paper's ablation (Table 3, "+ dynamic
 * span selection"): accept `v` iff it is an argmax of `p_M`, so the output equals token-by-token
 * greedy decoding of `p_M` and only the number of LM passes changes.
 */
export function acceptsGreedy(mixture: Mixture, token: number): boolean {
  return mixture.probs[token]! >= mixture.max;
}
