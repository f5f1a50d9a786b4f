/**
 * @module engine/engine
 * Runs one decode job end to end inside the inference thread: prompt → token store → NEST decoding
 * → `delta` events with citations → one `done` event with usage and timings.
 */
import type { DoneEvent, DeltaEvent } from "@nest/shared/protocol/events";
import { resolveGamma, retrievalQuery, usesTokenStore, type GenerateRequest } from "@nest/shared/protocol/request";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import { ANCHOR_CANDIDATES, type AnchorCandidate, rankAnchorsOver } from "../nest/anchor.ts";
import { DeltaBuilder } from "../nest/attribution.ts";
import { decodeNest, type DecodeOptions, type StoreUse } from "../nest/decode-loop.ts";
import { DecodeStats } from "../nest/stats.ts";
import { scoreContinuation } from "../nest/score.ts";
import { emptyTokenStore, type TokenStore } from "../nest/token-store.ts";
import { DecoderSession, type SessionOptions } from "../runtime/decoder-session.ts";
import { readManifest, type Manifest } from "../runtime/manifest.ts";
import { ModelTokenizer } from "../runtime/tokenizer.ts";
import { NestError } from "@nest/shared/protocol/errors";
import { buildMessages } from "./prompt.ts";
import { DiskKeyStore } from "./key-store.ts";
import { corpusKeyResolver } from "./corpus-key-store.ts";
import { join } from "node:path";
import { cachePaths } from "@nest/corpus/home";
import { DEFAULT_NODE_ENV, type NodeEnv } from "@nest/shared/config/node-env";
import { runtimeOptions, weightsName } from "../runtime/session-options.ts";
import type { Passage } from "@nest/shared/protocol/passage";

/** The environment an {@link Engine} reads: the decoder session's and the passage encoder's slices. */
export type EngineEnv = Pick<NodeEnv, "runtime" | "encode">;

/** Engine options: the session's, plus the disk tier of the passage-key cache. */
export interface EngineOptions extends SessionOptions {
  /** Keep encoded passages on disk under `$NEST_HOME/keys/` (default: on unless NEST_KEY_CACHE=0). */
  diskKeyCache?: boolean;
  /** Use corpora pre-encoded by `nestlm encode --corpus` (default: on unless NEST_CORPUS_KEYS=0). */
  corpusKeys?: boolean;
  /** Cache folder (default NEST_HOME). */
  home?: string;
}

/**
 * Longest prompt accepted, in tokens, after the chat template (and the `rag` background) is applied.
 * The prefill's memory grows with the prompt (logits alone are `[promptTokens, vocab]` float32:
 * 0.4 GB at 2,048 tokens), so the bound protects the worker.
 */
export const MAX_PROMPT_TOKENS = 2048;
import { PassageEncoder, defaultCacheBytes, encodeBatchOptions } from "./passage-encoder.ts";

/** Receives the events of one job. */
export interface JobSink {
  delta(event: DeltaEvent): void;
  done(event: DoneEvent): void;
}

/** The model, tokenizer and passage encoder of one inference thread. */
export class Engine {
  private constructor(
    readonly manifest: Manifest,
    private readonly lm: DecoderSession,
    private readonly tokenizer: ModelTokenizer,
    private readonly encoder: PassageEncoder,
  ) {}

  /**
   * Loads the prepared model in `modelDir`.
   * @param opts explicit options; they win over `env`
   * @param env the `runtime` (decoder session) and `encode` (batching, key caches) slices of
   *   `nodeEnv(process.env)`, parsed by the caller's entry point; default: the schema's defaults
   * @throws NestError `model_not_prepared` without a manifest; Error when the model cannot be loaded.
   */
  static async load(modelDir: string, opts: EngineOptions = {}, env: EngineEnv = DEFAULT_NODE_ENV): Promise<Engine> {
    const manifest = await readManifest(modelDir);
    const session = runtimeOptions(opts, env.runtime);
    const [lm, tokenizer] = await Promise.all([DecoderSession.load(modelDir, manifest, session), ModelTokenizer.load(modelDir, manifest)]);
    // Keys depend on the weights: the export's key and the weights' precision name the model (fp32
    // and fused-fp32 share their caches and encoded corpora, `weightsName`).
    const modelKey = `${manifest.source.key.slice(0, 12)}-${weightsName(lm.options.precision)}-${tokenizer.cacheTag}`;
    const diskCache = opts.diskKeyCache ?? env.encode.NEST_KEY_CACHE;
    const keysDir = join(cachePaths(opts.home).home, "keys", modelKey);
    const disk = diskCache ? new DiskKeyStore(keysDir, manifest.hidden_size) : undefined;
    const useCorpusKeys = opts.corpusKeys ?? env.encode.NEST_CORPUS_KEYS;
    const corpusKeys = useCorpusKeys ? corpusKeyResolver(keysDir, { modelKey, hiddenSize: manifest.hidden_size }) : undefined;
    const batch = encodeBatchOptions({}, env.encode);
    const encoder = new PassageEncoder(lm, tokenizer, manifest.bos_token_id, modelKey, defaultCacheBytes(env.encode), disk, {
      corpusKeys,
      batch,
    });
    return new Engine(manifest, lm, tokenizer, encoder);
  }

