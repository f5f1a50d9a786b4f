/**
 * @module nest/decode-loop
 * The NEST decoding loop (paper Algorithm 1; nest-algorithm.md §3-§6), greedy, batch size 1.
 *
 * Each step: mixture at the current position (kNN search → RRC λ → p_M); then either
 * - token mode (λ > δ, or no neighbour carries argmax p_M): commit argmax p_M, one LM pass; or
 * - span mode (λ ≤ δ) / continuation streaming: draft up to `maxSpan` tokens of one passage, verify
 *   them all in ONE LM pass over `[v_1..v_m]`, keep the longest accepted prefix, replace the first
 *   rejected token by argmax p_M at its position, and cut the KV cache back to the committed tokens.
 * After every step the KV cache holds exactly the committed tokens (spec §12.12), and the logits and
 * hidden state of the last committed position are at hand for the next step.
 */
import type { CausalLM, ForwardOutput } from "./causal-lm.ts";
import { acceptsGreedy, acceptsToken, verifyDraft, type AcceptanceTest, type DraftTokenTest } from "./verify.ts";
import { cutDraft, nonRepeatingPrefix, proposeSpan, spanFrom, type Draft } from "./draft.ts";
import { type AnchorCandidate, anchorDraft } from "./anchor.ts";
import { SpeculationGate, type SpeculationMode } from "./speculation.ts";
import { lmMixture, mixtureAt, type MixtureOptions, type PositionState, type StoreUse } from "./mixture.ts";
import { keyOfToken, type TokenStore } from "./token-store.ts";
import { tokenModeSource, type CommittedToken, type TokenSource } from "./attribution.ts";
import { DecodeStats } from "./stats.ts";

export type { PositionState, StoreUse };

/** Options of one decoding run (parsed once from the request). */
export interface DecodeOptions extends MixtureOptions {
  /** Span mode when λ ≤ δ (spec §5). */
  readonly delta: number;
  /** Acceptance leniency γ (spec §6). */
  readonly gamma: number;
  /**
   * Draft verification: `relaxed` (default) = paper Eq. 7 with γ; `greedy` = accept only argmax
   * p_M tokens (exact speculative decoding, the ablation's baseline; γ is ignored).
   */
  readonly acceptance?: "relaxed" | "greedy";
  /** Maximum draft length n, tokens. */
  readonly maxSpan: number;
  /**
   * Passage prior (deviation, docs §14): spans are drafted only from the first `draftPassages`
   * store passages, in first-stage rank order. Default: all (the paper).
   */
  readonly draftPassages?: number;
  /**
   * First-position guard (deviation, docs §14): at the first answer position the token is
   * `argmax p_LM` (λ = 1) and no kNN-started span is proposed. Default false (the paper).
   */
  readonly firstTokenGuard?: boolean;
  /**
   * Question anchor (deviation, docs §14, `nest/anchor.ts`): the first draft is the retrieved
   * sentence that best matches `query`. `verify`: its v_1 is verified and up to three sentences are
   * tried; `trust`: the best sentence's v_1 is taken unchecked, the rest verified; `sentence`: the
   * best sentence is copied unchecked (a verbatim, cited quote), what follows is verified. Default
   * none (the paper).
   */
  readonly anchor?: "trust" | "verify" | "sentence";
  /**
   * What verifies copies (anchor and continuation drafts; deviation, docs §14): `mixture` = p_M
   * (the paper), `lm` = p_LM alone (λ = 1), `either` = accepted by p_M or by p_LM alone, so the kNN's
   * view of other passages can extend a copy but not cut it.
   */
  readonly copyVerify?: "mixture" | "lm" | "either";
  /** The question, for the anchor. */
  readonly query?: string;
  /**
   * Anchor candidates ranked beforehand over all b first-stage passages, as store indices (the
   * engine places their passages in the store; docs §14 "Store size"). Default: ranked over the store.
   */
  readonly anchorCandidates?: readonly AnchorCandidate[];
  /**
   * Drafts are cut before a token that would repeat an n-gram of the generated text (deviation,
   * docs §14). 0 = never (the paper).
   */
  readonly noRepeatNgram?: number;
  /** `on` (default here; the paper), `off` (never draft) or `auto` (draft while it pays): `nest/speculation.ts`. */
  readonly speculation?: SpeculationMode;
  /** `c` of `auto`: extra cost of one more token in a verification pass, in one-token passes. Default {@link DRAFT_TOKEN_COST}. */
  readonly draftTokenCost?: number;
  readonly maxNewTokens: number;
  readonly eosTokenIds: readonly number[];
}

