/**
 * What earns a citation (README "Attribution"), with hand-made token sequences: a tiny vocabulary
 * whose tokens are byte strings, passages given as token lists, and the expected deltas written out.
 */
import { describe, expect, it } from "vitest";
import {
  attributionStats,
  contentWords,
  DeltaBuilder,
  tokenModeSource,
  type CommittedToken,
} from "../../../../gpu-worker/src/nest/attribution.ts";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import type { Citation, DeltaEvent } from "@nest/shared/protocol/events";
import { citeIntoDocument } from "@nest/shared/retrieve/documents";
import { buildTokenStore, type EncodedPassage, type TokenStore } from "../../../../gpu-worker/src/nest/token-store.ts";

/** Vocabulary: token id → bytes (strings are UTF-8 encoded). */
const VOCAB: Uint8Array[] = [];
const ids = new Map<string, number>();
function tok(piece: string | number[]): number {
  const key = typeof piece === "string" ? piece : `bytes:${piece.join(",")}`;
  let id = ids.get(key);
  if (id === undefined) {
    id = VOCAB.length;
    VOCAB.push(typeof piece === "string" ? new TextEncoder().encode(piece) : Uint8Array.from(piece));
    ids.set(key, id);
  }
  return id;
}
const bytesOf = (id: number) => VOCAB[id]!;

/**
 * A passage from its token pieces, with the offsets written by hand (`ranges`) or, by default,
 * the pieces' cumulative string lengths.
 */
function passage(id: string, pieces: (string | number[])[], text?: string, ranges?: [number, number][]): EncodedPassage {
  const strs = pieces.map((p) => (typeof p === "string" ? p : ""));
  let at = 0;
  const r = ranges ?? strs.map((s) => [at, (at += s.length)] as [number, number]);
  return {
    passage: { id, title: `Title ${id}`, text: text ?? strs.join(""), source: `test/${id}` },
    tokens: Int32Array.from(pieces, tok),
    charStart: Int32Array.from(r, (x) => x[0]),
    charEnd: Int32Array.from(r, (x) => x[1]),
    citable: true,
    keys: new Float32Array(Math.max(0, pieces.length - 1) * 2),
  };
}
const storeOf = (...ps: EncodedPassage[]): TokenStore => buildTokenStore(ps, 2);

/** Committed tokens: LM-generated (a string), token-mode match `m(p, pos)`, verified copy `v(p, pos)`. */
const lm = (piece: string | number[]): CommittedToken => ({ id: tok(piece) });
function m(store: TokenStore, p: number, pos: number): CommittedToken {
  return { id: store.passages[p]!.tokens[pos]!, source: { passage: p, pos } };
}
function v(store: TokenStore, p: number, pos: number): CommittedToken {
  return { id: store.passages[p]!.tokens[pos]!, source: { passage: p, pos, verified: true } };
}

const CAPITAL = passage("as-capital", ["name", ":", " Canberra", ";", " time", " difference", ":", " UTC", "+", "1", "0"]);
// Fillers: the store holds 10 passages, so "rare" means in at most max(1, ⌊10/10⌋) = 1 of them.
const FILLERS = Array.from({ length: 8 }, (_, i) => passage(`f${i}`, [" the", " capital", " of", " Australia", ",", " of", " the"]));
const KIRIBATI = passage("kr-location", [" the", " capital", " of", " Kiribati", " is", " Tarawa", ","]);

