/**
 * @module runtime/manifest
 * The model manifest written by the exporter (`infra/export-onnx/export.py`) beside the ONNX
 * decoder. Everything model-specific the worker needs comes from here.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";

export const ManifestSchema = z.object({
  /** Version 2: append-only sequence-major KV cache and `num_logits_to_keep` (infra/export-onnx/export.py). */
  format: z.literal("nest-onnx-decoder/2"),
  /** Display name, e.g. `SmolLM2-135M-Instruct`. */
  name: z.string(),
  architecture: z.string(),
  /** Where the weights came from and their sha256; `key` is the cache key of this export. */
  source: z.object({ spec: z.string(), file: z.string(), sha256: z.string(), key: z.string() }),
  /** ONNX file name, relative to the manifest. */
  onnx: z.string(),
  dtype: z.enum(["float32", "float16"]),
  hidden_size: z.number().int().positive(),
  num_layers: z.number().int().positive(),
  num_attention_heads: z.number().int().positive(),
  num_kv_heads: z.number().int().positive(),
  head_dim: z.number().int().positive(),
  vocab_size: z.number().int().positive(),
  /** Longest sequence (prompt + generated tokens) the model was trained for. */
  context_length: z.number().int().positive().optional(),
  bos_token_id: z.number().int().nonnegative().nullable(),
  eos_token_ids: z.array(z.number().int().nonnegative()).min(1),
  pad_token_id: z.number().int().nonnegative().nullable(),
  /**
   * Graph input names; `{i}` stands for the layer index. Past key/values are sequence-major
   * `[batch, past, kvHeads, headDim]`; the matching outputs hold the new positions only.
   */
  inputs: z.object({
    input_ids: z.string(),
    attention_mask: z.string(),
    position_ids: z.string(),
    /** Scalar int64 input: logits are computed for the last n positions only. */
    num_logits_to_keep: z.string(),
    past_key: z.string(),
    past_value: z.string(),
  }),
  /** Graph output names; `{i}` stands for the layer index. */
  outputs: z.object({
    logits: z.string(),
    hidden_states: z.string(),
    present_key: z.string(),
    present_value: z.string(),
  }),
  /** Which hidden state is exported for kNN keys and queries (nest-algorithm.md §2.1). */
  knn_hidden: z.object({ layer: z.number().int().nonnegative(), description: z.string() }),
  tokenizer: z.string(),
  tokenizer_config: z.string(),
  chat_template: z.string(),
  parity: z.object({ max_abs_logit_diff: z.number(), tolerance: z.number() }),
  /**
   * Prepared precisions (`infra/export-onnx/quantize.py` adds int8/int4/fp16) with their parity
   * against fp32: max |Δ logits| on a chat prefill and the greedy token agreement over 20 prompts.
   */
  precisions: z
    .record(
      z.string(),
      z
        .object({
          onnx: z.string(),
          max_abs_logit_diff: z.number(),
          greedy_agreement: z.number(),
          /**
           * The graph's I/O: `traced` (default) as the fp32 export's, above; `gqa` for the fused
           * graphs of `infra/export-onnx/fuse.py` (fixed names, a BNSH past fed whole with
           * `seqlens_k` / `total_sequence_length` instead of the mask, and `new_key_{i}` /
           * `new_value_{i}` outputs holding the pass's new positions).
           */
          io: z.enum(["traced", "gqa"]).default("traced"),
        })
        .passthrough(),
    )
    .optional(),
});
export type Manifest = z.infer<typeof ManifestSchema>;

/**
 * Reads and validates `manifest.json` in `modelDir`.
 * @throws NestError `model_not_prepared` when the file is missing or malformed.
 */
export async function readManifest(modelDir: string): Promise<Manifest> {
  const path = join(modelDir, "manifest.json");
  let raw: string;
  try {
    raw = await readFile(path, "utf8");
  } catch (err) {
    throw new NestError("model_not_prepared", `no model manifest at ${path}: run \`nestlm setup\` first`, { cause: err });
  }
  let json: unknown;
  try {
    json = JSON.parse(raw);
  } catch (err) {
    throw new NestError("model_not_prepared", `unreadable model manifest at ${path}: run \`nestlm setup\` again`, { cause: err });
  }
  const parsed = ManifestSchema.safeParse(json);
  if (!parsed.success) {
    throw new NestError("model_not_prepared", `invalid model manifest at ${path}: ${parsed.error.message}`);
  }
  return parsed.data;
}

/** Expands a `{i}` name pattern for layer `i`. */
export function layerName(pattern: string, i: number): string {
  return pattern.replace("{i}", String(i));
}
