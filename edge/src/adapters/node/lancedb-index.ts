/**
 * @module adapters/node/lancedb-index
 * Local passage index on LanceDB (embedded, on disk): BM25 full-text search for first-stage
 * retrieval (nest-algorithm.md §1). Node-only.
 *
 * Layout: one table `passages` with string columns `id`, `title`, `text`, `source` and `fts`
 * (`title + "\n" + text`, the only indexed column). The full-text index is built after every row
 * is added (an index created on an empty table and filled later gave unranked hits).
 * Tokenizer: simple (split on whitespace and punctuation), lowercased, ASCII-folded, English
 * stemming and stop-word removal, no positions (no phrase queries).
 */
import "./lancedb-log.ts";
import * as lancedb from "@lancedb/lancedb";
import { Field, Schema, Utf8 } from "apache-arrow";
import type { Passage, ScoredPassage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { type PassageIndex, checkK, sanitizeQuery, withRanks } from "../../retrieve/passage-index.ts";

/** Name of the passages table inside the index folder. */
export const PASSAGE_TABLE = "passages";

/** Column holding the searchable text (`title + "\n" + text`). */
const FTS_COLUMN = "fts";

const SCHEMA = new Schema(
  ["id", "title", "text", "source", FTS_COLUMN].map((name) => new Field(name, new Utf8(), false)),
);

/** Options for {@link buildLanceIndex}. */
export interface BuildLanceOptions {
  /** Rows per `add` call. @defaultValue 5000 */
  batchSize?: number;
  /** Called after each batch with rows added so far; `phase` `"index"` once before the FTS build. */
  onProgress?: (rowsAdded: number, phase: "rows" | "index") => void;
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
    const table = await db.createEmptyTable(PASSAGE_TABLE, SCHEMA, { mode: "overwrite" });
    try {
      let batch: Array<Record<string, string>> = [];
      let rows = 0;
      const flush = async () => {
        if (batch.length === 0) return;
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
      return { rows };
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
  close(): void;
}

/**
 * Opens the passage index in `dir` (built by {@link buildLanceIndex}). `search` runs BM25 full-text
 * search on the sanitized query (see `sanitizeQuery`); `score` is LanceDB's BM25 `_score`.
 *
 * @param corpus corpus name reported by the index, e.g. `factbook`
 * @throws NestError `not_found` if `dir` holds no passage table
 */
export async function openLanceIndex(dir: string, corpus: string): Promise<LancePassageIndex> {
  const db = await lancedb.connect(dir);
  let table: lancedb.Table;
  try {
    table = await db.openTable(PASSAGE_TABLE);
  } catch (err) {
    db.close();
    throw new NestError("not_found", `no passage index in ${dir}; run \`nestlm setup\``, { cause: err });
  }
  return {
    corpus,
    async search(query: string, k: number): Promise<ScoredPassage[]> {
      checkK(k);
      const q = sanitizeQuery(query);
      if (!q) return [];
      const rows = await table
        .query()
        .fullTextSearch(new lancedb.MatchQuery(q, FTS_COLUMN))
        .select(["id", "title", "text", "source"])
        .limit(k)
        .toArray();
      const hits = rows
        .map((r) => ({
          id: String(r.id),
          title: String(r.title),
          text: String(r.text),
          source: String(r.source),
          score: Number(r._score),
        }))
        .sort((a, b) => b.score - a.score);
      return withRanks(hits);
    },
    count: () => table.countRows(),
    close() {
      table.close();
      db.close();
    },
  };
}
