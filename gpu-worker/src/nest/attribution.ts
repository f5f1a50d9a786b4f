/**
 * @module nest/attribution
 * From per-token provenance to text deltas with citations, and the attribution metrics
 * (nest-algorithm.md §7; README "Attribution"). Offsets are UTF-16 code units, 0-based, end-exclusive.
 *
 * Provenance (the paper's): a generated token has a source when it is an accepted draft token (a
 * verified span copy), or a token-mode token that a retrieved neighbour carries. Citation (ours,
 * stricter: a citation claims "the source says this"): a maximal *run* of generated tokens copied
 * from consecutive positions of one passage, merged across decoding steps, is cited when its text
 * holds a content word (letters or digits, not a stop word) and
 * - it holds a verified copy (an accepted draft token), or
 * - it is ≥ 2 tokens long, or
 * - it is one token-mode token that is a whole word, both in the passage and in the generated
 *   text, and rare in the store: the content word occurs in at most `max(1, ⌊N/10⌋)` of the N
 *   stored passages (the question's own words occur in most of them).
 * Everything else keeps its provenance (counted in `attribution_ratio`) but gets no citation.
 *
 * Text: a delta's text is the UTF-8 decoding of its tokens' bytes, in stream order, so the
 * generated text is the concatenation of the deltas, and a cited delta's text equals
 * `passage.text.slice(passage_start, passage_end)` exactly (it is checked before citing).
 *
 * Streaming: a run is emitted as soon as its citation is decided, not when it ends (issue 13 TTFT).
 * At the end of each `push()`, an open run that earns its citation on its own (a content word, and
 * ≥ 2 tokens or a verified copy) whose bytes are whole characters is emitted as a cited delta; the
 * tokens that continue it are emitted at the end of their `push()` as further cited deltas marked
 * `continues: true` (same passage, contiguous ranges). A lone token-mode token still waits for the
 * next token (whether its word goes on decides its citation), and a piece that ends inside a
 * multi-byte character waits for the token completing it (or the end of the run). A run emitted in
 * pieces is one citation in `usage.citations`.
 */
import { eng as ENGLISH_STOP_WORDS } from "stopword";
import type { Citation, DeltaEvent, Usage } from "@nest/shared/protocol/events";
import { bestNeighbourFor } from "./draft.ts";
import type { Neighbours } from "./knn.ts";
import { keyOfToken, type StoredPassage, type TokenStore } from "./token-store.ts";

/** Where a generated token was copied from: passage index in the store and the token's own position. */
export interface TokenSource {
  readonly passage: number;
  readonly pos: number;
  /** True for an accepted draft token (a verified span copy, spec §6); absent for a token-mode match. */
  readonly verified?: boolean;
}

/** One committed token and its source (none when the LM produced it). */
export interface CommittedToken {
  readonly id: number;
  readonly source?: TokenSource;
}

/**
 * Stop words: the `stopword` package's English list (108 words, the common function words), plus
 * the pieces that contractions and possessives leave (`'s` → `s`, `n't` → `t`, …).
 */
const STOP_WORDS: ReadonlySet<string> = new Set([...ENGLISH_STOP_WORDS, "s", "t", "d", "ll", "m", "re", "ve", "nt", "its", "it's"]);

const WORD = /[\p{L}\p{N}]+/gu;
const WORD_CHAR = /[\p{L}\p{N}]/u;

/**
 * Content words of `text`, lower-cased: runs of letters or digits that are not stop words; a single
 * letter counts only as a digit (`"2"` is content, `"a"` is not).
 */
export function contentWords(text: string): string[] {
  return (text.toLowerCase().match(WORD) ?? []).filter((w) => !STOP_WORDS.has(w) && (w.length >= 2 || /\p{N}/u.test(w)));
}

/** True when `text` holds a content word: a citation of it can say something. */
export function isInformative(text: string): boolean {
  return contentWords(text).length > 0;
}

/** Share of the store's passages a lone token's word may occur in and still count as rare. */
export const RARE_PASSAGE_SHARE = 0.1;

/**
 * The source of a token-mode token (spec §7): a retrieved neighbour whose value is `token`. The
 * neighbour continuing `previous` (the source of the token committed just before: same passage,
 * next position) is preferred, so that a copy made one token per step forms one run; otherwise the
 * nearest neighbour carrying the token (the reference implementation's rule).
 * @returns undefined when no neighbour carries `token`.
 */