describe("DeltaBuilder: what is cited", () => {
  const store = storeOf(CAPITAL, KIRIBATI, ...FILLERS);

  it("a verified span copy is cited with exact offsets and cited_text", () => {
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([lm(" It"), lm(" is"), v(store, 0, 2), v(store, 0, 3), lm(" a")]), ...b.flush()];
    expect(out).toEqual([
      { text: " It is", tokens: 2 },
      {
        text: " Canberra;",
        tokens: 2,
        citation: {
          passage_id: "as-capital",
          title: "Title as-capital",
          source: "test/as-capital",
          passage_start: 5,
          passage_end: 15,
          text_start: 6,
          text_end: 16,
          cited_text: " Canberra;",
        },
      },
      { text: " a", tokens: 1 },
    ]);
    expect(b.usage()).toEqual({
      attributed_tokens: 2,
      attribution_ratio: 0.4,
      cited_tokens: 2,
      cited_ratio: 0.4,
      copied_tokens: 2,
      copied_ratio: 0.4,
      citations: 1,
      single_token_citations: 0,
    });
  });

  it("lone stop words and punctuation keep their provenance but get no citation", () => {
    const b = new DeltaBuilder(store, bytesOf);
    // " of" from a filler, "," from Kiribati, " the" from Kiribati: three unrelated single matches.
    const out = [
      ...b.push([lm("The"), lm(" city")]),
      ...b.push([m(store, 2, 2)]),
      ...b.push([lm(" Aus")]),
      ...b.push([m(store, 1, 6)]),
      ...b.push([m(store, 1, 0)]),
      ...b.flush(),
    ];
    expect(out.every((d) => !d.citation)).toBe(true);
    expect(out.map((d) => d.text).join("")).toBe("The city of Aus, the");
    expect(b.usage()).toMatchObject({ attributed_tokens: 3, attribution_ratio: 0.5, cited_tokens: 0, cited_ratio: 0, citations: 0 });
  });

  it("a lone common word (in most stored passages) is not cited; the question's words are not evidence", () => {
    const b = new DeltaBuilder(store, bytesOf);
    // " capital" occurs in 9 of the 10 passages; " Australia" in the 8 fillers.
    const out = [...b.push([lm("The")]), ...b.push([m(store, 1, 1)]), ...b.push([lm(" in")]), ...b.push([m(store, 2, 3)]), ...b.flush()];
    expect(out.filter((d) => d.citation)).toEqual([]);
    expect(b.attributedTokens).toBe(2);
  });

  it("a lone rare whole word is cited; followed by more letters (a word piece) it is not", () => {
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([lm(" It"), lm(" is")]), ...b.push([m(store, 1, 5)]), ...b.push([lm(".")]), ...b.flush()];
    expect(out).toEqual([
      { text: " It is", tokens: 2 },
      {
        text: " Tarawa",
        tokens: 1,
        citation: {
          passage_id: "kr-location",
          title: "Title kr-location",
          source: "test/kr-location",
          passage_start: 27,
          passage_end: 34,
          text_start: 6,
          text_end: 13,
          cited_text: " Tarawa",
        },
      },
      { text: ".", tokens: 1 },
    ]);
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 1, cited_tokens: 1 });

    const c = new DeltaBuilder(store, bytesOf);
    const pieces = [...c.push([m(store, 1, 5)]), ...c.push([lm("n")]), ...c.flush()];
    expect(pieces).toEqual([{ text: " Tarawan", tokens: 2 }]);
  });

  it("single-token steps from consecutive positions merge into one cited run, streamed once it is decided", () => {
    const b = new DeltaBuilder(store, bytesOf);
    expect(b.push([lm("It"), lm("'s")])).toEqual([{ text: "It's", tokens: 2 }]);
    expect(b.push([m(store, 0, 2)])).toEqual([]); // " Canberra": a lone token-mode token, held
    // ";" continues it: two tokens with a content word earn the citation, streamed at once.
    expect(b.push([m(store, 0, 3)])).toEqual([
      {
        text: " Canberra;",
        tokens: 2,
        citation: {
          passage_id: "as-capital",
          title: "Title as-capital",
          source: "test/as-capital",
          passage_start: 5,
          passage_end: 15,
          text_start: 4,
          text_end: 14,
          cited_text: " Canberra;",
        },
      },
    ]);
    expect(b.push([m(store, 0, 4)])).toEqual([
      {
        text: " time",
        tokens: 1,
        citation: {
          passage_id: "as-capital",
          title: "Title as-capital",
          source: "test/as-capital",
          passage_start: 15,
          passage_end: 20,
          text_start: 14,
          text_end: 19,
          cited_text: " time",
          continues: true,
        },
      },
    ]);
    expect([...b.push([lm(" and")]), ...b.flush()]).toEqual([{ text: " and", tokens: 1 }]);
    expect(b.text).toBe("It's Canberra; time and");
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 0, cited_tokens: 3, attributed_tokens: 3, copied_tokens: 0 });
  });

  it("a run of two stop-word/punctuation tokens is not cited, even when consecutive", () => {
    const b = new DeltaBuilder(store, bytesOf);
    // " of" " the"? Filler positions 5, 6 are " of", " the".
    const out = [...b.push([m(store, 2, 5)]), ...b.push([m(store, 2, 6)]), ...b.flush()];
    expect(out).toEqual([{ text: " of the", tokens: 2 }]);
  });

  it("a jump in positions or a passage change splits runs", () => {
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([v(store, 0, 7), v(store, 0, 8), m(store, 1, 3), m(store, 1, 4), v(store, 0, 9)]), ...b.flush()];
    expect(out.map((d) => [d.text, d.tokens, d.citation?.passage_id ?? null])).toEqual([
      [" UTC+", 2, "as-capital"],
      [" Kiribati is", 2, "kr-location"],
      ["1", 1, "as-capital"], // a verified copy of a digit: content
    ]);
  });

  it("a verified copy of a single comma is not cited (nothing to say), but counts as copied", () => {
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([lm(" x"), v(store, 1, 6)]), ...b.push([lm(" y")]), ...b.flush()];
    expect(out).toEqual([
      { text: " x", tokens: 1 },
      { text: ", y", tokens: 2 },
    ]);
    expect(b.usage()).toMatchObject({ copied_tokens: 1, cited_tokens: 0, attributed_tokens: 1 });
  });
});

