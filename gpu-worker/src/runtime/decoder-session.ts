/**
 * @module runtime/decoder-session
 * The ONNX decoder with its KV cache, over onnxruntime-node. Two graph layouts, named by the
 * manifest's precision entry (`io`):
 * - `traced` (export.py): names from the manifest (optimum / transformers.js names plus the kNN
 *   hidden-state output and `num_logits_to_keep`); the KV cache is append-only and sequence-major,
 *   each pass returns its new positions and the session appends them.
 * - `gqa` (fuse.py): GroupQueryAttention's BNSH cache `[kvHeads, capacity, headDim]`, fed whole as
 *   the past (`seqlens_k` / `total_sequence_length` say how many positions are valid); each pass
 *   returns its new rotated keys and values (`new_key_{i}` / `new_value_{i}`) and the session
 *   appends them. The graph's `present_*` outputs are not fetched: onnxruntime-node copies every
 *   fetched output into a fresh buffer, which for the presents is the whole cache per pass.
 */
import * as ort from "onnxruntime-node";
import { join } from "node:path";
import { NestError } from "@nest/shared/protocol/errors";
import type { CausalLM, ForwardOutput } from "../nest/causal-lm.ts";
import { layerName, type Manifest } from "./manifest.ts";
import { defaultPrecision, intraOpConfig, runtimeOptions, type ResolvedRuntimeOptions, type RuntimeOptions } from "./session-options.ts";

/** Session options: precision, execution provider, threads...; unset fields come from the environment. */
export type SessionOptions = Partial<RuntimeOptions>;

/** Bytes moved across the JS ↔ onnxruntime boundary, for the bench. */
export interface CopyStats {
  /** Bytes of new key/values returned by the session and appended to the cache buffers. */
  kvOutBytes: number;
  /** Bytes of logits and hidden states returned. */
  outputBytes: number;
  /** Bytes copied when a cache buffer had to grow (doubling: amortised O(1) per token). */
  growBytes: number;
  passes: number;
}

/** Positions the cache buffers hold before their first growth. */
const INITIAL_CAPACITY = 256;

/** Fixed I/O names of the `gqa` graphs (infra/export-onnx/fuse.py). */
const GQA = {
  pastKey: (i: number) => `past_key_${i}`,
  pastValue: (i: number) => `past_value_${i}`,
  newKey: (i: number) => `new_key_${i}`,
  newValue: (i: number) => `new_value_${i}`,
  inputs: ["input_ids", "position_ids", "seqlens_k", "total_sequence_length", "num_logits_to_keep"],
  outputs: ["logits", "hidden_states"],
} as const;

/**
 * A causal LM over an ONNX decoder. The KV cache is one growing float32 buffer per layer for keys
 * and one for values. Traced graphs: laid out `[position, kvHeads, headDim]`, the first
 * `cacheLength` positions are fed as `past_key_values.*` without a copy and each pass appends the
 * `present.*` outputs (the new positions only). `gqa` graphs: laid out `[kvHeads, capacity, headDim]`
 * (BNSH, batch 1), fed whole and appended to from `new_key_*` / `new_value_*`. Either way
 * `truncate` just lowers the length (a later pass overwrites the positions beyond it). Not safe for
 * concurrent use: one request at a time.
 */
