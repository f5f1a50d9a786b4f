/**
 * @module lancedb-index
 * Local passage index on LanceDB (embedded, on disk): hybrid first-stage retrieval
 * (nest-algorithm.md §1): BM25 full-text search plus, when built with an embedder, dense vectors
 * (cosine, exact flat search), fused by `@nest/shared/retrieve/fusion` (`rrf` by default, `adaptive` = the
 * paper's weighting). Node-only.
 *
 * Layout: one table `passages` with string columns `id`, `title`, `text`, `source` and `fts`
 * (`title + "\n" + text`, the only indexed column), and optionally `vector` (float32 `[dim]`,
 * embedding of `title + " " + text`, unit length). `index.json` beside the table records the
 * embedder (`{ embedder: { dir, key, dim } }`) so {@link openLanceIndex} loads the same one for queries.
 * The full-text index is built after every row
 * is added (an index created on an empty table and filled later gave unranked hits).
 * Tokenizer: simple (split on whitespace and punctuation), lowercased, ASCII-folded, English
 * stemming and stop-word removal, no positions (no phrase queries).
 */
import "./lancedb-log.ts";
import * as lancedb from "@lancedb/lancedb";
import { z } from "zod";
import { readFile, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { Field, FixedSizeList, Float32, Schema, Utf8 } from "apache-arrow";
import type { Passage, ScoredPassage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { type PassageIndex, checkPassages, sanitizeQuery, withRanks } from "@nest/shared/retrieve/passage-index";
import { DEFAULT_FUSION, DEFAULT_FUSION_DEPTH, type FusionMethod, type Hit, fuse } from "@nest/shared/retrieve/fusion";
import { sharedEmbedder } from "./embedder.ts";

/** Name of the passages table inside the index folder. */
export const PASSAGE_TABLE = "passages";

/** Column holding the searchable text (`title + "\n" + text`). */
const FTS_COLUMN = "fts";

/** Column holding the dense vectors. */
export const VECTOR_COLUMN = "vector";

/** Metadata file beside the table. */
export const INDEX_META_FILE = "index.json";

/** Contents of {@link INDEX_META_FILE}: the query embedder of an index with vectors. */
export const IndexMetaSchema = z.object({
  embedder: z.object({ dir: z.string(), key: z.string(), dim: z.number().int().positive() }).optional(),
});
export type IndexMeta = z.infer<typeof IndexMetaSchema>;

/** What the index needs of an embedder: unit vectors `[texts.length][dim]`. */
export interface TextEmbedder {
  readonly dim: number;
  embed(texts: readonly string[]): Promise<Float32Array[]>;
}

function schemaFor(dim?: number): Schema {
  const fields: Field[] = ["id", "title", "text", "source", FTS_COLUMN].map((name) => new Field(name, new Utf8(), false));
  if (dim) fields.push(new Field(VECTOR_COLUMN, new FixedSizeList(dim, new Field("item", new Float32(), true)), false));
  return new Schema(fields);
}

/** The text a passage is embedded as (paper: `title + " " + text`). */
export const embeddingText = (p: { title: string; text: string }) => (p.title ? `${p.title} ${p.text}` : p.text);

/** Embeds `texts` in sub-batches of `sub`, sorted by length to cut padding; vectors in input order. */
export async function embedAll(embedder: TextEmbedder, texts: readonly string[], sub = 32): Promise<Float32Array[]> {
  const order = texts.map((_, i) => i).sort((a, b) => texts[a]!.length - texts[b]!.length);
  const out = new Array<Float32Array>(texts.length);
  for (let i = 0; i < order.length; i += sub) {
    const idx = order.slice(i, i + sub);
    const vecs = await embedder.embed(idx.map((j) => texts[j]!));
    idx.forEach((j, n) => (out[j] = vecs[n]!));
  }
  return out;
}

/** Options for {@link buildLanceIndex}. */
export interface BuildLanceOptions {
  /** Rows per `add` call. @defaultValue 5000 */
  batchSize?: number;
  /** Called after each batch with rows added so far; `phase` `"index"` once before the FTS build. */
  onProgress?: (rowsAdded: number, phase: "rows" | "index") => void;
  /** Dense embedder: adds the `vector` column (omit for a BM25-only index). */
  embedder?: TextEmbedder;
  /** Precomputed vectors by 0-based row index (instead of `embedder`; `embedderInfo` still names the query embedder). */
  vectors?: { dim: number; get(row: number): Float32Array };
  /** Recorded in `index.json` so queries use the same embedder (`dir` = its model folder). */
  embedderInfo?: { dir: string; key: string };
}

/**
 * Builds (or overwrites) the passage table in `dir` from `passages`, adding rows in batches, then
 * builds the full-text index over `title + text`.
 *
 * @param dir LanceDB folder (created if missing)
 * @returns number of rows written
 * @throws NestError `invalid_request` if there are no passages
 */
export async function buildLanceIndex(
  dir: string,
  passages: Iterable<Passage> | AsyncIterable<Passage>,
  opts: BuildLanceOptions = {},
): Promise<{ rows: number }> {
  const batchSize = opts.batchSize ?? 5000;
  const db = await lancedb.connect(dir);
  try {
    const embedder = opts.embedder;
    const dim = opts.vectors?.dim ?? embedder?.dim;
    const table = await db.createEmptyTable(PASSAGE_TABLE, schemaFor(dim), { mode: "overwrite" });
    try {
      let batch: Array<Record<string, unknown>> = [];
      let rows = 0;
      const flush = async () => {
        if (batch.length === 0) return;
        if (opts.vectors) {
          batch.forEach((r, i) => (r[VECTOR_COLUMN] = Array.from(opts.vectors!.get(rows + i))));
        } else if (embedder) {
          const vecs = await embedAll(
            embedder,
            batch.map((r) => embeddingText(r as { title: string; text: string })),
          );
          batch.forEach((r, i) => (r[VECTOR_COLUMN] = Array.from(vecs[i]!)));
        }
        await table.add(batch);
        rows += batch.length;
        batch = [];
        opts.onProgress?.(rows, "rows");
      };
      for await (const p of passages) {
        batch.push({ id: p.id, title: p.title, text: p.text, source: p.source, [FTS_COLUMN]: `${p.title}\n${p.text}` });
        if (batch.length >= batchSize) await flush();
      }
      await flush();
      if (rows === 0) throw new NestError("invalid_request", "cannot build a passage index with no passages");
      opts.onProgress?.(rows, "index");
      await table.createIndex(FTS_COLUMN, {
        config: lancedb.Index.fts({
          baseTokenizer: "simple",
          language: "English",
          lowercase: true,
          asciiFolding: true,
          stem: true,
          removeStopWords: true,
          withPosition: false,
        }),
        replace: true,
      });
      const meta: IndexMeta = dim && opts.embedderInfo ? { embedder: { ...opts.embedderInfo, dim } } : {};
      await writeFile(join(dir, INDEX_META_FILE), `${JSON.stringify(meta, null, 2)}\n`);
      return { rows };
    } finally {
      table.close();
    }
  } finally {
    db.close();
  }
}

/**
 * Every passage of the index in `dir`, in table order (the first `limit` when given).
 * @throws LanceDB errors as is (e.g. no passage table in `dir`)
 */
export async function readIndexPassages(dir: string, limit?: number): Promise<Passage[]> {
  const db = await lancedb.connect(dir);
  try {
    const table = await db.openTable(PASSAGE_TABLE);
    try {
      let q = table.query().select(["id", "title", "text", "source"]);
      if (limit !== undefined) q = q.limit(limit);
      return (await q.toArray()).map(toPassage);
    } finally {
      table.close();
    }
  } finally {
    db.close();
  }
}

/** A LanceDB-backed {@link PassageIndex}; call `close()` when done. */
export interface LancePassageIndex extends PassageIndex {
  /** Number of passages in the index. */
  count(): Promise<number>;
  /** True when the index has dense vectors (hybrid search available). */
  readonly hybrid: boolean;
  /** Fusion used when `search` gets none. */
  readonly defaultFusion: FusionMethod;
  /** BM25 hits (raw `_score`), best first, at most `passages`. */
  searchSparse(query: string, passages: number): Promise<Array<Hit & { row: Passage }>>;
  /** Dense hits (cosine similarity), best first, at most `passages`. @throws NestError `invalid_request` without vectors */
  searchDense(query: string, passages: number): Promise<Array<Hit & { row: Passage }>>;
  close(): void;
}

/** Options for {@link openLanceIndex}. */
export interface OpenLanceOptions {
  /** Query embedder; default: the one named in `index.json` (loaded once per process). */
  embedder?: TextEmbedder;
  /**
   * Fusion of a hybrid index when `search` is not given one (entry points pass `NEST_FUSION`, the
   * `corpus` slice of `@nest/shared/config/node-env`); a BM25-only index always uses `bm25`.
   * @defaultValue `DEFAULT_FUSION` (`rrf`)
   */
  fusion?: FusionMethod;
  /** Candidates per retriever before fusion. @defaultValue 200 */
  depth?: number;
}

async function readMeta(dir: string): Promise<IndexMeta> {
  try {
    return IndexMetaSchema.parse(JSON.parse(await readFile(join(dir, INDEX_META_FILE), "utf8")));
  } catch {
    return {};
  }
}

const toPassage = (r: Record<string, unknown>): Passage => ({
  id: String(r.id),
  title: String(r.title),
  text: String(r.text),
  source: String(r.source),
});

/**
 * Opens the passage index in `dir` (built by {@link buildLanceIndex}). Without vectors `search` is
 * BM25 full-text search on the sanitized query (see `sanitizeQuery`), `score` = BM25 `_score`. With
 * vectors it is hybrid: both retrievers return `depth` candidates, fused by the chosen method
 * (`retrieve/fusion`), `score` = the fused score.
 *
 * @param corpus corpus name reported by the index, e.g. `factbook`
 * @throws NestError `not_found` if `dir` holds no passage table; `model_not_prepared` if the index
 *   has vectors but its embedder folder is missing
 */
export async function openLanceIndex(dir: string, corpus: string, opts: OpenLanceOptions = {}): Promise<LancePassageIndex> {
  const db = await lancedb.connect(dir);
  let table: lancedb.Table;
  try {
    table = await db.openTable(PASSAGE_TABLE);
  } catch (err) {
    db.close();
    throw new NestError("not_found", `no passage index in ${dir}; run \`nestlm setup\``, { cause: err });
  }
  const hasVectors = (await table.schema()).fields.some((f) => f.name === VECTOR_COLUMN);
  let embedder = opts.embedder;
  if (hasVectors && !embedder) {
    const meta = await readMeta(dir);
    if (!meta.embedder) throw new NestError("model_not_prepared", `index ${dir} has vectors but no embedder in ${INDEX_META_FILE}`);
    try {
      embedder = await sharedEmbedder(meta.embedder.dir);
    } catch (err) {
      table.close();
      db.close();
      throw err;
    }
  }
  const defaultFusion = hasVectors ? (opts.fusion ?? DEFAULT_FUSION) : "bm25";
  const depth = opts.depth ?? DEFAULT_FUSION_DEPTH;
  const cols = ["id", "title", "text", "source"];

  const searchSparse = async (query: string, passages: number) => {
    const q = sanitizeQuery(query);
    if (!q) return [];
    const rows = await table.query().fullTextSearch(new lancedb.MatchQuery(q, FTS_COLUMN)).select(cols).limit(passages).toArray();
    return rows.map((r) => ({ id: String(r.id), score: Number(r._score), row: toPassage(r) })).sort((a, b) => b.score - a.score);
  };
  const searchDense = async (query: string, passages: number) => {
    if (!embedder) throw new NestError("invalid_request", `corpus "${corpus}" has no dense vectors`);
    const text = query.normalize("NFKC").trim();
    if (!text) return [];
    const [vec] = await embedder.embed([text]);
    const rows = await table.vectorSearch(Array.from(vec!)).distanceType("cosine").select(cols).limit(passages).toArray();
    return rows.map((r) => ({ id: String(r.id), score: 1 - Number(r._distance), row: toPassage(r) })).sort((a, b) => b.score - a.score);
  };

  return {
    corpus,
    hybrid: hasVectors,
    defaultFusion,
    searchSparse,
    searchDense,
    async search(query: string, passages: number, searchOpts?: { fusion?: FusionMethod }): Promise<ScoredPassage[]> {
      checkPassages(passages);
      const method = hasVectors ? (searchOpts?.fusion ?? defaultFusion) : "bm25";
      const n = method === "bm25" || method === "dense" ? passages : Math.max(depth, passages);
      const [dense, sparse] = await Promise.all([
        method === "bm25" ? [] : searchDense(query, n),
        method === "dense" ? [] : searchSparse(query, n),
      ]);
      const rows = new Map<string, Passage>();
      for (const h of [...dense, ...sparse]) rows.set(h.id, h.row);
      const fused = fuse(method, dense, sparse, passages);
      return withRanks(fused.map((h) => ({ ...rows.get(h.id)!, score: h.score })));
    },
    count: () => table.countRows(),
    close() {
      table.close();
      db.close();
    },
  };
}
