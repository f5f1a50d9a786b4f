/**
 * @module retrieve/fusion
 * Hybrid first-stage retrieval: fusing a dense and a sparse (BM25) ranked list into one
 * (nest-algorithm.md §1). Pure and Worker-safe.
 *
 * Methods:
 * - `adaptive`: the paper's query-adaptive weighting (spec §1). With `s⁽¹⁾` the top score of a list
 *   and `s⁽¹⁰⁰⁾` the score at 0-based index 100 (the last returned score when the list is shorter):
 *   `η_sparse = 1 − s_sp⁽¹⁰⁰⁾/s_sp⁽¹⁾`, `η_dense = 1 − max(s_de⁽¹⁰⁰⁾, 0)/s_de⁽¹⁾`,
 *   `η = 0.7·(1 − η_sparse) + 0.3·η_dense`; every doc in the union scores
 *   `η·s_dense + (1−η)·s_sparse`, a doc missing from a list taking that list's lowest returned score.
 *   Raw scores, no normalisation. An empty list (or a non-positive top score) leaves the other list alone.
 * - `rrf`: reciprocal rank fusion, `Σ_lists 1/(k0 + rank)` with 1-based ranks, `k0 = 60`.
 * - `bm25` / `dense`: one list only (for comparisons).
 * Ties are broken by id (ascending) so results are deterministic.
 */

/** Fusion methods. */
export const FUSION_METHODS = ["adaptive", "rrf", "bm25", "dense"] as const;
export type FusionMethod = (typeof FUSION_METHODS)[number];

/**
 * Default fusion: `rrf`, best recall@40 (0.997 vs adaptive 0.990, BM25 0.989, dense 0.988) and @5 on
 * squad-dev (docs/retrieval.md); adaptive is best at @1 (0.801 vs 0.758).
 */
export const DEFAULT_FUSION: FusionMethod = "rrf";

/** Candidates each retriever returns before fusion (≥ 101 so `s⁽¹⁰⁰⁾` exists). */
export const DEFAULT_FUSION_DEPTH = 200;

/** RRF constant `k0`. */
export const RRF_K0 = 60;

/** Share of `1 − η_sparse` in `η` (the rest, 0.3 = `fusion_coef`, weights `η_dense`). */
export const ADAPTIVE_SPARSE_SHARE = 0.7;

/** A hit of one retriever: id and raw score (higher is better). Lists are sorted best first. */
export interface Hit {
  id: string;
  score: number;
}

/** A fused hit: the fused score plus each retriever's raw score (absent when it did not return it). */
export interface FusedHit {
  id: string;
  score: number;
  dense?: number;
  sparse?: number;
}

/** Score at 0-based index 100, else the last one. */
const at100 = (scores: readonly number[]) => scores[Math.min(100, scores.length - 1)]!;

/**
 * The paper's dense weight `η` (spec §1) for two score lists sorted best first.
 *
 * @returns η ∈ [0, 1] when both lists have a positive top score; 1 when only dense is usable, 0 when
 *   only sparse is, NaN when neither is
 */
export function adaptiveEta(dense: readonly number[], sparse: readonly number[]): number {
  const denseOk = dense.length > 0 && dense[0]! > 0;
  const sparseOk = sparse.length > 0 && sparse[0]! > 0;
  if (!denseOk && !sparseOk) return Number.NaN;
  if (!sparseOk) return 1;
  if (!denseOk) return 0;
  const etaSparse = 1 - at100(sparse) / sparse[0]!;
  const etaDense = 1 - Math.max(at100(dense), 0) / dense[0]!;
  return ADAPTIVE_SPARSE_SHARE * (1 - etaSparse) + (1 - ADAPTIVE_SPARSE_SHARE) * etaDense;
}

function sortAndCut(hits: FusedHit[], passages: number): FusedHit[] {
  return hits.sort((a, b) => b.score - a.score || (a.id < b.id ? -1 : a.id > b.id ? 1 : 0)).slice(0, passages);
}

function union(dense: readonly Hit[], sparse: readonly Hit[]): Map<string, FusedHit> {
  const m = new Map<string, FusedHit>();
  for (const h of dense) if (!m.has(h.id)) m.set(h.id, { id: h.id, score: 0, dense: h.score });
  for (const h of sparse) {
    const e = m.get(h.id);
    if (e) e.sparse ??= h.score;
    else m.set(h.id, { id: h.id, score: 0, sparse: h.score });
  }
  return m;
}

/**
 * Query-adaptive fusion (spec §1, see module doc).
 *
 * @param dense dense hits, best first (cosine / dot scores)
 * @param sparse BM25 hits, best first
 * @param passages number of fused hits wanted
 * @returns at most `passages` hits, best first; `[]` when both lists are empty
 */
export function fuseAdaptive(dense: readonly Hit[], sparse: readonly Hit[], passages: number): FusedHit[] {
  const eta = adaptiveEta(
    dense.map((h) => h.score),
    sparse.map((h) => h.score),
  );
  if (Number.isNaN(eta))
    return sortAndCut(
      [...union(dense, sparse).values()].map((h) => ({ ...h, score: h.dense ?? h.sparse ?? 0 })),
      passages,
    );
  const minDense = dense.length ? dense[dense.length - 1]!.score : 0;
  const minSparse = sparse.length ? sparse[sparse.length - 1]!.score : 0;
  const out = [...union(dense, sparse).values()].map((h) => ({
    ...h,
    score: eta * (h.dense ?? minDense) + (1 - eta) * (h.sparse ?? minSparse),
  }));
  return sortAndCut(out, passages);
}

/**
 * Reciprocal rank fusion: `score = Σ 1/(k0 + rank)` over the lists that return the doc (1-based rank).
 *
 * @param k0 RRF constant. @defaultValue 60
 * @returns at most `passages` hits, best first
 */
export function fuseRrf(dense: readonly Hit[], sparse: readonly Hit[], passages: number, k0 = RRF_K0): FusedHit[] {
  const m = union(dense, sparse);
  dense.forEach((h, i) => (m.get(h.id)!.score += 1 / (k0 + i + 1)));
  sparse.forEach((h, i) => (m.get(h.id)!.score += 1 / (k0 + i + 1)));
  return sortAndCut([...m.values()], passages);
}

/**
 * Fuses with `method` (see module doc).
 *
 * @returns at most `passages` hits, best first
 */
export function fuse(method: FusionMethod, dense: readonly Hit[], sparse: readonly Hit[], passages: number): FusedHit[] {
  switch (method) {
    case "adaptive":
      return fuseAdaptive(dense, sparse, passages);
    case "rrf":
      return fuseRrf(dense, sparse, passages);
    case "dense":
      return dense.slice(0, passages).map((h) => ({ id: h.id, score: h.score, dense: h.score }));
    case "bm25":
      return sparse.slice(0, passages).map((h) => ({ id: h.id, score: h.score, sparse: h.score }));
  }
}

/** Parses a fusion name (e.g. from `NEST_FUSION`); `undefined`/empty gives {@link DEFAULT_FUSION}. @throws RangeError on an unknown name */
export function parseFusion(name: string | undefined): FusionMethod {
  if (!name) return DEFAULT_FUSION;
  if ((FUSION_METHODS as readonly string[]).includes(name)) return name as FusionMethod;
  throw new RangeError(`unknown fusion "${name}"; expected one of ${FUSION_METHODS.join(", ")}`);
}