export class DecoderSession implements CausalLM {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /**
   * One buffer per past input (key, value for each layer).
   * @shape [capacity, kvHeads, headDim] (traced) or [kvHeads, capacity, headDim] (gqa)
   */
  private buffers: Float32Array[] = [];
  /** gqa graphs: the buffers wrapped as `[1, kvHeads, capacity, headDim]` tensors, fed as the past. */
  private bufferTensors: ort.Tensor[] = [];
  /** Whether the graph is a fused `gqa` graph (manifest `precisions.<p>.io`). */
  readonly gqa: boolean;
  /** gqa graphs: the outputs each pass fetches (logits, hidden states, new keys/values), built once. */
  private readonly gqaFetches: readonly string[];
  private capacity = 0;
  private length = 0;
  /** Floats per cached position and buffer: kvHeads × headDim. */
  private readonly rowFloats: number;
  private readonly pastNames: string[] = [];
  private readonly presentNames: string[] = [];
  /** Running totals since load (see {@link CopyStats}). */
  readonly copies: CopyStats = { kvOutBytes: 0, outputBytes: 0, growBytes: 0, passes: 0 };
  /** The options this session runs with. */
  readonly options: ResolvedRuntimeOptions;

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly manifest: Manifest,
    options: ResolvedRuntimeOptions,
    gqa: boolean,
  ) {
    this.options = options;
    this.gqa = gqa;
    this.vocabSize = manifest.vocab_size;
    this.hiddenSize = manifest.hidden_size;
    this.rowFloats = manifest.num_kv_heads * manifest.head_dim;
    for (let i = 0; i < manifest.num_layers; i++) {
      if (gqa) {
        this.pastNames.push(GQA.pastKey(i), GQA.pastValue(i));
        this.presentNames.push(GQA.newKey(i), GQA.newValue(i));
      } else {
        this.pastNames.push(layerName(manifest.inputs.past_key, i), layerName(manifest.inputs.past_value, i));
        this.presentNames.push(layerName(manifest.outputs.present_key, i), layerName(manifest.outputs.present_value, i));
      }
    }
    const { inputs, outputs } = manifest;
    const wantIn = gqa
      ? [...GQA.inputs, ...this.pastNames]
      : [inputs.input_ids, inputs.attention_mask, inputs.position_ids, inputs.num_logits_to_keep, ...this.pastNames];
    const wantOut = gqa ? [...GQA.outputs, ...this.presentNames] : [outputs.logits, outputs.hidden_states, ...this.presentNames];
    this.gqaFetches = gqa ? wantOut : [];
    const missingIn = wantIn.filter((n) => !session.inputNames.includes(n));
    const missingOut = wantOut.filter((n) => !session.outputNames.includes(n));
    if (missingIn.length + missingOut.length > 0) {
      throw new Error(
        `ONNX graph does not match its manifest: missing inputs [${missingIn.join(", ")}], outputs [${missingOut.join(", ")}]`,
      );
    }
    this.buffers = this.pastNames.map(() => new Float32Array(INITIAL_CAPACITY * this.rowFloats));
    this.capacity = INITIAL_CAPACITY;
    this.wrapBuffers();
  }

  /** gqa graphs: (re)wraps the buffers as the `[1, kvHeads, capacity, headDim]` tensors bound to the graph. */
  private wrapBuffers(): void {
    if (!this.gqa) return;
    const dims = [1, this.manifest.num_kv_heads, this.capacity, this.manifest.head_dim];
    this.bufferTensors = this.buffers.map((b) => new ort.Tensor("float32", b, dims));
  }

  /**
   * Loads the decoder named in the manifest, in the requested precision (unset: `defaultPrecision`,
   * fused-fp32 on the CPU when prepared), on the requested execution provider.
   * @throws NestError `model_not_prepared` when the precision was not prepared or the CUDA provider
   *   libraries are missing; `invalid_request` for a bad NEST_* setting or a `fused-*` precision on
   *   a non-CPU execution provider; Error when the ONNX file cannot be loaded or does not match the
   *   manifest.
   */
  static async load(modelDir: string, manifest: Manifest, opts: SessionOptions = {}): Promise<DecoderSession> {
    const asked = runtimeOptions(opts);
    const options: ResolvedRuntimeOptions = {
      ...asked,
      precision: asked.precision ?? defaultPrecision(asked.executionProvider, (p) => manifest.precisions?.[p] !== undefined),
    };
    const variant = options.precision === "fp32" ? undefined : manifest.precisions?.[options.precision];
    const file = options.precision === "fp32" ? manifest.onnx : variant?.onnx;
    if (!file) {
      throw new NestError(
        "model_not_prepared",
        `precision ${options.precision} is not prepared in ${modelDir}: run \`nestlm setup --precision ${options.precision}\``,
      );
    }
    const gqa = variant?.io === "gqa";
    if (gqa && options.executionProvider !== "cpu") {
      // onnxruntime's CUDA GroupQueryAttention takes float16/bfloat16 only; these graphs are float32.
      throw new NestError(
        "invalid_request",
        `NEST_PRECISION=${options.precision} with NEST_EXECUTION_PROVIDER=${options.executionProvider}: the fused float32 ` +
          "GroupQueryAttention graph runs on the CPU execution provider only (docs/cuda.md)",
      );
    }
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(join(modelDir, file), {
        executionProviders: options.executionProvider === "cuda" ? [{ name: "cuda", deviceId: 0 }] : ["cpu"],
        graphOptimizationLevel: options.graphOptimizationLevel,
        intraOpNumThreads: options.threads,
        enableCpuMemArena: options.enableCpuMemArena,
        // Session config entries (onnxruntime_session_options_config_keys.h), flattened by the binding.
        extra: { session: { intra_op: intraOpConfig(options) } },
      });
    } catch (err) {
      if (options.executionProvider === "cuda") {
        throw new NestError(
          "model_not_prepared",
          `the CUDA execution provider could not start (${(err as Error).message}); install onnxruntime-node's CUDA 12 ` +
            "provider libraries (docs/cuda.md) or set NEST_EXECUTION_PROVIDER=cpu",
          { cause: err },
        );
      }
      throw err;
    }
    return new DecoderSession(session, manifest, options, gqa);
  }

  /** Frees the onnxruntime session. */
  async release(): Promise<void> {
    await this.session.release();
  }

  get cacheLength(): number {
    return this.length;
  }

  /**
   * Empties the cache for the next sequence; buffers grown past their first capacity are given
   * back, so one long request leaves neither its memory nor (gqa graphs, which are fed the whole
   * buffer) a slower pass to the requests after it.
   */
  reset(): void {
    this.length = 0;
    if (this.capacity > INITIAL_CAPACITY) {
      this.buffers = this.buffers.map(() => new Float32Array(INITIAL_CAPACITY * this.rowFloats));
      this.capacity = INITIAL_CAPACITY;
      this.wrapBuffers();
    }
  }

  truncate(length: number): void {
    if (length < 0 || length > this.length) throw new RangeError(`cannot cut a ${this.length}-token KV cache to ${length}`);
    this.length = length;
  }

  /** Makes room for `needed` positions (doubling), keeping the cached ones. */
  private reserve(needed: number): void {
    if (needed <= this.capacity) return;
    let capacity = this.capacity;
    while (capacity < needed) capacity *= 2;
    const { num_kv_heads: kvHeads, head_dim: headDim } = this.manifest;
    this.buffers = this.buffers.map((b) => {
      const grown = new Float32Array(capacity * this.rowFloats);
      if (this.gqa) {
        // [kvHeads, capacity, headDim]: each head's rows move to its new, longer stripe
        for (let h = 0; h < kvHeads; h++) {
          grown.set(b.subarray(h * this.capacity * headDim, (h * this.capacity + this.length) * headDim), h * capacity * headDim);
        }
      } else {
        grown.set(b.subarray(0, this.length * this.rowFloats));
      }
      this.copies.growBytes += this.length * this.rowFloats * 4;
      return grown;
    });
    this.capacity = capacity;
    this.wrapBuffers();
  }

  /**
   * Hidden states of independent sequences in one forward pass, without the KV cache (which this
   * pass neither reads nor changes): passage encoding (nest-algorithm.md §2.1). The sequences are
   * right-padded to the longest one with attention mask 0; each row's positions are `0..len-1`. The
   * attention is causal, so a real position never attends to the padding after it and its hidden
   * state is the one a batch of one gives (up to summation order; measured identical on SmolLM2).
   * No logits are computed (`num_logits_to_keep` = 0).
   * @returns one view per sequence over the pass's output. @shape [seqs[i].length, hidden] float32
   * @throws RangeError when `seqs` is empty or holds an empty sequence.
   */
  async encodeBatch(seqs: readonly (readonly number[])[]): Promise<Float32Array[]> {
    const batch = seqs.length;
    if (batch === 0 || seqs.some((s) => s.length === 0)) throw new RangeError("encodeBatch() needs non-empty sequences");
    const width = Math.max(...seqs.map((s) => s.length));
    const pad = BigInt(this.manifest.pad_token_id ?? 0);
    const ids = new BigInt64Array(batch * width).fill(pad);
    const mask = new BigInt64Array(batch * width);
    const positions = new BigInt64Array(batch * width);
    seqs.forEach((s, b) => {
      for (let j = 0; j < width; j++) {
        if (j < s.length) {
          ids[b * width + j] = BigInt(s[j]!);
          mask[b * width + j] = 1n;
        }
        positions[b * width + j] = BigInt(j);
      }
    });
    const { inputs, num_kv_heads: kvHeads, head_dim: headDim } = this.manifest;
    const empty = new Float32Array(0);
    let feeds: Record<string, ort.Tensor>;
    if (this.gqa) {
      // Every row as `width` long (seqlens_k = width − 1): the padding comes after the real positions,
      // so causal attention keeps it out of their hidden states, as the mask does for traced graphs.
      feeds = {
        input_ids: new ort.Tensor("int64", ids, [batch, width]),
        position_ids: new ort.Tensor("int64", positions, [batch, width]),
        seqlens_k: new ort.Tensor("int32", new Int32Array(batch).fill(width - 1), [batch]),
        total_sequence_length: new ort.Tensor("int32", Int32Array.of(width), []),
        num_logits_to_keep: new ort.Tensor("int64", BigInt64Array.of(0n), []),
      };
      for (const name of this.pastNames) feeds[name] = new ort.Tensor("float32", empty, [batch, kvHeads, 0, headDim]);
    } else {
      feeds = {
        [inputs.input_ids]: new ort.Tensor("int64", ids, [batch, width]),
        [inputs.attention_mask]: new ort.Tensor("int64", mask, [batch, width]),
        [inputs.position_ids]: new ort.Tensor("int64", positions, [batch, width]),
        [inputs.num_logits_to_keep]: new ort.Tensor("int64", BigInt64Array.of(0n), []),
      };
      for (const name of this.pastNames) feeds[name] = new ort.Tensor("float32", empty, [batch, 0, kvHeads, headDim]);
    }
    const hiddenName = this.gqa ? "hidden_states" : this.manifest.outputs.hidden_states;
    const out = await this.session.run(feeds, [hiddenName]);
    const hidden = out[hiddenName]!.data as Float32Array; // [batch, width, hidden]
    this.copies.passes++;
    this.copies.outputBytes += hidden.byteLength;
    const h = this.hiddenSize;
    return seqs.map((s, b) => hidden.subarray(b * width * h, (b * width + s.length) * h));
  }

  async forward(ids: readonly number[], numLogits = ids.length): Promise<ForwardOutput> {
    const n = ids.length;
    if (n === 0) throw new RangeError("forward() needs at least one token");
    if (!Number.isInteger(numLogits) || numLogits < 0 || numLogits > n) {
      throw new RangeError(`numLogits must be an integer in [0, ${n}], got ${numLogits}`);
    }
    if (this.gqa) return this.forwardGqa(ids, numLogits);
    const kept = numLogits;
    const past = this.length;
    const feeds: Record<string, ort.Tensor> = {
      [this.manifest.inputs.input_ids]: new ort.Tensor(
        "int64",
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [1, n],
      ),
      [this.manifest.inputs.attention_mask]: new ort.Tensor("int64", new BigInt64Array(past + n).fill(1n), [1, past + n]),
      [this.manifest.inputs.position_ids]: new ort.Tensor(
        "int64",
        BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)),
        [1, n],
      ),
    };
    feeds[this.manifest.inputs.num_logits_to_keep] = new ort.Tensor("int64", BigInt64Array.of(BigInt(kept)), []);
    const { num_kv_heads: kvHeads, head_dim: headDim } = this.manifest;
    this.pastNames.forEach(
      (name, i) =>
        (feeds[name] = new ort.Tensor("float32", this.buffers[i]!.subarray(0, past * this.rowFloats), [1, past, kvHeads, headDim])),
    );
    const out = await this.session.run(feeds);
    this.reserve(past + n);
    this.presentNames.forEach((name, i) => {
      const fresh = out[name]!.data as Float32Array; // [1, n, kvHeads, headDim]
      this.buffers[i]!.set(fresh, past * this.rowFloats);
      this.copies.kvOutBytes += fresh.byteLength;
    });
    this.length = past + n;
    return this.output(n, kept, out[this.manifest.outputs.logits]!, out[this.manifest.outputs.hidden_states]!);
  }

  /**
   * {@link forward} on a `gqa` graph: the cache buffers are fed whole as the past, of which
   * GroupQueryAttention reads the first `cacheLength` positions (from `seqlens_k`); the pass's new
   * rotated keys and values `[1, n, kvHeads × headDim]` are appended to the buffers (BSNH → BNSH).
   */
  private async forwardGqa(ids: readonly number[], kept: number): Promise<ForwardOutput> {
    const n = ids.length;
    const past = this.length;
    const total = past + n;
    this.reserve(total);
    const feeds: Record<string, ort.Tensor> = {
      input_ids: new ort.Tensor(
        "int64",
        BigInt64Array.from(ids, (x) => BigInt(x)),
        [1, n],
      ),
      position_ids: new ort.Tensor(
        "int64",
        BigInt64Array.from({ length: n }, (_, i) => BigInt(past + i)),
        [1, n],
      ),
      seqlens_k: new ort.Tensor("int32", Int32Array.of(total - 1), [1]),
      total_sequence_length: new ort.Tensor("int32", Int32Array.of(total), []),
      num_logits_to_keep: new ort.Tensor("int64", BigInt64Array.of(BigInt(kept)), []),
    };
    this.bufferTensors.forEach((t, i) => {
      feeds[this.pastNames[i]!] = t;
    });
    const out = await this.session.run(feeds, this.gqaFetches);
    const { num_kv_heads: kvHeads, head_dim: headDim } = this.manifest;
    this.presentNames.forEach((name, i) => {
      const fresh = out[name]!.data as Float32Array; // [1, n, kvHeads * headDim]
      const buffer = this.buffers[i]!;
      for (let t = 0; t < n; t++) {
        for (let h = 0; h < kvHeads; h++) {
          const from = (t * kvHeads + h) * headDim;
          buffer.set(fresh.subarray(from, from + headDim), (h * this.capacity + past + t) * headDim);
        }
      }
      this.copies.kvOutBytes += fresh.byteLength;
    });
    this.length = total;
    return this.output(n, kept, out.logits!, out.hidden_states!);
  }

  /** Wraps a pass's logits `[1, kept, vocab]` and hidden states `[1, n, hidden]` as a {@link ForwardOutput}. */
  private output(n: number, kept: number, logitsTensor: ort.Tensor, hiddenTensor: ort.Tensor): ForwardOutput {
    const logits = logitsTensor.data as Float32Array;
    const hidden = hiddenTensor.data as Float32Array;
    this.copies.passes++;
    this.copies.outputBytes += logits.byteLength + hidden.byteLength;
    const v = this.vocabSize;
    const h = this.hiddenSize;
    const first = n - kept;
    return {
      numTokens: n,
      logitsRow: (row) => {
        if (row < first || row >= n) throw new RangeError(`no logits for row ${row}: only rows ${first}..${n - 1} were computed`);
        return logits.subarray((row - first) * v, (row - first + 1) * v);
      },
      hiddenRow: (row) => hidden.subarray(row * h, (row + 1) * h),
    };
  }
}
