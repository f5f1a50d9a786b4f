/**
 * @module nest/verify
 * Relaxed speculative verification (nest-algorithm.md §6; paper Eq. 7 and Algorithm 1).
 */
import type { Mixture, PositionState } from "./mixture.ts";

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

/** An acceptance test of one draft token against p_M at its position (Eq. 7 or greedy). */
export type AcceptanceTest = (mixture: Mixture, token: number) => boolean;

/** The test of draft token `v_{i+1}` (0-based `i`) against the state at its position. */
export type DraftTokenTest = (state: PositionState, token: number, i: number) => boolean;

/** The outcome of verifying one draft (vLLM's vocabulary: accepted tokens, then a recovered one). */
export interface Verdict {
  /** Draft length m. */
  readonly numDrafted: number;
  /** Length a of the longest accepted prefix `v_1..v_a`, 0 ≤ a ≤ m. */
  readonly numAccepted: number;
  /**
   * p_M at the position after `v_a`: where the replacement `argmax p_M` is taken when a < m (the
   * recovered token), or where the next step starts when a = m.
   */
  readonly next: PositionState;
}

/**
 * The longest accepted prefix of a draft (spec §6): `v_i` is tested against the state at its own
 * position, `stateAt(i − 1)`, and verification stops at the first rejection.
 * @param stateAt p_M at the position of `v_{i+1}`: `stateAt(0)` is the state before the draft,
 *   `stateAt(i)` (i ≥ 1) the verification pass's row `i − 1`. Called for i = u..a only.
 * @param unchecked `u`: the first `u` tokens are accepted without a test (the sentence anchor's
 *   quote, docs §14); 0 (default) = every token is tested, as in the paper.
 */
export function verifyDraft(
  tokens: ArrayLike<number>,
  stateAt: (i: number) => PositionState,
  accepts: DraftTokenTest,
  unchecked = 0,
): Verdict {
  const m = tokens.length;
  // Tokens taken unchecked need no state: p_M (a kNN search and two softmaxes) is computed from
  // the first checked position on.
  let a = Math.min(Math.max(0, unchecked), m);
  let state = stateAt(a);
  while (a < m && accepts(state, tokens[a]!, a)) {
    a++;
    state = stateAt(a);
  }
  return { numDrafted: m, numAccepted: a, next: state };
}
