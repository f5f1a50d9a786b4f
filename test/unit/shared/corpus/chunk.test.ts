import { describe, expect, it } from "vitest";
import { chunkText, countWords, sentenceSpans } from "@nest/shared/corpus/chunk";

describe("sentenceSpans", () => {
  it("does not end sentences at abbreviations (Capt., U.S.)", () => {
    // "Capt. James COOK came in 1770." = 30 chars; "The U.S. Army left." = 31..50; "Done" = 51..55
    expect(sentenceSpans("Capt. James COOK came in 1770. The U.S. Army left. Done")).toEqual([
      { start: 0, end: 30, words: 6 },
      { start: 31, end: 50, words: 4 },
      { start: 51, end: 55, words: 1 },
    ]);
  });
});

describe("chunkText", () => {
  it("packs whole sentences up to the word budget", () => {
    // sentences of 3, 2 and 4 words; budget 5 -> [3+2], [4]
    expect(chunkText("One two three. Four five. Six seven eight nine.", { maxWords: 5 })).toEqual([
      { text: "One two three. Four five.", start: 0, end: 25 },
      { text: "Six seven eight nine.", start: 26, end: 47 },
    ]);
  });

  it("keeps a text under the default budget (100 words) whole, trimmed", () => {
    expect(chunkText("  Hello world.  ")).toEqual([{ text: "Hello world.", start: 2, end: 14 }]);
    expect(chunkText("   ")).toEqual([]);
    expect(chunkText("")).toEqual([]);
  });

  it("splits a sentence longer than the budget at word boundaries; its last piece takes the next sentence", () => {
    expect(chunkText("a b c d e f g h i j. Yes.", { maxWords: 4 })).toEqual([
      { text: "a b c d", start: 0, end: 7 },
      { text: "e f g h", start: 8, end: 15 },
      { text: "i j. Yes.", start: 16, end: 25 },
    ]);
  });

  it("uses UTF-16 offsets (astral characters count 2)", () => {
    const src = "Ça va. Émile est là 🙂. Fin.";
    const chunks = chunkText(src, { maxWords: 4 });
    expect(chunks).toEqual([
      { text: "Ça va.", start: 0, end: 6 },
      { text: "Émile est là 🙂.", start: 7, end: 23 },
      { text: "Fin.", start: 24, end: 28 },
    ]);
    for (const c of chunks) expect(src.slice(c.start, c.end)).toBe(c.text);
  });

  it("keeps offsets exact, order, the budget and every word on a long text", () => {
    const sentence = (i: number) => `Sentence ${i} has ${"word ".repeat(i % 7)}end.`;
    const src = Array.from({ length: 60 }, (_, i) => sentence(i)).join(" \n\t "); // mixed whitespace between sentences
    const chunks = chunkText(src, { maxWords: 20 });
    let prevEnd = 0;
    for (const c of chunks) {
      expect(src.slice(c.start, c.end)).toBe(c.text);
      expect(c.start).toBeGreaterThanOrEqual(prevEnd);
      expect(countWords(c.text)).toBeLessThanOrEqual(20);
      prevEnd = c.end;
    }
    expect(
      chunks
        .map((c) => c.text)
        .join(" ")
        .split(/\s+/),
    ).toEqual(src.split(/\s+/));
  });

  it("rejects a non-positive budget", () => {
    expect(() => chunkText("x", { maxWords: 0 })).toThrow(RangeError);
    expect(() => chunkText("x", { maxWords: 2.5 })).toThrow(RangeError);
  });
});
