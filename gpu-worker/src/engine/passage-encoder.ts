/**
 * @module engine/passage-encoder
 * Builds the token store of a request: each passage tokenised on its own, `[BOS, ...tokens]` run
 * through the LM, hidden states kept as keys (nest-algorithm.md §2.1). Passages are looked up in
 * three tiers before the LM runs: an in-memory LRU, the request corpus's pre-encoded key store
 * (`corpus-key-store.ts`, written by `nestlm encode --corpus NAME`), then the per-passage disk cache
 * (`key-store.ts`). A request whose passages are all found performs no LM encoding. The passages
 * that remain are encoded in right-padded batches, one forward pass per batch
 * ({@link DecoderSession.encodeBatch}): causal attention makes the padding invisible to real positions.
 */
import { createHash } from "node:crypto";
import { LRUCache } from "lru-cache";
import { z } from "zod";
import { DEFAULT_NODE_ENV, type EncodeEnv } from "@nest/shared/config/node-env";
import type { Passage } from "@nest/shared/protocol/passage";
import type { AnchorPassage } from "../nest/anchor.ts";
import type { CausalLM } from "../nest/causal-lm.ts";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "../nest/token-store.ts";
import type { ModelTokenizer } from "../runtime/tokenizer.ts";
import type { DiskKeyStore } from "./key-store.ts";
import type { CorpusKeyStore } from "./corpus-key-store.ts";

/** Where each passage of a store came from. */
export interface EncodeCounts {
  /** Passages run through the LM. */
  numEncoded: number;
  /** Passages read from the per-passage disk cache. */
  numFromDisk: number;
  /** Passages found in memory. */
  numFromMemory: number;
  /** Passages read from the corpus's pre-encoded key store. */
  numFromCorpus: number;
  /** LM forward passes spent encoding (one per batch). */
  numEncodePasses: number;
}

/** Longest passage encoded, in tokens (longer ones are cut; chunking keeps passages far below). */
export const MAX_PASSAGE_TOKENS = 512;

/** A causal LM that can also encode independent sequences in one batched pass. */
export interface PassageLM extends CausalLM {
  /** Hidden states of each sequence, right-padded into one pass. @shape [seqs[i].length, hidden] each */
  encodeBatch(seqs: readonly (readonly number[])[]): Promise<Float32Array[]>;
}

export const EncodeBatchOptionsSchema = z.object({
  /** Most passages in one forward pass (`NEST_ENCODE_BATCH`); 1 encodes one passage per pass. */
  maxBatchPassages: z.number().int().min(1).max(256).default(8),
  /**
   * Most padded tokens (batch × longest sequence) in one pass (`NEST_ENCODE_BATCH_TOKENS`): bounds the
   * pass's activations (hidden states alone are `[batch, seq, hidden]` float32 per layer).
   */
  maxBatchTokens: z
    .number()
    .int()
    .min(MAX_PASSAGE_TOKENS + 1)
    .max(1 << 20)
    .default(4096),
  /**
   * Most padding in one pass, as a fraction of its real tokens: a batch's padding may reach
   * `max(maxPaddingRatio × real tokens, 64)` tokens. Padding is computed like real tokens on a CPU,
   * so a long passage is not batched with short ones.
   */
  maxPaddingRatio: z.number().min(0).max(100).default(0.25),
});
export type EncodeBatchOptions = z.infer<typeof EncodeBatchOptionsSchema>;

/**
 * Batch options: the environment's `encode` slice (`NEST_ENCODE_BATCH`, `NEST_ENCODE_PADDING`,
 * `NEST_ENCODE_BATCH_TOKENS`), `overrides` on top.
 * @param env the `encode` slice of `nodeEnv(process.env)`; default: the schema's defaults (no
 *   environment is read here)
 * @throws ZodError naming the field when an override is out of range.
 */
