/**
 * @module embedder
 * Dense sentence embedder for first-stage retrieval (nest-algorithm.md §1, dense side; docs/retrieval.md):
 * all-MiniLM-L6-v2 exported to ONNX by `infra/export-embedder/export.py`, run with onnxruntime-node,
 * tokenised with `@huggingface/tokenizers` (WordPiece, `[CLS] … [SEP]`, cut at `max_tokens`), then
 * mean pooling over real tokens and L2 normalisation (so dot product = cosine). Node-only.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import * as ort from "onnxruntime-node";
import { Tokenizer } from "@huggingface/tokenizers";
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";

/** `manifest.json` of an exported embedder (written last by the exporter); extra fields are kept. */
export const EmbedderManifestSchema = z.looseObject({
  name: z.string(),
  source: z.looseObject({ package: z.string(), key: z.string() }),
  onnx: z.string(),
  tokenizer: z.string(),
  tokenizer_config: z.string(),
  /** Graph input names, e.g. `["input_ids", "attention_mask", "token_type_ids"]`. */
  inputs: z.array(z.string()),
  /** Graph output `[batch, seq, dim]`. */
  output: z.string(),
  dim: z.number().int().positive().describe("embedding size (384)"),
  max_tokens: z.number().int().positive().describe("longest input in tokens, special tokens included (256)"),
  pooling: z.literal("mean"),
  normalize: z.boolean(),
  parity: z.looseObject({ max_abs_diff: z.number(), min_cosine: z.number(), sentence: z.string(), reference_first8: z.array(z.number()) }),
});
export type EmbedderManifest = z.infer<typeof EmbedderManifestSchema>;

/** Reads and parses `<dir>/manifest.json`. @throws NestError `model_not_prepared` when missing, unreadable or malformed. */
export async function readEmbedderManifest(dir: string): Promise<EmbedderManifest> {
  try {
    return EmbedderManifestSchema.parse(JSON.parse(await readFile(join(dir, "manifest.json"), "utf8")));
  } catch (err) {
    throw new NestError("model_not_prepared", `no embedder in ${dir}: run \`nestlm setup\``, { cause: err });
  }
}

/** A loaded sentence embedder. */
export class SentenceEmbedder {
  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly tokenizer: Tokenizer,
    readonly manifest: EmbedderManifest,
    /** Folder it was loaded from. */
    readonly dir: string,
  ) {}

  /** Embedding size (384 for all-MiniLM-L6-v2). */
  get dim(): number {
    return this.manifest.dim;
  }

  /**
   * Loads the embedder exported into `dir`.
   *
   * @param threads onnxruntime intra-op threads. @defaultValue 1 (the machine is shared)
   * @throws NestError `model_not_prepared` when the folder is incomplete
   */
  static async load(dir: string, threads = 1): Promise<SentenceEmbedder> {
    const manifest = await readEmbedderManifest(dir);
    const [json, config] = await Promise.all([
      readFile(join(dir, manifest.tokenizer), "utf8").then(JSON.parse),
      readFile(join(dir, manifest.tokenizer_config), "utf8").then(JSON.parse),
    ]);
    const session = await ort.InferenceSession.create(join(dir, manifest.onnx), {
      intraOpNumThreads: threads,
      interOpNumThreads: 1,
      graphOptimizationLevel: "all",
    });
    return new SentenceEmbedder(session, new Tokenizer(json, config), manifest, dir);
  }

  /** Token ids of `text` with `[CLS]`/`[SEP]`, cut to `max_tokens` (last id kept as `[SEP]`). */
  tokenize(text: string): number[] {
    const ids = this.tokenizer.encode(text, { add_special_tokens: true }).ids;
    const max = this.manifest.max_tokens;
    return ids.length <= max ? ids : [...ids.slice(0, max - 1), ids[ids.length - 1]!];
  }

  /**
   * Embeds `texts` in one forward pass (right-padded to the longest).
   *
   * @returns one unit-length vector per text, `[texts.length][dim]` (Float32Array each); `[]` for `[]`
   */
  async embed(texts: readonly string[]): Promise<Float32Array[]> {
    if (texts.length === 0) return [];
    const tokenized = texts.map((t) => this.tokenize(t));
    const batch = texts.length;
    const seq = Math.max(...tokenized.map((t) => t.length));
    const ids = new BigInt64Array(batch * seq);
    const mask = new BigInt64Array(batch * seq);
    tokenized.forEach((t, b) => {
      for (let i = 0; i < t.length; i++) {
        ids[b * seq + i] = BigInt(t[i]!);
        mask[b * seq + i] = 1n;
      }
    });
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor("int64", ids, [batch, seq]),
      attention_mask: new ort.Tensor("int64", mask, [batch, seq]),
      token_type_ids: new ort.Tensor("int64", new BigInt64Array(batch * seq), [batch, seq]),
    };
    const out = await this.session.run(feeds);
    const hidden = out[this.manifest.output]!.data as Float32Array;
    const dim = this.dim;
    return tokenized.map((t, b) => {
      const v = new Float32Array(dim);
      for (let i = 0; i < t.length; i++) {
        const off = (b * seq + i) * dim;
        for (let d = 0; d < dim; d++) v[d]! += hidden[off + d]!;
      }
      let norm = 0;
      for (let d = 0; d < dim; d++) {
        v[d]! /= t.length;
        norm += v[d]! * v[d]!;
      }
      const inv = this.manifest.normalize ? 1 / Math.max(Math.sqrt(norm), 1e-12) : 1;
      for (let d = 0; d < dim; d++) v[d]! *= inv;
      return v;
    });
  }

  /** Releases the ONNX session. */
  async close(): Promise<void> {
    await this.session.release();
  }
}

const loaded = new Map<string, Promise<SentenceEmbedder>>();

/** {@link SentenceEmbedder.load}, memoised per folder (one session per process and model). */
export function sharedEmbedder(dir: string): Promise<SentenceEmbedder> {
  let p = loaded.get(dir);
  if (!p) {
    p = SentenceEmbedder.load(dir);
    p.catch(() => loaded.delete(dir));
    loaded.set(dir, p);
  }
  return p;
}
