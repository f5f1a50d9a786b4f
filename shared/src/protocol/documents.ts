/**
 * @module protocol/documents
 * Documents sent with a request (issue 15): `documents: [{id?, title?, text}]` on `POST /v1/generate`,
 * on batch items and as `nest.documents` on the OpenAI-compatible routes. NEST then retrieves,
 * encodes and cites over the documents' chunks instead of an ingested corpus (README "Your own
 * documents"). Offsets into a document are UTF-16 code units of its `text` as received (after the
 * edge's lone-surrogate repair), 0-based, end-exclusive. Worker-safe.
 */
import { z } from "zod";

/** Caps on the documents of one request (also the zod bounds below). */
export const DOCUMENT_LIMITS = {
  /** Documents per request. */
  maxDocuments: 20,
  /** Characters (UTF-16 code units) per document. */
  maxDocumentChars: 100_000,
  /** Characters (UTF-16 code units) of all documents together. */
  maxTotalChars: 200_000,
  /** Characters of a document's `id`. */
  maxIdChars: 128,
  /** Characters of a document's `title`. */
  maxTitleChars: 256,
} as const;

/**
 * Largest body, in bytes, of a request that carries documents (the edge's limit for other requests
 * stays 64 KiB): room for {@link DOCUMENT_LIMITS}.maxTotalChars characters at up to 6 JSON bytes
 * each (`\uXXXX` escapes) plus the rest of the request.
 */
export const MAX_DOCUMENTS_BODY_BYTES = 6 * DOCUMENT_LIMITS.maxTotalChars + 64 * 1024;

/**
 * The `corpus` a parsed request with documents reports (in `retrieval.corpus`, batch outputs and
 * logs). Not a valid corpus name for ingestion (`@` is outside the corpus-name alphabet), so it
 * never collides with an ingested corpus.
 */
export const DOCUMENTS_CORPUS = "@documents";

/** One document of a request. */
export const RequestDocumentSchema = z
  .object({
    /** The caller's id of the document, echoed as `citation.document_id`. */
    id: z.string().min(1).max(DOCUMENT_LIMITS.maxIdChars).optional(),
    /** The document's title, echoed as `citation.document_title` (and the passages' title). */
    title: z.string().max(DOCUMENT_LIMITS.maxTitleChars).optional(),
    /** The text retrieved from, encoded and cited into. */
    text: z
      .string()
      .min(1)
      .max(DOCUMENT_LIMITS.maxDocumentChars)
      .refine((s) => s.trim() !== "", "must not be blank (whitespace only)"),
  })
  .strict();
export type RequestDocument = z.infer<typeof RequestDocumentSchema>;

/** The `documents` field: 1 to {@link DOCUMENT_LIMITS}.maxDocuments documents within the total character cap. */
export const DocumentsSchema = z
  .array(RequestDocumentSchema)
  .min(1)
  .max(DOCUMENT_LIMITS.maxDocuments)
  .refine((docs) => docs.reduce((n, d) => n + d.text.length, 0) <= DOCUMENT_LIMITS.maxTotalChars, {
    message: `the documents' texts must total at most ${DOCUMENT_LIMITS.maxTotalChars} characters`,
  });

/**
 * Where a passage comes from when it is a chunk of a request document: the document's index in
 * `documents`, its `id` and `title` when given, and the chunk's offset in the document's text.
 */
export const DocumentRefSchema = z.object({
  index: z.number().int().nonnegative(),
  id: z.string().optional(),
  title: z.string().optional(),
  /** Offset of the passage text in the document's text (UTF-16 code units): `text.slice(start, start + passage.text.length)`. */
  start: z.number().int().nonnegative(),
});
export type DocumentRef = z.infer<typeof DocumentRefSchema>;

/**
 * Hex SHA-256 of the documents (their order, ids, titles and texts), for the FAQ cache key.
 * Worker-safe (`crypto.subtle`).
 */
export async function documentsHash(docs: readonly RequestDocument[]): Promise<string> {
  const canonical = JSON.stringify(docs.map((d) => [d.id ?? null, d.title ?? null, d.text]));
  return sha256Hex(canonical);
}

/** Hex SHA-256 of the UTF-8 bytes of `text`. */
export async function sha256Hex(text: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-256", new TextEncoder().encode(text));
  return [...new Uint8Array(digest)].map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * Estimated tokens of the documents, for quotas and rate limits: ⌈characters / 4⌉ (the common
 * English estimate of ~4 characters per token; SmolLM2's tokenizer gives 3.6 to 4.5 on prose).
 */
export function estimateDocumentTokens(docs: readonly RequestDocument[] | undefined): number {
  if (!docs) return 0;
  return Math.ceil(docs.reduce((n, d) => n + d.text.length, 0) / 4);
}