/**
 * Default `c` for `speculation: auto`: a verification pass over m tokens costs about
 * `1 + 0.05·(m − 1)` one-token passes (a 64-token pass ≈ 4 passes). An estimate for a 135M model on
 * CPU, where small batches are bound by reading the weights; docs/nest-algorithm.md §15.
 */
export const DRAFT_TOKEN_COST = 0.05;

/** Where a draft comes from: a kNN neighbour (span mode), the question anchor, or the passage being copied (continuation). */
type DraftKind = "knn" | "anchor" | "copy";

/**
 * A token store whose text is known before its keys: `text` has the final layout (passages, token
 * ids, offsets, key indices) with keys not yet computed, and `keys` resolves to the complete store
 * once the LM has encoded the passages that no cache held (spec §2.1). Decoding can start with
 * what needs no keys (the sentence anchor's quote) while the passages are encoded.
 */
export interface StagedTokenStore {
  readonly text: TokenStore;
  readonly keys: Promise<TokenStore>;
}

/** Why decoding stopped. */
export type FinishReason = "stop" | "length";

/**
 * Runs NEST decoding after the prompt.
 * @param lm a causal LM whose KV cache is empty.
 * @param storeOrStaged the token store, or a {@link StagedTokenStore} whose keys are still being
 *   computed (awaited before the prefill; the sentence anchor's quote is committed before that).
 * @param onTokens receives the tokens committed by each step (EOS excluded), in order.
 * @param signal aborting it stops the loop before the next LM pass.
 * @throws the LM's errors; `signal.reason` when aborted.
 */
