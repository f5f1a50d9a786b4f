import { describe, expect, it } from "vitest";
import { bootstrapMean, mulberry32, pairedBootstrap } from "@nest/gpu-worker/eval/stats";

describe("mulberry32", () => {
  it("is deterministic per seed and uniform in [0, 1)", () => {
    const a = mulberry32(12);
    const b = mulberry32(12);
    const xs = Array.from({ length: 1000 }, () => a());
    expect(Array.from({ length: 1000 }, () => b())).toEqual(xs);
    expect(xs.every((x) => x >= 0 && x < 1)).toBe(true);
    expect(mulberry32(13)()).not.toBe(xs[0]);
  });
});

describe("bootstrap confidence interval of a mean", () => {
  it("a constant sample has a zero-width interval", () => {
    expect(bootstrapMean([1, 1, 1, 1])).toEqual({ estimate: 1, low: 1, high: 1, n: 4 });
    expect(bootstrapMean([])).toBeNull();
  });
  it("[0, 1]: resample means are 0, 0.5, 1 with P 1/4, 1/2, 1/4 → the 95 % interval is [0, 1]", () => {
    // P(mean = 0) = 0.25 > 0.025 so the 2.5th percentile is 0; likewise the 97.5th is 1.
    expect(bootstrapMean([0, 1], { seed: 1 })).toEqual({ estimate: 0.5, low: 0, high: 1, n: 2 });
  });
  it("[1, 0, 0, 0]: k ~ Binomial(4, 1/4) hits per resample → interval [0, 0.75]", () => {
    // P(k = 0) = 81/256 = 0.316 → low 0. P(k ≥ 3) = 13/256 = 0.051 > 0.025 and P(k = 4) = 1/256
    // = 0.004 < 0.025 → the 97.5th percentile is k = 3, i.e. 0.75.
    expect(bootstrapMean([1, 0, 0, 0])).toEqual({ estimate: 0.25, low: 0, high: 0.75, n: 4 });
  });
  it("is reproducible with a fixed seed", () => {
    const xs = [1, 0, 1, 1, 0, 0, 1, 0, 1, 1, 1, 0];
    expect(bootstrapMean(xs, { seed: 7 })).toEqual(bootstrapMean(xs, { seed: 7 }));
  });
});

describe("paired bootstrap of a difference", () => {
  it("a constant per-question difference gives a zero-width interval and p = 0", () => {
    expect(pairedBootstrap([1, 1, 1], [0, 0, 0])).toEqual({ estimate: 1, low: 1, high: 1, n: 3, pNotGreater: 0 });
  });
  it("one question of four differs: difference interval [0, 0.75], P(diff ≤ 0) ≈ 81/256", () => {
    // per-question differences a − b = [1, 0, 0, 0]; the resampled mean difference is k/4 as above.
    const r = pairedBootstrap([1, 1, 0, 0], [0, 1, 0, 0])!;
    expect([r.estimate, r.low, r.high, r.n]).toEqual([0.25, 0, 0.75, 4]);
    expect(r.pNotGreater).toBeCloseTo(81 / 256, 1); // 0.316 ± 0.05 with 10,000 resamples
  });
  it("pairing: no question favours b, so the interval never goes below 0", () => {
    // a − b = [1, 1, 0, 0]: every resampled mean difference is ≥ 0; P(all four draws 0) = 1/16 = 0.0625
    // > 0.025 → low = 0; P(all four draws 1) = 1/16 → high = 1. Unpaired, the marginals (0.75 vs 0.25)
    // would overlap far more.
    const r = pairedBootstrap([1, 1, 1, 0], [0, 0, 1, 0])!;
    expect([r.estimate, r.low, r.high]).toEqual([0.5, 0, 1]);
  });
  it("refuses unpaired samples", () => {
    expect(() => pairedBootstrap([1], [1, 0])).toThrow(/equal lengths/);
    expect(pairedBootstrap([], [])).toBeNull();
  });
});