export function encodeBatchOptions(
  overrides: Partial<EncodeBatchOptions> = {},
  env: EncodeEnv = DEFAULT_NODE_ENV.encode,
): EncodeBatchOptions {
  const raw: Record<string, unknown> = {
    maxBatchPassages: env.NEST_ENCODE_BATCH,
    maxPaddingRatio: env.NEST_ENCODE_PADDING,
    maxBatchTokens: env.NEST_ENCODE_BATCH_TOKENS,
  };
  for (const [k, v] of Object.entries(overrides)) if (v !== undefined) raw[k] = v;
  return EncodeBatchOptionsSchema.parse(raw);
}

/**
 * Bound of the in-memory key LRU, in bytes: `NEST_KEY_CACHE_MB` MiB of the `encode` slice (0 turns
 * it off; the schema's default 256 MiB when no slice is given).
 */
export function defaultCacheBytes(env: EncodeEnv = DEFAULT_NODE_ENV.encode): number {
  return Math.floor(env.NEST_KEY_CACHE_MB * 1024 * 1024);
}

/** Passages tokenized for encoding: LM input sequences (`[BOS, ...tokens]`) and their entries. */
interface EncodeJob {
  readonly bosLength: number;
  readonly sequences: readonly { readonly n: number; readonly seq: number[] }[];
  readonly entries: EncodedPassage[];
}

/** Optional tiers and batching of a {@link PassageEncoder}. */
export interface PassageEncoderOptions {
  /** The pre-encoded key store of a corpus, or undefined when it has none (called per request). */
  corpusKeys?: (corpus: string) => Promise<CorpusKeyStore | undefined>;
  batch?: Partial<EncodeBatchOptions>;
}

/** Padding every batch may have whatever its size, in tokens (see `maxPaddingRatio`). */
const PADDING_SLACK_TOKENS = 64;

/**
 * Groups sequence lengths into batches: sorted by length, at most `maxBatchPassages` per batch,
 * `maxBatchTokens` padded tokens (count × longest) and `max(maxPaddingRatio × real, 64)` padding tokens.
 * @returns batches of indices into `lengths`, shortest first.
 */
export function planBatches(lengths: readonly number[], opts: EncodeBatchOptions): number[][] {
  const order = lengths.map((_, i) => i).sort((a, b) => lengths[a]! - lengths[b]! || a - b);
  const batches: number[][] = [];
  let current: number[] = [];
  let real = 0;
  for (const i of order) {
    const width = lengths[i]!; // sorted: the newest is the longest
    const padded = (current.length + 1) * width;
    const padding = padded - (real + width);
    const full =
      current.length >= opts.maxBatchPassages ||
      padded > opts.maxBatchTokens ||
      padding > Math.max(opts.maxPaddingRatio * (real + width), PADDING_SLACK_TOKENS);
    if (current.length > 0 && full) {
      batches.push(current);
      current = [];
      real = 0;
    }
    current.push(i);
    real += width;
  }
  if (current.length > 0) batches.push(current);
  return batches;
}

export class PassageEncoder {
  private readonly cache: LRUCache<string, EncodedPassage>;
  private readonly batch: EncodeBatchOptions;

  /**
   * @param modelKey identifies the model (its cache key): keys are only valid for the model that made them.
   * @param maxCacheBytes bound of the LRU, in bytes of key vectors.
   */
  constructor(
    private readonly lm: PassageLM,
    private readonly tokenizer: ModelTokenizer,
    private readonly bosTokenId: number | null,
    readonly modelKey: string,
    maxCacheBytes = defaultCacheBytes(),
    private readonly disk?: DiskKeyStore,
    private readonly options: PassageEncoderOptions = {},
  ) {
    // maxCacheBytes 0 keeps nothing in memory: lru-cache refuses entries bigger than maxSize.
    this.cache = new LRUCache({ maxSize: Math.max(1, maxCacheBytes), sizeCalculation: (e) => Math.max(2, e.keys.byteLength) });
    this.batch = encodeBatchOptions(options.batch);
  }

