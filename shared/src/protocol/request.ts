/**
 * @module protocol/request
 * The `POST /v1/generate` request body (design README §5) and its NEST parameters
 * (nest-algorithm.md §3-§6).
 */
import { z } from "zod";
import { DOCUMENTS_CORPUS, DocumentsSchema } from "./documents.ts";

/** Decoding modes. `rag` = top-3 passages in the prompt; `knnlm` = fixed λ; `rag-nest` = both. */
export const ModeSchema = z.enum(["base", "rag", "knnlm", "nest", "rag-nest"]);
export type Mode = z.infer<typeof ModeSchema>;

/**
 * Text that is more than whitespace (a blank prompt would retrieve nothing and generate anyway):
 * Unicode white space (`\s`), and the invisible format characters that are not (zero-width space,
 * joiners, word joiner, BOM, soft hyphen) count as blank.
 */
const BLANK = /^[\s\u00AD\u200B-\u200D\u2060\uFEFF]*$/u;
const notBlank = (s: string) => !BLANK.test(s);

export const MessageSchema = z
  .object({
    role: z.enum(["system", "user", "assistant"]),
    content: z.string().min(1).max(8000).refine(notBlank, "must not be blank (whitespace only)"),
  })
  .strict();
export type Message = z.infer<typeof MessageSchema>;

/** Caps applied to every request (also the zod bounds below). */
export const LIMITS = {
  maxPromptChars: 8000,
  maxMessages: 32,
  maxNewTokens: 1024,
  maxPassages: 100,
  maxK: 4096,
  maxSpanTokens: 256,
} as const;

/** Fusion methods a request may choose for a hybrid index (names as in `shared/src/retrieve/fusion.ts`). */
export const FusionSchema = z.enum(["rrf", "adaptive"]);
export type Fusion = z.infer<typeof FusionSchema>;

/**
 * NEST parameters with their defaults. λ is the weight of **p_LM** (NEST convention, spec §0).
 */
export const NestParamsSchema = z.object({
  /**
   * RRC offset α (spec §3). The paper uses 0.3 (Llama-2-Chat on Wikipedia); with SmolLM2-135M on the
   * factbook, 0.3 sent most steps to span mode and copied off-topic spans (asked for Australia's
   * capital, it copied Kiribati's), while 0.2 answered the demo questions. Interim default, to be
   * re-tuned on development data by the evaluation harness.
   */
  alpha: z.number().min(-1).max(2).default(0.2),
  /** RRC scale τ > 0 (spec §3). */
  tau: z.number().positive().max(10).default(0.1),
  /** Span-selection threshold δ: span mode when λ ≤ δ (spec §5). */
  delta: z.number().min(0).max(1).default(0.5),
  /**
   * Relaxed-acceptance leniency γ ∈ (0, 1] (spec §6, Eq. 7). Default by mode, resolved when a
   * {@link GenerateRequestSchema} request is parsed: 5e-4; `rag-nest` 0.5 ({@link resolveGamma}).
   */
  gamma: z.number().positive().max(1).optional(),
  /**
   * Draft verification (spec §6): `relaxed` = paper Eq. 7 with γ; `greedy` = accept only argmax-p_M
   * tokens (exact speculative decoding: same text as token-by-token decoding of p_M, fewer LM
   * passes). `greedy` exists for the ablation of paper Table 3 ("+ dynamic span selection").
   */
  acceptance: z.enum(["relaxed", "greedy"]).default("relaxed"),
  /** Token-level neighbours r (spec §2.2), capped by the store size. */
  k: z.number().int().positive().max(LIMITS.maxK).default(1024),
  /** First-stage passages b (spec §1). */
  passages: z.number().int().positive().max(LIMITS.maxPassages).default(40),
  /**
   * Token store size (deviation, docs/nest-algorithm.md §14 "Store size"): the token store (LM-encoded,
   * kNN-searched, cited) holds the first `store_passages` of the b first-stage passages (rank order)
   * plus the passage of the anchor's sentence, which is ranked over all b, when it lies beyond them.
   * The paper stores all b (`store_passages` ≥ `passages`). Default 10: on 200 SQuAD dev questions
   * it answered as the 40-passage store did (nest 60.0 vs 59.5 %, paired +0.5 [0.0, +1.5]) for a
   * quarter of the LM encoding of a request whose passages no cache holds.
   */
  store_passages: z.number().int().positive().max(LIMITS.maxPassages).default(10),
  /**
   * How a hybrid (dense + BM25) corpus index fuses its two ranked lists (spec §1; docs/retrieval.md):
   * `rrf` = reciprocal rank fusion, `adaptive` = the paper's query-adaptive weighting. Absent = the
   * index's default (`NEST_FUSION`, else `rrf`). Ignored by BM25-only indexes (the default factbook).
   */
  fusion: FusionSchema.optional(),
  /** Maximum draft span n, in tokens (spec §5). */
  max_span: z.number().int().positive().max(LIMITS.maxSpanTokens).default(64),
  /**
   * Passage prior (docs/nest-algorithm.md §14): spans are drafted only from the first
   * `draft_passages` retrieved passages (first-stage rank order). Absent = all passages (the paper).
   */
  draft_passages: z.number().int().positive().max(LIMITS.maxPassages).optional(),
  /**
   * First-position guard (docs §14): with `lm` the first answer token is the LM's own argmax (λ = 1)
   * and no kNN-started span begins there; `mixture` = the paper (argmax p_M, span mode by RRC).
   */
  first_token: z.enum(["mixture", "lm"]).default("mixture"),
  /**
   * Question anchor (docs §14): the first draft is the retrieved sentence that best matches the
   * question (IDF-weighted word overlap). `question`: its first token is verified and up to three
   * sentences are tried; `question-trust`: the best sentence's first token is taken unchecked, the
   * rest verified; `question-sentence`: the best sentence is copied unchecked (a cited quote), the
   * continuation verified; `none` = the paper. Default `question-sentence`: on 40 SQuAD tune
   * questions it raised ALR from 20.0 to 70.0 % (nest) and from 22.5 to 70.0 % (rag-nest), against
   * 37.5 % for rag (`question-trust`: 50.0 / 57.5 %); docs/nest-algorithm.md §14.
   */
  anchor: z.enum(["none", "question", "question-trust", "question-sentence"]).default("question-sentence"),
  /**
   * What verifies copies (anchor and continuation drafts; docs §14): `mixture` = p_M (the paper),
   * `lm` = p_LM alone; `either` = accepted by p_M or by p_LM alone (the kNN's view of other
   * passages can no longer cut a copy short).
   */
  copy_verify: z.enum(["mixture", "lm", "either"]).default("mixture"),
  /** Drafts are cut before a token that repeats an n-gram already generated (docs §14); 0 = off (the paper). */
  no_repeat_ngram: z.number().int().min(0).max(16).default(0),
  /**
   * Speculation (docs §15): `on` drafts whenever span selection asks (the paper); `off` never drafts
   * (token mode with the RRC mixture at every step: the "+ RRC" row of paper Table 3); `auto` drafts
   * like `on` but pauses while drafts do not pay (accepted tokens per verification cost below plain
   * decoding's one token per pass).
   */
  speculation: z.enum(["auto", "on", "off"]).default("auto"),
  /** Fixed λ (weight of p_LM) for `knnlm` mode (spec §9). */
  lambda: z.number().min(0).max(1).default(0.7),
  /** Temperature applied to the LM logits inside the mixture (repo detail, spec §4). */
  lm_temperature: z.number().positive().max(10).default(0.7),
});
export type NestParams = z.infer<typeof NestParamsSchema>;