export function tokenModeSource(store: TokenStore, neighbours: Neighbours, token: number, previous?: TokenSource): TokenSource | undefined {
  if (previous) {
    const key = keyOfToken(store, previous.passage, previous.pos + 1);
    if (key >= 0 && store.values[key] === token && neighbours.keys.includes(key))
      return { passage: previous.passage, pos: previous.pos + 1 };
  }
  const i = bestNeighbourFor(store, neighbours, token);
  if (i < 0) return undefined;
  const key = neighbours.keys[i]!;
  return { passage: store.keyPassage[key]!, pos: store.keyValuePos[key]! };
}

/** The attribution part of `usage` (see `UsageSchema` for each field's meaning). */
export type AttributionUsage = Pick<
  Usage,
  | "attributed_tokens"
  | "attribution_ratio"
  | "cited_tokens"
  | "cited_ratio"
  | "copied_tokens"
  | "copied_ratio"
  | "citations"
  | "single_token_citations"
>;

/**
 * Incremental state of a WHATWG UTF-8 decoder (the one `TextDecoder` runs): whether bytes fed so far
 * leave an unfinished character pending. Fed the same bytes as a `TextDecoder`, it says whether that
 * decoder holds bytes back.
 */
class Utf8State {
  private needed = 0;
  private seen = 0;
  private lower = 0x80;
  private upper = 0xbf;

  /** True when the bytes fed so far end inside a (possibly valid) multi-byte character. */
  get pending(): boolean {
    return this.needed > 0;
  }

  feed(bytes: Uint8Array): void {
    for (let i = 0; i < bytes.length; i++) {
      const b = bytes[i]!;
      if (this.needed === 0) {
        if (b >= 0xc2 && b <= 0xdf) this.needed = 1;
        else if (b >= 0xe0 && b <= 0xef) {
          if (b === 0xe0) this.lower = 0xa0;
          if (b === 0xed) this.upper = 0x9f;
          this.needed = 2;
        } else if (b >= 0xf0 && b <= 0xf4) {
          if (b === 0xf0) this.lower = 0x90;
          if (b === 0xf4) this.upper = 0x8f;
          this.needed = 3;
        }
        continue; // ASCII, or an invalid lead byte (U+FFFD at once)
      }
      if (b < this.lower || b > this.upper) {
        // U+FFFD for the unfinished character, then `b` is read again from the start state.
        this.reset();
        i--;
        continue;
      }
      this.lower = 0x80;
      this.upper = 0xbf;
      if (++this.seen === this.needed) this.reset();
    }
  }

  private reset(): void {
    this.needed = 0;
    this.seen = 0;
    this.lower = 0x80;
    this.upper = 0xbf;
  }
}

/** The open run once its first piece was emitted cited: later pieces continue that citation. */
/**
 * The citation of `text`, which the caller checked equals `sp`'s text over `[passageStart,
 * passageEnd)` (UTF-16 code units) and goes out at `textStart` of the generated text; `continues`
 * marks a later piece of a run already cited.
 */
function citationOf(
  sp: StoredPassage,
  passageStart: number,
  passageEnd: number,
  textStart: number,
  text: string,
  continues: boolean,
): Citation {
  return {
    passage_id: sp.passage.id,
    title: sp.passage.title,
    source: sp.passage.source,
    passage_start: passageStart,
    passage_end: passageEnd,
    text_start: textStart,
    text_end: textStart + text.length,
    cited_text: text,
    ...(continues && { continues: true }),
  };
}

interface OpenCitation {
  readonly sp: StoredPassage;
  /** The last emitted piece's citation (the next piece starts where it ends). */
  last: Citation;
  /** Tokens of the run emitted so far (all cited). */
  tokens: number;
}

/**
 * Turns committed tokens into `delta` events (see the module comment for what is cited and when).
 * Tokens are emitted in order; a copied run is emitted as soon as its citation is decided (then in
 * pieces that continue it), or when the next token shows it is over (or the generation ends), so
 * one run is one citation; uncopied tokens stream at once, except bytes of an unfinished multi-byte
 * character, which wait for the token completing it.
 */