// "Go 👍 Canberra": 👍 is F0 9F 91 8D, split over two tokens; UTF-16 ranges written by hand:
// "Go" [0,2), " \xF0\x9F" completes only " " → [2,3), "\x91\x8D" completes 👍 (2 units) → [3,5).
const EMOJI = passage("emoji", ["Go", [0x20, 0xf0, 0x9f], [0x91, 0x8d], " Canberra"], "Go 👍 Canberra", [
  [0, 2],
  [2, 3],
  [3, 5],
  [5, 14],
]);

describe("DeltaBuilder: offsets stay exact", () => {
  it("spacing the tokenizer would 'clean up' (film , television) is cited as stored", () => {
    const store = storeOf(passage("w", ["The", " film", " ,", " television", " and", " radio"]));
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([lm("In")]), ...b.push([v(store, 0, 1), v(store, 0, 2), v(store, 0, 3)]), ...b.flush()];
    expect(out[1]).toEqual({
      text: " film , television",
      tokens: 3,
      citation: {
        passage_id: "w",
        title: "Title w",
        source: "test/w",
        passage_start: 3,
        passage_end: 21,
        text_start: 2,
        text_end: 20,
        cited_text: " film , television",
      },
    });
  });

  it("CRLF and a leading space are part of the cited characters", () => {
    const store = storeOf(passage("crlf", ["Line", "\r\n", "Mount", " Everest"]));
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([v(store, 0, 1), v(store, 0, 2), v(store, 0, 3)]), ...b.flush()];
    expect(out).toEqual([
      {
        text: "\r\nMount Everest",
        tokens: 3,
        citation: {
          passage_id: "crlf",
          title: "Title crlf",
          source: "test/crlf",
          passage_start: 4,
          passage_end: 19,
          text_start: 0,
          text_end: 15,
          cited_text: "\r\nMount Everest",
        },
      },
    ]);
  });

  it("a run ending inside a multi-byte character cites the characters it completes", () => {
    const store = storeOf(EMOJI);
    const b = new DeltaBuilder(store, bytesOf);
    const out = [...b.push([v(store, 0, 0), v(store, 0, 1)]), ...b.push([lm([0x91, 0x8d]), lm("!")]), ...b.flush()];
    expect(out).toEqual([
      {
        text: "Go ",
        tokens: 2,
        citation: {
          passage_id: "emoji",
          title: "Title emoji",
          source: "test/emoji",
          passage_start: 0,
          passage_end: 3,
          text_start: 0,
          text_end: 3,
          cited_text: "Go ",
        },
      },
      { text: "👍!", tokens: 2 },
    ]);
  });

  it("a run starting inside a multi-byte character is cited from the first token that starts a character", () => {
    const store = storeOf(EMOJI);
    const b = new DeltaBuilder(store, bytesOf);
    // "x" then the emoji's second half (stray continuation bytes → two U+FFFD) and " Canberra".
    const out = [...b.push([lm("x")]), ...b.push([v(store, 0, 2), v(store, 0, 3)]), ...b.flush()];
    expect(out).toEqual([
      { text: "x", tokens: 1 },
      { text: "\uFFFD\uFFFD", tokens: 1 },
      {
        text: " Canberra",
        tokens: 1,
        citation: {
          passage_id: "emoji",
          title: "Title emoji",
          source: "test/emoji",
          passage_start: 5,
          passage_end: 14,
          text_start: 3,
          text_end: 12,
          cited_text: " Canberra",
        },
      },
    ]);
  });

  it("an LM token inside a character waits for the token completing it", () => {
    const store = storeOf(EMOJI);
    const b = new DeltaBuilder(store, bytesOf);
    expect(b.push([lm([0xf0, 0x9f])])).toEqual([]);
    expect(b.push([lm([0x91, 0x8d]), lm(" ok")])).toEqual([{ text: "👍 ok", tokens: 3 }]);
    expect(b.flush()).toEqual([]);
  });

  it("a cut-off character at the end is flushed as U+FFFD", () => {
    const b = new DeltaBuilder(storeOf(EMOJI), bytesOf);
    // Tokens are counted in the delta that emits them: both are in "a" (the second only began a character).
    expect(b.push([lm("a"), lm([0xf0, 0x9f])])).toEqual([{ text: "a", tokens: 2 }]);
    expect(b.flush()).toEqual([{ text: "\uFFFD", tokens: 0 }]);
  });

  it("the generated text is always the concatenation of the deltas, and each citation indexes it", () => {
    const store = storeOf(CAPITAL, KIRIBATI, ...FILLERS);
    const b = new DeltaBuilder(store, bytesOf);
    const steps: CommittedToken[][] = [
      [lm("The")],
      [m(store, 1, 1)],
      [m(store, 1, 2)],
      [lm(" Australia")],
      [v(store, 0, 2), v(store, 0, 3)],
      [m(store, 2, 4)],
      [lm(" ok")],
    ];
    const deltas = [...steps.flatMap((s) => b.push(s)), ...b.flush()];
    const text = deltas.map((d) => d.text).join("");
    expect(text).toBe(b.text);
    expect(text).toBe("The capital of Australia Canberra;, ok");
    for (const d of deltas.filter((x) => x.citation)) {
      expect(text.slice(d.citation!.text_start, d.citation!.text_end)).toBe(d.text);
      expect(d.citation!.cited_text).toBe(d.text);
    }
    expect(deltas.filter((d) => d.citation).map((d) => d.text)).toEqual([" capital of", " Canberra;"]);
    expect(deltas.reduce((s, d) => s + d.tokens, 0)).toBe(8);
  });
});

