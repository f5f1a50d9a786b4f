/**
 * @module test/unit/gpu-worker/runtime/onnx-graph
 * The exported decoder as onnxruntime-node sees it: graph names, and a prefill plus one cached
 * step on the SmolLM2 chat prompt, checked against PyTorch values (transformers 5.23.0, fp32
 * dequantised GGUF) computed once by hand.
 */
import { createRequire } from "node:module";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { REPO_ROOT } from "@nest/corpus/home";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { layerName, readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";

/** The slice of the onnxruntime-node API used here (the package lives in gpu-worker/node_modules). */
interface OrtTensor {
  dims: readonly number[];
  data: unknown;
}
interface OrtSession {
  inputNames: readonly string[];
  outputNames: readonly string[];
  run(feeds: Record<string, OrtTensor>): Promise<Record<string, OrtTensor>>;
  release(): Promise<void>;
}
interface Ort {
  InferenceSession: { create(path: string): Promise<OrtSession> };
  Tensor: new (type: string, data: BigInt64Array | Float32Array, dims: number[]) => OrtTensor;
}
const ort = createRequire(join(REPO_ROOT, "gpu-worker", "package.json"))("onnxruntime-node") as Ort;

/** `<|im_start|>system ... <|im_start|>user\nWhat is the capital of Australia?<|im_end|>\n<|im_start|>assistant\n` */
const PROMPT = [
  1, 9690, 198, 2683, 359, 253, 5356, 5646, 11173, 3365, 3511, 308, 34519, 28, 7018, 411, 407, 19712, 8182, 2, 198, 1, 4093, 198, 1780, 314,
  260, 3575, 282, 4617, 47, 2, 198, 1, 520, 9531, 198,
];
const THE = 504; // "The", greedy after the prompt, logit 31.7125 in PyTorch
const CAPITAL = 3575; // " capital", greedy after "The", logit 18.2780 in PyTorch

/** The scalar `num_logits_to_keep` input: logits for the last `n` positions. */
const keep = (n: number) => new ort.Tensor("int64", BigInt64Array.of(BigInt(n)), []);
const ids = (xs: number[]) => new ort.Tensor("int64", BigInt64Array.from(xs.map(BigInt)), [1, xs.length]);

function argmaxLast(t: OrtTensor, vocab: number): { id: number; value: number } {
  const data = t.data as Float32Array;
  const row = data.subarray(data.length - vocab);
  let id = 0;
  for (let i = 1; i < vocab; i++) if (row[i]! > row[id]!) id = i;
  return { id, value: row[id]! };
}

describe("exported ONNX decoder", () => {
  let m: Manifest;
  let session: OrtSession;
  beforeAll(async () => {
    const dir = await findModelDir();
    m = await readManifest(dir);
    session = await ort.InferenceSession.create(join(dir, m.onnx));
  });
  afterAll(async () => {
    await session?.release();
  });

  it("has the manifest's input and output names", () => {
    const layers = Array.from({ length: 30 }, (_, i) => i);
    expect(session.inputNames).toEqual([
      "input_ids",
      "attention_mask",
      "position_ids",
      "num_logits_to_keep",
      ...layers.flatMap((i) => [`past_key_values.${i}.key`, `past_key_values.${i}.value`]),
    ]);
    expect(session.outputNames).toEqual(["logits", "hidden_states", ...layers.flatMap((i) => [`present.${i}.key`, `present.${i}.value`])]);
    expect(layerName(m.inputs.past_value, 3)).toBe(session.inputNames[4 + 2 * 3 + 1]);
    expect(m.inputs.num_logits_to_keep).toBe("num_logits_to_keep");
    expect(layerName(m.outputs.present_key, 29)).toBe(session.outputNames[2 + 2 * 29]);
  });

  it("prefills the chat prompt from an empty past, then takes one cached step", async () => {
    const n = PROMPT.length; // 37
    const emptyPast: Record<string, OrtTensor> = {};
    for (let i = 0; i < m.num_layers; i++) {
      for (const pattern of [m.inputs.past_key, m.inputs.past_value]) {
        emptyPast[layerName(pattern, i)] = new ort.Tensor("float32", new Float32Array(0), [1, 0, 3, 64]);
      }
    }
    const out = await session.run({
      input_ids: ids(PROMPT),
      attention_mask: ids(PROMPT.map(() => 1)),
      position_ids: ids(PROMPT.map((_, i) => i)),
      num_logits_to_keep: keep(n),
      ...emptyPast,
    });
    expect(out.logits!.dims).toEqual([1, n, 49152]);
    expect(out.hidden_states!.dims).toEqual([1, n, 576]);
    // sequence-major, new positions only (here: all of them)
    expect(out["present.0.key"]!.dims).toEqual([1, n, 3, 64]);
    expect(out["present.29.value"]!.dims).toEqual([1, n, 3, 64]);
    const first = argmaxLast(out.logits!, 49152);
    expect(first.id).toBe(THE);
    expect(first.value).toBeCloseTo(31.7125, 2);
    // hidden state entering block 29 at the last position: PyTorch gives [5.0231, -8.9550, -19.5196, 14.7922, ...]
    const hidden = (out.hidden_states!.data as Float32Array).subarray((n - 1) * 576, n * 576);
    expect(Array.from(hidden.subarray(0, 4)).map((x) => Math.round(x * 100) / 100)).toEqual([5.02, -8.96, -19.52, 14.79]);

    const past: Record<string, OrtTensor> = {};
    for (let i = 0; i < m.num_layers; i++) {
      past[layerName(m.inputs.past_key, i)] = out[layerName(m.outputs.present_key, i)]!;
      past[layerName(m.inputs.past_value, i)] = out[layerName(m.outputs.present_value, i)]!;
    }
    const step = await session.run({
      input_ids: ids([THE]),
      attention_mask: ids([...PROMPT, THE].map(() => 1)),
      position_ids: ids([n]),
      num_logits_to_keep: keep(1),
      ...past,
    });
    expect(step.logits!.dims).toEqual([1, 1, 49152]);
    expect(step.hidden_states!.dims).toEqual([1, 1, 576]);
    expect(step["present.0.key"]!.dims).toEqual([1, 1, 3, 64]); // only the appended position
    const second = argmaxLast(step.logits!, 49152);
    expect(second.id).toBe(CAPITAL);
    expect(second.value).toBeCloseTo(18.278, 2);
  });

  it("computes logits only for the last num_logits_to_keep positions", async () => {
    const emptyPast: Record<string, OrtTensor> = {};
    for (let i = 0; i < m.num_layers; i++) {
      for (const pattern of [m.inputs.past_key, m.inputs.past_value]) {
        emptyPast[layerName(pattern, i)] = new ort.Tensor("float32", new Float32Array(0), [1, 0, 3, 64]);
      }
    }
    const feeds = {
      input_ids: ids(PROMPT),
      attention_mask: ids(PROMPT.map(() => 1)),
      position_ids: ids(PROMPT.map((_, i) => i)),
      ...emptyPast,
    };
    const last = await session.run({ ...feeds, num_logits_to_keep: keep(1) });
    expect(last.logits!.dims).toEqual([1, 1, 49152]);
    expect(argmaxLast(last.logits!, 49152).id).toBe(THE);
    const none = await session.run({ ...feeds, num_logits_to_keep: keep(0) });
    expect(none.logits!.dims).toEqual([1, 0, 49152]);
    expect(none.hidden_states!.dims).toEqual([1, PROMPT.length, 576]);
  });
});
