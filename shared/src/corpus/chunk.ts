/**
 * @module corpus/chunk
 * Sentence-aware chunking of a text into pieces of at most ~N words, with exact UTF-16 offsets
 * into the source. Pure and Worker-safe (uses only `Intl.Segmenter`).
 *
 * Rules: sentences (ICU sentence boundaries, with common abbreviations such as `Capt.`, `U.S.` or
 * `Jan.` not ending a sentence) are packed greedily into chunks of at most `maxWords` words; a
 * sentence is never split unless it alone exceeds `maxWords`, in which case it is cut at word
 * boundaries into pieces of `maxWords` words (its last piece may be followed by further sentences).
 * A "word" is a maximal run of non-whitespace characters. Chunks carry no leading or trailing
 * whitespace.
 */

/** A piece of a source text: `source.slice(start, end) === text` (UTF-16 code units, end-exclusive). */
export interface Chunk {
  text: string;
  /** Offset of the first character in the source (UTF-16 code units, 0-based). */
  start: number;
  /** Offset one past the last character in the source (UTF-16 code units). */
  end: number;
}

/** Options for {@link chunkText}. */
export interface ChunkOptions {
  /** Word budget per chunk (whitespace-separated words). @defaultValue 100 */
  maxWords?: number;
  /** Locale for the sentence segmenter. @defaultValue "en" */
  locale?: string;
}

/** Default word budget per chunk. */
export const DEFAULT_CHUNK_WORDS = 100;

/** A span `[start, end)` of the source with its word count. */
interface Span {
  start: number;
  end: number;
  words: number;
}

/**
 * A sentence-final token that is really an abbreviation: a single capital initial (`J.`), a dotted
 * acronym (`U.S.`, `e.g.`), or a common title/short form. Such a "sentence" is merged with the next.
 */
const ABBREVIATION =
  /(?:^|[\s(])(?:[A-Z]|(?:[A-Za-z]\.)+[A-Za-z]|Mr|Mrs|Ms|Dr|St|Mt|Ft|Capt|Gen|Lt|Col|Cmdr|Adm|Maj|Sgt|Gov|Pres|Sen|Rep|Rev|Jr|Sr|No|Nos|vs|approx|Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec|Inc|Corp|Ltd|Co)\.$/;

const segmenters = new Map<string, Intl.Segmenter>();

function segmenter(locale: string): Intl.Segmenter {
  let s = segmenters.get(locale);
  if (!s) {
    s = new Intl.Segmenter(locale, { granularity: "sentence" });
    segmenters.set(locale, s);
  }
  return s;
}

/** Word spans `[start, end)` of `source` within `[from, to)`. */
function wordSpans(source: string, from = 0, to = source.length): Array<[number, number]> {
  const out: Array<[number, number]> = [];
  const re = /\S+/g;
  re.lastIndex = from;
  for (let m = re.exec(source); m && m.index < to; m = re.exec(source)) {
    out.push([m.index, Math.min(m.index + m[0].length, to)]);
  }
  return out;
}

/** Span of `source[start, end)` with surrounding whitespace removed, or null if blank. */
function trimSpan(source: string, start: number, end: number): Span | null {
  const words = wordSpans(source, start, end);
  const first = words[0];
  const last = words[words.length - 1];
  if (!first || !last) return null;
  return { start: first[0], end: last[1], words: words.length };
}

/**
 * Splits `source` into sentence spans (trimmed, non-empty, in order), merging a sentence that ends
 * in an abbreviation with the one after it.
 *
 * @returns spans with UTF-16 offsets into `source` and their word counts
 */
export function sentenceSpans(source: string, locale = "en"): Array<{ start: number; end: number; words: number }> {
  const out: Span[] = [];
  let pendingStart = -1;
  for (const seg of segmenter(locale).segment(source)) {
    const span = trimSpan(source, seg.index, seg.index + seg.segment.length);
    if (!span) continue;
    const start = pendingStart >= 0 ? pendingStart : span.start;
    if (ABBREVIATION.test(source.slice(span.start, span.end))) {
      pendingStart = start;
      continue;
    }
    pendingStart = -1;
    out.push({ start, end: span.end, words: wordSpans(source, start, span.end).length });
  }
  if (pendingStart >= 0) {
    const tail = trimSpan(source, pendingStart, source.length);
    if (tail) out.push(tail);
  }
  return out;
}

/**
 * Chunks `source` into pieces of at most `maxWords` words, sentence-aware (see module doc).
 *
 * @param source the text to chunk (any length; blank text gives `[]`)
 * @returns chunks in order; `source.slice(c.start, c.end) === c.text` for each
 * @throws RangeError if `maxWords` is not a positive integer
 */
export function chunkText(source: string, options: ChunkOptions = {}): Chunk[] {
  const maxWords = options.maxWords ?? DEFAULT_CHUNK_WORDS;
  if (!Number.isInteger(maxWords) || maxWords < 1) {
    throw new RangeError(`maxWords must be a positive integer, got ${maxWords}`);
  }
  const spans: Span[] = [];
  let cur: Span | null = null;
  for (const sentence of sentenceSpans(source, options.locale)) {
    if (sentence.words > maxWords) {
      if (cur) spans.push(cur);
      const words = wordSpans(source, sentence.start, sentence.end);
      for (let i = 0; i < words.length; i += maxWords) {
        const piece = words.slice(i, i + maxWords);
        spans.push({ start: piece[0]![0], end: piece[piece.length - 1]![1], words: piece.length });
      }
      cur = spans.pop() ?? null; // the last piece may take further sentences
    } else if (cur && cur.words + sentence.words <= maxWords) {
      cur = { start: cur.start, end: sentence.end, words: cur.words + sentence.words };
    } else {
      if (cur) spans.push(cur);
      cur = { ...sentence };
    }
  }
  if (cur) spans.push(cur);
  return spans.map(({ start, end }) => ({ text: source.slice(start, end), start, end }));
}

/** Number of whitespace-separated words in `text`. */
export function countWords(text: string): number {
  return wordSpans(text).length;
}