describe("DeltaBuilder: a run streams as soon as its citation is decided", () => {
  const store = storeOf(CAPITAL, KIRIBATI, ...FILLERS);
  const capital = { passage_id: "as-capital", title: "Title as-capital", source: "test/as-capital" };

  it("a verified run pushed in three steps comes out in three pieces, the later ones continuing the first", () => {
    const b = new DeltaBuilder(store, bytesOf);
    expect(b.push([lm(" It"), lm(" is"), v(store, 0, 2)])).toEqual([
      { text: " It is", tokens: 2 },
      {
        text: " Canberra",
        tokens: 1,
        citation: { ...capital, passage_start: 5, passage_end: 14, text_start: 6, text_end: 15, cited_text: " Canberra" },
      },
    ]);
    expect(b.push([v(store, 0, 3), v(store, 0, 4)])).toEqual([
      {
        text: "; time",
        tokens: 2,
        citation: { ...capital, passage_start: 14, passage_end: 20, text_start: 15, text_end: 21, cited_text: "; time", continues: true },
      },
    ]);
    expect(b.push([v(store, 0, 5)])).toEqual([
      {
        text: " difference",
        tokens: 1,
        citation: {
          ...capital,
          passage_start: 20,
          passage_end: 31,
          text_start: 21,
          text_end: 32,
          cited_text: " difference",
          continues: true,
        },
      },
    ]);
    expect(b.push([lm(".")])).toEqual([{ text: ".", tokens: 1 }]);
    expect(b.flush()).toEqual([]);
    expect(b.text).toBe(" It is Canberra; time difference.");
    expect(b.usage()).toEqual({
      attributed_tokens: 4,
      attribution_ratio: 4 / 7,
      cited_tokens: 4,
      cited_ratio: 4 / 7,
      copied_tokens: 4,
      copied_ratio: 4 / 7,
      citations: 1,
      single_token_citations: 0,
    });
  });

  it("a lone verified token streams at once; a run that stays one token is a single-token citation", () => {
    const b = new DeltaBuilder(store, bytesOf);
    expect(b.push([v(store, 0, 9)])).toEqual([
      { text: "1", tokens: 1, citation: { ...capital, passage_start: 37, passage_end: 38, text_start: 0, text_end: 1, cited_text: "1" } },
    ]);
    expect(b.push([lm(" ok")])).toEqual([{ text: " ok", tokens: 1 }]);
    expect(b.flush()).toEqual([]);
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 1, cited_tokens: 1 });
  });

  it("a lone token-mode token is still held until the next push decides it", () => {
    const b = new DeltaBuilder(store, bytesOf);
    expect(b.push([lm(" It"), lm(" is")])).toEqual([{ text: " It is", tokens: 2 }]);
    expect(b.push([m(store, 1, 5)])).toEqual([]);
    expect(b.push([lm(".")])).toEqual([
      {
        text: " Tarawa",
        tokens: 1,
        citation: {
          passage_id: "kr-location",
          title: "Title kr-location",
          source: "test/kr-location",
          passage_start: 27,
          passage_end: 34,
          text_start: 6,
          text_end: 13,
          cited_text: " Tarawa",
        },
      },
      { text: ".", tokens: 1 },
    ]);
  });

  const emoji = { passage_id: "emoji", title: "Title emoji", source: "test/emoji" };

  it("a first piece ending inside a multi-byte character waits for the token completing it", () => {
    const es = storeOf(EMOJI);
    const b = new DeltaBuilder(es, bytesOf);
    expect(b.push([v(es, 0, 0), v(es, 0, 1)])).toEqual([]); // "Go \xF0\x9F": 👍 unfinished
    expect(b.push([v(es, 0, 2)])).toEqual([
      {
        text: "Go 👍",
        tokens: 3,
        citation: { ...emoji, passage_start: 0, passage_end: 5, text_start: 0, text_end: 5, cited_text: "Go 👍" },
      },
    ]);
    expect(b.push([v(es, 0, 3)])).toEqual([
      {
        text: " Canberra",
        tokens: 1,
        citation: { ...emoji, passage_start: 5, passage_end: 14, text_start: 5, text_end: 14, cited_text: " Canberra", continues: true },
      },
    ]);
    expect(b.flush()).toEqual([]);
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 0, cited_tokens: 4 });
  });

  it("a continuing piece split inside a multi-byte character is emitted exactly once the character is whole", () => {
    const es = storeOf(EMOJI);
    const b = new DeltaBuilder(es, bytesOf);
    expect(b.push([v(es, 0, 0)])).toEqual([
      { text: "Go", tokens: 1, citation: { ...emoji, passage_start: 0, passage_end: 2, text_start: 0, text_end: 2, cited_text: "Go" } },
    ]);
    expect(b.push([v(es, 0, 1)])).toEqual([]);
    expect(b.push([v(es, 0, 2)])).toEqual([
      {
        text: " 👍",
        tokens: 2,
        citation: { ...emoji, passage_start: 2, passage_end: 5, text_start: 2, text_end: 5, cited_text: " 👍", continues: true },
      },
    ]);
    expect(b.flush()).toEqual([]);
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 0, cited_tokens: 3 });
  });

  it("an open run ending inside a multi-byte character cites the characters it completes; the rest goes on uncited", () => {
    const es = storeOf(EMOJI);
    const b = new DeltaBuilder(es, bytesOf);
    expect(b.push([v(es, 0, 0)])).toHaveLength(1);
    expect(b.push([v(es, 0, 1)])).toEqual([]);
    expect(b.push([lm([0x91, 0x8d]), lm("!")])).toEqual([
      {
        text: " ",
        tokens: 1,
        citation: { ...emoji, passage_start: 2, passage_end: 3, text_start: 2, text_end: 3, cited_text: " ", continues: true },
      },
      { text: "👍!", tokens: 2 },
    ]);
    expect(b.text).toBe("Go 👍!");
    expect(b.usage()).toMatchObject({ citations: 1, single_token_citations: 0, cited_tokens: 2 });
  });

  it("a run that begins while a character is unfinished is held to its end, as before", () => {
    const es = storeOf(EMOJI);
    const b = new DeltaBuilder(es, bytesOf);
    expect(b.push([lm([0xf0, 0x9f])])).toEqual([]);
    expect(b.push([v(es, 0, 2), v(es, 0, 3)])).toEqual([]);
    expect(b.push([lm("!")])).toEqual([
      { text: "", tokens: 1 },
      {
        text: "👍 Canberra",
        tokens: 2,
        citation: { ...emoji, passage_start: 3, passage_end: 14, text_start: 0, text_end: 11, cited_text: "👍 Canberra" },
      },
      { text: "!", tokens: 1 },
    ]);
  });

  it("streaming changes neither the text, nor the runs cited, nor the usage (random step splits vs one push)", () => {
    const rs = storeOf(CAPITAL, KIRIBATI, EMOJI, ...FILLERS);
    // mulberry32 (eval/stats' PRNG), seeded: the same 200 sequences every run.
    let seed = 12345;
    const rand = () => {
      seed = (seed + 0x6d2b79f5) | 0;
      let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
      t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
      return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;
    const lmPieces: (string | number[])[] = [" and", ".", "x", [0xf0, 0x9f], [0x91, 0x8d], " Canberra"];
    const citationsOf = (ds: readonly DeltaEvent[]) =>
      joinContinuedCitations(ds.flatMap((d) => (d.citation ? [{ ...d.citation, tokens: d.tokens }] : [])));
    let streamedEarly = 0;
    for (let n = 0; n < 200; n++) {
      const tokens: CommittedToken[] = [];
      for (let seg = 0; seg < 6; seg++) {
        if (rand() < 0.35) tokens.push(lm(pick(lmPieces)));
        else {
          const p = pick([0, 1, 2]);
          const len = rs.passages[p]!.tokens.length;
          const from = Math.floor(rand() * len);
          const copy = rand() < 0.5 ? v : m;
          for (let pos = from; pos < Math.min(len, from + 1 + Math.floor(rand() * 4)); pos++) tokens.push(copy(rs, p, pos));
        }
      }
      const whole = new DeltaBuilder(rs, bytesOf);
      const once = [...whole.push(tokens), ...whole.flush()];
      const split = new DeltaBuilder(rs, bytesOf);
      const pieces: DeltaEvent[] = [];
      for (let i = 0; i < tokens.length; ) {
        const step = 1 + Math.floor(rand() * 3);
        const got = split.push(tokens.slice(i, i + step));
        i += step;
        if (i < tokens.length && got.some((d) => d.citation)) streamedEarly++;
        pieces.push(...got);
      }
      pieces.push(...split.flush());
      expect(split.text).toBe(whole.text);
      expect(pieces.map((d) => d.text).join("")).toBe(whole.text);
      expect(split.usage()).toEqual(whole.usage());
      expect(citationsOf(pieces)).toEqual(citationsOf(once));
      expect(citationsOf(pieces).length).toBe(split.usage().citations);
      for (const d of pieces.filter((x) => x.citation)) {
        const c = d.citation!;
        const sp = rs.passages.find((x) => x.passage.id === c.passage_id)!;
        expect(sp.passage.text.slice(c.passage_start, c.passage_end)).toBe(d.text);
        expect(c.cited_text).toBe(d.text);
        expect(split.text.slice(c.text_start, c.text_end)).toBe(d.text);
      }
    }
    expect(streamedEarly).toBeGreaterThan(20); // the comparison did exercise pieces streamed before the end
  });

  it("pieces of a run over a request document map to exact document text, and join into the run's citation", () => {
    // The passage is a chunk of documents[0] starting at offset 7.
    const DOC_TEXT = "Notes: Go 👍 Canberra";
    const chunk: EncodedPassage = { ...EMOJI, passage: { ...EMOJI.passage, document: { index: 0, id: "notes", start: 7 } } };
    const ds = storeOf(chunk);
    const b = new DeltaBuilder(ds, bytesOf);
    const steps = [[v(ds, 0, 0)], [v(ds, 0, 1)], [v(ds, 0, 2)], [v(ds, 0, 3)]];
    const perStep = steps.map((s) => b.push(s).map((d) => citeIntoDocument(d.citation!, [chunk.passage])));
    expect(
      perStep.map((cs) => cs.map((c) => [c.document_index, c.document_id, c.start, c.end, c.cited_text, c.continues ?? false])),
    ).toEqual([[[0, "notes", 7, 9, "Go", false]], [], [[0, "notes", 9, 12, " 👍", true]], [[0, "notes", 12, 21, " Canberra", true]]]);
    const pieces: Citation[] = perStep.flat();
    for (const c of pieces) expect(DOC_TEXT.slice(c.start, c.end)).toBe(c.cited_text);
    expect(joinContinuedCitations(pieces)).toEqual([
      {
        ...emoji,
        passage_start: 0,
        passage_end: 14,
        text_start: 0,
        text_end: 14,
        cited_text: "Go 👍 Canberra",
        document_index: 0,
        document_id: "notes",
        start: 7,
        end: 21,
      },
    ]);
  });
});

