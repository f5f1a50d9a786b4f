/**
 * @module nest/decode-loop
 * The NEST decoding loop (paper Algorithm 1; nest-algorithm.md §3-§6), greedy, batch size 1.
 *
 * Each step: mixture at the current position (kNN search → RRC λ → p_M); then either
 * - token mode (λ > δ, or no neighbour carries argmax p_M): commit argmax p_M, one LM pass; or
 * - span mode (λ ≤ δ) / continuation streaming: draft up to `maxSpan` tokens of one passage, verify
 *   them all in ONE LM pass over `[v_1..v_m]`, keep the longest accepted prefix, replace the first
 *   rejected token by argmax p_M at its position, and cut the KV cache back to the committed tokens.
 * After every step the KV cache holds exactly the committed tokens (spec §12.12), and the logits and
 * hidden state of the last committed position are at hand for the next step.
 */
import type { CausalLM, ForwardOutput } from "./causal-lm.ts";
import { acceptsGreedy, acceptsToken } from "./verify.ts";
import { bestNeighbourFor, proposeSpan, spanFrom, type Draft } from "./draft.ts";
import { searchKnn, type Neighbours } from "./knn.ts";
import {
  knnDistribution,
  lmDistribution,
  mixDistributions,
  neighbourWeights,
  relativeRetrievalConfidence,
  rrcLambda,
  type Mixture,
} from "./mixture.ts";
import { keyOfToken, type TokenStore } from "./token-store.ts";
import type { CommittedToken, TokenSource } from "./attribution.ts";
import { DecodeStats } from "./stats.ts";

/** How the loop uses the token store. */
export type StoreUse = "none" | "knnlm" | "nest";

/** Options of one decoding run (parsed once from the request). */
export interface DecodeOptions {
  readonly storeUse: StoreUse;
  /** RRC α, τ (spec §3). */
  readonly alpha: number;
  readonly tau: number;
  /** Span mode when λ ≤ δ (spec §5). */
  readonly delta: number;
  /** Acceptance leniency γ (spec §6). */
  readonly gamma: number;
  /**
   * Draft verification: `relaxed` (default) = paper Eq. 7 with γ; `greedy` = accept only argmax
   * p_M tokens (exact speculative decoding, the ablation's baseline; γ is ignored).
   */
  readonly acceptance?: "relaxed" | "greedy";
  /** Neighbours r. */
  readonly k: number;
  /** Maximum draft length n, tokens. */
  readonly maxSpan: number;
  /** Fixed λ for `knnlm`. */
  readonly fixedLambda: number;
  /** Temperature of p_LM inside the mixture. */
  readonly lmTemperature: number;
  readonly maxNewTokens: number;
  readonly eosTokenIds: readonly number[];
}

/** Why decoding stopped. */
export type FinishReason = "stop" | "length";

/** The state of the mixture at one position. */
export interface PositionState {
  readonly mixture: Mixture;
  readonly lambda: number;
  readonly neighbours: Neighbours;
}

const NO_NEIGHBOURS: Neighbours = { keys: new Int32Array(0), distances: new Float64Array(0) };

/**
 * The state at one position: kNN search over the store (masked keys skipped), λ from RRC (or the
 * fixed λ of `knnlm`), and the mixture p_M (spec §2.2–§4). Without a store: greedy p_LM only.
 * @param logits LM logits at the position. @shape [vocab]
 * @param hidden the kNN query (the exported hidden state). @shape [hidden]
 */
export function mixtureAt(
  store: TokenStore,
  logits: Float32Array,
  hidden: Float32Array,
  opts: Pick<DecodeOptions, "storeUse" | "k" | "fixedLambda" | "alpha" | "tau" | "lmTemperature">,
  masked?: Uint8Array,
): PositionState {
  if (opts.storeUse === "none") return { mixture: greedyOnly(logits), lambda: 1, neighbours: NO_NEIGHBOURS };
  const neighbours = searchKnn(store, hidden, opts.k, masked);
  const lambda =
    neighbours.keys.length === 0
      ? 1
      : opts.storeUse === "knnlm"
        ? opts.fixedLambda
        : rrcLambda(relativeRetrievalConfidence(neighbours), opts.alpha, opts.tau);
  const pKnn = knnDistribution(store, neighbours, neighbourWeights(neighbours, store.hiddenSize));
  return { mixture: mixDistributions(lmDistribution(logits, opts.lmTemperature), pKnn, lambda), lambda, neighbours };
}

/**
 * Runs NEST decoding after the prompt.
 * @param lm a causal LM whose KV cache is empty.
 * @param onTokens receives the tokens committed by each step (EOS excluded), in order.
 * @param signal aborting it stops the loop before the next LM pass.
 * @throws the LM's errors; `signal.reason` when aborted.
 */
