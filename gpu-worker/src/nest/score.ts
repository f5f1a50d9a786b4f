/**
 * @module nest/score
 * Teacher-forced scoring of a continuation under the mixture p_M: the perplexity of
 * nest-algorithm.md §11 (`PPL = exp(Σ NLL / #targets)` under `log p_M`).
 */
import type { CausalLM } from "./causal-lm.ts";
import { lmDistribution, mixtureAt, type MixtureOptions } from "./mixture.ts";
import type { TokenStore } from "./token-store.ts";

/** Probability floor, so a token with p_M = 0 gives a large finite NLL (−ln 1e-12 ≈ 27.6 nats). */
const MIN_PROB = 1e-12;

/**
 * Σ −ln p(target_i | prompt, target_<i) over the target tokens, in nats, with one LM pass over
 * `prompt ⊕ target`. p is p_M (kNN search, RRC λ and mixture at every target position, as in
 * decoding: spec §2–§4) when the store is used, else p_LM; both at `opts.lmTemperature`. No keys
 * are masked (nothing is generated). Leaves the LM's KV cache empty.
 * @param promptIds at least one token.
 * @throws RangeError when the prompt or the target is empty.
 */
export async function scoreContinuation(
  lm: CausalLM,
  promptIds: readonly number[],
  targetIds: readonly number[],
  store: TokenStore,
  opts: MixtureOptions,
): Promise<{ nll: number; tokens: number }> {
  if (promptIds.length === 0 || targetIds.length === 0) throw new RangeError("scoring needs a prompt and a target");
  lm.reset();
  // Rows promptLen−1 .. promptLen+T−2 predict the T target tokens: keep the last T+1 rows.
  const out = await lm.forward([...promptIds, ...targetIds], targetIds.length + 1);
  let nll = 0;
  for (let i = 0; i < targetIds.length; i++) {
    const row = promptIds.length - 1 + i;
    const target = targetIds[i]!;
    const p =
      opts.storeUse === "none"
        ? lmDistribution(out.logitsRow(row), opts.lmTemperature)[target]!
        : mixtureAt(store, out.logitsRow(row), out.hiddenRow(row), opts).mixture.probs[target]!;
    nll -= Math.log(Math.max(p, MIN_PROB));
  }
  lm.reset();
  return { nll, tokens: targetIds.length };
}
