/**
 * @module nest/attribution
 * From per-token provenance to text deltas with citations, and the paper's attribution metrics
 * (nest-algorithm.md §7). Offsets are UTF-16 code units, 0-based, end-exclusive.
 */
import type { Citation, DeltaEvent } from "@nest/shared/protocol/events";
import type { TokenStore } from "./token-store.ts";

/** Where a generated token was copied from: passage index in the store and the token's own position. */
export interface TokenSource {
  readonly passage: number;
  readonly pos: number;
}

/** One committed token and its source (none when the LM produced it). */
export interface CommittedToken {
  readonly id: number;
  readonly source?: TokenSource;
}

const REPLACEMENT_CHAR = "\uFFFD";

/**
 * Turns committed tokens into `delta` events. Consecutive tokens copied from consecutive positions
 * of one passage form one cited delta whose text equals `passage.text.slice(passage_start,
 * passage_end)` exactly; when the decoded text and the passage range differ (a token that splits a
 * multi-byte character, or a passage the tokenizer does not round-trip), the delta is emitted
 * without a citation rather than with a wrong one.
 */
export class DeltaBuilder {
  private readonly ids: number[] = [];
  private emittedText = "";
  private pending: CommittedToken[] = [];
  private attributed = 0;
  private completion = 0;

  constructor(
    private readonly store: TokenStore,
    private readonly decode: (ids: readonly number[]) => string,
  ) {}

  /** Completion tokens pushed so far. */
  get completionTokens(): number {
    return this.completion;
  }

  /** Completion tokens emitted inside cited deltas. */
  get attributedTokens(): number {
    return this.attributed;
  }

  /** The generated text emitted so far. */
  get text(): string {
    return this.emittedText;
  }

  /** Adds the tokens of one decoding step and returns the deltas ready to stream. */
  push(tokens: readonly CommittedToken[]): DeltaEvent[] {
    const out: DeltaEvent[] = [];
    for (const group of groupBySpan(tokens)) {
      const all = this.pending.length > 0 ? [...this.pending, ...group] : group;
      for (const t of group) this.ids.push(t.id);
      this.completion += group.length;
      const decoded = this.decode(this.ids);
      if (decoded.endsWith(REPLACEMENT_CHAR)) {
        // An incomplete multi-byte character: wait for the next tokens.
        this.pending = [...all];
        continue;
      }
      this.pending = [];
      out.push(this.makeDelta(all, decoded));
    }
    return out;
  }

  /** Emits whatever is held back (at the end of generation). */
  flush(): DeltaEvent[] {
    if (this.pending.length === 0) return [];
    const decoded = this.decode(this.ids);
    const delta = this.makeDelta(this.pending, decoded);
    this.pending = [];
    return [delta];
  }

  private makeDelta(tokens: readonly CommittedToken[], decoded: string): DeltaEvent {
    const text = decoded.startsWith(this.emittedText)
      ? decoded.slice(this.emittedText.length)
      : decoded.slice(Math.min(this.emittedText.length, decoded.length));
    const textStart = this.emittedText.length;
    this.emittedText += text;
    const citation = this.citationFor(tokens, text, textStart);
    if (citation) this.attributed += tokens.length;
    return citation ? { text, tokens: tokens.length, citation } : { text, tokens: tokens.length };
  }

  private citationFor(tokens: readonly CommittedToken[], text: string, textStart: number): Citation | undefined {
    const first = tokens[0]?.source;
    const last = tokens.at(-1)?.source;
    if (!first || !last || text.length === 0) return undefined;
    for (let i = 0; i < tokens.length; i++) {
      const s = tokens[i]!.source;
      if (!s || s.passage !== first.passage || s.pos !== first.pos + i) return undefined;
    }
    const sp = this.store.passages[first.passage];
    if (!sp || !sp.citable) return undefined;
    const start = sp.charStart[first.pos]!;
    const end = sp.charEnd[last.pos]!;
    if (sp.passage.text.slice(start, end) !== text) return undefined;
    return {
      passage_id: sp.passage.id,
      title: sp.passage.title,
      source: sp.passage.source,
      passage_start: start,
      passage_end: end,
      text_start: textStart,
      text_end: textStart + text.length,
    };
  }
}

/** Splits tokens into maximal runs that are either copied from consecutive positions of one passage, or LM-generated. */
export function groupBySpan(tokens: readonly CommittedToken[]): CommittedToken[][] {
  const groups: CommittedToken[][] = [];
  let cur: CommittedToken[] = [];
  for (const t of tokens) {
    const prev = cur.at(-1);
    const continues =
      prev !== undefined &&
      (prev.source && t.source
        ? prev.source.passage === t.source.passage && t.source.pos === prev.source.pos + 1
        : !prev.source && !t.source);
    if (!continues && cur.length > 0) {
      groups.push(cur);
      cur = [];
    }
    cur.push(t);
  }
  if (cur.length > 0) groups.push(cur);
  return groups;
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
