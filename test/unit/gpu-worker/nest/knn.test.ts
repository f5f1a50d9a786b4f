import { describe, expect, it } from "vitest";
import { searchKnn } from "../../../../gpu-worker/src/nest/knn.ts";
import { keyOfToken } from "../../../../gpu-worker/src/nest/token-store.ts";
import { charPassage, store2d } from "./fixtures.ts";

// Passage "abcde": keys for values b, c, d, e at (0,0), (1,0), (0,2), (3,4).
const store = store2d(
  charPassage("p", "abcde", [
    [0, 0],
    [1, 0],
    [0, 2],
    [3, 4],
  ]),
);

describe("token store (spec §2.1)", () => {
  it("maps each passage token after the first to exactly one key", () => {
    expect(store.numKeys).toBe(4);
    expect(Array.from(store.values)).toEqual([98, 99, 100, 101]);
    expect(Array.from(store.keyValuePos)).toEqual([1, 2, 3, 4]);
    expect(Array.from(store.keyNorms)).toEqual([0, 1, 4, 25]);
    expect(keyOfToken(store, 0, 3)).toBe(2);
    expect(keyOfToken(store, 0, 0)).toBe(-1);
    expect(keyOfToken(store, 0, 5)).toBe(-1);
  });
});

describe("searchKnn (spec §2.2)", () => {
  it("returns squared L2 distances, nearest first", () => {
    // q = (1,0): d = 1, 0, 1+4 = 5, 4+16 = 20
    const nb = searchKnn(store, Float32Array.of(1, 0), 1024);
    expect(Array.from(nb.keys)).toEqual([1, 0, 2, 3]);
    expect(Array.from(nb.distances)).toEqual([0, 1, 5, 20]);
  });

  it("caps r at the number of valid keys and at k", () => {
    expect(searchKnn(store, Float32Array.of(1, 0), 2).distances.length).toBe(2);
    expect(searchKnn(store, Float32Array.of(1, 0), 10).distances.length).toBe(4);
  });

  it("never returns masked keys", () => {
    const nb = searchKnn(store, Float32Array.of(1, 0), 3, Uint8Array.of(0, 1, 0, 0));
    expect(Array.from(nb.keys)).toEqual([0, 2, 3]);
  });

  it("clamps cancellation below zero to zero", () => {
    const big = store2d(charPassage("p", "ab", [[1e4, 1e4]]));
    const nb = searchKnn(big, Float32Array.of(1e4, 1e4), 1);
    expect(nb.distances[0]).toBe(0);
  });

  it("rejects a query of the wrong size", () => {
    expect(() => searchKnn(store, Float32Array.of(1, 0, 0), 1)).toThrow(/3 dims/);
  });
});
