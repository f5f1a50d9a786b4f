/**
 * @module nest/causal-lm
 * What the decoding loop needs from a language model: incremental forward passes over a KV cache
 * that can be cut back. Implemented over onnxruntime in `runtime/decoder-session.ts`.
 */

/** Output of one forward pass over `n` new tokens. */
export interface ForwardOutput {
  readonly numTokens: number;
  /**
   * LM logits after new token `row` (0-based). Only the last `numLogits` rows of the pass exist.
   * @shape [vocab]
   * @throws RangeError for a row whose logits were not computed.
   */
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
  /**
   * Feeds `ids` after the cached prefix and appends them to the KV cache.
   * @param numLogits logits are needed for the last `numLogits` positions only (default: all);
   *   0 for passage encoding, 1 for a prefill, m for an m-token draft.
   */
  forward(ids: readonly number[], numLogits?: number): Promise<ForwardOutput>;
  /**
   * Keeps only the first `length` cached positions.
   * @throws RangeError when `length` exceeds the cache length or is negative.
   */
  truncate(length: number): void;
  /** Empties the KV cache. */
  reset(): void;
}