export class DeltaBuilder {
  private readonly decoder = new TextDecoder();
  /** Mirrors `decoder`: whether it holds the bytes of an unfinished character. */
  private readonly utf8 = new Utf8State();
  /** True once any byte went into `decoder` (it drops a BOM only at the very start). */
  private fedBytes = false;
  private emittedText = "";
  /** The open run's tokens not emitted yet: copied tokens from consecutive positions of one passage. */
  private run: CommittedToken[] = [];
  /** Source of the open run's last token (emitted or not); undefined when no run is open. */
  private runLast: TokenSource | undefined;
  /** True when the decoder held no bytes when the open run began (its first token starts a character). */
  private runStartsClean = false;
  /** Set once the open run's first piece was emitted cited. */
  private open: OpenCitation | undefined;
  /** Tokens whose bytes are all inside an unfinished character; they go with the next delta. */
  private carriedTokens = 0;
  private numCompletion = 0;
  private numAttributed = 0;
  private numCopied = 0;
  private numCited = 0;
  private numCitations = 0;
  private numSingleTokenCitations = 0;
  /** Lower-cased words of each stored passage (built on first need). */
  private passageWords: ReadonlySet<string>[] | undefined;

  /** @param tokenBytes the UTF-8 bytes of a token's text (`ModelTokenizer.tokenBytes`). */
  constructor(
    private readonly store: TokenStore,
    private readonly tokenBytes: (id: number) => Uint8Array,
  ) {}

  /** Completion tokens pushed so far. */
  get completionTokens(): number {
    return this.numCompletion;
  }

  /** Completion tokens with provenance (a source), cited or not: the paper's attributed tokens. */
  get attributedTokens(): number {
    return this.numAttributed;
  }

  /** Completion tokens inside cited deltas. */
  get citedTokens(): number {
    return this.numCited;
  }

  /** The generated text emitted so far. */
  get text(): string {
    return this.emittedText;
  }

  /**
   * The attribution fields of `usage`; ratios are null when nothing was generated. `citations`
   * counts runs (a run emitted in pieces once); `single_token_citations` is final after `flush()`.
   */
  usage(): AttributionUsage {
    const n = this.numCompletion;
    const ratio = (x: number) => (n === 0 ? null : x / n);
    return {
      attributed_tokens: this.numAttributed,
      attribution_ratio: ratio(this.numAttributed),
      cited_tokens: this.numCited,
      cited_ratio: ratio(this.numCited),
      copied_tokens: this.numCopied,
      copied_ratio: ratio(this.numCopied),
      citations: this.numCitations,
      single_token_citations: this.numSingleTokenCitations,
    };
  }

  /**
   * Adds the tokens of one decoding step and returns the deltas ready to stream: everything up to
   * the open run, and the open run itself (or its new tokens) once its citation is decided.
   */
  push(tokens: readonly CommittedToken[]): DeltaEvent[] {
    const out: DeltaEvent[] = [];
    let plain: CommittedToken[] = [];
    for (const t of tokens) {
      this.numCompletion++;
      if (t.source) this.numAttributed++;
      if (t.source?.verified) this.numCopied++;
      const prev = this.runLast;
      if (prev && t.source && t.source.passage === prev.passage && t.source.pos === prev.pos + 1) {
        this.run.push(t);
        this.runLast = t.source;
        continue;
      }
      if (prev) this.closeRun(out, t);
      if (t.source && this.store.passages[t.source.passage]?.citable) {
        this.emitPlain(out, plain);
        plain = [];
        this.run = [t];
        this.runLast = t.source;
        this.runStartsClean = !this.utf8.pending;
      } else plain.push(t);
    }
    // A run still open took every token after its start, so `plain` comes before it.
    this.emitPlain(out, plain);
    if (this.runLast) this.streamRun(out);
    return out;
  }

  /** Emits whatever is held back (at the end of generation). */
  flush(): DeltaEvent[] {
    const out: DeltaEvent[] = [];
    if (this.runLast) this.closeRun(out, undefined);
    const rest = this.decoder.decode();
    if (rest.length > 0 || this.carriedTokens > 0) this.append(out, { text: rest, tokens: this.takeCarried(0) });
    return out;
  }

  private takeCarried(tokens: number): number {
    const all = tokens + this.carriedTokens;
    this.carriedTokens = 0;
    return all;
  }

  private decodeTokens(tokens: readonly CommittedToken[]): string {
    let text = "";
    for (const t of tokens) {
      const bytes = this.tokenBytes(t.id);
      this.utf8.feed(bytes);
      if (bytes.length > 0) this.fedBytes = true;
      text += this.decoder.decode(bytes, { stream: true });
    }
    return text;
  }

  /** Uncited tokens: their complete characters now, an unfinished character's tokens carried on. */
  private emitPlain(out: DeltaEvent[], tokens: readonly CommittedToken[]): void {
    if (tokens.length === 0) return;
    const text = this.decodeTokens(tokens);
    if (text.length === 0) {
      this.carriedTokens += tokens.length;
      return;
    }
    this.append(out, { text, tokens: this.takeCarried(tokens.length) });
  }

