/**
 * The fused decoder graph (issue 13, `infra/export-onnx/fuse.py`): GroupQueryAttention with its BNSH
 * cache bound in place gives what the traced graph gives, through DecoderSession and the Engine.
 * Tolerances: fuse.py measured max |Δ logit| 9e-5 and max |Δ hidden| / max |hidden| 7e-7 on this
 * model; the bounds below are 10× those.
 */
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { findModelDir, prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent, DoneEvent } from "@nest/shared/protocol/events";
import { NestError } from "@nest/shared/protocol/errors";

const LOGIT_TOL = 1e-3;
const HIDDEN_REL_TOL = 1e-5;

let dir: string;
let manifest: Manifest;
let tok: ModelTokenizer;
let traced: DecoderSession;
let fused: DecoderSession;
let prompt: number[];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  expect(a.length).toBe(b.length);
  let d = 0;
  for (let i = 0; i < a.length; i++) d = Math.max(d, Math.abs(a[i]! - b[i]!));
  return d;
}
function maxAbs(a: Float32Array): number {
  let m = 0;
  for (const x of a) m = Math.max(m, Math.abs(x));
  return m;
}
function argmax(x: Float32Array): number {
  let a = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[a]!) a = i;
  return a;
}

beforeAll(async () => {
  dir = await prepareModel({ precisions: ["fused-fp32", "fused-int4"], log: () => {} });
  manifest = await readManifest(dir);
  tok = await ModelTokenizer.load(dir, manifest);
  prompt = tok.encodeChat([{ role: "user", content: "What is the capital of Australia?" }]);
  traced = await DecoderSession.load(dir, manifest, { precision: "fp32", threads: 2 });
  fused = await DecoderSession.load(dir, manifest, { precision: "fused-fp32", threads: 2 });
});

describe("fused-fp32 DecoderSession against the traced fp32 graph", () => {
  it("is recorded in the manifest as a gqa graph with identical greedy outputs", () => {
    const p = manifest.precisions?.["fused-fp32"];
    expect(p?.io).toBe("gqa");
    expect(p?.greedy_agreement).toBe(1);
    expect(fused.gqa).toBe(true);
    expect(traced.gqa).toBe(false);
  });

  it("prefill, a 4-token draft after a truncate, and greedy steps match row by row", async () => {
    traced.reset();
    fused.reset();
    let dLogit = 0;
    let dHidden = 0;
    const compare = async (ids: number[]) => {
      const a = await traced.forward(ids);
      const b = await fused.forward(ids);
      for (let r = 0; r < ids.length; r++) {
        dLogit = Math.max(dLogit, maxAbsDiff(a.logitsRow(r), b.logitsRow(r)));
        dHidden = Math.max(dHidden, maxAbsDiff(a.hiddenRow(r), b.hiddenRow(r)) / maxAbs(a.hiddenRow(r)));
      }
      return argmax(a.logitsRow(ids.length - 1));
    };
    let next = await compare(prompt);
    expect(tok.decode([next])).toBe("The");
    next = await compare([next]);
    // a rejected draft: 4 tokens scored, then cut back to the first, as verification does
    const kept = fused.cacheLength;
    await compare([next, 28, 253, 2260]);
    traced.truncate(kept + 1);
    fused.truncate(kept + 1);
    expect(fused.cacheLength).toBe(kept + 1);
    const out: number[] = [next];
    next = await compare([253]);
    for (let i = 0; i < 6; i++) {
      out.push(next);
      next = await compare([next]);
    }
    expect(traced.cacheLength).toBe(fused.cacheLength);
    expect(dLogit).toBeLessThan(LOGIT_TOL);
    expect(dHidden).toBeLessThan(HIDDEN_REL_TOL);
  });

  it("keeps the cache across buffer growth (a 300-token prompt past the 256-position first capacity)", async () => {
    const long = tok.encodeChat([{ role: "user", content: `Repeat: ${"the quick brown fox jumps over the lazy dog ".repeat(30)}` }]);
    expect(long.length).toBeGreaterThan(256);
    traced.reset();
    fused.reset();
    const head = long.slice(0, 250);
    await traced.forward(head, 0);
    await fused.forward(head, 0);
    const a = await traced.forward(long.slice(250), 1);
    const b = await fused.forward(long.slice(250), 1);
    const grown = fused.copies.growBytes;
    expect(grown).toBeGreaterThan(0);
    expect(maxAbsDiff(a.logitsRow(long.length - 251), b.logitsRow(long.length - 251))).toBeLessThan(LOGIT_TOL);
    // reset() gives the grown buffers back: the same two passes grow them again, copying the
    // 250 cached positions of each of the 60 buffers
    fused.reset();
    await fused.forward(head, 0);
    await fused.forward(long.slice(250), 1);
    expect(fused.copies.growBytes - grown).toBe(250 * manifest.num_kv_heads * manifest.head_dim * 4 * 2 * manifest.num_layers);
  });

  it("encodeBatch over right-padded rows equals the traced graph's hidden states", async () => {
    const seqs = [prompt, prompt.slice(0, 9), tok.encode("Canberra is the capital of Australia.")];
    const a = await traced.encodeBatch(seqs);
    const b = await fused.encodeBatch(seqs);
    seqs.forEach((s, i) => {
      expect(b[i]!.length).toBe(s.length * manifest.hidden_size);
      expect(maxAbsDiff(a[i]!, b[i]!) / maxAbs(a[i]!)).toBeLessThan(HIDDEN_REL_TOL);
    });
  });

  it("is refused on the CUDA execution provider with a clear error (float32 GQA is CPU-only)", async () => {
    await expect(DecoderSession.load(dir, manifest, { precision: "fused-fp32", executionProvider: "cuda" })).rejects.toThrow(NestError);
  });
});

