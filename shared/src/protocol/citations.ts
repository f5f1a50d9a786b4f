/**
 * @module protocol/citations
 * One citation per copied run: a run is streamed as soon as its citation is decided, then in pieces
 * whose citations carry `continues: true` (protocol/events.ts `CitationSchema`). Worker-safe.
 */
import type { Citation } from "./events.ts";

/**
 * Joins each citation marked `continues` into the one before it, when that one ends where it starts
 * (same passage, `passage_end` = its `passage_start`, `text_end` = its `text_start`): the joined
 * citation keeps the first piece's start and takes the last piece's ends (`passage_end`, `text_end`,
 * the document's `end`), its `cited_text` is the pieces' texts concatenated, and a numeric `tokens`
 * field (as the eval records carry) is summed. Citations without `continues` are kept as they are.
 * @param citations in stream order
 * @returns a new array (the inputs are not modified), one citation per run
 */
export function joinContinuedCitations<C extends Citation & { tokens?: number }>(citations: readonly C[]): C[] {
  const out: C[] = [];
  for (const c of citations) {
    const prev = out.at(-1);
    if (c.continues && prev && prev.passage_id === c.passage_id && prev.passage_end === c.passage_start && prev.text_end === c.text_start) {
      const joined: C = { ...prev, passage_end: c.passage_end, text_end: c.text_end };
      if (prev.cited_text !== undefined && c.cited_text !== undefined) joined.cited_text = prev.cited_text + c.cited_text;
      if (c.end !== undefined) joined.end = c.end;
      if (typeof prev.tokens === "number" && typeof c.tokens === "number") joined.tokens = prev.tokens + c.tokens;
      out[out.length - 1] = joined;
    } else out.push({ ...c });
  }
  return out;
}
