/** The question anchor and the repeated-n-gram cut (docs/nest-algorithm.md §14), on hand-made stores. */
import { describe, expect, it } from "vitest";
import { anchorDraft, bestAnchor, rankAnchors, wordsOf } from "../../../../gpu-worker/src/nest/anchor.ts";
import { nonRepeatingPrefix, proposeSpan } from "../../../../gpu-worker/src/nest/draft.ts";
import { charDecode, charPassage, store2d } from "./fixtures.ts";

const keys = (text: string) => Array.from({ length: text.length - 1 }, (_, i) => [i, 0]);
const P0 = "Cats purr. Dogs bark loudly. Owls hoot.";
const P1 = "Dogs dig. Dogs bark at night.";
const store = store2d(charPassage("p0", P0, keys(P0)), charPassage("p1", P1, keys(P1)));

describe("question anchor", () => {
  it("splits words in lower case, letters and digits only, stop words out, Porter-stemmed", () => {
    expect(wordsOf("Who barks, at 9pm?")).toEqual(["bark", "9pm"]);
    expect(wordsOf("independence independent")).toEqual(["independ", "independ"]);
  });

  it("adds the title's overlap to every sentence of the passage (breaks ties toward the titled passage)", () => {
    const t0 = charPassage("k", "Tarawa is between Hawaii and Australia.", keys("Tarawa is between Hawaii and Australia."));
    const t1 = charPassage("a", "Canberra is in Australia.", keys("Canberra is in Australia."));
    const titled = store2d(
      { ...t0, passage: { ...t0.passage, title: "Kiribati › Location" } },
      { ...t1, passage: { ...t1.passage, title: "Australia › Capital" } },
    );
    // Without titles both sentences score idf(australia) alone, and rank 0 would win the tie.
    expect(bestAnchor(titled, "What is the capital of Australia?", 2)).toMatchObject({ passage: 1, startPos: 0 });
  });

  it("picks the sentence with the largest IDF-weighted overlap, starting at its first non-space token", () => {
    // N = 2. "dogs" and "bark" occur in both passages: idf = ln(3/2.5) = 0.182 each; "loudly" in
    // one: ln(3/1.5) = 0.693. "Dogs bark loudly." (p0) scores 1.058; "Dogs bark at night." (p1)
    // 0.365 ("at"/"night" are not in the question).
    const a = bestAnchor(store, "Which dogs bark loudly?", 2)!;
    expect(a.passage).toBe(0);
    expect(a.startPos).toBe(11); // " Dogs …": the space at 10 is a token of its own here
    expect(a.score).toBeCloseTo(2 * Math.log(3 / 2.5) + Math.log(3 / 1.5), 12); // rank 0: prior 1
    expect(charDecode(Array.from(anchorDraft(store, "Which dogs bark loudly?", 2, 11)!.tokens))).toBe("Dogs bark l");
  });

  it("obeys the passage prior and the rank tie-break", () => {
    // Only p1 may be drafted from: its best sentence is "Dogs bark at night." (dogs+bark+night).
    expect(bestAnchor(store, "Do dogs bark at night?", 2)!.passage).toBe(1);
    expect(bestAnchor(store, "Do dogs bark loudly?", 1)!.passage).toBe(0);
    // Equal scores ("dogs" alone, sentence 2 of p0 vs sentence 1 of p1): the higher-ranked passage wins.
    expect(bestAnchor(store, "dogs?", 2)).toMatchObject({ passage: 0, startPos: 11 });
  });

  it("ranks candidates and tries at most three whose first token the verifier accepts", () => {
    const ranked = rankAnchors(store, "Which dogs bark loudly?", 2, 5);
    // p0 "Dogs bark loudly." 1.058; p1 "Dogs bark at night." 0.365; then "dogs" alone (0.182):
    // p1 "Dogs dig." — p0 has no other sentence with a question word.
    expect(ranked.map((c) => [c.passage, c.startPos])).toEqual([
      [0, 11],
      [1, 10],
      [1, 0],
    ]);
    const tried: number[] = [];
    expect(
      anchorDraft(store, "Which dogs bark loudly?", 2, 4, (t) => {
        tried.push(t);
        return false;
      }),
    ).toBeUndefined();
    expect(tried).toHaveLength(3);
    let calls = 0;
    const second = anchorDraft(store, "Which dogs bark loudly?", 2, 4, () => ++calls === 2)!;
    expect([second.passage, second.startPos, charDecode(Array.from(second.tokens))]).toEqual([1, 10, "Dogs"]);
  });

  it("gives nothing when no word is shared", () => {
    expect(bestAnchor(store, "Why is the sky blue?", 2)).toBeUndefined();
    expect(bestAnchor(store, "?!", 2)).toBeUndefined();
  });
});

describe("passage prior for kNN-started spans", () => {
  it("skips neighbours from passages past the prior", () => {
    // Neighbours: p1's key with value "o" (value pos 1), then p0's key 11 (value pos 12, the "o" of "Dogs").
    const o = "o".charCodeAt(0);
    const p1Key = store.passages[1]!.firstKey + 0; // value pos 1 of p1 = "o"
    const nb = { keys: Int32Array.from([p1Key, 11]), distances: Float64Array.from([0, 1]) };
    expect(proposeSpan(store, nb, o, 3)!.passage).toBe(1);
    const d = proposeSpan(store, nb, o, 3, 1)!;
    expect(d.passage).toBe(0);
    expect(charDecode(Array.from(d.tokens))).toBe("ogs");
  });
});

describe("repeated n-gram cut", () => {
  const ids = (s: string) => Array.from(s, (c) => c.charCodeAt(0));
  it("cuts the draft before the token that completes a generated n-gram", () => {
    // generated "X, Y" holds the 2-grams "X,", ", ", " Y"; draft ", X, Z": "Y," new, ", " repeats at i=1.
    expect(nonRepeatingPrefix(ids("X, Y"), ids(", X, Z"), 2)).toBe(1);
    // 3-grams of "X, Y": "X, ", ", Y". Over "X, Y" + draft: " Y,", "Y, ", ", X", " X," are new; "X, " repeats at i=4.
    expect(nonRepeatingPrefix(ids("X, Y"), ids(", X, Z"), 3)).toBe(4);
  });
  it("is off for n = 0 and for a history shorter than n", () => {
    expect(nonRepeatingPrefix(ids("ab"), ids("abab"), 0)).toBe(4);
    // Only n-grams of the generated text count, and "a" has none of length 2.
    expect(nonRepeatingPrefix(ids("a"), ids("aaa"), 2)).toBe(3);
  });
});
