/**
 * @module nest/mixture
 * The kNN distribution, Relative Retrieval Confidence and the LM/kNN mixture
 * (nest-algorithm.md §2.3, §3, §4; paper Eq. 4).
 */
import { searchKnn, type Neighbours } from "./knn.ts";
import type { TokenStore } from "./token-store.ts";

/** A sparse distribution over token ids (token → probability). */
export type SparseDistribution = ReadonlyMap<number, number>;

/**
 * Neighbour weights `w_i = softmax_i(−d_i / √D)` (spec §2.3, `μ = 1/√D`), computed with the
 * maximum subtracted (spec §12.4).
 * @returns weights aligned with `neighbours.keys`. @shape [r]
 */
export function neighbourWeights(neighbours: Neighbours, hiddenSize: number): Float64Array {
  const r = neighbours.distances.length;
  const w = new Float64Array(r);
  if (r === 0) return w;
  const mu = 1 / Math.sqrt(hiddenSize);
  // distances are ascending, so the largest logit −μ·d is the first one.
  const top = -mu * neighbours.distances[0]!;
  let sum = 0;
  for (let i = 0; i < r; i++) {
    const e = Math.exp(-mu * neighbours.distances[i]! - top);
    w[i] = e;
    sum += e;
  }
  for (let i = 0; i < r; i++) w[i] = w[i]! / sum;
  return w;
}

/**
 * `p_kNN(v) = Σ_{i: u_i = v} w_i`: weights of neighbours with the same value token are summed
 * (spec §2.3, §12.9).
 */
export function knnDistribution(store: TokenStore, neighbours: Neighbours, weights: Float64Array): SparseDistribution {
  const p = new Map<number, number>();
  for (let i = 0; i < weights.length; i++) {
    const v = store.values[neighbours.keys[i]!]!;
    p.set(v, (p.get(v) ?? 0) + weights[i]!);
  }
  return p;
}

/**
 * Relative Retrieval Confidence `ρ = d_min / d_max` over the retrieved neighbours (paper Eq. 4,
 * spec §3). Guards: no neighbours → 1 (LM only, spec §12.6); `d_max = 0` → 1 (spec §12.7).
 */
export function relativeRetrievalConfidence(neighbours: Neighbours): number {
  const r = neighbours.distances.length;
  if (r === 0) return 1;
  const dMin = neighbours.distances[0]!;
  const dMax = neighbours.distances[r - 1]!;
  if (!(dMax > 0) || !Number.isFinite(dMax)) return 1;
  return dMin / dMax;
}

/** `λ = sigmoid((ρ − α) / τ)`, the weight of p_LM (spec §3). */
export function rrcLambda(rho: number, alpha: number, tau: number): number {
  return 1 / (1 + Math.exp(-(rho - alpha) / tau));
}

/**
 * `p_LM = softmax(logits / T)` (spec §4; the repo uses T = 0.7), in float64.
 * @param logits one row of LM logits. @shape [vocab]
 */
export function lmDistribution(logits: Float32Array, temperature: number): Float64Array {
  const n = logits.length;
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (logits[i]! > max) max = logits[i]!;
  const p = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    const e = Math.exp((logits[i]! - max) / temperature);
    p[i] = e;
    sum += e;
  }
  for (let i = 0; i < n; i++) p[i] = p[i]! / sum;
  return p;
}

/** The mixture at one position, with its argmax. */
export interface Mixture {
  /** `p_M`, renormalised. @shape [vocab] */
  readonly probs: Float64Array;
  readonly argmax: number;
  readonly max: number;
}

/**
 * `p_M = λ·p_LM + (1 − λ)·p_kNN`, renormalised (spec §4, §12.8). Ties in the argmax go to the
 * lowest token id.
 * @param pLm @shape [vocab]
 */
