/**
 * @module engine/passage-encoder
 * Builds the token store of a request: each passage tokenised on its own, `[BOS, ...tokens]` run
 * through the LM, hidden states kept as keys (nest-algorithm.md §2.1). Encoded passages are cached
 * by model key + passage id + text in two tiers: an in-memory LRU, then (optionally) files on disk
 * shared by processes and restarts (`key-store.ts`, filled ahead of time by `nestlm encode`). A
 * request whose passages are all cached performs no LM encoding.
 */
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import type { Passage } from "@nest/shared/protocol/passage";
import type { CausalLM } from "../nest/causal-lm.ts";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "../nest/token-store.ts";
import type { ModelTokenizer } from "../runtime/tokenizer.ts";
import type { DiskKeyStore } from "./key-store.ts";

/** Where each passage of a store came from. */
export interface EncodeCounts {
  /** Passages run through the LM. */
  numEncoded: number;
  /** Passages read from the disk cache. */
  numFromDisk: number;
  /** Passages found in memory. */
  numFromMemory: number;
}

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
    private readonly disk?: DiskKeyStore,
  ) {
    this.cache = new LRUCache({ maxSize: maxCacheBytes, sizeCalculation: (e) => Math.max(1, e.keys.byteLength) });
  }

  /**
   * Encodes `passages` (cached ones are reused) and builds the store. Leaves the LM's KV cache empty.
   * @returns the store and where its passages came from.
   */
  async buildStore(passages: readonly Passage[], signal?: AbortSignal): Promise<{ store: TokenStore } & EncodeCounts> {
    const encoded: EncodedPassage[] = [];
    const counts: EncodeCounts = { numEncoded: 0, numFromDisk: 0, numFromMemory: 0 };
    for (const passage of passages) {
      signal?.throwIfAborted();
      const { entry, from } = await this.lookup(passage);
      counts[from === "lm" ? "numEncoded" : from === "disk" ? "numFromDisk" : "numFromMemory"]++;
      encoded.push(entry);
    }
    this.lm.reset();
    return { store: buildTokenStore(encoded, this.lm.hiddenSize), ...counts };
  }

  /**
   * Makes sure `passage` is encoded and on disk (for `nestlm encode`).
   * @returns true when the LM had to encode it.
   */
  async warm(passage: Passage): Promise<boolean> {
    return (await this.lookup(passage)).from === "lm";
  }

  private async lookup(passage: Passage): Promise<{ entry: EncodedPassage; from: "memory" | "disk" | "lm" }> {
    const key = this.cacheKey(passage);
    const cached = this.cache.get(key);
    if (cached) return { entry: cached, from: "memory" };
    const stored = await this.disk?.get(key, passage);
    if (stored) {
      this.cache.set(key, stored);
      return { entry: stored, from: "disk" };
    }
    const entry = await this.encode(passage);
    this.cache.set(key, entry);
    await this.disk?.put(key, entry);
    return { entry, from: "lm" };
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
      const out = await this.lm.forward([...bos, ...tokens], 0); // keys only: no logits
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
