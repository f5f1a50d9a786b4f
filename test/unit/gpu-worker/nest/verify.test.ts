import { describe, expect, it } from "vitest";
import { acceptsGreedy, acceptsToken } from "@nest/gpu-worker/nest/verify";

const mixture = { probs: Float64Array.from([0.5, 0.3, 0.2]), argmax: 0, max: 0.5 };

describe("draft acceptance", () => {
  it("greedy accepts only the argmax; relaxed accepts p > 0.5·γ·max", () => {
    expect([0, 1, 2].map((t) => acceptsGreedy(mixture, t))).toEqual([true, false, false]);
    // γ = 1: threshold 0.25 → tokens 0 (0.5) and 1 (0.3); γ = 0.5: threshold 0.125 → all three.
    expect([0, 1, 2].map((t) => acceptsToken(mixture, t, 1))).toEqual([true, true, false]);
    expect([0, 1, 2].map((t) => acceptsToken(mixture, t, 0.5))).toEqual([true, true, true]);
  });
});
