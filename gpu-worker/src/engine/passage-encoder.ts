/**
 * @module engine/passage-encoder
 * Builds the token store of a request: each passage tokenised on its own, `[BOS, ...tokens]` run
 * through the LM, hidden states kept as keys (nest-algorithm.md §2.1). Encoded passages are kept in
 * an in-memory LRU keyed by model and passage text, so repeated passages cost no LM encoding.
 */
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { Passage } from "@nest/shared/protocol/passage";
import type { CausalLM } from "../nest/causal-lm.ts";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "../nest/token-store.ts";
import type { ModelTokenizer } from "../runtime/tokenizer.ts";

/** Longest passage encoded, in tokens (longer ones are cut; chunking keeps passages far below). */
export const MAX_PASSAGE_TOKENS = 512;

export class PassageEncoder {
  private readonly cache: LRUCache<string, EncodedPassage>;

  /**
   * @param modelKey identifies the model (its cache key): keys are only valid for the model that made them.
   * @param maxCacheBytes bound of the LRU, in bytes of key vectors.
   */
  constructor(
    private readonly lm: CausalLM,
    private readonly tokenizer: ModelTokenizer,
    private readonly bosTokenId: number | null,
    private readonly modelKey: string,
    maxCacheBytes = 256 * 1024 * 1024,
  ) {
    this.cache = new LRUCache({ maxSize: maxCacheBytes, sizeCalculation: (e) => Math.max(1, e.keys.byteLength) });
  }

  /**
   * Encodes `passages` (cached ones are reused) and builds the store. Leaves the LM's KV cache empty.
   * @returns the store and how many passages needed the LM.
   */
  async buildStore(passages: readonly Passage[], signal?: AbortSignal): Promise<{ store: TokenStore; numEncoded: number }> {
    const encoded: EncodedPassage[] = [];
    let numEncoded = 0;
    for (const passage of passages) {
      signal?.throwIfAborted();
      const key = this.cacheKey(passage);
      let e = this.cache.get(key);
      if (!e) {
        e = await this.encode(passage);
        this.cache.set(key, e);
        numEncoded++;
      }
      encoded.push(e);
    }
    this.lm.reset();
    return { store: buildTokenStore(encoded, this.lm.hiddenSize), numEncoded };
  }

  private cacheKey(p: Passage): string {
    return createHash("sha256").update(this.modelKey).update("\0").update(p.id).update("\0").update(p.text).digest("hex");
  }

  private async encode(passage: Passage): Promise<EncodedPassage> {
    const t = this.tokenizer.tokenizeWithOffsets(passage.text);
    const n = Math.min(t.ids.length, MAX_PASSAGE_TOKENS);
    const tokens = t.ids.slice(0, n);
    const h = this.lm.hiddenSize;
    const keys = new Float32Array(Math.max(0, n - 1) * h);
    if (n >= 2) {
      const bos = this.bosTokenId === null ? [] : [this.bosTokenId];
      this.lm.reset();
      const out = await this.lm.forward([...bos, ...tokens]);
      // Sequence row of passage token v is v + bos.length; the key whose value is token v sits one row before it.
      for (let v = 1; v < n; v++) keys.set(out.hiddenRow(v - 1 + bos.length), (v - 1) * h);
    }
    return {
      passage,
      tokens,
      charStart: t.charStart.slice(0, n),
      charEnd: t.charEnd.slice(0, n),
      citable: t.roundTrips,
      keys,
    };
  }
}