export function mixDistributions(pLm: Float64Array, pKnn: SparseDistribution, lambda: number): Mixture {
  const n = pLm.length;
  const probs = new Float64Array(n);
  let sum = 0;
  for (let i = 0; i < n; i++) {
    probs[i] = lambda * pLm[i]!;
  }
  for (const [v, p] of pKnn) {
    if (v >= 0 && v < n) probs[v] = probs[v]! + (1 - lambda) * p;
  }
  for (let i = 0; i < n; i++) sum += probs[i]!;
  let argmax = 0;
  let max = -1;
  for (let i = 0; i < n; i++) {
    const q = sum > 0 ? probs[i]! / sum : 1 / n;
    probs[i] = q;
    if (q > max) {
      max = q;
      argmax = i;
    }
  }
  return { probs, argmax, max };
}

/** How the loop uses the token store: not at all (base, rag), fixed λ (kNN-LM, spec §9), RRC λ (NEST). */
export type StoreUse = "none" | "knnlm" | "nest";

/** What the mixture at one position needs (a slice of the decoding options). */
export interface MixtureOptions {
  readonly storeUse: StoreUse;
  /** RRC α, τ (spec §3). */
  readonly alpha: number;
  readonly tau: number;
  /** Neighbours r. */
  readonly k: number;
  /** Fixed λ for `knnlm`. */
  readonly fixedLambda: number;
  /** Temperature of p_LM inside the mixture. */
  readonly lmTemperature: number;
}

/** The state of the mixture at one position. */
export interface PositionState {
  readonly mixture: Mixture;
  /** λ, the weight of p_LM (1 without a store). */
  readonly lambda: number;
  readonly neighbours: Neighbours;
  /** The LM logits at the position (a reference, not a copy). @shape [vocab] */
  readonly logits: Float32Array;
}

const NO_NEIGHBOURS: Neighbours = { keys: new Int32Array(0), distances: new Float64Array(0) };

/**
 * The state at one position: kNN search over the store (masked keys skipped), λ from RRC (or the
 * fixed λ of `knnlm`), and the mixture p_M (spec §2.2–§4). Without a store: greedy p_LM only.
 * @param logits LM logits at the position. @shape [vocab]
 * @param hidden the kNN query (the exported hidden state). @shape [hidden]
 * @param masked keys never retrieved. @shape [numKeys]
 */
export function mixtureAt(
  store: TokenStore,
  logits: Float32Array,
  hidden: Float32Array,
  opts: MixtureOptions,
  masked?: Uint8Array,
): PositionState {
  if (opts.storeUse === "none") return { mixture: greedyOnly(logits), lambda: 1, neighbours: NO_NEIGHBOURS, logits };
  const neighbours = searchKnn(store, hidden, opts.k, masked);
  const lambda =
    neighbours.keys.length === 0
      ? 1
      : opts.storeUse === "knnlm"
        ? opts.fixedLambda
        : rrcLambda(relativeRetrievalConfidence(neighbours), opts.alpha, opts.tau);
  const pKnn = knnDistribution(store, neighbours, neighbourWeights(neighbours, store.hiddenSize));
  return { mixture: mixDistributions(lmDistribution(logits, opts.lmTemperature), pKnn, lambda), lambda, neighbours, logits };
}

/** Greedy p_LM without a softmax: only the argmax matters when no store is used. */
function greedyOnly(logits: Float32Array): Mixture {
  let argmax = 0;
  for (let i = 1; i < logits.length; i++) if (logits[i]! > logits[argmax]!) argmax = i;
  const probs = new Float64Array(logits.length);
  probs[argmax] = 1;
  return { probs, argmax, max: 1 };
}

/** p_LM alone at a position (softmax(logits / T)) as a {@link Mixture}: λ = 1. */
export function lmMixture(logits: Float32Array, temperature: number): Mixture {
  const probs = lmDistribution(logits, temperature);
  let argmax = 0;
  for (let i = 1; i < probs.length; i++) if (probs[i]! > probs[argmax]!) argmax = i;
  return { probs, argmax, max: probs[argmax]! };
}