  /**
   * Teacher-forced NLL (nats) of `continuation` after the job's prompt, under p_M for the store
   * modes and p_LM otherwise (`nest/score.ts`; spec §11 perplexity).
   * @throws NestError `invalid_request` when the prompt is over the token budget.
   */
  async score(job: DecodeJob, continuation: string): Promise<{ nll: number; tokens: number }> {
    const targetIds = this.tokenizer.encode(continuation);
    // Teacher-forced: no anchor, so the store is the first store_passages only.
    const { promptIds, store } = await this.prepare(job, targetIds.length, undefined, false);
    return scoreContinuation(this.lm, promptIds, targetIds, store, decodeOptions(job.request, this.manifest));
  }

  /**
   * The prompt of a job (chat template, `rag` background) and its token store (passages encoded,
   * or read from the key caches).
   * @param extraTokens tokens that will follow the prompt in the same pass (a scored continuation).
   * @throws NestError `invalid_request` when the prompt (plus `extraTokens`) is over the token budget.
   */
  private async prepare(
    job: DecodeJob,
    extraTokens = 0,
    signal?: AbortSignal,
    anchored = true,
  ): Promise<{ promptIds: number[]; store: TokenStore; numEncoded: number }> {
    const { promptIds, complete } = await this.open(job, extraTokens, signal, anchored);
    const { store, numEncoded } = await complete;
    return { promptIds, store, numEncoded };
  }

  /**
   * {@link prepare} in two stages: the store's text layout as soon as the caches are read, and
   * the complete store once the LM has encoded what they lacked (`PassageEncoder.openStore`).
   * @param anchored false when the request is not decoded (scoring): the anchor's passages are not added.
   * @throws NestError `invalid_request` when the prompt (plus `extraTokens`) is over the token budget.
   */
  private async open(
    job: DecodeJob,
    extraTokens = 0,
    signal?: AbortSignal,
    anchored = true,
  ): Promise<{
    promptIds: number[];
    text: TokenStore;
    complete: Promise<{ store: TokenStore; numEncoded: number }>;
    anchorCandidates?: readonly AnchorCandidate[];
  }> {
    const req = job.request;
    const passages = job.passages.slice(0, req.passages);
    const promptIds = this.tokenizer.encodeChat(buildMessages(req, passages));
    if (promptIds.length + extraTokens > MAX_PROMPT_TOKENS) {
      throw new NestError(
        "invalid_request",
        `the prompt is ${promptIds.length + extraTokens} tokens after the chat template; at most ${MAX_PROMPT_TOKENS} are accepted`,
      );
    }
    if (!usesTokenStore(req.mode)) {
      const store = emptyTokenStore(this.manifest.hidden_size);
      return { promptIds, text: store, complete: Promise.resolve({ store, numEncoded: 0 }) };
    }
    // The store holds each passage (id and text) once, however often the first stage listed it.
    const seen = new Set<string>();
    const distinct = passages.filter((p) => !seen.has(`${p.id}\0${p.text}`) && seen.add(`${p.id}\0${p.text}`));
    const { stored, anchorCandidates } = anchored ? this.choosePassages(req, distinct) : { stored: distinct.slice(0, req.store_passages) };
    const { text, complete } = await this.encoder.openStore(stored, signal, req.corpus);
    return { promptIds, text, complete, anchorCandidates };
  }

  /**
   * The token store's passages (docs/nest-algorithm.md §14, "Store size"): the first
   * `store_passages` of the b first-stage passages, plus, when the anchor can draft, the passages of
   * the candidate sentences it may use (the best one; three for `anchor: question`, which verifies
   * and tries them in turn), ranked over all b (text only, no LM; only their passages are tokenized). A candidate's passage beyond the
   * first `store_passages` is appended, in rank order. The candidates come back as store indices,
   * so the loop anchors as a store of all b would.
   * @param passages the b first-stage passages, in rank order, each (id and text) once.
   */
  private choosePassages(
    req: GenerateRequest,
    passages: readonly Passage[],
  ): { stored: readonly Passage[]; anchorCandidates?: readonly AnchorCandidate[] } {
    const top = passages.slice(0, req.store_passages);
    const anchorDrafts = req.mode !== "knnlm" && req.anchor !== "none" && req.speculation !== "off";
    if (!anchorDrafts || passages.length <= top.length) return { stored: top };
    const ranked = rankAnchorsOver(
      passages,
      (p) => this.encoder.layoutOf(passages[p]!),
      retrievalQuery(req),
      req.draft_passages ?? Infinity,
      req.anchor === "question" ? ANCHOR_CANDIDATES : 1,
    );
    const stored = [...top];
    const storeIndex = new Map<number, number>();
    for (const p of [...new Set(ranked.map((a) => a.passage))].sort((x, y) => x - y)) {
      if (p < top.length) continue;
      storeIndex.set(p, stored.length);
      stored.push(passages[p]!);
    }
    return { stored, anchorCandidates: ranked.map((a) => ({ ...a, passage: storeIndex.get(a.passage) ?? a.passage })) };
  }

