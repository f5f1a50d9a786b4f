/**
 * @module nest/anchor
 * The question-anchored first draft (a deviation from the paper; docs/nest-algorithm.md §14).
 *
 * At the first answer position the paper drafts from the kNN neighbour carrying `argmax p_M`. With a
 * small LM that neighbour is chosen by the last few prompt tokens (the chat template), not by the
 * question, so the first draft starts in the middle of whatever passage sits nearest in hidden-state
 * space. The anchor instead proposes the passage **sentence** that best matches the question:
 *
 *   score(s) = Σ_{w ∈ words(q) ∩ words(s)} idf(w) + Σ_{w ∈ words(q) ∩ words(title(s))} idf(w),
 *   idf(w) = ln((N + 1) / (df(w) + 0.5)),  words = lower-cased letter/digit runs, stop words out, Porter-stemmed,
 *
 * times the first-stage rank prior `1 / (1 + rank/10)` (rank 0-based), (the title term, like BM25F's title field, breaks the tie between "Australia, capital: name:
 * Canberra" and Kiribati's "the capital Tarawa is … between Hawaii and Australia")
 * over the sentences `s` of the first `numPassages` passages (first-stage rank order), with `df`
 * counted over the N passages ranked (so words every retrieved passage shares weigh ~0). The engine
 * ranks over all b first-stage passages, text only, and adds the anchors' passages to the token
 * store when they lie beyond its `store_passages` (docs §14, "Store size"). The
 * draft starts at the sentence's first token and goes through relaxed verification like any other
 * draft (spec §6): the LM can still refuse it.
 */
import { stemmer } from "stemmer";
import { eng as ENGLISH_STOP_WORDS } from "stopword";
import type { Draft } from "./draft.ts";
import { spanFrom } from "./draft.ts";
import type { Passage } from "@nest/shared/protocol/passage";
import type { StoredPassage, TokenStore } from "./token-store.ts";

/** What the anchor reads of a passage: its text and tokens (a store passage, or one only tokenized). */
export type AnchorPassage = Pick<StoredPassage, "passage" | "tokens" | "charStart" | "charEnd">;

/** A sentence ends after `.`, `!`, `?` or `;` followed by white space, or at a line break. */
const SENTENCE_END = /[.!?;](?=\s)|\n/g;
const WORD = /[\p{L}\p{N}]+/gu;

const STOP_WORDS: ReadonlySet<string> = new Set(ENGLISH_STOP_WORDS);

/**
 * Lower-cased words (letters and digits) of `text` without English stop words (`stopword`
 * package), Porter-stemmed (`stemmer` package). Stop words must go: in structured text such as the
 * factbook, "the" and "is" are rare and would otherwise weigh most.
 */
export function wordsOf(text: string): string[] {
  return (text.toLowerCase().match(WORD) ?? []).filter((w) => !STOP_WORDS.has(w)).map((w) => stemmer(w));
}

/** One anchor candidate: where it starts and its question-overlap score. */
export interface AnchorCandidate {
  /** Index of its passage in the ranked list (a store index once placed in a store). */
  readonly passage: number;
  /** Token position of the sentence's first token. */
  readonly startPos: number;
  /** Token position just past the sentence (its end, or the passage end). */
  readonly endPos: number;
  readonly score: number;
}

/**
 * Sentence starts over the first `numPassages` passages, best question overlap first (ties: the
 * higher-ranked passage, then the earlier sentence), at most `limit`, score > 0 only. Empty when no
 * sentence shares a word with the question or the query has no words.
 * @param store the passages in first-stage rank order, with their tokens (a token store).
 * @param query the question (the retrieval query).
 */
export function rankAnchors(
  store: { readonly passages: readonly AnchorPassage[] },
  query: string,
  numPassages: number,
  limit = 1,
): AnchorCandidate[] {
  return rankAnchorsOver(
    store.passages.map((sp) => sp.passage),
    (p) => store.passages[p]!,
    query,
    numPassages,
    limit,
  );
}

/**
 * {@link rankAnchors} over passages whose tokens are produced on demand: sentences are scored on
 * the text, and `tokensOf` is called (once each) only for the passages of the best sentences, to
 * place them on token positions. The engine ranks all b first-stage passages this way without
 * tokenizing the ones that hold no candidate.
 * @param passages the passages in first-stage rank order.
 * @param tokensOf the tokens of `passages[p]`, as the token store holds them.
 */
