/** Small hand-made token stores for the algorithm's unit tests. */
import type { Passage } from "@nest/shared/protocol/passage";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "../../../../gpu-worker/src/nest/token-store.ts";

/**
 * A passage whose text is one character per token (token id = char code), with the given key
 * vectors (one per token after the first).
 */
export function charPassage(id: string, text: string, keys: number[][]): EncodedPassage {
  const passage: Passage = { id, title: `Title ${id}`, text, source: `test/${id}` };
  const n = text.length;
  return {
    passage,
    tokens: Int32Array.from(text, (c) => c.charCodeAt(0)),
    charStart: Int32Array.from({ length: n }, (_, i) => i),
    charEnd: Int32Array.from({ length: n }, (_, i) => i + 1),
    citable: true,
    keys: Float32Array.from(keys.flat()),
  };
}

/** Store from passages with 2-d keys. */
export function store2d(...passages: EncodedPassage[]): TokenStore {
  return buildTokenStore(passages, 2);
}

/** Decodes char-code token ids. */
export const charDecode = (ids: readonly number[]) => String.fromCharCode(...ids);
