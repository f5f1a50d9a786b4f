/**
 * Decoder precisions (issue 3): the int8 and int4 variants made by `infra/export-onnx/quantize.py`
 * stay within their recorded parity bounds against fp32, and the runtime options fail clearly.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { defaultPrecision, intraOpConfig, runtimeOptions } from "@nest/gpu-worker/runtime/session-options";
import { NestError } from "@nest/shared/protocol/errors";
import { nodeEnv } from "@nest/shared/config/node-env";

/** Least greedy agreement with fp32 over the 20 parity prompts (prepare-model.ts MIN_AGREEMENT). */
const BOUNDS = { int8: 0.6, int4: 0.2 } as const;

let dir: string;
let manifest: Manifest;
let prompt: number[];
let fp32Logits: Float32Array;

function argmax(x: Float32Array): number {
  let a = 0;
  for (let i = 1; i < x.length; i++) if (x[i]! > x[a]!) a = i;
  return a;
}

beforeAll(async () => {
  dir = await prepareModel({ precisions: ["int8", "int4"], log: () => {} });
  manifest = await readManifest(dir);
  const tok = await ModelTokenizer.load(dir, manifest);
  prompt = tok.encodeChat([{ role: "user", content: "What is the capital of Australia?" }]);
  const fp32 = await DecoderSession.load(dir, manifest, { precision: "fp32" });
  fp32Logits = Float32Array.from((await fp32.forward(prompt, 1)).logitsRow(prompt.length - 1));
});

describe.each(Object.entries(BOUNDS))("precision %s", (precision, bound) => {
  it("is recorded in the manifest with its parity against fp32", () => {
    const p = manifest.precisions?.[precision];
    expect(p).toBeDefined();
    console.log(`${precision}: max|Δlogits| ${p!.max_abs_logit_diff.toFixed(3)}, greedy agreement ${p!.greedy_agreement.toFixed(3)}`);
    expect(p!.greedy_agreement).toBeGreaterThanOrEqual(bound);
    expect(p!.max_abs_logit_diff).toBeGreaterThan(0);
  });

  it("loads through DecoderSession and stays within the recorded logit difference on the demo prompt", async () => {
    const lm = await DecoderSession.load(dir, manifest, { precision: precision as "int8" | "int4" });
    expect(lm.options.precision).toBe(precision);
    const row = (await lm.forward(prompt, 1)).logitsRow(prompt.length - 1);
    let diff = 0;
    for (let i = 0; i < row.length; i++) diff = Math.max(diff, Math.abs(row[i]! - fp32Logits[i]!));
    // The manifest's figure is the max over 20 prompts, this prompt included.
    expect(diff).toBeLessThanOrEqual(manifest.precisions![precision]!.max_abs_logit_diff + 1e-3);
    if (precision === "int8") expect(argmax(row)).toBe(argmax(fp32Logits)); // "The"
  });
});