export async function decodeNest(
  lm: CausalLM,
  promptIds: readonly number[],
  storeOrStaged: TokenStore | StagedTokenStore,
  opts: DecodeOptions,
  onTokens: (tokens: CommittedToken[]) => void,
  stats: DecodeStats = new DecodeStats(),
  signal?: AbortSignal,
): Promise<{ finishReason: FinishReason; stats: DecodeStats }> {
  const eos = new Set(opts.eosTokenIds);
  const accepts: AcceptanceTest = opts.acceptance === "greedy" ? acceptsGreedy : (m, token) => acceptsToken(m, token, opts.gamma);
  const staged = "text" in storeOrStaged ? storeOrStaged : undefined;
  /** The store in use: the staged store's text until its keys are needed (before the prefill). */
  let store: TokenStore = "text" in storeOrStaged ? storeOrStaged.text : storeOrStaged;
  const masked = new Uint8Array(store.numKeys);
  /**
   * Acceptance of draft token `v_{i+1}` (0-based `i`): Eq. 7 (or greedy) against p_M — for copies
   * (anchor and continuation drafts) against p_LM alone with `copyVerify: "lm"`, or against either
   * with `copyVerify: "either"`; the anchor's
   * v_1 passes unchecked with `anchor: "trust"` (docs §14).
   */
  const testDraftToken = (kind: DraftKind, state: PositionState, token: number, i: number): boolean => {
    if (kind === "anchor" && i === 0 && (opts.anchor === "trust" || opts.anchor === "sentence")) return true;
    if (kind === "anchor" && i < anchorSentenceTokens && opts.anchor === "sentence") return true;
    const copy = kind !== "knn";
    if (copy && opts.copyVerify === "lm") return accepts(lmMixture(state.logits, opts.lmTemperature), token);
    if (accepts(state.mixture, token)) return true;
    return copy && opts.copyVerify === "either" && accepts(lmMixture(state.logits, opts.lmTemperature), token);
  };
  stats.promptTokens = promptIds.length;

  const forward = async (ids: readonly number[], prefill = false): Promise<ForwardOutput> => {
    signal?.throwIfAborted();
    const t = performance.now();
    // Logits: the prefill needs its last row only; a draft needs every row.
    const out = await lm.forward(ids, prefill ? 1 : ids.length);
    stats.lmMs += performance.now() - t;
    if (prefill) stats.prefillPasses++;
    else stats.lmForwardPasses++;
    return out;
  };

  const stateAt = (out: ForwardOutput, row: number): PositionState => {
    const t = performance.now();
    const state = mixtureAt(store, out.logitsRow(row), out.hiddenRow(row), opts, masked);
    if (opts.storeUse !== "none") stats.knnMs += performance.now() - t;
    return state;
  };

  /** Source of the last committed token: a token-mode match continuing it is preferred (attribution.ts). */
  let lastSource: TokenSource | undefined;
  const sourceOf = (state: PositionState, token: number): TokenSource | undefined =>
    opts.storeUse === "none" ? undefined : tokenModeSource(store, state.neighbours, token, lastSource);

  const draftPassages = opts.draftPassages ?? Infinity;
  /** Tokens of the anchor's sentence (copied unchecked with `anchor: "sentence"`). */
  let anchorSentenceTokens = 0;
  const gate = new SpeculationGate(opts.speculation ?? "on", opts.draftTokenCost ?? DRAFT_TOKEN_COST);
  /** Committed token ids, for the repeated-n-gram check. */
  const history: number[] = [];
  let generated = 0;
  /** Last accepted draft token, for continuation streaming (spec §5). */
  let streaming: TokenSource | undefined;

  /**
   * Commits `tokens` up to an EOS (EOS excluded) to the output.
   * @returns "stop" at an EOS, "length" at the token budget, else undefined.
   */
  const commit = (tokens: readonly CommittedToken[]): FinishReason | undefined => {
    const stop = tokens.findIndex((t) => eos.has(t.id));
    const kept = stop >= 0 ? tokens.slice(0, stop) : tokens;
    generated += kept.length;
    if (kept.length > 0) lastSource = kept.at(-1)?.source;
    stats.completionTokens = generated;
    if (kept.length > 0) onTokens([...kept]);
    for (const t of kept) history.push(t.id);
    if (stop >= 0) return "stop";
    if (generated >= opts.maxNewTokens) return "length";
    return undefined;
  };

  /**
   * The tail of every step: commit `tokens` after the first `precommitted` (already streamed), stop
   * at EOS or the token budget, else move `cur` to the position after them: `known` when the
   * verification pass already computed it, otherwise one LM pass over the last token (the only
   * committed token not yet in the KV cache).
   * @returns the finish reason, or undefined to go on.
   */
  const settle = async (tokens: CommittedToken[], known?: PositionState, precommitted = 0): Promise<FinishReason | undefined> => {
    const end = commit(tokens.slice(precommitted));
    if (end) return end;
    cur = known ?? stateAt(await forward([tokens.at(-1)!.id]), 0);
    return undefined;
  };

  /**
   * Sentence anchor (docs §14): its sentence is copied unchecked, so neither the anchor nor its
   * quote depends on an LM state. It is chosen and streamed before the prefill: the first tokens
   * reach the client after the store is built, not after two LM passes. The verification pass
   * that follows scores the whole draft as before, so the commits are the same.
   */
  let early: { draft: Draft; precommitted: number } | undefined;
  if (opts.storeUse === "nest" && opts.anchor === "sentence" && opts.query && gate.allows()) {
    const anchor = anchorDraft(store, opts.query, draftPassages, opts.maxSpan, undefined, opts.anchorCandidates);
    if (anchor) {
      const quote = anchor.tokens.subarray(0, Math.min(anchor.sentenceTokens, opts.maxNewTokens));
      const copied = Array.from(
        quote,
        (id, i): CommittedToken => ({ id, source: { passage: anchor.passage, pos: anchor.startPos + i, verified: true } }),
      );
      const end = commit(copied);
      if (end) {
        // The whole answer fits in the quote: no LM pass at all.
        stats.observeDraft(copied.length, copied.length);
        maskAccepted(store, masked, anchor.passage, anchor.startPos, copied.length);
        return { finishReason: end, stats };
      }
      early = { draft: anchor, precommitted: quote.length };
      anchorSentenceTokens = anchor.sentenceTokens;
    }
  }

  if (staged) {
    store = await staged.keys;
    if (store.numKeys !== masked.length) throw new Error(`staged store: ${store.numKeys} keys, its text announced ${masked.length}`);
  }
  const prefill = await forward(promptIds, true);
  let cur = stateAt(prefill, promptIds.length - 1);
  if (opts.firstTokenGuard && opts.storeUse === "nest") {
    // λ = 1 at the first answer position: p_M = p_LM, neighbours kept for citations.
    const lmOnly = { ...opts, storeUse: "knnlm" as const, fixedLambda: 1 };
    cur = mixtureAt(store, prefill.logitsRow(promptIds.length - 1), prefill.hiddenRow(promptIds.length - 1), lmOnly, masked);
  }

  while (generated < opts.maxNewTokens) {
    let draft: Draft | undefined;
    let kind: DraftKind = "knn";
    /** Leading draft tokens already streamed (the sentence anchor's quote). */
    let precommitted = 0;
    if (early) {
      ({ draft, precommitted } = early);
      kind = "anchor";
      early = undefined;
    } else if (opts.storeUse === "nest" && gate.allows()) {
      const first = generated === 0;
      if (streaming) {
        draft = spanFrom(store, streaming.passage, streaming.pos + 1, opts.maxSpan);
        kind = "copy";
      } else if (first && opts.anchor && opts.query) {
        const anchor = anchorDraft(
          store,
          opts.query,
          draftPassages,
          opts.maxSpan,
          (t) => testDraftToken("anchor", cur, t, 0),
          opts.anchorCandidates,
        );
        if (anchor) {
          draft = anchor;
          kind = "anchor";
          anchorSentenceTokens = anchor.sentenceTokens;
        }
      }
      if (!draft && !streaming && !(first && opts.firstTokenGuard) && cur.lambda <= opts.delta) {
        draft = proposeSpan(store, cur.neighbours, cur.mixture.argmax, opts.maxSpan, draftPassages);
        kind = "knn";
      }
      if (draft && opts.noRepeatNgram) draft = cutDraft(draft, nonRepeatingPrefix(history, draft.tokens, opts.noRepeatNgram));
    }
    streaming = undefined;

    let end: FinishReason | undefined;
    if (!draft) {
      // Token mode: argmax p_M, cited when a neighbour carries it (spec §5, §7).
      const token = cur.mixture.argmax;
      gate.onTokenStep();
      end = await settle([sourced(token, sourceOf(cur, token))]);
    } else {
      // Span mode: verify v_1 against the current state; when it passes, score v_1..v_m in one
      // pass, whose row i−1 gives p_M at the position of v_{i+1} (and row m−1 the next position).
      const tokens = draft.tokens.subarray(0, opts.maxNewTokens - generated + precommitted);
      const m = tokens.length;
      const cached = lm.cacheLength;
      const test: DraftTokenTest = (state, token, i) => testDraftToken(kind, state, token, i);
      const pass = test(cur, tokens[0]!, 0) ? await forward(Array.from(tokens)) : undefined;
      const before = cur;
      const unchecked = kind === "anchor" && opts.anchor === "sentence" ? anchorSentenceTokens : 0;
      const verdict = verifyDraft(tokens, (i) => (i === 0 ? before : stateAt(pass!, i - 1)), test, unchecked);
      const a = verdict.numAccepted;
      stats.observeDraft(m, a);
      gate.observe(m, a);
      const copied: CommittedToken[] = Array.from(tokens.subarray(0, a), (id, i) => ({
        id,
        source: { passage: draft.passage, pos: draft.startPos + i, verified: true },
      }));
      // Paper masking of copied n-grams (spec §5). A kNN-started span's v_1 is argmax p_M, the
      // token that token mode commits too: alone, it is not a copy and masks nothing, so a draft
      // that only confirms v_1 leaves the store as a token step would (docs §15).
      if (a >= 2 || kind !== "knn") maskAccepted(store, masked, draft.passage, draft.startPos, a);
      if (a === m) {
        // Whole draft accepted: the pass already gave the next position (continuation streaming).
        end = await settle(copied, verdict.next, precommitted);
        streaming = { passage: draft.passage, pos: draft.startPos + m - 1 };
      } else {
        // Rejection at v_{a+1}: keep KV only for v_1..v_a, commit the replacement (no source).
        if (pass) lm.truncate(cached + a);
        end = await settle([...copied, { id: verdict.next.mixture.argmax }], undefined, precommitted);
      }
    }
    stats.pausedSteps = gate.pausedSteps;
    if (end) return { finishReason: end, stats };
  }
  return { finishReason: "length", stats };
}

function sourced(id: number, source: TokenSource | undefined): CommittedToken {
  return source ? { id, source } : { id };
}

/** Paper masking: keys whose values were just copied are never retrieved again (spec §5, §12.13). */
function maskAccepted(store: TokenStore, masked: Uint8Array, passage: number, startPos: number, count: number): void {
  for (let i = 0; i < count; i++) {
    const key = keyOfToken(store, passage, startPos + i);
    if (key >= 0) masked[key] = 1;
  }
}
