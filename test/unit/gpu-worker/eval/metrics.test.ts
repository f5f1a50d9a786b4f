import { describe, expect, it } from "vitest";
import {
  answerRecall, exactMatch, maxF1, normalizeAnswer, rougeScores, squadTokens, tokenF1, tokenPassages,
} from "@nest/gpu-worker/eval/metrics";
import { attributionStats } from "@nest/gpu-worker/nest/attribution";

describe("SQuAD normalisation, EM and F1", () => {
  it("lowercases, drops punctuation and articles, collapses spaces", () => {
    expect(normalizeAnswer("  The  Eiffel-Tower, (Paris)! ")).toBe("eiffeltower paris");
    expect(normalizeAnswer("An apple a day")).toBe("apple day");
    // "theatre" keeps its "the": articles are whole words only.
    expect(squadTokens("the theatre")).toEqual(["theatre"]);
  });

  it("exact match takes the best gold", () => {
    expect(exactMatch("the Denver Broncos.", ["Broncos", "Denver Broncos"])).toBe(1);
    expect(exactMatch("Denver", ["Denver Broncos"])).toBe(0);
  });

  it("token F1 by hand", () => {
    // pred tokens [denver, broncos, won], gold [denver, broncos]: same 2, P 2/3, R 1, F1 0.8.
    expect(tokenF1("The Denver Broncos won", "Denver Broncos")).toBeCloseTo(0.8, 12);
    // repeated tokens count once per gold occurrence: pred [a1 x3] vs gold [a1]: same 1, P 1/3, R 1 → 0.5.
    expect(tokenF1("a1 a1 a1", "a1")).toBeCloseTo(0.5, 12);
    expect(tokenF1("", "x")).toBe(0);
    expect(maxF1("Santa Clara, California", ["Levi's Stadium", "Santa Clara"])).toBeCloseTo(0.8, 12);
  });
});

describe("answer-level recall", () => {
  it("any alias, case-insensitive, trimmed", () => {
    expect(answerRecall("It was held at LEVI'S STADIUM in 2016.", ["Santa Clara", " Levi's Stadium "])).toBe(1);
    expect(answerRecall("It was held in California.", ["Santa Clara", "Levi's Stadium"])).toBe(0);
  });
  it("ignores empty aliases", () => {
    expect(answerRecall("anything", ["", "  "])).toBe(0);
  });
});

describe("ROUGE (js-rouge)", () => {
  it("scores a known pair", () => {
    // cand: the cat sat on the mat (6) / ref: the cat lay on the mat (6).
    // unigrams: the×2, cat, on, mat shared = 5 → P = R = 5/6 → F1 = 5/6.
    // bigrams: cand {the cat, cat sat, sat on, on the, the mat}, ref {the cat, cat lay, lay on, on the, the mat}:
    // shared 3 of 5 → 0.6. LCS = the cat on the mat = 5 → 5/6.
    const r = rougeScores("the cat sat on the mat", "The cat lay on the mat");
    expect(r.rouge1).toBeCloseTo(5 / 6, 10);
    expect(r.rouge2).toBeCloseTo(0.6, 10);
    expect(r.rougeL).toBeCloseTo(5 / 6, 10);
    expect(rougeScores("", "x")).toEqual({ rouge1: 0, rouge2: 0, rougeL: 0 });
  });
});

describe("attribution from deltas", () => {
  it("ratio and run length on a constructed token-source list", () => {
    const tokens = ["p1", "p1", "p1", null, "p2", "p2", "p1", null, null, "p3"];
    // attributed 7 of 10; runs: [p1×3], [p2×2], [p1], [p3] → 4 runs, mean 7/4.
    expect(attributionStats(tokens)).toEqual({ ratio: 0.7, runLength: 1.75, runs: 4 });
    expect(attributionStats([])).toEqual({ ratio: null, runLength: null, runs: 0 });
    expect(attributionStats([null, null])).toEqual({ ratio: 0, runLength: null, runs: 0 });
  });

  it("expands delta events token by token", () => {
    const cite = { passage_id: "A", title: "t", source: "s", passage_start: 0, passage_end: 3, text_start: 0, text_end: 3 };
    const deltas = [{ text: "abc", tokens: 2, citation: cite }, { text: "d", tokens: 1 }, { text: "e", tokens: 1, citation: { ...cite, passage_id: "B" } }];
    expect(tokenPassages(deltas)).toEqual(["A", "A", null, "B"]);
  });
});