  /**
   * Builds the store of `passages` (in their order), reading each from the caches when it can and
   * encoding the rest in batches. Leaves the LM's KV cache empty.
   * @param corpus the corpus the passages were retrieved from (its pre-encoded keys are used when present).
   * @returns the store and where its passages came from.
   * @throws the signal's reason when aborted; whatever the LM throws.
   */
  async buildStore(passages: readonly Passage[], signal?: AbortSignal, corpus?: string): Promise<{ store: TokenStore } & EncodeCounts> {
    return (await this.openStore(passages, signal, corpus)).complete;
  }

  /**
   * Like {@link buildStore}, in two stages: `text` is the store's layout (passages, token ids,
   * offsets, key indices: everything but the keys) as soon as the caches have been read and the
   * missing passages tokenized; `complete` resolves once the LM has encoded those (at once when
   * every passage was cached, and then `text` is the complete store). The LM is busy until
   * `complete` settles: run nothing else on it before.
   * @throws (`complete`) the signal's reason when aborted; whatever the LM throws.
   */
  async openStore(
    passages: readonly Passage[],
    signal?: AbortSignal,
    corpus?: string,
  ): Promise<{ text: TokenStore; complete: Promise<{ store: TokenStore } & EncodeCounts> }> {
    const counts: EncodeCounts = { numEncoded: 0, numFromDisk: 0, numFromMemory: 0, numFromCorpus: 0, numEncodePasses: 0 };
    const corpusKeys = corpus === undefined ? undefined : await this.options.corpusKeys?.(corpus);
    const found = new Map<string, EncodedPassage>();
    let missing = new Map<string, Passage>();
    for (const passage of passages) {
      const key = this.cacheKey(passage);
      if (found.has(key) || missing.has(key)) continue;
      const hit = this.cache.get(key);
      if (hit) {
        counts.numFromMemory++;
        found.set(key, hit);
      } else missing.set(key, passage);
    }
    signal?.throwIfAborted();
    if (corpusKeys && missing.size > 0) {
      const stored = await corpusKeys.getMany([...missing.values()]);
      const rest = new Map<string, Passage>();
      [...missing].forEach(([key, passage], i) => {
        const entry = stored[i];
        if (!entry) return void rest.set(key, passage);
        counts.numFromCorpus++;
        this.cache.set(key, entry);
        found.set(key, entry);
      });
      missing = rest;
    }
    if (this.disk) {
      for (const [key, passage] of [...missing]) {
        signal?.throwIfAborted();
        const entry = await this.disk.get(key, passage);
        if (!entry) continue;
        counts.numFromDisk++;
        this.cache.set(key, entry);
        found.set(key, entry);
        missing.delete(key);
      }
    }
    const storeOf = () =>
      buildTokenStore(
        passages.map((p) => found.get(this.cacheKey(p))!),
        this.lm.hiddenSize,
      );
    if (missing.size === 0) {
      this.lm.reset();
      const store = storeOf();
      return { text: store, complete: Promise.resolve({ store, ...counts }) };
    }
    // The missing passages' entries exist (keys zero) once tokenized: the layout is final.
    const keys = [...missing.keys()];
    const job = this.tokenizeForEncoding([...missing.values()]);
    job.entries.forEach((entry, i) => found.set(keys[i]!, entry));
    const text = storeOf();
    const complete = (async () => {
      counts.numEncodePasses += await this.runEncoding(job, signal);
      counts.numEncoded += job.entries.length;
      for (const [i, entry] of job.entries.entries()) {
        this.cache.set(keys[i]!, entry);
        await this.disk?.put(keys[i]!, entry);
      }
      this.lm.reset();
      return { store: storeOf(), ...counts };
    })();
    return { text, complete };
  }

  /**
   * The tokens of `passage` without its keys (the memory-LRU entry when present, else tokenized as
   * for encoding, so token positions equal the store's): what the anchor places its sentences on
   * when it ranks all b first-stage passages before the store is chosen. Runs no LM.
   */
  layoutOf(passage: Passage): AnchorPassage {
    // peek: ranking all b passages must not refresh the LRU recency of those never stored.
    const hit = this.cache.peek(this.cacheKey(passage));
    if (hit) return hit;
    const t = this.tokenizer.tokenizeWithOffsets(passage.text);
    const n = Math.min(t.ids.length, MAX_PASSAGE_TOKENS);
    return { passage, tokens: t.ids.slice(0, n), charStart: t.charStart.slice(0, n), charEnd: t.charEnd.slice(0, n) };
  }

