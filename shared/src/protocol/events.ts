/**
 * @module protocol/events
 * SSE events of `POST /v1/generate`, in order: `retrieval`, then `delta`*, then `done`; or `error`
 * at any point (then the stream closes). All offsets are UTF-16 code units (JavaScript string
 * indices), 0-based, end-exclusive.
 */
import { z } from "zod";
import { ErrorBodySchema } from "./errors.ts";
import { DocumentRefSchema } from "./documents.ts";

/** Attribution of a copied span (nest-algorithm.md §7). */
export const CitationSchema = z.object({
  passage_id: z.string(),
  title: z.string(),
  source: z.string(),
  /** Range in the stored passage text: `passage.text.slice(passage_start, passage_end)` is the copied text. */
  passage_start: z.number().int().nonnegative(),
  passage_end: z.number().int().nonnegative(),
  /** Range in the generated text (the concatenation of all `delta.text` so far). */
  text_start: z.number().int().nonnegative(),
  text_end: z.number().int().nonnegative(),
  /**
   * The cited characters: exactly `passage.text.slice(passage_start, passage_end)`, and equal to the
   * delta's text (optional for producers older than it).
   */
  cited_text: z.string().optional(),
  /**
   * This citation extends the previous delta's citation: same passage, `passage_start` = its
   * `passage_end`, `text_start` = its `text_end`; a client may merge them. A copied run is streamed
   * as soon as its citation is decided, then in pieces as it goes on; absent on a run's first piece.
   */
  continues: z.literal(true).optional(),
  /**
   * Citations over a request's `documents` (protocol/documents.ts) also carry the document's index
   * in `documents`, its `id` and `title` when given, and `[start, end)` in the document's own text
   * (UTF-16 code units, end-exclusive): `documents[document_index].text.slice(start, end) === cited_text`.
   */
  document_index: z.number().int().nonnegative().optional(),
  document_id: z.string().optional(),
  document_title: z.string().optional(),
  start: z.number().int().nonnegative().optional(),
  end: z.number().int().nonnegative().optional(),
});
export type Citation = z.infer<typeof CitationSchema>;

export const RetrievalEventSchema = z.object({
  query: z.string(),
  corpus: z.string(),
  passages: z.array(
    z.object({
      id: z.string(),
      title: z.string(),
      source: z.string(),
      score: z.number(),
      rank: z.number().int(),
      /**
       * The passage text that citations index into (optional): lets a client show a cited range in
       * its context, as the playground does.
       */
      text: z.string().optional(),
      /** Set when the passage is a chunk of a request document (protocol/documents.ts). */
      document: DocumentRefSchema.optional(),
    }),
  ),
  retrieval_ms: z.number().nonnegative(),
});
export type RetrievalEvent = z.infer<typeof RetrievalEventSchema>;

/**
 * A piece of generated text. `tokens` is the number of generated tokens it carries. A delta with a
 * `citation` was copied from the corpus and its text equals the cited passage range exactly; a delta
 * without one was produced by the LM.
 */
export const DeltaEventSchema = z.object({
  text: z.string(),
  tokens: z.number().int().nonnegative(),
  citation: CitationSchema.optional(),
});
export type DeltaEvent = z.infer<typeof DeltaEventSchema>;

/** Per-request speculation metrics, as vLLM reports them (docs/nest-algorithm.md §15). */
export const SpeculationUsageSchema = z.object({
  /** The request's `speculation` setting. */
  mode: z.enum(["auto", "on", "off"]),
  /** `1 + accepted_tokens / num_drafts` (tokens committed per verified draft, the recovered or bonus token included); null when num_drafts = 0. */
  mean_acceptance_length: z.number().nonnegative().nullable(),
  /** `accepted_tokens / drafted_tokens`; null when drafted_tokens = 0. */
  acceptance_rate: z.number().min(0).max(1).nullable(),
  /** Entry i = drafts whose token at position i + 1 was accepted; length = the longest accepted prefix. */
  accepted_per_position: z.array(z.number().int().nonnegative()),
  /** Token steps during which `auto` withheld drafting because drafts did not pay. */
  paused_steps: z.number().int().nonnegative(),
});
export type SpeculationUsage = z.infer<typeof SpeculationUsageSchema>;

