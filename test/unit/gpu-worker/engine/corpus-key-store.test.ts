/**
 * The pre-encoded corpus key store (issue 13 item 2): fp16 and int8 codecs on hand-computed values,
 * round trips by offset, resuming after an interrupted write, and — with the real model and corpus —
 * the same greedy answer and citations over an fp16 store as with on-the-fly encoding.
 */
import { appendFile, mkdtemp, rm, stat } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import {
  bytesPerToken,
  CorpusKeyStore,
  CorpusKeyWriter,
  dequantizeRows,
  fromHalf,
  quantizeRows,
  toHalf,
} from "@nest/gpu-worker/engine/corpus-key-store";
import type { EncodedPassage } from "@nest/gpu-worker/nest/token-store";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { findCorpusDir } from "@nest/corpus/layout";
import { openLanceIndex } from "@nest/corpus/lancedb-index";
import { encodeCorpus } from "@nest/cli/encode";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent } from "@nest/shared/protocol/events";
import type { Passage } from "@nest/shared/protocol/passage";

const H = 4;
const META = { corpus: "t", modelKey: "m", hiddenSize: H } as const;

function entry(id: string, text: string, keys: number[][]): EncodedPassage {
  const n = keys.length + 1;
  return {
    passage: { id, title: id, source: "t", text },
    tokens: Int32Array.from({ length: n }, (_, i) => 100 + i),
    charStart: Int32Array.from({ length: n }, (_, i) => 2 * i),
    charEnd: Int32Array.from({ length: n }, (_, i) => 2 * i + 2),
    citable: id !== "uncitable",
    keys: Float32Array.from(keys.flat()),
  };
}

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), "nest-corpus-keys-"));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe("codecs", () => {
  it("fp16: IEEE half bits, round to nearest even, overflow to infinity, subnormals", () => {
    expect(toHalf(1)).toBe(0x3c00);
    expect(toHalf(-2)).toBe(0xc000);
    expect(toHalf(65504)).toBe(0x7bff);
    expect(toHalf(65520)).toBe(0x7c00); // halfway to 65536 rounds up, past the largest half
    expect(toHalf(1 / 3)).toBe(0x3555);
    expect(fromHalf(0x3555)).toBe(0.333251953125);
    expect(toHalf(2 ** -24)).toBe(0x0001);
    expect(toHalf(2 ** -25)).toBe(0x0000); // tie between 0 and the smallest subnormal: even wins
    expect(toHalf(1 + 2 ** -11)).toBe(0x3c00); // tie: mantissa 0 is even
    expect(toHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie: rounds up to the even mantissa 2
    expect(fromHalf(0xfbff)).toBe(-65504);
  });

  it("int8: scale = max|row| / 127 per row, zero rows stay zero", () => {
    const keys = Float32Array.of(1, -2, 0.5, 0, 0, 0, 0, 0);
    const { rows, scales } = quantizeRows(keys, H, "int8");
    expect(Array.from(new Int8Array(rows.buffer))).toEqual([64, -127, 32, 0, 0, 0, 0, 0]); // 63.5 → 64, 31.75 → 32
    expect(scales![0]).toBeCloseTo(2 / 127, 9);
    expect(scales![1]).toBe(0);
    const back = dequantizeRows(rows, H, "int8", scales);
    expect(back[0]).toBeCloseTo((64 * 2) / 127, 6);
    expect(back[1]).toBeCloseTo(-2, 6);
    expect(Array.from(back.subarray(4))).toEqual([0, 0, 0, 0]);
  });

  it("bytes per token: key row (+ int8 scale) + 12 bytes of token and offsets", () => {
    expect([bytesPerToken("fp32", 576), bytesPerToken("fp16", 576), bytesPerToken("int8", 576)]).toEqual([2316, 1164, 592]);
  });
});

describe("store files", () => {
  const a = entry("a", "alpha", [
    [1, 2, 3, 4],
    [-1, 0.5, 0.25, 8],
  ]);
  const b = entry("b", "beta", [[0.1, 0.3, -0.35, 0.4]]);
  const u = entry("uncitable", "u", []);

  it("round-trips passages by offset (fp16) and misses on changed text or unknown ids", async () => {
    const dir = join(root, "fp16");
    const w = await CorpusKeyWriter.open(dir, { ...META, precision: "fp16" });
    await w.append([a, u]);
    await w.append([b]);
    const store = (await CorpusKeyStore.open(dir, { modelKey: "m", hiddenSize: H }))!;
    expect(store.size).toBe(3);
    const gotB = (await store.get(b.passage))!;
    expect(Array.from(gotB.tokens)).toEqual([100, 101]);
    expect(Array.from(gotB.charEnd)).toEqual([2, 4]);
    expect(Array.from(gotB.keys)).toEqual([0.0999755859375, 0.300048828125, -0.35009765625, 0.39990234375]);
    const gotA = (await store.get(a.passage))!;
    expect(Array.from(gotA.keys)).toEqual([1, 2, 3, 4, -1, 0.5, 0.25, 8]);
    const gotU = (await store.get(u.passage))!;
    expect([gotU.tokens.length, gotU.keys.length, gotU.citable]).toEqual([1, 0, false]);
    expect(await store.get({ ...b.passage, text: "beta changed" })).toBeUndefined();
    expect(await store.get({ ...b.passage, id: "zzz" })).toBeUndefined();
    expect(await CorpusKeyStore.open(dir, { modelKey: "other", hiddenSize: H })).toBeUndefined();
  });

  it("resumes after an interrupted write: rows past the index are dropped, a torn index line too", async () => {
    const dir = join(root, "int8");
    await (await CorpusKeyWriter.open(dir, { ...META, precision: "int8" })).append([a]);
    // A run killed mid-append: rows and tokens written, its index line half written.
    await appendFile(join(dir, "keys.bin"), Buffer.alloc(3 * H, 7));
    await appendFile(join(dir, "tokens.bin"), Buffer.alloc(24, 7));
    await appendFile(join(dir, "index.jsonl"), '{"id":"b","sha');
    const w = await CorpusKeyWriter.open(dir, { ...META, precision: "int8" });
    expect([w.size, w.has(a.passage), w.has(b.passage)]).toEqual([1, true, false]);
    expect((await stat(join(dir, "keys.bin"))).size).toBe(2 * H);
    await w.append([b]);
    const store = (await CorpusKeyStore.open(dir, { modelKey: "m", hiddenSize: H }))!;
    const gotB = (await store.get(b.passage))!;
    expect(Array.from(gotB.tokens)).toEqual([100, 101]);
    // int8 row [0.1, 0.3, -0.35, 0.4]: scale 0.4/127, q = round([31.75, 95.25, -111.125, 127])
    expect(Array.from(gotB.keys).map((x) => Math.round((x * 127) / 0.4))).toEqual([32, 95, -111, 127]);
    await expect(CorpusKeyWriter.open(dir, { ...META, precision: "fp16" })).rejects.toThrow(/holds int8 keys/);
  });

  it("an index line of the wrong shape (valid JSON) ends the index like a torn one", async () => {
    const dir = join(root, "shape");
    await (await CorpusKeyWriter.open(dir, { ...META, precision: "fp16" })).append([a]);
    await appendFile(join(dir, "index.jsonl"), '{"id":"b","sha":"x","tok":"2","n":2,"row":1,"c":true}\n');
    const w = await CorpusKeyWriter.open(dir, { ...META, precision: "fp16" });
    expect([w.size, w.has(a.passage), w.has(b.passage)]).toEqual([1, true, false]);
  });

  it("a reader sees passages appended after it opened", async () => {
    const dir = join(root, "live");
    const w = await CorpusKeyWriter.open(dir, { ...META, precision: "fp32" });
    await w.append([a]);
    const store = (await CorpusKeyStore.open(dir, { modelKey: "m", hiddenSize: H }))!;
    expect(await store.get(b.passage)).toBeUndefined();
    await w.append([b]);
    await store.refresh();
    expect(Array.from((await store.get(b.passage))!.keys)).toEqual(Array.from(b.keys));
  });
});

describe("an encoded corpus answers like on-the-fly encoding (real model and corpus)", () => {
  const QUESTION = "What is the capital of Australia?";
  let passages: Passage[];
  let modelDir: string;

  beforeAll(async () => {
    modelDir = await findModelDir();
    const index = await openLanceIndex(await findCorpusDir("factbook"), "factbook");
    passages = (await index.search(QUESTION, 12)).map(({ id, title, text, source }) => ({ id, title, text, source }));
    await index.close?.();
  });

  async function answer(engine: Engine): Promise<{ text: string; citations: unknown[] }> {
    const request = GenerateRequestSchema.parse({ prompt: QUESTION, mode: "nest", max_new_tokens: 24, passages: 12 });
    const deltas: DeltaEvent[] = [];
    await engine.run({ request, passages }, { delta: (d) => deltas.push(d), done: () => {} });
    return { text: deltas.map((d) => d.text).join(""), citations: deltas.flatMap((d) => (d.citation ? [d.citation] : [])) };
  }

  it("fp16 store: no LM encoding, same text and citations (greedy)", async () => {
    const flyHome = join(root, "fly");
    const storeHome = join(root, "store");
    const fly = await Engine.load(modelDir, { home: flyHome, diskKeyCache: false, corpusKeys: false });
    const expected = await answer(fly);
    await fly.session.release();

    const encoded = await encodeCorpus({ corpus: "factbook", passages, keysHome: storeHome, precision: "fp16", log: () => {} });
    expect([encoded.encoded, encoded.cached]).toEqual([passages.length, 0]);
    const again = await encodeCorpus({ corpus: "factbook", passages, keysHome: storeHome, precision: "fp16", log: () => {} });
    expect([again.encoded, again.cached]).toEqual([0, passages.length]);

    const engine = await Engine.load(modelDir, { home: storeHome, diskKeyCache: false });
    const counts = await engine.passageEncoder.buildStore(passages, undefined, "factbook");
    expect([counts.numFromCorpus, counts.numEncoded]).toEqual([passages.length, 0]);
    const fresh = await Engine.load(modelDir, { home: storeHome, diskKeyCache: false }); // empty memory LRU
    const got = await answer(fresh);
    expect(got.text.length).toBeGreaterThan(0);
    expect(got).toEqual(expected);
    await Promise.all([engine.session.release(), fresh.session.release()]);
  });
});