describe("the Engine on the fused graph", () => {
  it("answers in nest mode with the traced graph's deltas, citations and LM passes", async () => {
    const passages = [
      { id: "nepal", title: "Nepal", source: "t", text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m" },
      { id: "australia", title: "Australia", source: "t", text: "Australia, capital: name: Canberra; time difference: UTC+10" },
    ];
    const home = await mkdtemp(join(tmpdir(), "nest-fused-engine-"));
    const ask = async (precision: "fp32" | "fused-fp32") => {
      const engine = await Engine.load(dir, { home, diskKeyCache: false, corpusKeys: false, precision, threads: 2 });
      const request = GenerateRequestSchema.parse({ prompt: "What is the capital of Australia?", mode: "nest", max_new_tokens: 24 });
      const deltas: DeltaEvent[] = [];
      let done: DoneEvent | undefined;
      await engine.run({ request, passages }, { delta: (d) => void deltas.push(d), done: (d) => void (done = d) });
      await engine.session.release();
      // the same float32 weights in two graphs: one model name (answers, /healthz, FAQ cache key)
      expect(done!.model).toBe(manifest.name);
      return {
        text: deltas.map((d) => d.text).join(""),
        cites: deltas.flatMap((d) =>
          d.citation ? [`${d.citation.passage_id}:${d.citation.passage_start}-${d.citation.passage_end}`] : [],
        ),
        passes: done!.usage.lm_forward_passes,
      };
    };
    try {
      const a = await ask("fp32");
      const b = await ask("fused-fp32");
      expect(a.text).toContain("Canberra");
      expect(a.cites.length).toBeGreaterThan(0);
      expect(b).toEqual(a);
    } finally {
      await rm(home, { recursive: true, force: true });
    }
  });
});

describe("the model name", () => {
  it("and the key-cache name are fp32's for both float32 graphs; any other precision carries its own (other weights)", async () => {
    const names: Record<string, string> = {};
    const keys: Record<string, string> = {};
    for (const precision of ["fp32", "fused-fp32", "fused-int4"] as const) {
      const engine = await Engine.load(dir, { diskKeyCache: false, corpusKeys: false, precision, threads: 1 });
      names[precision] = engine.modelName;
      keys[precision] = engine.passageEncoder.modelKey;
      await engine.session.release();
    }
    expect(names).toEqual({ fp32: manifest.name, "fused-fp32": manifest.name, "fused-int4": `${manifest.name}:fused-int4` });
    // the key caches and encoded corpora follow the weights too: fp32's are fused-fp32's
    expect(keys["fused-fp32"]).toBe(keys.fp32);
    expect(keys.fp32).toMatch(/-fp32-/);
    expect(keys["fused-int4"]).toMatch(/-fused-int4-/);
  });
});

describe("a fused precision that is not prepared", () => {
  it("names its setup command, in an empty NEST_HOME too", async () => {
    const empty = await mkdtemp(join(tmpdir(), "nest-fused-empty-"));
    try {
      await expect(findModelDir(empty, "fused-int4")).rejects.toThrow(/nestlm setup --precision fused-int4/);
      await expect(findModelDir(empty)).rejects.toThrow(/run `nestlm setup`/);
    } finally {
      await rm(empty, { recursive: true, force: true });
    }
  });
});

describe("fused-int4", () => {
  it("loads as a gqa graph and decodes the demo prompt's first token as fp32 does", async () => {
    expect(manifest.precisions?.["fused-int4"]?.io).toBe("gqa");
    const lm = await DecoderSession.load(dir, manifest, { precision: "fused-int4", threads: 2 });
    const out = await lm.forward(prompt, 1);
    expect(tok.decode([argmax(out.logitsRow(prompt.length - 1))])).toBe("The");
    await lm.release();
  });
});