export const UsageSchema = z.object({
  prompt_tokens: z.number().int().nonnegative(),
  completion_tokens: z.number().int().nonnegative(),
  /** LM forward passes during decoding (the prompt prefill excluded). */
  lm_forward_passes: z.number().int().nonnegative(),
  /** Draft tokens proposed from the corpus and checked by relaxed verification (spec §6). */
  drafted_tokens: z.number().int().nonnegative(),
  /** Draft tokens accepted. */
  accepted_tokens: z.number().int().nonnegative(),
  /** Drafts verified; accepted_tokens / num_drafts is the mean accepted span length. */
  num_drafts: z.number().int().nonnegative().default(0),
  /**
   * Completion tokens with provenance (spec §7, the paper's): accepted draft tokens, and token-mode
   * tokens that a retrieved neighbour carries, cited or not.
   */
  attributed_tokens: z.number().int().nonnegative(),
  /** The paper's attribution ratio: attributed_tokens / completion_tokens; null when no token was generated. */
  attribution_ratio: z.number().min(0).max(1).nullable(),
  /** Completion tokens inside cited deltas (README "Attribution": what earns a citation). */
  cited_tokens: z.number().int().nonnegative().default(0),
  /** cited_tokens / completion_tokens; null when no token was generated. */
  cited_ratio: z.number().min(0).max(1).nullable().default(null),
  /** Completion tokens copied through verified spans (accepted draft tokens that were committed). */
  copied_tokens: z.number().int().nonnegative().default(0),
  /** copied_tokens / completion_tokens; null when no token was generated. */
  copied_ratio: z.number().min(0).max(1).nullable().default(null),
  /** Citations: cited runs (a run streamed in pieces, the later ones with `continues`, counts once). */
  citations: z.number().int().nonnegative().default(0),
  /** Citations whose whole run is a single token. */
  single_token_citations: z.number().int().nonnegative().default(0),
  /** Speculation metrics (vLLM's): absent for producers that do not decode (e.g. cached answers). */
  speculation: SpeculationUsageSchema.optional(),
  /** Passages encoded into the token store and the number of keys in it. */
  store_passages: z.number().int().nonnegative(),
  store_keys: z.number().int().nonnegative(),
  /** Store passages the LM encoded for this request (the rest came from the key caches); absent for older producers. */
  encoded_passages: z.number().int().nonnegative().optional(),
});
export type Usage = z.infer<typeof UsageSchema>;

export const TimingsSchema = z.object({
  retrieval: z.number().nonnegative(),
  encoding: z.number().nonnegative(),
  knn: z.number().nonnegative(),
  lm: z.number().nonnegative(),
  total: z.number().nonnegative(),
});
export type Timings = z.infer<typeof TimingsSchema>;

export const DoneEventSchema = z.object({
  finish_reason: z.enum(["stop", "length"]),
  mode: z.string(),
  model: z.string(),
  usage: UsageSchema,
  /** Wall-clock phase times in ms. */
  timings_ms: TimingsSchema,
});
export type DoneEvent = z.infer<typeof DoneEventSchema>;

export const ErrorEventSchema = ErrorBodySchema;
export type ErrorEvent = z.infer<typeof ErrorEventSchema>;

/** Event name → payload, for sinks and clients. */
export interface GenerateEventMap {
  retrieval: RetrievalEvent;
  delta: DeltaEvent;
  done: DoneEvent;
  error: ErrorEvent;
}
export type GenerateEventName = keyof GenerateEventMap;
export type GenerateEvent = {
  [K in GenerateEventName]: { event: K; data: GenerateEventMap[K] };
}[GenerateEventName];

export const EVENT_SCHEMAS = {
  retrieval: RetrievalEventSchema,
  delta: DeltaEventSchema,
  done: DoneEventSchema,
  error: ErrorEventSchema,
} as const;