  /** Adds a delta, merging uncited text into an uncited delta just before it. */
  private append(out: DeltaEvent[], delta: DeltaEvent): void {
    const last = out.at(-1);
    if (!delta.citation && last && !last.citation) {
      out[out.length - 1] = { text: last.text + delta.text, tokens: last.tokens + delta.tokens };
    } else out.push(delta);
    this.emittedText += delta.text;
  }

  /**
   * The text the decoder would give for `tokens` from its current state, when the decoder holds no
   * bytes now and `tokens` end on a character boundary (so that text is final); else undefined.
   */
  private wholeCharacters(tokens: readonly CommittedToken[]): string | undefined {
    if (this.utf8.pending) return undefined;
    const state = new Utf8State();
    const decoder = new TextDecoder("utf-8", { ignoreBOM: this.fedBytes });
    let text = "";
    for (const t of tokens) {
      const bytes = this.tokenBytes(t.id);
      state.feed(bytes);
      text += decoder.decode(bytes, { stream: true });
    }
    return state.pending ? undefined : text + decoder.decode();
  }

  /**
   * At the end of a step: emits the open run's pending tokens when the run's citation is decided
   * (module comment) and they are whole characters equal to their passage range; else they wait.
   */
  private streamRun(out: DeltaEvent[]): void {
    const run = this.run;
    if (run.length === 0) return;
    const open = this.open;
    if (!open) {
      // A lone token-mode token waits: the next token tells whether its word goes on.
      if (!this.runStartsClean || (run.length < 2 && !run[0]!.source!.verified)) return;
      const first = run[0]!.source!;
      const sp = this.store.passages[first.passage]!;
      const start = sp.charStart[first.pos]!;
      const end = sp.charEnd[this.runLast!.pos]!;
      const text = this.wholeCharacters(run);
      const cited = sp.passage.text.slice(start, end);
      if (text === undefined || text.length === 0 || text !== cited) return;
      if (!this.earnsCitation(run, cited, start, end, sp.passage.text, this.emittedText.at(-1) ?? "", undefined)) return;
      if (this.carriedTokens > 0) this.append(out, { text: "", tokens: this.takeCarried(0) });
      this.emitPiece(out, sp, start, end, false);
      return;
    }
    const start = open.last.passage_end;
    const end = open.sp.charEnd[this.runLast!.pos]!;
    const text = this.wholeCharacters(run);
    if (text === undefined || text.length === 0 || text !== open.sp.passage.text.slice(start, end)) return;
    this.emitPiece(out, open.sp, start, end, true);
  }

  /**
   * Emits the open run's pending tokens as one cited delta over `[start, end)` of `sp`'s text (the
   * caller checked that they decode to exactly that text), continuing the run's citation or opening it.
   */
  private emitPiece(out: DeltaEvent[], sp: StoredPassage, start: number, end: number, continues: boolean): void {
    const tokens = this.run;
    this.run = [];
    const text = this.decodeTokens(tokens);
    const at = this.emittedText.length;
    const citation = citationOf(sp, start, end, at, text, continues);
    this.append(out, { text, tokens: tokens.length, citation });
    this.numCited += tokens.length;
    if (this.open) {
      this.open.last = citation;
      this.open.tokens += tokens.length;
    } else {
      this.open = { sp, last: citation, tokens: tokens.length };
      this.numCitations++;
    }
  }

  /**
   * Ends the open run and emits what it still holds. `next` is the token after it (undefined at the
   * end), which tells whether a lone token's word goes on in the generated text.
   */
  private closeRun(out: DeltaEvent[], next: CommittedToken | undefined): void {
    const open = this.open;
    const last = this.runLast!;
    this.open = undefined;
    this.runLast = undefined;
    if (open) this.closeOpenRun(out, open, last);
    else this.closeHeldRun(out, next);
  }

  /**
   * The rest of a run already emitted in part: one more continuing piece with the characters its
   * tokens complete (the bytes of an unfinished last character go with the next delta).
   */
  private closeOpenRun(out: DeltaEvent[], open: OpenCitation, last: TokenSource): void {
    const rest = this.run;
    this.run = [];
    if (rest.length > 0) {
      const text = this.decodeTokens(rest);
      const start = open.last.passage_end;
      const end = open.sp.charEnd[last.pos]!;
      if (text === open.sp.passage.text.slice(start, end)) {
        const at = this.emittedText.length;
        const citation = citationOf(open.sp, start, end, at, text, true);
        this.append(out, { text, tokens: rest.length, citation });
        this.numCited += rest.length;
        open.tokens += rest.length;
      } else if (text.length === 0) this.carriedTokens += rest.length;
      else this.append(out, { text, tokens: this.takeCarried(rest.length) });
    }
    if (open.tokens === 1) this.numSingleTokenCitations++;
  }

