import { describe, expect, it } from "vitest";
import { attributionStats, DeltaBuilder, groupBySpan } from "../../../../gpu-worker/src/nest/attribution.ts";
import { charDecode, charPassage, store2d } from "./fixtures.ts";

const store = store2d(charPassage("p0", "Canberra is", [[0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0], [0, 0]]));
const ch = (c: string) => c.charCodeAt(0);

describe("attribution metrics (spec §7)", () => {
  // Per-token sources as passage ids (null = LM-generated).
  const s = (passage: number, _pos: number) => `p${passage}`;
  it("ratio = sourced tokens / generated tokens", () => {
    expect(attributionStats([s(0, 1), null, s(0, 2), s(1, 0)]).ratio).toBe(0.75);
    expect(attributionStats([]).ratio).toBeNull();
  });
  it("length = mean run length, runs break on a missing source or a passage change", () => {
    // runs: [0,0,0] (3), [1] (1), [0,0] (2) → 2
    expect(attributionStats([s(0, 1), s(0, 2), s(0, 9), s(1, 0), null, s(0, 3), s(0, 4)]).runLength).toBe(2);
    expect(attributionStats([null]).runLength).toBeNull();
  });
});

describe("DeltaBuilder", () => {
  it("groups consecutive copied tokens into one cited delta whose text equals the passage range", () => {
    const b = new DeltaBuilder(store, charDecode);
    const out = b.push([
      { id: ch("I") },
      { id: ch("t") },
      { id: ch("e"), source: { passage: 0, pos: 4 } },
      { id: ch("r"), source: { passage: 0, pos: 5 } },
      { id: ch("r"), source: { passage: 0, pos: 6 } },
    ]);
    expect(out).toEqual([
      { text: "It", tokens: 2 },
      {
        text: "err",
        tokens: 3,
        citation: {
          passage_id: "p0",
          title: "Title p0",
          source: "test/p0",
          passage_start: 4,
          passage_end: 7,
          text_start: 2,
          text_end: 5,
        },
      },
    ]);
    expect(b.attributedTokens).toBe(3);
    expect(b.completionTokens).toBe(5);
  });

  it("never cites a range whose text differs from the generated text", () => {
    const b = new DeltaBuilder(store, charDecode);
    // "a" claimed at position 4, where the passage has "e".
    expect(b.push([{ id: ch("a"), source: { passage: 0, pos: 4 } }])).toEqual([{ text: "a", tokens: 1 }]);
    expect(b.attributedTokens).toBe(0);
  });

  it("splits a run whose positions jump", () => {
    const b = new DeltaBuilder(store, charDecode);
    const out = b.push([
      { id: ch("C"), source: { passage: 0, pos: 0 } },
      { id: ch("r"), source: { passage: 0, pos: 6 } },
    ]);
    expect(out.map((d) => d.citation?.passage_start)).toEqual([0, 6]);
    expect(out.map((d) => d.text)).toEqual(["C", "r"]);
  });

  it("holds back an incomplete character and then emits it uncited", () => {
    // A decode that yields U+FFFD for a lone first half.
    const decode = (ids: readonly number[]) => ids.map((i) => (i === 1 ? "\uFFFD" : i === 2 ? "" : String.fromCharCode(i))).join("").replace("\uFFFD", ids.includes(2) ? "é" : "\uFFFD");
    const b = new DeltaBuilder(store, decode);
    expect(b.push([{ id: 1 }])).toEqual([]);
    expect(b.push([{ id: 2 }, { id: ch("x") }])).toEqual([{ text: "éx", tokens: 3 }]);
  });

  it("groupBySpan splits copied and generated runs", () => {
    const g = groupBySpan([
      { id: 1 },
      { id: 2, source: { passage: 0, pos: 3 } },
      { id: 3, source: { passage: 0, pos: 4 } },
      { id: 4, source: { passage: 1, pos: 5 } },
      { id: 5 },
      { id: 6 },
    ]);
    expect(g.map((x) => x.length)).toEqual([1, 2, 1, 2]);
  });
});