export function rankAnchorsOver(
  passages: readonly Passage[],
  tokensOf: (p: number) => Omit<AnchorPassage, "passage">,
  query: string,
  numPassages: number,
  limit = 1,
): AnchorCandidate[] {
  const qWords = new Set(wordsOf(query));
  if (qWords.size === 0) return [];
  const n = passages.length;
  const df = new Map<string, number>();
  for (const passage of passages) {
    for (const w of new Set(wordsOf(passage.text))) if (qWords.has(w)) df.set(w, (df.get(w) ?? 0) + 1);
  }
  const idf = (w: string) => Math.log((n + 1) / ((df.get(w) ?? 0) + 0.5));
  const sentences: { passage: number; from: number; to: number; score: number }[] = [];
  for (let p = 0; p < Math.min(numPassages, n); p++) {
    const { text, title } = passages[p]!;
    let titleScore = 0;
    for (const w of new Set(wordsOf(title))) if (qWords.has(w)) titleScore += idf(w);
    const starts = [0];
    for (const m of text.matchAll(SENTENCE_END)) starts.push(m.index! + 1);
    for (let i = 0; i < starts.length; i++) {
      const from = starts[i]!;
      const to = starts[i + 1] ?? text.length;
      let score = 0;
      for (const w of new Set(wordsOf(text.slice(from, to)))) if (qWords.has(w)) score += idf(w);
      if (score > 0) sentences.push({ passage: p, from, to, score: (score + titleScore) * rankPrior(p) });
    }
  }
  // Stable sort: equal scores keep rank order, then sentence order.
  sentences.sort((a, b) => b.score - a.score);
  const tokens = new Map<number, Omit<AnchorPassage, "passage">>();
  const found: AnchorCandidate[] = [];
  for (const { passage: p, from, to, score } of sentences) {
    if (found.length >= limit) break;
    if (!tokens.has(p)) tokens.set(p, tokensOf(p));
    const sp = tokens.get(p)!;
    const startPos = firstTokenAt(sp.charStart, sp.charEnd, passages[p]!.text, from);
    if (startPos < 0) continue;
    let endPos = startPos + 1;
    while (endPos < sp.tokens.length && sp.charStart[endPos]! < to) endPos++;
    found.push({ passage: p, startPos, endPos, score });
  }
  return found;
}

/** The best-matching sentence start (see {@link rankAnchors}), or undefined. */
export function bestAnchor(
  store: { readonly passages: readonly AnchorPassage[] },
  query: string,
  numPassages: number,
): AnchorCandidate | undefined {
  return rankAnchors(store, query, numPassages, 1)[0];
}

/** The first token whose text starts at or after `from` and holds a non-space character. */
function firstTokenAt(charStart: Int32Array, charEnd: Int32Array, text: string, from: number): number {
  for (let t = 0; t < charStart.length; t++) {
    if (charStart[t]! < from) continue;
    if (text.slice(charStart[t]!, charEnd[t]!).trim().length > 0) return t;
  }
  return -1;
}

/**
 * First-stage rank prior `1 / (1 + rank / RANK_PRIOR_SCALE)` (rank 0-based): the 10th passage's
 * sentences count 0.5×, so a sentence from a lower-ranked passage must match clearly better.
 */
export const RANK_PRIOR_SCALE = 10;
function rankPrior(rank: number): number {
  return 1 / (1 + rank / RANK_PRIOR_SCALE);
}

/** An anchor draft: the draft plus the length of its sentence in tokens (≤ or > the draft). */
export interface AnchorDraft extends Draft {
  readonly sentenceTokens: number;
}

/** How many best-matching sentences the anchor may try at the first position. */
export const ANCHOR_CANDIDATES = 3;

/**
 * The anchored first draft: up to `maxSpan` tokens from the best-matching sentence whose first
 * token passes `firstTokenOk` (the verification of v_1 against the current state, so trying the
 * next candidate costs no LM pass), among the {@link ANCHOR_CANDIDATES} best.
 * @param candidates the candidates ranked beforehand over a wider passage list, as store indices
 *   (the engine's, over all b first-stage passages); default: ranked over `store` here.
 * @returns undefined when no candidate qualifies (the step falls back to the loop's usual rule).
 */
export function anchorDraft(
  store: TokenStore,
  query: string,
  numPassages: number,
  maxSpan: number,
  firstTokenOk: (token: number) => boolean = () => true,
  candidates: readonly AnchorCandidate[] = rankAnchors(store, query, numPassages, ANCHOR_CANDIDATES),
): AnchorDraft | undefined {
  for (const a of candidates) {
    const d = spanFrom(store, a.passage, a.startPos, maxSpan);
    if (d && firstTokenOk(d.tokens[0]!)) return { ...d, sentenceTokens: a.endPos - a.startPos };
  }
  return undefined;
}