describe("tokenModeSource", () => {
  const a = passage("a", [" x", " y", " z"]);
  const b2 = passage("b", [" w", " y"]);
  const store = storeOf(a, b2);
  // Keys: a → values pos 1, 2 (keys 0, 1); b → value pos 1 (key 2). Nearest first: b's " y", then a's.
  const neighbours = { keys: Int32Array.from([2, 0, 1]), distances: Float64Array.from([0.1, 0.2, 0.3]) };

  it("takes the nearest neighbour carrying the token", () => {
    expect(tokenModeSource(store, neighbours, tok(" y"))).toEqual({ passage: 1, pos: 1 });
    expect(tokenModeSource(store, neighbours, tok(" nowhere"))).toBeUndefined();
  });

  it("prefers the neighbour that continues the previous token's passage position", () => {
    expect(tokenModeSource(store, neighbours, tok(" y"), { passage: 0, pos: 0 })).toEqual({ passage: 0, pos: 1 });
    // The continuation must be among the neighbours and carry the token.
    expect(
      tokenModeSource(store, { keys: Int32Array.from([2]), distances: Float64Array.from([0.1]) }, tok(" y"), { passage: 0, pos: 0 }),
    ).toEqual({ passage: 1, pos: 1 });
  });
});

describe("contentWords", () => {
  it("drops stop words, contraction pieces and single letters, keeps names and digits", () => {
    expect(contentWords(" The capital of Australia's")).toEqual(["capital", "australia"]);
    expect(contentWords(" it's a")).toEqual([]);
    expect(contentWords(",")).toEqual([]);
    expect(contentWords(" 7")).toEqual(["7"]);
  });
});

describe("attribution metrics (spec §7)", () => {
  // Per-token sources as passage ids (null = LM-generated).
  const s = (p: number) => `p${p}`;
  it("ratio = sourced tokens / generated tokens", () => {
    expect(attributionStats([s(0), null, s(0), s(1)]).ratio).toBe(0.75);
    expect(attributionStats([]).ratio).toBeNull();
  });
  it("length = mean run length, runs break on a missing source or a passage change", () => {
    // runs: [0,0,0] (3), [1] (1), [0,0] (2) → 2
    expect(attributionStats([s(0), s(0), s(0), s(1), null, s(0), s(0)]).runLength).toBe(2);
    expect(attributionStats([null]).runLength).toBeNull();
  });
});
