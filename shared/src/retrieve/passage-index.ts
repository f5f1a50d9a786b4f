/**
 * @module retrieve/passage-index
 * The first-stage retrieval contract (nest-algorithm.md §1): a passage index answers a query with
 * its top `passages` passages, scored and ranked. Worker-safe: implementations that need Node (LanceDB)
 * live in `@nest/corpus` (`lancedb-index`).
 */
import type { ScoredPassage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import type { FusionMethod } from "./fusion.ts";

/** Default number of passages retrieved per request (the `passages` parameter). */
export const DEFAULT_PASSAGES = 40;

/** Longest query kept for full-text search (characters); longer queries are cut. */
export const MAX_QUERY_CHARS = 2000;

/** Per-query retrieval options. */
export interface SearchOptions {
  fusion?: FusionMethod;
}

/** A searchable passage index over one corpus. */
export interface PassageIndex {
  /**
   * The top `passages` passages for `query`, best first: `score` is the index's relevance score
   * (higher is better; BM25 for full-text search), `rank` is 1-based. Fewer (possibly none) when fewer
   * passages match. Never throws on odd query text (punctuation, quotes, query syntax).
   *
   * @param passages number of passages wanted, b in the paper (positive integer)
   * @param opts `fusion`: how a hybrid index fuses its dense and BM25 lists (`retrieve/fusion`);
   *   ignored by single-retriever indexes. Default: the index's configured fusion.
   * @throws NestError `invalid_request` if `passages` is not a positive integer
   */
  search(query: string, passages: number, opts?: SearchOptions): Promise<ScoredPassage[]>;
  /** Name of the corpus it indexes, e.g. `factbook`. */
  readonly corpus: string;
  /** Releases resources (handles, connections). Further searches are not allowed. */
  close?(): Promise<void> | void;
}

/**
 * Checks the `passages` count of {@link PassageIndex.search}.
 *
 * @throws NestError `invalid_request` if `passages` is not a positive integer
 */
export function checkPassages(passages: number): number {
  if (!Number.isInteger(passages) || passages < 1) {
    throw new NestError("invalid_request", `passages must be a positive integer, got ${passages}`);
  }
  return passages;
}

/**
 * Turns free text into a plain bag of words for a full-text engine: NFKC-normalised, every
 * character that is not a letter, digit or combining mark replaced by a space (so quotes, brackets,
 * `AND`-style operators' punctuation, `*~^:` etc. cannot form query syntax), whitespace collapsed,
 * cut to {@link MAX_QUERY_CHARS}. Returns `""` when nothing searchable is left.
 */
export function sanitizeQuery(query: string): string {
  return query
    .normalize("NFKC")
    .slice(0, MAX_QUERY_CHARS)
    .replace(/[^\p{L}\p{N}\p{M}]+/gu, " ")
    .trim();
}

/** Adds 1-based ranks to passages already sorted best first. */
export function withRanks<T extends { score: number }>(hits: T[]): Array<T & { rank: number }> {
  return hits.map((h, i) => ({ ...h, rank: i + 1 }));
}
