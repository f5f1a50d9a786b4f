/**
 * @module nest/token-store
 * The per-request token store built from the retrieved passages (nest-algorithm.md §2.1).
 *
 * Each passage is tokenised on its own (BOS prepended, no prompt context) and run through the LM.
 * The key at sequence position `j` is the exported hidden state at `j`, its value is the token at
 * `j+1`. Keys are kept only where `j+1` is a real passage token (the spec's "better" choice), and
 * the key at the BOS position is dropped: its context holds no passage text and is the same vector
 * for every passage. So passage token `v` (0-based, `v ≥ 1`) is the value of exactly one key.
 */
import type { Passage } from "@nest/shared/protocol/passage";

/** One passage inside the store, with its tokens and their character ranges in `passage.text`. */
export interface StoredPassage {
  readonly passage: Passage;
  /** Token ids of `passage.text` (no BOS). @shape [numTokens] */
  readonly tokens: Int32Array;
  /** UTF-16 start of each token in `passage.text`. @shape [numTokens] */
  readonly charStart: Int32Array;
  /** UTF-16 end (exclusive) of each token in `passage.text`. @shape [numTokens] */
  readonly charEnd: Int32Array;
  /** Store index of the key whose value is token 1 of this passage; token `v` ↔ key `firstKey + v - 1`. */
  readonly firstKey: number;
  /** False when the tokenizer does not round-trip the text exactly: its spans are then not cited. */
  readonly citable: boolean;
}

/** The token store. */
export interface TokenStore {
  readonly hiddenSize: number;
  readonly numKeys: number;
  /** Key vectors, row-major. @shape [numKeys, hiddenSize] float32 */
  readonly keys: Float32Array;
  /** Squared L2 norm of every key, computed in float64. @shape [numKeys] */
  readonly keyNorms: Float64Array;
  /** Value token (the next token) of every key. @shape [numKeys] */
  readonly values: Int32Array;
  /** Index into `passages` of every key. @shape [numKeys] */
  readonly keyPassage: Int32Array;
  /** Position of the value token inside its passage's `tokens`. @shape [numKeys] */
  readonly keyValuePos: Int32Array;
  readonly passages: readonly StoredPassage[];
}

/** An encoded passage: its tokens and the LM hidden states over `[BOS, ...tokens]`. */
export interface EncodedPassage {
  readonly passage: Passage;
  readonly tokens: Int32Array;
  readonly charStart: Int32Array;
  readonly charEnd: Int32Array;
  readonly citable: boolean;
  /** Hidden states at positions `1 .. tokens.length - 1` of `[BOS, ...tokens]`. @shape [tokens.length - 1, hiddenSize] */
  readonly keys: Float32Array;
}

/**
 * Concatenates encoded passages into one store.
 * @throws Error when a passage's key block does not match `[tokens.length - 1, hiddenSize]`.
 */
export function buildTokenStore(encoded: readonly EncodedPassage[], hiddenSize: number): TokenStore {
  let numKeys = 0;
  for (const e of encoded) numKeys += Math.max(0, e.tokens.length - 1);
  const keys = new Float32Array(numKeys * hiddenSize);
  const keyNorms = new Float64Array(numKeys);
  const values = new Int32Array(numKeys);
  const keyPassage = new Int32Array(numKeys);
  const keyValuePos = new Int32Array(numKeys);
  const passages: StoredPassage[] = [];
  let k = 0;
  encoded.forEach((e, p) => {
    const n = Math.max(0, e.tokens.length - 1);
    if (e.keys.length !== n * hiddenSize) {
      throw new Error(`passage ${e.passage.id}: expected ${n}×${hiddenSize} key values, got ${e.keys.length}`);
    }
    keys.set(e.keys, k * hiddenSize);
    passages.push({
      passage: e.passage,
      tokens: e.tokens,
      charStart: e.charStart,
      charEnd: e.charEnd,
      firstKey: k,
      citable: e.citable,
    });
    for (let v = 1; v <= n; v++, k++) {
      values[k] = e.tokens[v]!;
      keyPassage[k] = p;
      keyValuePos[k] = v;
      let s = 0;
      const base = k * hiddenSize;
      for (let d = 0; d < hiddenSize; d++) {
        const x = keys[base + d]!;
        s += x * x;
      }
      keyNorms[k] = s;
    }
  });
  return { hiddenSize, numKeys, keys, keyNorms, values, keyPassage, keyValuePos, passages };
}

/** An empty store (no passages): decoding falls back to the LM (spec §12.6). */
export function emptyTokenStore(hiddenSize: number): TokenStore {
  return buildTokenStore([], hiddenSize);
}

/** Store index of the key whose value is token `valuePos` of passage `p`, or -1 if none. */
export function keyOfToken(store: TokenStore, p: number, valuePos: number): number {
  const sp = store.passages[p];
  if (!sp || valuePos < 1 || valuePos >= sp.tokens.length) return -1;
  return sp.firstKey + valuePos - 1;
}