export async function decodeNest(
  lm: CausalLM,
  promptIds: readonly number[],
  store: TokenStore,
  opts: DecodeOptions,
  onTokens: (tokens: CommittedToken[]) => void,
  stats: DecodeStats = new DecodeStats(),
  signal?: AbortSignal,
): Promise<{ finishReason: FinishReason; stats: DecodeStats }> {
  const eos = new Set(opts.eosTokenIds);
  const accepts = (m: Mixture, token: number): boolean =>
    opts.acceptance === "greedy" ? acceptsGreedy(m, token) : acceptsToken(m, token, opts.gamma);
  const masked = new Uint8Array(store.numKeys);
  stats.promptTokens = promptIds.length;

  const forward = async (ids: readonly number[], prefill = false): Promise<ForwardOutput> => {
    signal?.throwIfAborted();
    const t = performance.now();
    // Logits: the prefill needs its last row only; a draft needs every row.
    const out = await lm.forward(ids, prefill ? 1 : ids.length);
    stats.lmMs += performance.now() - t;
    if (prefill) stats.prefillPasses++;
    else stats.lmForwardPasses++;
    return out;
  };

  const stateAt = (out: ForwardOutput, row: number): PositionState => {
    const t = performance.now();
    const state = mixtureAt(store, out.logitsRow(row), out.hiddenRow(row), opts, masked);
    if (opts.storeUse !== "none") stats.knnMs += performance.now() - t;
    return state;
  };

  const sourceOf = (state: PositionState, token: number): TokenSource | undefined => {
    if (opts.storeUse === "none") return undefined;
    const i = bestNeighbourFor(store, state.neighbours, token);
    if (i < 0) return undefined;
    const key = state.neighbours.keys[i]!;
    return { passage: store.keyPassage[key]!, pos: store.keyValuePos[key]! };
  };

  let out = await forward(promptIds, true);
  let cur = stateAt(out, promptIds.length - 1);
  let generated = 0;
  /** Last accepted draft token, for continuation streaming (spec §5). */
  let streaming: TokenSource | undefined;

  const commit = (tokens: CommittedToken[]): boolean => {
    const stop = tokens.findIndex((t) => eos.has(t.id));
    const kept = stop >= 0 ? tokens.slice(0, stop) : tokens;
    generated += kept.length;
    stats.completionTokens = generated;
    if (kept.length > 0) onTokens(kept);
    return stop >= 0;
  };

  /** `stop` after EOS, `length` at the token budget, undefined to go on. */
  const finish = (sawEos: boolean): FinishReason | undefined =>
    sawEos ? "stop" : generated >= opts.maxNewTokens ? "length" : undefined;

  while (generated < opts.maxNewTokens) {
    let draft: Draft | undefined;
    if (opts.storeUse === "nest") {
      if (streaming) draft = spanFrom(store, streaming.passage, streaming.pos + 1, opts.maxSpan);
      else if (cur.lambda <= opts.delta) draft = proposeSpan(store, cur.neighbours, cur.mixture.argmax, opts.maxSpan);
    }
    streaming = undefined;

    if (!draft) {
      // Token mode: argmax p_M, cited when a neighbour carries it (spec §5, §7).
      const token = cur.mixture.argmax;
      const end = finish(commit([sourced(token, sourceOf(cur, token))]));
      if (end) return { finishReason: end, stats };
      out = await forward([token]);
      cur = stateAt(out, 0);
      continue;
    }

    const tokens = Array.from(draft.tokens.subarray(0, opts.maxNewTokens - generated));
    const m = tokens.length;
    if (!accepts(cur.mixture, tokens[0]!)) {
      stats.observeDraft(m, 0);
      const replacement = cur.mixture.argmax;
      const end = finish(commit([{ id: replacement }]));
      if (end) return { finishReason: end, stats };
      out = await forward([replacement]);
      cur = stateAt(out, 0);
      continue;
    }

    // v_1 is accepted: score v_1..v_m in one pass; row i-1 gives p_M at the position of v_{i+1}.
    const cached = lm.cacheLength;
    out = await forward(tokens);
    let accepted = 1;
    let next = stateAt(out, 0);
    while (accepted < m && accepts(next.mixture, tokens[accepted]!)) {
      accepted++;
      next = stateAt(out, accepted - 1);
    }
    stats.observeDraft(m, accepted);
    const copied: CommittedToken[] = tokens
      .slice(0, accepted)
      .map((id, i) => ({ id, source: { passage: draft.passage, pos: draft.startPos + i } }));
    maskAccepted(store, masked, draft.passage, draft.startPos, accepted);

    if (accepted === m) {
      // Whole draft accepted: the pass already gave the next position (continuation streaming).
      const end = finish(commit(copied));
      if (end) return { finishReason: end, stats };
      cur = next;
      streaming = { passage: draft.passage, pos: draft.startPos + m - 1 };
      continue;
    }
    // Mid-span rejection: keep KV only for v_1..v_a, then commit the replacement (no source).
    lm.truncate(cached + accepted);
    const replacement = next.mixture.argmax;
    const end = finish(commit([...copied, { id: replacement }]));
    if (end) return { finishReason: end, stats };
    out = await forward([replacement]);
    cur = stateAt(out, 0);
  }
  return { finishReason: "length", stats };
}

function sourced(id: number, source: TokenSource | undefined): CommittedToken {
  return source ? { id, source } : { id };
}

/** Paper masking: keys whose values were just copied are never retrieved again (spec §5, §12.13). */
function maskAccepted(store: TokenStore, masked: Uint8Array, passage: number, startPos: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const key = keyOfToken(store, passage, startPos + i);
    if (key >= 0) masked[key] = 1;
  }
}

/** Greedy p_LM without a softmax: only the argmax matters when no store is used. */
function greedyOnly(logits: Float32Array): Mixture {
  let argmax = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[argmax]!) argmax = i;
  const probs = new Float64Array(logits.length);
  probs[argmax] = 1;
  return { probs, argmax, max: 1 };
}
