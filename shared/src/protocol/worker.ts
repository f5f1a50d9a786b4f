/**
 * @module protocol/worker
 * The edge → gpu-worker call: `POST {pool}/v1/decode` with the validated request and the passages
 * of first-stage retrieval; the worker answers `text/event-stream` with `delta`*, `done` or `error`.
 * `POST {pool}/v1/retrieve` runs first-stage retrieval on the pool's local index (used by an edge
 * that has no index of its own, e.g. on Workers without Upstash).
 */
import { z } from "zod";
import { GenerateRequestSchema } from "./request.ts";
import { PassageSchema, ScoredPassageSchema } from "./passage.ts";

export const DecodeJobSchema = z.object({
  request: GenerateRequestSchema,
  passages: z.array(PassageSchema),
});
export type DecodeJob = z.infer<typeof DecodeJobSchema>;

export const RetrieveRequestSchema = z.object({
  query: z.string().min(1).max(8000),
  corpus: z.string().min(1),
  passages: z.number().int().positive().max(1000).describe("passages wanted (b)"),
  /**
   * Fusion of a hybrid index: `rrf` | `adaptive` (what a generate request may ask for), or one side
   * alone, `bm25` | `dense` (the `FUSION_METHODS` of `shared/src/retrieve/fusion.ts`, so a pool-backed
   * index takes every option a local one does). Absent = the index's default; BM25-only indexes ignore it.
   */
  fusion: z.enum(["adaptive", "rrf", "bm25", "dense"]).optional(),
});
export type RetrieveRequest = z.infer<typeof RetrieveRequestSchema>;

export const RetrieveResponseSchema = z.object({ passages: z.array(ScoredPassageSchema) });
export type RetrieveResponse = z.infer<typeof RetrieveResponseSchema>;
