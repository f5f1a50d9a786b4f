import { describe, expect, it } from "vitest";
import { bestNeighbourFor, proposeSpan, spanFrom } from "../../../../gpu-worker/src/nest/draft.ts";
import { acceptsToken } from "../../../../gpu-worker/src/nest/verify.ts";
import type { Mixture } from "../../../../gpu-worker/src/nest/mixture.ts";
import { charPassage, store2d } from "./fixtures.ts";

// Two passages: "abcde" (keys 0-3, values b c d e) and "xbyz" (keys 4-6, values b y z).
const store = store2d(
  charPassage("p0", "abcde", [
    [0, 0],
    [1, 0],
    [2, 0],
    [3, 0],
  ]),
  charPassage("p1", "xbyz", [
    [0, 1],
    [1, 1],
    [2, 1],
  ]),
);
const nb = (keys: number[]) => ({ keys: Int32Array.from(keys), distances: Float64Array.from(keys, (_, i) => i) });
const b = "b".charCodeAt(0);

describe("span selection (spec §5)", () => {
  it("starts at the nearest neighbour carrying argmax p_M (paper rule)", () => {
    // neighbours by distance: key 5 (value y), key 4 (value b of p1), key 0 (value b of p0)
    expect(bestNeighbourFor(store, nb([5, 4, 0]), b)).toBe(1);
    const d = proposeSpan(store, nb([5, 4, 0]), b, 64)!;
    expect(d.passage).toBe(1);
    expect(d.startPos).toBe(1);
    expect(String.fromCharCode(...d.tokens)).toBe("byz");
  });

  it("proposes nothing when no neighbour carries the token", () => {
    expect(proposeSpan(store, nb([5]), b, 64)).toBeUndefined();
  });

  it("stops at the passage end and never crosses into the next passage", () => {
    expect(String.fromCharCode(...spanFrom(store, 0, 3, 64)!.tokens)).toBe("de");
    expect(String.fromCharCode(...spanFrom(store, 0, 1, 2)!.tokens)).toBe("bc");
    expect(spanFrom(store, 0, 5, 64)).toBeUndefined();
  });
});

describe("relaxed acceptance (paper Eq. 7, spec §6)", () => {
  const mix = (probs: number[]): Mixture => {
    const p = Float64Array.from(probs);
    const max = Math.max(...probs);
    return { probs: p, max, argmax: probs.indexOf(max) };
  };

  it("accepts p_M(v) > 0.5·γ·max p_M and rejects at the boundary", () => {
    // max = 0.5, γ = 0.5 → threshold 0.125 (exact in binary)
    const m = mix([0.5, 0.125, 0.375]);
    expect(acceptsToken(m, 1, 0.5)).toBe(false); // equal: rejected (strict)
    expect(acceptsToken(m, 2, 0.5)).toBe(true);
    expect(acceptsToken(mix([0.5, 0.12500001, 0.37499999]), 1, 0.5)).toBe(true);
  });

  it("γ = 1 accepts only tokens above half the top probability", () => {
    const m = mix([0.6, 0.3, 0.1]);
    expect(acceptsToken(m, 1, 1)).toBe(false); // 0.3 = 0.5·1·0.6
    expect(acceptsToken(m, 0, 1)).toBe(true);
  });
});
