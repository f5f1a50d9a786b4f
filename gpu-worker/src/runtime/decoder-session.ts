/**
 * @module runtime/decoder-session
 * The ONNX decoder with its KV cache, over onnxruntime-node. Input/output names and shapes come from
 * the manifest (optimum / transformers.js layout plus the kNN hidden-state output).
 */
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import type { CausalLM, ForwardOutput } from "../nest/causal-lm.ts";
import { layerName, type Manifest } from "./manifest.ts";

/** Session options (threads; the rest are onnxruntime defaults). */
export interface SessionOptions {
  /** Intra-op threads; 0 lets onnxruntime choose. */
  readonly threads?: number;
}

/**
 * A causal LM over an ONNX decoder. The KV cache is one `[1, kvHeads, cacheLength, headDim]` float32
 * tensor per layer for keys and one for values, taken from the `present.*` outputs of each pass.
 * Not safe for concurrent use: one request at a time.
 */
export class DecoderSession implements CausalLM {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  private past: ort.Tensor[] = [];
  private length = 0;
  private readonly pastNames: string[] = [];
  private readonly presentNames: string[] = [];

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly manifest: Manifest,
  ) {
    this.vocabSize = manifest.vocab_size;
    this.hiddenSize = manifest.hidden_size;
    for (let i = 0; i < manifest.num_layers; i++) {
      this.pastNames.push(layerName(manifest.inputs.past_key, i), layerName(manifest.inputs.past_value, i));
      this.presentNames.push(layerName(manifest.outputs.present_key, i), layerName(manifest.outputs.present_value, i));
    }
    const missingIn = [
      manifest.inputs.input_ids,
      manifest.inputs.attention_mask,
      manifest.inputs.position_ids,
      ...this.pastNames,
    ].filter((n) => !session.inputNames.includes(n));
    const missingOut = [manifest.outputs.logits, manifest.outputs.hidden_states, ...this.presentNames].filter(
      (n) => !session.outputNames.includes(n),
    );
    if (missingIn.length + missingOut.length > 0) {
      throw new Error(
        `ONNX graph does not match its manifest: missing inputs [${missingIn.join(", ")}], outputs [${missingOut.join(", ")}]`,
      );
    }
    this.reset();
  }

  /**
   * Loads the decoder named in the manifest.
   * @throws Error when the ONNX file cannot be loaded or does not match the manifest.
   */
  static async load(modelDir: string, manifest: Manifest, opts: SessionOptions = {}): Promise<DecoderSession> {
    const session = await ort.InferenceSession.create(join(modelDir, manifest.onnx), {
      executionProviders: ["cpu"],
      graphOptimizationLevel: "all",
      intraOpNumThreads: opts.threads ?? 0,
    });
    return new DecoderSession(session, manifest);
  }

  get cacheLength(): number {
    return this.length;
  }

  reset(): void {
    const { num_kv_heads: h, head_dim: d } = this.manifest;
    const empty = new ort.Tensor("float32", new Float32Array(0), [1, h, 0, d]);
    this.past = this.pastNames.map(() => empty);
    this.length = 0;
  }

  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RangeError(`cannot cut a ${this.length}-token KV cache to ${length}`);
    if (length === this.length) return;
    const { num_kv_heads: h, head_dim: d } = this.manifest;
    this.past = this.past.map((t) => {
      const src = t.data as Float32Array;
      const dst = new Float32Array(h * length * d);
      for (let head = 0; head < h; head++) {
        dst.set(src.subarray(head * this.length * d, head * this.length * d + length * d), head * length * d);
      }
      return new ort.Tensor("float32", dst, [1, h, length, d]);
    });
    this.length = length;
  }

  async forward(ids: readonly number[]): Promise<ForwardOutput> {
    const n = ids.length;
    if (n === 0) throw new RangeError("forward() needs at least one token");
    const past = this.length;
    const feeds: Record<string, ort.Tensor> = {
      [this.manifest.inputs.input_ids]: new ort.Tensor("int64", BigInt64Array.from(ids, (x) => BigInt(x)), [1, n]),
      [this.manifest.inputs.attention_mask]: new ort.Tensor("int64", new BigInt64Array(past + n).fill(1n), [1, past + n]),
      [this.manifest.inputs.position_ids]: new ort.Tensor(
        "int64",
        BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)),
        [1, n],
      ),
    };
    this.pastNames.forEach((name, i) => (feeds[name] = this.past[i]!));
    const out = await this.session.run(feeds);
    this.past = this.presentNames.map((name) => out[name]!);
    this.length = past + n;
    const logits = out[this.manifest.outputs.logits]!.data as Float32Array;
    const hidden = out[this.manifest.outputs.hidden_states]!.data as Float32Array;
    const v = this.vocabSize;
    const h = this.hiddenSize;
    return {
      numTokens: n,
      logitsRow: (row) => logits.subarray(row * v, (row + 1) * v),
      hiddenRow: (row) => hidden.subarray(row * h, (row + 1) * h),
    };
  }
}