  /**
   * Makes sure `passage` is encoded and on disk (per-passage cache).
   * @returns true when the LM had to encode it.
   */
  async warm(passage: Passage): Promise<boolean> {
    return (await this.buildStore([passage])).numEncoded > 0;
  }

  /**
   * Encodes `passages` with the LM, bypassing every cache (for `nestlm encode --corpus` and the tests).
   * @param maxBatchPassages overrides the encoder's batch size for this call.
   * @returns one entry per passage, in order.
   */
  async encode(passages: readonly Passage[], signal?: AbortSignal, maxBatchPassages?: number): Promise<EncodedPassage[]> {
    const batch = maxBatchPassages === undefined ? this.batch : encodeBatchOptions({ ...this.batch, maxBatchPassages });
    return (await this.encodeWithPasses(passages, signal, batch)).entries;
  }

  private async encodeWithPasses(
    passages: readonly Passage[],
    signal?: AbortSignal,
    batch: EncodeBatchOptions = this.batch,
  ): Promise<{ entries: EncodedPassage[]; numPasses: number }> {
    const job = this.tokenizeForEncoding(passages);
    const numPasses = await this.runEncoding(job, signal, batch);
    return { entries: job.entries, numPasses };
  }

  /** Tokenizes passages for encoding: one entry each, its keys zero until {@link runEncoding}. */
  private tokenizeForEncoding(passages: readonly Passage[]): EncodeJob {
    const bos = this.bosTokenId === null ? [] : [this.bosTokenId];
    const h = this.lm.hiddenSize;
    const tokenized = passages.map((passage) => {
      const t = this.tokenizer.tokenizeWithOffsets(passage.text);
      const n = Math.min(t.ids.length, MAX_PASSAGE_TOKENS);
      return { n, seq: [...bos, ...t.ids.subarray(0, n)], t };
    });
    const entries: EncodedPassage[] = tokenized.map(({ t, n }, i) => ({
      passage: passages[i]!,
      tokens: t.ids.slice(0, n),
      charStart: t.charStart.slice(0, n),
      charEnd: t.charEnd.slice(0, n),
      citable: t.roundTrips,
      keys: new Float32Array(Math.max(0, n - 1) * h),
    }));
    return { bosLength: bos.length, sequences: tokenized.map(({ n, seq }) => ({ n, seq })), entries };
  }

  /**
   * Runs the LM over a job's sequences in right-padded batches and writes each entry's keys.
   * @returns the LM passes spent (one per batch).
   */
  private async runEncoding(job: EncodeJob, signal?: AbortSignal, batch: EncodeBatchOptions = this.batch): Promise<number> {
    const h = this.lm.hiddenSize;
    const { sequences, entries, bosLength } = job;
    // Passages of fewer than 2 tokens have no keys: nothing to run.
    const runnable = sequences.map((x, i) => (x.n >= 2 ? i : -1)).filter((i) => i >= 0);
    const plan = planBatches(
      runnable.map((i) => sequences[i]!.seq.length),
      batch,
    );
    for (const group of plan) {
      signal?.throwIfAborted();
      const members = group.map((g) => runnable[g]!);
      const hidden = await this.lm.encodeBatch(members.map((i) => sequences[i]!.seq));
      members.forEach((i, b) => {
        // Sequence row of passage token v is v + bos.length; the key whose value is token v sits
        // one row before it, so keys are rows bos.length .. bos.length + n - 2.
        const { n } = sequences[i]!;
        entries[i]!.keys.set(hidden[b]!.subarray(bosLength * h, (bosLength + n - 1) * h));
      });
    }
    return plan.length;
  }

  private cacheKey(p: Passage): string {
    return createHash("sha256").update(this.modelKey).update("\0").update(p.id).update("\0").update(p.text).digest("hex");
  }
}
