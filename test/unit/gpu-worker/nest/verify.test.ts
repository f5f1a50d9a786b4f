import { describe, expect, it } from "vitest";
import { acceptsGreedy, acceptsToken, verifyDraft } from "@nest/gpu-worker/nest/verify";
import type { PositionState } from "@nest/gpu-worker/nest/mixture";

const mixture = { probs: Float64Array.from([0.5, 0.3, 0.2]), argmax: 0, max: 0.5 };

describe("draft acceptance", () => {
  it("greedy accepts only the argmax; relaxed accepts p > 0.5·γ·max", () => {
    expect([0, 1, 2].map((t) => acceptsGreedy(mixture, t))).toEqual([true, false, false]);
    // γ = 1: threshold 0.25 → tokens 0 (0.5) and 1 (0.3); γ = 0.5: threshold 0.125 → all three.
    expect([0, 1, 2].map((t) => acceptsToken(mixture, t, 1))).toEqual([true, true, false]);
    expect([0, 1, 2].map((t) => acceptsToken(mixture, t, 0.5))).toEqual([true, true, true]);
  });
});

describe("verifyDraft", () => {
  // State i carries p_M one-hot on token 10 + i: draft token v_{i+1} = 10 + i passes, anything else fails.
  const stateOf = (i: number): PositionState => {
    const probs = new Float64Array(32);
    probs[10 + i] = 1;
    return {
      mixture: { probs, argmax: 10 + i, max: 1 },
      lambda: 0,
      neighbours: { keys: new Int32Array(0), distances: new Float64Array(0) },
      logits: new Float32Array(0),
    };
  };
  const relaxed = (s: PositionState, token: number) => acceptsToken(s.mixture, token, 0.5);
  /** stateOf, recording which positions were asked for. */
  const recorder = (asked: number[]) => (i: number) => {
    asked.push(i);
    return stateOf(i);
  };

  it("tests every token from v_1 on and stops at the first rejection (the paper)", () => {
    const asked: number[] = [];
    const v = verifyDraft([10, 11, 5, 13], recorder(asked), relaxed);
    expect(v.numAccepted).toBe(2);
    expect(v.next.mixture.argmax).toBe(12);
    expect(asked).toEqual([0, 1, 2]);
  });

  it("takes the first `unchecked` tokens without computing their states (sentence anchor)", () => {
    const asked: number[] = [];
    // v_1..v_3 would all fail the test; unchecked, they pass and no state is computed for them.
    const v = verifyDraft([0, 0, 0, 13, 14, 9], recorder(asked), relaxed, 3);
    expect(v.numAccepted).toBe(5);
    expect(asked).toEqual([3, 4, 5]);
    expect(v.next.mixture.argmax).toBe(15);
  });

  it("an unchecked count beyond the draft accepts it whole and asks only for the next state", () => {
    const asked: number[] = [];
    const v = verifyDraft([0, 0], recorder(asked), relaxed, 5);
    expect(v.numAccepted).toBe(2);
    expect(asked).toEqual([2]);
  });
});
