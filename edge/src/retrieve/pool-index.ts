/**
 * @module retrieve/pool-index
 * A {@link PassageIndex} answered by a gpu-worker pool's local index (`POST {poolUrl}/v1/retrieve`):
 * first-stage retrieval (nest-algorithm.md §1) for an edge that holds no index of its own, e.g. on
 * Workers without a hosted index. Worker-safe.
 */
import type { ScoredPassage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { RetrieveResponseSchema, type RetrieveRequest } from "@nest/shared/protocol/worker";
import type { PassageIndex, SearchOptions } from "@nest/shared/retrieve/passage-index";
import { errorFromResponse, joinUrl } from "../route/pool-client.ts";

/**
 * Builds the index for `corpus` served by the pool at `poolUrl`.
 * `search(query, passages, {fusion})` returns at most `passages` passages, best first (rank 1-based); `fusion` is
 * sent along (the pool's hybrid indexes use it, BM25-only ones ignore it).
 * @throws (from `search`) NestError `not_found` when the pool does not know the corpus,
 *   `upstream_unavailable` when it cannot be reached or answers garbage.
 */
export function createPoolIndex(poolUrl: string, corpus: string, fetchFn: typeof fetch = fetch): PassageIndex {
  const url = joinUrl(poolUrl, "/v1/retrieve");
  return {
    corpus,
    async search(query: string, passages: number, opts?: SearchOptions): Promise<ScoredPassage[]> {
      const body: RetrieveRequest = { query, corpus, passages, ...(opts?.fusion ? { fusion: opts.fusion } : {}) };
      let res: Response;
      try {
        res = await fetchFn(url, {
          method: "POST",
          headers: { "content-type": "application/json" },
          body: JSON.stringify(body),
        });
      } catch (err) {
        throw new NestError("upstream_unavailable", `gpu-worker pool unreachable at ${poolUrl}`, { cause: err });
      }
      if (!res.ok) throw await errorFromResponse(res, "gpu-worker pool /v1/retrieve");
      const parsed = RetrieveResponseSchema.safeParse(await res.json().catch(() => undefined));
      if (!parsed.success) throw new NestError("upstream_unavailable", "gpu-worker pool /v1/retrieve answered a malformed body");
      return parsed.data.passages;
    },
  };
}
