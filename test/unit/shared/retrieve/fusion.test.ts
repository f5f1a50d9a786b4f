import { describe, expect, it } from "vitest";
import { adaptiveEta, fuse, fuseAdaptive, fuseRrf, parseFusion } from "@nest/shared/retrieve/fusion";

const dense = [
  { id: "a", score: 0.9 },
  { id: "b", score: 0.5 },
  { id: "c", score: 0.3 },
];
const sparse = [
  { id: "b", score: 10 },
  { id: "d", score: 6 },
  { id: "a", score: 2 },
];

describe("adaptive fusion (spec §1)", () => {
  it("computes η from the top and rank-100 (here: last) scores", () => {
    // η_sparse = 1 − 2/10 = 0.8; η_dense = 1 − 0.3/0.9 = 2/3; η = 0.7·0.2 + 0.3·2/3 = 0.34
    expect(adaptiveEta([0.9, 0.5, 0.3], [10, 6, 2])).toBeCloseTo(0.34, 12);
  });
  it("uses the score at 0-based index 100 when the list is long enough", () => {
    const sp = Array.from({ length: 150 }, (_, i) => 10 - i * 0.05); // s[100] = 5
    const de = Array.from({ length: 150 }, (_, i) => 0.8 - i * 0.005); // s[100] = 0.3
    // η_sparse = 0.5, η_dense = 1 − 0.3/0.8 = 0.625, η = 0.35 + 0.1875
    expect(adaptiveEta(de, sp)).toBeCloseTo(0.5375, 12);
  });
  it("clamps a negative dense rank-100 score at 0", () => {
    expect(adaptiveEta([0.5, -0.1], [4, 2])).toBeCloseTo(0.7 * 0.5 + 0.3 * 1, 12);
  });
  it("fills a missing score with the list's lowest and sorts by the weighted sum", () => {
    const out = fuseAdaptive(dense, sparse, 10);
    expect(out.map((h) => h.id)).toEqual(["b", "d", "a", "c"]);
    expect(out[0]!.score).toBeCloseTo(0.34 * 0.5 + 0.66 * 10, 12); // 6.77
    expect(out[1]!.score).toBeCloseTo(0.34 * 0.3 + 0.66 * 6, 12); // 4.062 (dense missing → 0.3)
    expect(out[2]!.score).toBeCloseTo(0.34 * 0.9 + 0.66 * 2, 12); // 1.626
    expect(out[3]!.score).toBeCloseTo(0.34 * 0.3 + 0.66 * 2, 12); // 1.422 (sparse missing → 2)
    expect(out[1]).toMatchObject({ sparse: 6 });
    expect(out[1]!.dense).toBeUndefined();
  });
  it("keeps one list alone when the other is empty", () => {
    expect(fuseAdaptive(dense, [], 2).map((h) => [h.id, h.score])).toEqual([
      ["a", 0.9],
      ["b", 0.5],
    ]);
    expect(fuseAdaptive([], sparse, 1).map((h) => [h.id, h.score])).toEqual([["b", 10]]);
    expect(fuseAdaptive([], [], 5)).toEqual([]);
  });
});

describe("reciprocal rank fusion", () => {
  it("sums 1/(60 + rank)", () => {
    const out = fuseRrf(dense, sparse, 3);
    expect(out.map((h) => h.id)).toEqual(["b", "a", "d"]);
    expect(out[0]!.score).toBeCloseTo(1 / 62 + 1 / 61, 15);
    expect(out[1]!.score).toBeCloseTo(1 / 61 + 1 / 63, 15);
    expect(out[2]!.score).toBeCloseTo(1 / 62, 15);
  });
  it("breaks ties by id", () => {
    expect(fuseRrf([{ id: "y", score: 1 }], [{ id: "x", score: 1 }], 2).map((h) => h.id)).toEqual(["x", "y"]);
  });
});

describe("fuse / parseFusion", () => {
  it("single-list methods keep raw scores", () => {
    expect(fuse("bm25", dense, sparse, 2).map((h) => [h.id, h.score])).toEqual([
      ["b", 10],
      ["d", 6],
    ]);
    expect(fuse("dense", dense, sparse, 1).map((h) => [h.id, h.score])).toEqual([["a", 0.9]]);
  });
  it("parses names and rejects unknown ones", () => {
    expect(parseFusion("adaptive")).toBe("adaptive");
    expect(parseFusion(undefined)).toBe("rrf");
    expect(() => parseFusion("max")).toThrow(/unknown fusion "max"/);
  });
});
