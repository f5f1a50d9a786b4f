/**
 * Batched passage encoding (issue 13 item 1): right-padded batches give the keys one-at-a-time
 * encoding gives, with the real model; the batch planner groups by length within its bounds.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { EncodeBatchOptionsSchema, PassageEncoder, planBatches } from "@nest/gpu-worker/engine/passage-encoder";

/** Passages of very different lengths, so each batch pads most of its rows. */
const PASSAGES = [
  { id: "a", title: "A", source: "t", text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E" },
  { id: "b", title: "B", source: "t", text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m" },
  { id: "c", title: "C", source: "t", text: "Kiribati." },
  {
    id: "d",
    title: "D",
    source: "t",
    text:
      "Belgium, languages: Dutch (official) 60%, French (official) 40%, German (official) less than 1%, legally bilingual " +
      "(Dutch and French); note: the country is divided into three regions, Flanders, Wallonia and the Brussels-Capital " +
      "Region, and three language communities.",
  },
  { id: "e", title: "E", source: "t", text: "x" }, // one token: no keys
  { id: "f", title: "F", source: "t", text: "Brazil, independence: 7 September 1822 (from Portugal)" },
];

/**
 * Keys may differ by summation order only: max |Δ| ≤ 1e-4 of the largest |key| (the export's
 * hidden-state tolerance). Measured on SmolLM2-135M with onnxruntime 1.30 CPU: identical (Δ = 0).
 */
const KEY_REL_TOLERANCE = 1e-4;

let manifest: Manifest;
let lm: DecoderSession;
let tok: ModelTokenizer;

beforeAll(async () => {
  const dir = await findModelDir();
  manifest = await readManifest(dir);
  lm = await DecoderSession.load(dir, manifest, { precision: "fp32" });
  tok = await ModelTokenizer.load(dir, manifest);
});

describe("planBatches", () => {
  const opts = EncodeBatchOptionsSchema.parse({ maxBatchPassages: 3, maxBatchTokens: 600 });
  it("sorts by length, caps passages per batch, padded tokens and padding", () => {
    // lengths 10, 300, 5, 20, 250, 7 → sorted 5(2) 7(5) 10(0) 20(3) 250(4) 300(1)
    // [2,5,0]: 3 passages (padding 30 − 22 = 8 ≤ 64); [3] + 250 would pad 500 − 270 = 230 > max(67.5, 64);
    // [4,1]: 2 × 300 = 600 ≤ 600 tokens, padding 50 ≤ 137.5.
    expect(planBatches([10, 300, 5, 20, 250, 7], opts)).toEqual([[2, 5, 0], [3], [4, 1]]);
    const tight = EncodeBatchOptionsSchema.parse({ maxBatchPassages: 8, maxBatchTokens: 600 });
    // 250 and 300: 600 ≤ 600; adding a third 300 gives 900 > 600 tokens.
    expect(planBatches([250, 300, 300], tight)).toEqual([[0, 1], [2]]);
  });
  it("keeps equal lengths in input order and handles no input", () => {
    expect(planBatches([4, 4, 4, 4], opts)).toEqual([[0, 1, 2], [3]]);
    expect(planBatches([], opts)).toEqual([]);
  });
});

describe("batched passage encoding (real model)", () => {
  it("gives the keys and tokens of one-at-a-time encoding, in fewer passes", async () => {
    const single = new PassageEncoder(lm, tok, manifest.bos_token_id, "single", 0, undefined, { batch: { maxBatchPassages: 1 } });
    // Padding unbounded: all six in one pass, the short ones padded to the longest.
    const batched = new PassageEncoder(lm, tok, manifest.bos_token_id, "batched", 0, undefined, {
      batch: { maxBatchPassages: 8, maxPaddingRatio: 100 },
    });
    const one = await single.buildStore(PASSAGES);
    const many = await batched.buildStore(PASSAGES);
    expect([one.numEncoded, one.numEncodePasses]).toEqual([6, 5]); // "x" has one token: no pass
    expect([many.numEncoded, many.numEncodePasses]).toEqual([6, 1]);
    expect(many.store.numKeys).toBe(one.store.numKeys);
    expect(many.store.values).toEqual(one.store.values);
    expect(many.store.keyPassage).toEqual(one.store.keyPassage);
    expect(many.store.passages.map((p) => p.passage.id)).toEqual(["a", "b", "c", "d", "e", "f"]);
    let maxAbs = 0;
    let maxDiff = 0;
    for (let i = 0; i < one.store.keys.length; i++) {
      maxAbs = Math.max(maxAbs, Math.abs(one.store.keys[i]!));
      maxDiff = Math.max(maxDiff, Math.abs(one.store.keys[i]! - many.store.keys[i]!));
    }
    expect(maxAbs).toBeGreaterThan(1);
    expect(maxDiff).toBeLessThanOrEqual(KEY_REL_TOLERANCE * maxAbs);
  });

  it("gives the keys of a plain forward pass over [BOS, tokens] (the spec's definition)", async () => {
    const enc = new PassageEncoder(lm, tok, manifest.bos_token_id, "ref", 0);
    const { store } = await enc.buildStore([PASSAGES[0]!, PASSAGES[3]!]);
    const ids = Array.from(tok.tokenizeWithOffsets(PASSAGES[3]!.text).ids);
    lm.reset();
    const out = await lm.forward([manifest.bos_token_id!, ...ids], 0);
    lm.reset();
    const p = store.passages[1]!;
    const h = manifest.hidden_size;
    // key of passage token v (v ≥ 1) = hidden state at sequence row v (row 0 is BOS, token v-1 sits at row v)
    for (const v of [1, 2, ids.length - 1]) {
      const key = store.keys.subarray((p.firstKey + v - 1) * h, (p.firstKey + v) * h);
      const ref = out.hiddenRow(v);
      let d = 0;
      let max = 0;
      for (let j = 0; j < h; j++) {
        d = Math.max(d, Math.abs(key[j]! - ref[j]!));
        max = Math.max(max, Math.abs(ref[j]!));
      }
      expect(d).toBeLessThanOrEqual(KEY_REL_TOLERANCE * max);
    }
  });

  it("encodes a passage repeated in one request once", async () => {
    const enc = new PassageEncoder(lm, tok, manifest.bos_token_id, "dup", 0);
    const r = await enc.buildStore([PASSAGES[0]!, PASSAGES[1]!, PASSAGES[0]!]);
    expect(r.numEncoded).toBe(2);
    expect(r.store.passages.length).toBe(3);
    expect(r.store.passages[2]!.firstKey).toBe(r.store.passages[0]!.tokens.length - 1 + r.store.passages[1]!.tokens.length - 1);
  });
});