  /** Decides a run emitted in no part yet (module comment) and emits it. */
  private closeHeldRun(out: DeltaEvent[], next: CommittedToken | undefined): void {
    const run = this.run;
    this.run = [];
    const text = this.decodeTokens(run);
    const first = run[0]!.source!;
    const sp = this.store.passages[first.passage]!;
    // Smallest k such that the characters completed by run[k..] are exactly the passage's: k > 0
    // only when the run starts inside a multi-byte character begun by an earlier token.
    const endChar = sp.charEnd[run.at(-1)!.source!.pos]!;
    let k = 0;
    let cited = "";
    for (; k < run.length; k++) {
      cited = sp.passage.text.slice(sp.charStart[first.pos + k]!, endChar);
      if (cited.length > 0 && text.endsWith(cited)) break;
    }
    const startChar = sp.charStart[first.pos + k] ?? endChar;
    const prefix = text.slice(0, text.length - cited.length);
    const before = (this.emittedText + prefix).at(-1) ?? "";
    if (k === run.length || !this.earnsCitation(run, cited, startChar, endChar, sp.passage.text, before, next)) {
      if (text.length === 0) this.carriedTokens += run.length;
      else this.append(out, { text, tokens: this.takeCarried(run.length) });
      return;
    }
    if (prefix.length > 0 || k > 0 || this.carriedTokens > 0) this.append(out, { text: prefix, tokens: this.takeCarried(k) });
    const citedTokens = run.length - k;
    const at = this.emittedText.length;
    const citation = citationOf(sp, startChar, endChar, at, cited, false);
    this.append(out, { text: cited, tokens: citedTokens, citation });
    this.numCited += citedTokens;
    this.numCitations++;
    if (citedTokens === 1) this.numSingleTokenCitations++;
  }

  private earnsCitation(
    run: readonly CommittedToken[],
    cited: string,
    start: number,
    end: number,
    passageText: string,
    before: string,
    next: CommittedToken | undefined,
  ): boolean {
    const words = contentWords(cited);
    if (words.length === 0) return false;
    if (run.length >= 2 || run.some((t) => t.source?.verified)) return true;
    // A lone token-mode match: a whole word on both sides, and rare in the store.
    const startsWord = WORD_CHAR.test(cited[0]!);
    const endsWord = WORD_CHAR.test(cited.at(-1)!);
    if (startsWord && (WORD_CHAR.test(passageText[start - 1] ?? "") || WORD_CHAR.test(before))) return false;
    if (endsWord && WORD_CHAR.test(passageText[end] ?? "")) return false;
    if (endsWord && next) {
      const nextText = new TextDecoder().decode(this.tokenBytes(next.id));
      if (WORD_CHAR.test(nextText[0] ?? "")) return false;
    }
    const words0 = this.wordsOfPassages();
    const maxPassages = Math.max(1, Math.floor(words0.length * RARE_PASSAGE_SHARE));
    return words.some((w) => words0.filter((s) => s.has(w)).length <= maxPassages);
  }

  private wordsOfPassages(): ReadonlySet<string>[] {
    this.passageWords ??= this.store.passages.map((sp) => new Set(sp.passage.text.toLowerCase().match(WORD) ?? []));
    return this.passageWords;
  }
}

/** The passage a generated token was copied from (its id), or null for an LM-generated token. */
export type TokenPassage = string | null;

/**
 * Attribution ratio and mean attributed run length (spec §7, paper Table 2) over per-token sources:
 * ratio = attributed ÷ all tokens; a run is a maximal stretch of consecutive tokens attributed to
 * the same passage (a null or a different passage breaks it). Null values when undefined (no tokens,
 * no runs).
 */
export function attributionStats(tokens: readonly TokenPassage[]): { ratio: number | null; runLength: number | null; runs: number } {
  let attributed = 0;
  let runs = 0;
  let prev: TokenPassage = null;
  for (const t of tokens) {
    if (t !== null) {
      attributed++;
      if (t !== prev) runs++;
    }
    prev = t;
  }
  return {
    ratio: tokens.length === 0 ? null : attributed / tokens.length,
    runLength: runs === 0 ? null : attributed / runs,
    runs,
  };
}
