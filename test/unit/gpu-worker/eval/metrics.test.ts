import { describe, expect, it } from "vitest";
import {
  abstains,
  answerRecall,
  containsRun,
  exactMatch,
  maxF1,
  normalizeAnswer,
  rougeScores,
  squadTokens,
  tokenF1,
  tokenPassages,
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
    // an alias that normalises to nothing (an article, punctuation) is ignored too
    expect(answerRecall("the end.", ["The", "."])).toBe(0);
  });
  it('matches whole words only: a gold "no" does not match "known"', () => {
    expect(answerRecall("It is known as Kent.", ["no"])).toBe(0);
    expect(answerRecall("No, it was not.", ["no"])).toBe(1);
    expect(answerRecall("Nairobian food", ["Nairobi"])).toBe(0);
    expect(answerRecall("The capital is Nairobi.", ["Nairobi"])).toBe(1);
    // multi-word aliases must be contiguous: "Buenos Aires" vs "Buenos and Aires"
    expect(answerRecall("Buenos and Aires", ["Buenos Aires"])).toBe(0);
    expect(answerRecall("It is Buenos Aires, the capital.", ["buenos aires"])).toBe(1);
  });
  it("normalises case, punctuation and articles as SQuAD does", () => {
    // "1,000" and "1000" normalise alike (punctuation dropped, not split)
    expect(answerRecall("About 1000 people.", ["1,000"])).toBe(1);
    // the article inside the gold is dropped: "The Sun of May" → [sun, of, may]
    expect(answerRecall("It is called the sun of may.", ["The Sun of May"])).toBe(1);
    expect(answerRecall("The .tv domain", [".tv"])).toBe(1);
    expect(answerRecall("DIONYSIOS SOLOMOS wrote it", ["Dionysios SOLOMOS"])).toBe(1);
  });
  it("containsRun", () => {
    expect(containsRun(["a", "b", "c"], ["b", "c"])).toBe(true);
    expect(containsRun(["a", "b", "c"], ["a", "c"])).toBe(false);
    expect(containsRun(["a"], [])).toBe(false);
    expect(containsRun(["a"], ["a", "b"])).toBe(false);
  });
});

describe("abstention rule", () => {
  it("empty or blank output abstains", () => {
    expect(abstains("")).toBe(1);
    expect(abstains("  \n ")).toBe(1);
  });
  it("a refusal phrase abstains, with curly or straight apostrophes", () => {
    expect(abstains("I don't know who designed it.")).toBe(1);
    expect(abstains("I don\u2019t know.")).toBe(1);
    expect(abstains("The passages do not mention the designer.")).toBe(1);
    expect(abstains("The text does not mention the designer.")).toBe(1);
    expect(abstains("There is no information about that.")).toBe(1);
    expect(abstains("The designer is unknown.")).toBe(1);
  });
  it("an answer does not abstain, and phrases match whole words only", () => {
    expect(abstains("Gustave Eiffel designed it.")).toBe(0);
    // "unknowns" is not "unknown"; "no answers" is not "no answer"
    expect(abstains("The unknowns were counted; no answers came.")).toBe(0);
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
    const deltas = [
      { text: "abc", tokens: 2, citation: cite },
      { text: "d", tokens: 1 },
      { text: "e", tokens: 1, citation: { ...cite, passage_id: "B" } },
    ];
    expect(tokenPassages(deltas)).toEqual(["A", "A", null, "B"]);
  });
});
