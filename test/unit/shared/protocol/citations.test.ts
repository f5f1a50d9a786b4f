/** joinContinuedCitations: the pieces of a streamed run joined into one citation per run. */
import { describe, expect, it } from "vitest";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import type { Citation } from "@nest/shared/protocol/events";

const base = { passage_id: "p", title: "T", source: "s" };

describe("joinContinuedCitations", () => {
  it("joins continuing pieces (ranges, cited_text, document end, tokens) and keeps other citations", () => {
    const cs: Array<Citation & { tokens: number }> = [
      {
        ...base,
        passage_start: 5,
        passage_end: 14,
        text_start: 6,
        text_end: 15,
        cited_text: " Canberra",
        start: 105,
        end: 114,
        document_index: 0,
        tokens: 1,
      },
      {
        ...base,
        passage_start: 14,
        passage_end: 20,
        text_start: 15,
        text_end: 21,
        cited_text: "; time",
        start: 114,
        end: 120,
        document_index: 0,
        continues: true,
        tokens: 2,
      },
      // Adjacent but not marked `continues`: another run (a new copy restarting there).
      { ...base, passage_start: 20, passage_end: 31, text_start: 21, text_end: 32, cited_text: " difference", tokens: 1 },
      // Marked, but it does not start where the previous ends: kept apart.
      { ...base, passage_start: 40, passage_end: 43, text_start: 32, text_end: 35, cited_text: "abc", continues: true, tokens: 1 },
    ];
    expect(joinContinuedCitations(cs)).toEqual([
      {
        ...base,
        passage_start: 5,
        passage_end: 20,
        text_start: 6,
        text_end: 21,
        cited_text: " Canberra; time",
        start: 105,
        end: 120,
        document_index: 0,
        tokens: 3,
      },
      cs[2],
      cs[3],
    ]);
    expect(cs[0]!.passage_end).toBe(14); // inputs untouched
  });

  it("answers [] for no citations", () => {
    expect(joinContinuedCitations([])).toEqual([]);
  });
});
