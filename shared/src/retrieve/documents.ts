/**
 * @module retrieve/documents
 * First-stage retrieval over the documents of one request (issue 15; nest-algorithm.md §1): each
 * document is chunked with the ingestion chunker (`corpus/chunk.ts`, {@link DEFAULT_CHUNK_WORDS}
 * words), every chunk becomes a {@link Passage} whose id is a hash of its text (`doc-` + 32 hex of
 * SHA-256), so the gpu-worker's passage-key cache (keyed by id and text) finds the keys of a chunk
 * it has seen in an earlier request and a follow-up question over the same documents encodes nothing.
 * Chunks are ranked by an in-memory BM25 (MiniSearch over title + text); when all chunks fit within
 * `passages` all of them are returned, matching chunks first. Worker-safe.
 */
import MiniSearch from "minisearch";
import { chunkText, DEFAULT_CHUNK_WORDS } from "../corpus/chunk.ts";
import { DOCUMENTS_CORPUS, sha256Hex, type RequestDocument } from "../protocol/documents.ts";
import type { Citation } from "../protocol/events.ts";
import type { Passage, ScoredPassage } from "../protocol/passage.ts";
import { checkPassages, sanitizeQuery, type PassageIndex } from "./passage-index.ts";

/** The passage id of a document chunk: `doc-` + the first 32 hex digits of SHA-256(text). */
export async function chunkPassageId(text: string): Promise<string> {
  return `doc-${(await sha256Hex(text)).slice(0, 32)}`;
}

/**
 * The passages of `docs`, in document order then text order: chunk text, id by
 * {@link chunkPassageId}, title = the document's title or `documents[i]`, source
 * `documents[i]@start-end` and a {@link Passage.document} reference with the chunk's offset.
 */
export async function documentPassages(docs: readonly RequestDocument[], maxWords = DEFAULT_CHUNK_WORDS): Promise<Passage[]> {
  const out: Passage[] = [];
  for (const [index, doc] of docs.entries()) {
    for (const chunk of chunkText(doc.text, { maxWords })) {
      out.push({
        id: await chunkPassageId(chunk.text),
        title: doc.title ?? `documents[${index}]`,
        text: chunk.text,
        source: `documents[${index}]@${chunk.start}-${chunk.end}`,
        document: {
          index,
          ...(doc.id !== undefined && { id: doc.id }),
          ...(doc.title !== undefined && { title: doc.title }),
          start: chunk.start,
        },
      });
    }
  }
  return out;
}

/** A {@link PassageIndex} over the chunks of a request's documents (corpus {@link DOCUMENTS_CORPUS}). */
export class DocumentIndex implements PassageIndex {
  readonly corpus = DOCUMENTS_CORPUS;
  private chunks: Promise<Passage[]> | undefined;

  constructor(private readonly docs: readonly RequestDocument[]) {}

  /** The documents' chunks as passages (computed once). */
  passages(): Promise<Passage[]> {
    this.chunks ??= documentPassages(this.docs);
    return this.chunks;
  }

  /**
   * The top `passages` chunks for `query`: chunks BM25 scores as matching, best first (MiniSearch
   * BM25+, terms OR-ed, title weighted 2), then the other chunks in document order, at most
   * `passages` in all (so all chunks when they fit). Non-matching chunks score 0. A chunk text found
   * in several documents is one passage, listed once (where it ranks best).
   * @throws NestError `invalid_request` if `passages` is not a positive integer
   */
  async search(query: string, passages: number): Promise<ScoredPassage[]> {
    checkPassages(passages);
    const chunks = await this.passages();
    const ms = new MiniSearch<{ i: number; title: string; text: string }>({ idField: "i", fields: ["title", "text"] });
    ms.addAll(chunks.map((p, i) => ({ i, title: p.document?.title ?? "", text: p.text })));
    const q = sanitizeQuery(query);
    const hits = q === "" ? [] : ms.search(q, { combineWith: "OR", boost: { title: 2 } });
    const scores = new Map<number, number>(hits.map((h) => [h.id as number, h.score]));
    const order = [...hits.map((h) => h.id as number), ...chunks.map((_, i) => i).filter((i) => !scores.has(i))];
    // A chunk text that occurs in two documents is one passage (same id): the better-ranked one.
    const seen = new Set<string>();
    const distinct = order.filter((i) => !seen.has(chunks[i]!.id) && seen.add(chunks[i]!.id));
    return distinct.slice(0, passages).map((i, r) => ({ ...chunks[i]!, score: scores.get(i) ?? 0, rank: r + 1 }));
  }
}

/**
 * `citation` with its place in the request's documents, when it cites a document chunk among
 * `passages`: `document_index`, `document_id`/`document_title` when the document has them, and
 * `start`/`end` = the chunk's offset + `passage_start`/`passage_end`, so that
 * `documents[document_index].text.slice(start, end) === cited_text`. Other citations come back as they are.
 */
export function citeIntoDocument(citation: Citation, passages: readonly Passage[]): Citation {
  const doc = passages.find((p) => p.id === citation.passage_id && p.document)?.document;
  if (!doc) return citation;
  return {
    ...citation,
    document_index: doc.index,
    ...(doc.id !== undefined && { document_id: doc.id }),
    ...(doc.title !== undefined && { document_title: doc.title }),
    start: doc.start + citation.passage_start,
    end: doc.start + citation.passage_end,
  };
}