describe("runtime options", () => {
  it("reads NEST_* variables and lets explicit options win", () => {
    const o = runtimeOptions({ threads: 1 }, nodeEnv({ NEST_PRECISION: "int8", NEST_THREADS: "2", NEST_CPU_MEM_ARENA: "0" }).runtime);
    expect(o).toEqual({
      precision: "int8",
      executionProvider: "cpu",
      threads: 1,
      graphOptimizationLevel: "all",
      enableCpuMemArena: false,
      intraOpSpinning: true,
      intraOpSpinDurationUs: 50,
    });
  });

  it("spins for at most 50 µs by default; NEST_INTRA_OP_SPINNING=0 never, NEST_INTRA_OP_SPIN_US=0 without a bound", () => {
    const config = (env: Record<string, string>, overrides = {}) => intraOpConfig(runtimeOptions(overrides, nodeEnv(env).runtime));
    expect(config({})).toEqual({ allow_spinning: "1", spin_duration_us: "50" });
    expect(config({ NEST_INTRA_OP_SPINNING: "0" })).toEqual({ allow_spinning: "0" });
    expect(config({ NEST_INTRA_OP_SPINNING: "0", NEST_INTRA_OP_SPIN_US: "200" })).toEqual({ allow_spinning: "0" });
    expect(config({ NEST_INTRA_OP_SPIN_US: "0" })).toEqual({ allow_spinning: "1" });
    expect(config({ NEST_INTRA_OP_SPIN_US: "200" })).toEqual({ allow_spinning: "1", spin_duration_us: "200" });
    expect(config({}, { intraOpSpinning: false })).toEqual({ allow_spinning: "0" });
    expect(config({ NEST_INTRA_OP_SPINNING: "", NEST_INTRA_OP_SPIN_US: "" })).toEqual({ allow_spinning: "1", spin_duration_us: "50" }); // empty = unset
    for (const bad of ["-1", " ", "1e3", "0x32", "2.5", "1000001"])
      expect(() => nodeEnv({ NEST_INTRA_OP_SPIN_US: bad }), bad).toThrow(/^environment variable NEST_INTRA_OP_SPIN_US: /);
    for (const bad of ["false", "off", "true"])
      expect(() => nodeEnv({ NEST_INTRA_OP_SPINNING: bad }), bad).toThrow(/^environment variable NEST_INTRA_OP_SPINNING: /);
    expect(() => runtimeOptions({ intraOpSpinDurationUs: 1.5 })).toThrow(/NEST_INTRA_OP_SPIN_US/);
  });

  it("defaults to the fused fp32 graph on the CPU when the model has it, else the traced fp32 graph", async () => {
    expect(defaultPrecision("cpu", (p) => p === "fused-fp32")).toBe("fused-fp32");
    expect(defaultPrecision("cpu", () => false)).toBe("fp32"); // GPT-2, or a cache from before
    expect(defaultPrecision("cuda", () => true)).toBe("fp32"); // CUDA GroupQueryAttention is fp16 only
    expect(runtimeOptions({}, nodeEnv({}).runtime).precision).toBeUndefined();
    // prepareModel builds fused-fp32 for Llama-family models: the default session runs it
    expect(manifest.precisions?.["fused-fp32"]?.io).toBe("gqa");
    const lm = await DecoderSession.load(dir, manifest, { threads: 1 });
    expect(lm.options.precision).toBe("fused-fp32");
    expect(lm.gqa).toBe(true);
    const row = (await lm.forward(prompt, 1)).logitsRow(prompt.length - 1);
    let diff = 0;
    for (let i = 0; i < row.length; i++) diff = Math.max(diff, Math.abs(row[i]! - fp32Logits[i]!));
    expect(diff).toBeLessThan(1e-3);
    await lm.release();
    const asked = await DecoderSession.load(dir, manifest, { precision: "fp32", threads: 1 });
    expect(asked.options.precision).toBe("fp32");
    expect(asked.gqa).toBe(false);
    await asked.release();
  });

  it("names the variable of a bad value", () => {
    expect(() => runtimeOptions({}, nodeEnv({ NEST_PRECISION: "int3" }).runtime)).toThrow(/NEST_PRECISION/);
    expect(() => runtimeOptions({}, nodeEnv({ NEST_THREADS: "-1" }).runtime)).toThrow(/NEST_THREADS/);
  });

  it("fails clearly for a precision that was not prepared", async () => {
    const err = await DecoderSession.load(dir, manifest, { precision: "fp16" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NestError);
    expect((err as NestError).code).toBe("model_not_prepared");
    expect((err as Error).message).toMatch(/nestlm setup --precision fp16/);
  });

  it("fails clearly when the CUDA provider libraries are missing", async () => {
    const err = await DecoderSession.load(dir, manifest, { executionProvider: "cuda" }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(NestError);
    expect((err as Error).message).toMatch(/CUDA execution provider could not start.*docs\/cuda\.md/s);
  });
});
