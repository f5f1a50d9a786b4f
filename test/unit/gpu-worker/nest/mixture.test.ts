import { describe, expect, it } from "vitest";
import {
  knnDistribution,
  lmDistribution,
  mixDistributions,
  neighbourWeights,
  relativeRetrievalConfidence,
  rrcLambda,
} from "../../../../gpu-worker/src/nest/mixture.ts";
import type { Neighbours } from "../../../../gpu-worker/src/nest/knn.ts";
import { charPassage, store2d } from "./fixtures.ts";

const nb = (keys: number[], distances: number[]): Neighbours => ({
  keys: Int32Array.from(keys),
  distances: Float64Array.from(distances),
});

describe("neighbour weights and p_kNN (spec §2.3)", () => {
  it("is softmax(−d/√D)", () => {
    // D = 4 → μ = 1/2; d = 2, 4, 4 → logits −1, −2, −2 → 1 : e⁻¹ : e⁻¹
    const w = neighbourWeights(nb([0, 1, 2], [2, 4, 4]), 4);
    const z = 1 + 2 * Math.exp(-1);
    expect(w[0]).toBeCloseTo(1 / z, 12); // 0.576117
    expect(w[1]).toBeCloseTo(Math.exp(-1) / z, 12); // 0.211942
    expect(w[0]).toBeCloseTo(0.576117, 6);
  });

  it("stays finite for huge distances (max subtracted)", () => {
    const w = neighbourWeights(nb([0, 1], [1e6, 1e6 + 24]), 576); // μ·Δd = 1
    expect(w[0]).toBeCloseTo(1 / (1 + Math.exp(-1)), 12);
  });

  it("sums the weights of neighbours with the same value token", () => {
    // passage "abcb": keys with values b(98), c(99), b(98)
    const store = store2d(
      charPassage("p", "abcb", [
        [0, 0],
        [0, 0],
        [0, 0],
      ]),
    );
    const w = Float64Array.of(0.5, 0.3, 0.2);
    const p = knnDistribution(store, nb([0, 1, 2], [0, 0, 0]), w);
    expect(p.get(98)).toBeCloseTo(0.7, 12);
    expect(p.get(99)).toBeCloseTo(0.3, 12);
    expect(p.size).toBe(2);
  });
});

describe("RRC (paper Eq. 4, spec §3)", () => {
  it("ρ = d_min / d_max", () => {
    expect(relativeRetrievalConfidence(nb([0, 1, 2], [2, 4, 4]))).toBe(0.5);
  });
  it("guards: no neighbours → 1, d_max = 0 → 1", () => {
    expect(relativeRetrievalConfidence(nb([], []))).toBe(1);
    expect(relativeRetrievalConfidence(nb([0, 1], [0, 0]))).toBe(1);
  });
  it("λ = sigmoid((ρ − α)/τ) at the spec's reference points", () => {
    expect(rrcLambda(0, 0.3, 0.1)).toBeCloseTo(0.047426, 6);
    expect(rrcLambda(0.3, 0.3, 0.1)).toBe(0.5);
    expect(rrcLambda(0.5, 0.3, 0.1)).toBeCloseTo(0.880797, 6); // sigmoid(2)
    expect(rrcLambda(1, 0.3, 0.1)).toBeCloseTo(0.999089, 6); // sigmoid(7)
  });
});

describe("mixture (spec §4)", () => {
  it("p_LM = softmax(logits / T)", () => {
    const p = lmDistribution(Float32Array.of(0, 0.7 * Math.log(2)), 0.7);
    expect(p[0]).toBeCloseTo(1 / 3, 6);
    expect(p[1]).toBeCloseTo(2 / 3, 6);
  });

  it("p_M = λ·p_LM + (1 − λ)·p_kNN, with its argmax", () => {
    const m = mixDistributions(Float64Array.of(0.5, 0.3, 0.2), new Map([[2, 1]]), 0.25);
    expect(m.probs[0]).toBeCloseTo(0.125, 12);
    expect(m.probs[1]).toBeCloseTo(0.075, 12);
    expect(m.probs[2]).toBeCloseTo(0.8, 12);
    expect(m.argmax).toBe(2);
    expect(m.max).toBeCloseTo(0.8, 12);
  });

  it("renormalises when p_kNN holds less than 1", () => {
    const m = mixDistributions(Float64Array.of(0.5, 0.5), new Map([[0, 0.5]]), 0.5);
    // 0.25 + 0.25 = 0.5 and 0.25 → 0.75 / 1.0 ... sum = 0.75: [0.5/0.75, 0.25/0.75]
    expect(m.probs[0]).toBeCloseTo(2 / 3, 12);
    expect(m.probs[1]).toBeCloseTo(1 / 3, 12);
  });

  it("breaks argmax ties toward the lowest token id", () => {
    expect(mixDistributions(Float64Array.of(0.5, 0.5), new Map(), 1).argmax).toBe(0);
  });
});
