/**
 * @module nest/causal-lm
 * What the decoding loop needs from a language model: incremental forward passes over a KV cache
 * that can be cut back. Implemented over onnxruntime in `runtime/decoder-session.ts`.
 */

/** Output of one forward pass over `n` new tokens. */
export interface ForwardOutput {
  readonly numTokens: number;
  /** LM logits after new token `row` (0-based). @shape [vocab] */
  logitsRow(row: number): Float32Array;
  /** Hidden state used for kNN keys/queries after new token `row`. @shape [hidden] */
  hiddenRow(row: number): Float32Array;
}

/** A causal LM with a KV cache. */
export interface CausalLM {
  readonly vocabSize: number;
  readonly hiddenSize: number;
  /** Tokens currently held in the KV cache. */
  readonly cacheLength: number;
  /** Feeds `ids` after the cached prefix and appends them to the KV cache. */
  forward(ids: readonly number[]): Promise<ForwardOutput>;
  /**
   * Keeps only the first `length` cached positions.
   * @throws RangeError when `length` exceeds the cache length or is negative.
   */
  truncate(length: number): void;
  /** Empties the KV cache. */
  reset(): void;
}