/** `POST /v1/generate` body. Exactly one of `prompt` or `messages`. */
export const GenerateRequestSchema = NestParamsSchema.extend({
  prompt: z.string().min(1).max(LIMITS.maxPromptChars).refine(notBlank, "must not be blank (whitespace only)").optional(),
  messages: z.array(MessageSchema).min(1).max(LIMITS.maxMessages).optional(),
  mode: ModeSchema.default("nest"),
  /** Tokens to generate at most (EOS stops earlier). */
  max_new_tokens: z.number().int().positive().max(LIMITS.maxNewTokens).default(128),
  /**
   * Corpus (namespace) to retrieve from; the embedded default has `factbook`. Absent = `factbook`,
   * or {@link DOCUMENTS_CORPUS} when the request carries `documents` (which exclude a corpus).
   */
  corpus: z
    .string()
    .min(1)
    .max(64)
    .regex(/^[a-z0-9][a-z0-9_-]*$/)
    .or(z.literal(DOCUMENTS_CORPUS))
    .optional(),
  /**
   * Documents to answer over instead of a corpus (protocol/documents.ts, README "Your own
   * documents"): chunked, ranked, encoded and cited per request.
   */
  documents: DocumentsSchema.optional(),
})
  .strict()
  .refine((r) => r.documents === undefined || r.corpus === undefined || r.corpus === DOCUMENTS_CORPUS, {
    message: "give either `documents` or `corpus`, not both",
    path: ["corpus"],
  })
  .refine((r) => r.documents !== undefined || r.corpus !== DOCUMENTS_CORPUS, {
    message: `corpus \`${DOCUMENTS_CORPUS}\` needs \`documents\``,
    path: ["corpus"],
  })
  .refine((r) => (r.prompt === undefined) !== (r.messages === undefined), {
    message: "give exactly one of `prompt` or `messages`",
    path: ["prompt"],
  })
  .refine((r) => r.messages === undefined || r.messages.some((m) => m.role === "user"), {
    message: "`messages` must contain at least one user message",
    path: ["messages"],
  })
  // γ's default depends on the mode; resolving it here makes a request that omits γ and one that
  // states the default the same request (same FAQ cache key, same decoding).
  .transform((r) => ({ ...r, gamma: resolveGamma(r), corpus: r.corpus ?? (r.documents ? DOCUMENTS_CORPUS : "factbook") }));
/** A parsed request: every default applied, `gamma` resolved by {@link resolveGamma}. */
export type GenerateRequest = z.infer<typeof GenerateRequestSchema>;

/** γ default by mode: 5e-4 for `nest` (spec §6, 7B setting), 0.5 for `rag-nest`; a given γ wins. */
export function resolveGamma(req: { mode: Mode; gamma?: number | undefined }): number {
  if (req.gamma !== undefined) return req.gamma;
  return req.mode === "rag-nest" ? 0.5 : 5e-4;
}

/** The question used for first-stage retrieval: the prompt, or the last user message. */
export function retrievalQuery(req: Pick<GenerateRequest, "prompt" | "messages">): string {
  if (req.prompt !== undefined) return req.prompt;
  const users = (req.messages ?? []).filter((m) => m.role === "user");
  return users.at(-1)?.content ?? "";
}

/** Whether the mode uses the token-level store (and so needs passages encoded). */
export function usesTokenStore(mode: Mode): boolean {
  return mode === "knnlm" || mode === "nest" || mode === "rag-nest";
}

/** Whether the mode needs first-stage retrieval at all. */
export function usesRetrieval(mode: Mode): boolean {
  return mode !== "base";
}
