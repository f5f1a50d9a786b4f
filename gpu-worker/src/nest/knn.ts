/**
 * @module nest/knn
 * Exact token-level kNN over the token store (nest-algorithm.md §2.2).
 */
import type { TokenStore } from "./token-store.ts";

/** The `r` nearest keys of one query, nearest first. */
export interface Neighbours {
  /** Store indices of the neighbours. @shape [r] */
  readonly keys: Int32Array;
  /** Squared L2 distances `d_i ≥ 0`, ascending. @shape [r] */
  readonly distances: Float64Array;
}

/**
 * Exact brute-force search: `d_j = ||k_j||² + ||q||² − 2 q·k_j` (float64 accumulation, clamped at 0,
 * spec §12.4), skipping masked keys, returning the `min(k, #valid)` smallest (spec §12.5).
 *
 * @param query hidden state of the current position. @shape [hiddenSize]
 * @param k number of neighbours r (spec default 1024)
 * @param masked optional mask: keys with `masked[j] = 1` are never returned. @shape [numKeys]
 * @throws Error when the query length differs from the store's hidden size.
 */
export function searchKnn(store: TokenStore, query: Float32Array, k: number, masked?: Uint8Array): Neighbours {
  const h = store.hiddenSize;
  if (query.length !== h) throw new Error(`query has ${query.length} dims, store has ${h}`);
  let qNorm = 0;
  for (let d = 0; d < h; d++) qNorm += query[d]! * query[d]!;
  const n = store.numKeys;
  const dist = new Float64Array(n);
  const idx: number[] = [];
  const keys = store.keys;
  for (let j = 0; j < n; j++) {
    if (masked && masked[j] === 1) continue;
    let dot = 0;
    const base = j * h;
    for (let d = 0; d < h; d++) dot += query[d]! * keys[base + d]!;
    const v = store.keyNorms[j]! + qNorm - 2 * dot;
    // biome-ignore lint/complexity/useMathMinMax: hot loop; also maps a NaN distance to 0, which Math.max would not
    dist[j] = v > 0 ? v : 0;
    idx.push(j);
  }
  idx.sort((a, b) => dist[a]! - dist[b]! || a - b);
  const r = Math.min(k, idx.length);
  const outKeys = new Int32Array(r);
  const outDist = new Float64Array(r);
  for (let i = 0; i < r; i++) {
    outKeys[i] = idx[i]!;
    outDist[i] = dist[idx[i]!]!;
  }
  return { keys: outKeys, distances: outDist };
}