  /** Encodes `passage` into the key caches unless it is there already; true when the LM ran. */
  warmPassage(passage: Passage): Promise<boolean> {
    return this.encoder.warm(passage);
  }

  /** The passage encoder (for `nestlm encode --corpus`: batched encoding, the model key). */
  get passageEncoder(): PassageEncoder {
    return this.encoder;
  }

  /**
   * The model as answers, `/healthz` and the FAQ cache key name it: the manifest's name, with the
   * precision appended when its weights are not the float32 ones (`SmolLM2-135M-Instruct:fused-int4`),
   * since other weights give other answers. fp32 and fused-fp32 are one name: the same weights in
   * two graphs (20/20 identical greedy outputs, max |Δ logit| 6.6e-5).
   */
  get modelName(): string {
    const weights = weightsName(this.lm.options.precision);
    return weights === "fp32" ? this.manifest.name : `${this.manifest.name}:${weights}`;
  }

  /** The decoder session (for the bench's copy counters and options). */
  get session(): DecoderSession {
    return this.lm;
  }

  /**
   * Runs `job`, streaming its events to `sink`.
   * @throws whatever the model throws; the signal's reason when aborted.
   */
  async run(job: DecodeJob, sink: JobSink, signal?: AbortSignal): Promise<void> {
    const t0 = performance.now();
    const req = job.request;
    const stats = new DecodeStats();
    const tEnc = performance.now();
    const { promptIds, text, complete, anchorCandidates } = await this.open(job, 0, signal);
    // The passages the caches lacked are encoded while decoding starts on the store's text (the
    // sentence anchor's quote streams before the keys exist); decodeNest awaits the keys before
    // its first LM pass, so the LM runs one thing at a time.
    let numEncoded = 0;
    const keys = complete.then((c) => {
      stats.encodingMs = performance.now() - tEnc;
      numEncoded = c.numEncoded;
      return c.store;
    });
    stats.storePassages = text.passages.length;
    stats.storeKeys = text.numKeys;

    // The text layout's passages are the complete store's: citations are built on either.
    const builder = new DeltaBuilder(text, (id) => this.tokenizer.tokenBytes(id));
    let decoded: Awaited<ReturnType<typeof decodeNest>>;
    try {
      decoded = await decodeNest(
        this.lm,
        promptIds,
        { text, keys },
        { ...decodeOptions(req, this.manifest), anchorCandidates },
        (tokens) => builder.push(tokens).forEach((d) => sink.delta(d)),
        stats,
        signal,
      );
    } finally {
      // Even when decoding ended inside the quote (or failed), the LM is not free before encoding ends.
      await keys;
    }
    const { finishReason } = decoded;
    builder.flush().forEach((d) => sink.delta(d));
    this.lm.reset();

    const completion = builder.completionTokens;
    sink.done({
      finish_reason: finishReason,
      mode: req.mode,
      model: this.modelName,
      usage: {
        prompt_tokens: promptIds.length,
        completion_tokens: completion,
        lm_forward_passes: stats.lmForwardPasses,
        drafted_tokens: stats.draftedTokens,
        accepted_tokens: stats.acceptedTokens,
        num_drafts: stats.numDrafts,
        speculation: stats.speculationUsage(req.speculation),
        ...builder.usage(),
        store_passages: stats.storePassages,
        store_keys: stats.storeKeys,
        encoded_passages: numEncoded,
      },
      timings_ms: {
        retrieval: 0,
        encoding: round(stats.encodingMs),
        knn: round(stats.knnMs),
        lm: round(stats.lmMs),
        total: round(performance.now() - t0),
      },
    });
  }
}

/** The decoding options of a request (defaults already applied by the request schema). */
export function decodeOptions(req: GenerateRequest, manifest: Manifest): DecodeOptions {
  const storeUse: StoreUse = req.mode === "knnlm" ? "knnlm" : usesTokenStore(req.mode) ? "nest" : "none";
  return {
    storeUse,
    alpha: req.alpha,
    tau: req.tau,
    delta: req.delta,
    gamma: resolveGamma(req),
    acceptance: req.acceptance,
    k: req.k,
    maxSpan: req.max_span,
    draftPassages: req.draft_passages,
    firstTokenGuard: req.first_token === "lm",
    anchor: ({ none: undefined, question: "verify", "question-trust": "trust", "question-sentence": "sentence" } as const)[req.anchor],
    copyVerify: req.copy_verify,
    query: retrievalQuery(req),
    noRepeatNgram: req.no_repeat_ngram,
    speculation: req.speculation,
    fixedLambda: req.lambda,
    lmTemperature: req.lm_temperature,
    maxNewTokens: req.max_new_tokens,
    eosTokenIds: manifest.eos_token_ids,
  };
}

function round(ms: number): number {
  return Math.round(ms * 10) / 10;
}
