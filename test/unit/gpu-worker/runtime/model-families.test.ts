/**
 * "Any decoder model" (issue 3): tiny random models of the Llama, Mistral, Qwen2 and GPT-2 families
 * (made in code by infra/export-onnx/make_tiny.py, with the real tokenizer) go through the same
 * exporter (`--hf-dir`) and are served by the same TypeScript runtime, which reads everything
 * model-specific from the manifest.
 */
import { spawnSync } from "node:child_process";
import { mkdtemp, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { EXPORTER_DIR } from "@nest/gpu-worker/config";
import { findModelDir, prepareExporterPython } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest } from "@nest/gpu-worker/runtime/manifest";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { DeltaEvent, DoneEvent } from "@nest/shared/protocol/events";

const FAMILIES = {
  llama: { architecture: "LlamaForCausalLM", kvHeads: 2, headDim: 16 },
  mistral: { architecture: "MistralForCausalLM", kvHeads: 2, headDim: 16 },
  qwen2: { architecture: "Qwen2ForCausalLM", kvHeads: 2, headDim: 16 },
  gpt2: { architecture: "GPT2LMHeadModel", kvHeads: 4, headDim: 16 },
} as const;

const PASSAGES = [
  { id: "p1", title: "Australia › Government › Capital", source: "t", text: "Australia, capital: name: Canberra; time difference: UTC+10" },
  {
    id: "p2",
    title: "Nepal › Geography › Elevation",
    source: "t",
    text: "Nepal, elevation extremes: highest point: Mount Everest 8,850 m",
  },
];

let root: string;
let python: string;

function py(args: string[]): void {
  const r = spawnSync(python, args, { encoding: "utf8" });
  if (r.error) throw new Error(`${python} ${args[0]} could not start: ${r.error.message}`);
  if (r.status !== 0) throw new Error(`${args[0]} failed:\n${`${r.stdout}${r.stderr}`.split("\n").slice(-15).join("\n")}`);
}

beforeAll(async () => {
  const tokenizerDir = await findModelDir(); // `nestlm setup` made the real tokenizer
  // The venv too, unless $NEST_HOME came with the model but without it (a copied or mounted cache).
  python = await prepareExporterPython({ log: () => {} });
  root = await mkdtemp(join(tmpdir(), "nest-families-"));
  for (const family of Object.keys(FAMILIES)) {
    py([join(EXPORTER_DIR, "make_tiny.py"), "--family", family, "--tokenizer-dir", tokenizerDir, "--out", join(root, `${family}-hf`)]);
    py([
      join(EXPORTER_DIR, "export.py"),
      "--hf-dir",
      join(root, `${family}-hf`),
      "--out",
      join(root, family),
      "--source-spec",
      `tiny-${family}`,
      "--key",
      `tiny-${family}`,
    ]);
  }
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe.each(Object.entries(FAMILIES))("%s", (family, expected) => {
  it("exports with the manifest layout and PyTorch parity", async () => {
    const m = await readManifest(join(root, family));
    expect(m.architecture).toBe(expected.architecture);
    expect([m.num_layers, m.hidden_size, m.num_kv_heads, m.head_dim, m.vocab_size]).toEqual([
      2,
      64,
      expected.kvHeads,
      expected.headDim,
      49152,
    ]);
    expect(m.inputs.num_logits_to_keep).toBe("num_logits_to_keep");
    expect(m.parity.max_abs_logit_diff).toBeLessThan(m.parity.tolerance);
    expect(m.eos_token_ids).toEqual([2]);
    if (family === "gpt2") expect(m.chat_template).toMatch(/message\['role'\] \}\}: /); // the fallback template
  });

  it("decodes through the same Engine in base and nest mode", async () => {
    const engine = await Engine.load(join(root, family), { diskKeyCache: false });
    for (const mode of ["base", "nest"] as const) {
      const deltas: DeltaEvent[] = [];
      let done: DoneEvent | undefined;
      await engine.run(
        {
          request: GenerateRequestSchema.parse({ prompt: "What is the capital of Australia?", mode, max_new_tokens: 6 }),
          passages: PASSAGES,
        },
        { delta: (d) => deltas.push(d), done: (d) => (done = d) },
      );
      expect(done).toBeDefined();
      expect(done!.usage.completion_tokens).toBe(deltas.reduce((s, d) => s + d.tokens, 0));
      expect(done!.usage.completion_tokens).toBeLessThanOrEqual(6);
      if (mode === "nest") expect(done!.usage.store_keys).toBeGreaterThan(10);
    }
    await engine.session.release();
  });
});
