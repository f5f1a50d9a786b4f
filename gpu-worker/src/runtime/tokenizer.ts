/**
 * @module runtime/tokenizer
 * The model's tokenizer (tokenizer.json, pure JS via `@huggingface/tokenizers`) and chat template
 * (Jinja via `@huggingface/jinja`), both read from the prepared model folder.
 *
 * Two rules keep citations exact and the chat structure in the template's hands (issue 12 item 3,
 * issue 14 item 6):
 * - **Plain text.** User content, passages and scored continuations are tokenised as plain text:
 *   a `<|im_end|>` written inside them is the characters `<`, `|`, `im`, … and never the special
 *   token. Special tokens come only from the chat template itself ({@link ModelTokenizer.encodeChat}).
 * - **Bytes, not decoded strings.** With a byte-level BPE (GPT-2 / SmolLM2 / Llama-3 style, no
 *   normalizer) every token is a byte string and a text's tokens concatenate to its UTF-8 bytes
 *   exactly, so each token's character range is computed from bytes ({@link ModelTokenizer.tokenizeWithOffsets})
 *   and generated text is the UTF-8 decoding of the tokens' bytes ({@link ModelTokenizer.tokenBytes}),
 *   with no clean-up of spaces (`"film , television"` stays as it is).
 * Other tokenizers fall back to decoding growing prefixes; their texts are citable only when they
 * round-trip.
 */
import { readFile } from "node:fs/promises";
import { join } from "node:path";
import { Tokenizer } from "@huggingface/tokenizers";
import { Template } from "@huggingface/jinja";
import type { Message } from "@nest/shared/protocol/request";
import type { Manifest } from "./manifest.ts";

/** Token ids of a text and the UTF-16 range of every token in it. */
export interface TokenizedText {
  readonly ids: Int32Array;
  /**
   * UTF-16 start of each token in the text. Ranges are contiguous: `charStart[i] = charEnd[i − 1]`
   * (0 for the first token). @shape [numTokens]
   */
  readonly charStart: Int32Array;
  /**
   * UTF-16 end (exclusive) of each token: the end of the last character whose final byte lies in
   * this token, so a token that ends inside a multi-byte character stops before it and the token
   * completing the character covers all of it. @shape [numTokens]
   */
  readonly charEnd: Int32Array;
  /**
   * True when the offsets are exact: the tokens' bytes are exactly the text's UTF-8 (always, for a
   * byte-level BPE), or, for other tokenizers, decoding `ids` gives back the text.
   */
  readonly roundTrips: boolean;
}

/** One piece of an encoded chat prompt. */
type ChatSegment = { readonly text: string } | { readonly specialId: number };

/** Token string → byte, the inverse of GPT-2's `bytes_to_unicode` table (byte-level BPE alphabet). */
function byteLevelAlphabet(): Map<string, number> {
  const bs: number[] = [];
  for (let b = 33; b <= 126; b++) bs.push(b);
  for (let b = 161; b <= 172; b++) bs.push(b);
  for (let b = 174; b <= 255; b++) bs.push(b);
  const cs = [...bs];
  let n = 0;
  for (let b = 0; b < 256; b++) {
    if (!bs.includes(b)) {
      bs.push(b);
      cs.push(256 + n++);
    }
  }
  return new Map(bs.map((b, i) => [String.fromCharCode(cs[i]!), b]));
}

const EMPTY = new Uint8Array(0);
const utf8 = new TextEncoder();

export class ModelTokenizer {
  /**
   * Names the tokenisation rules (plain text, offsets from bytes): part of the key of every cache
   * of tokenised passages, so entries made under other rules are not reused.
   */
  readonly cacheTag = "tok2";
  private readonly bytesCache = new Map<number, Uint8Array>();
  private readonly specialIds: ReadonlySet<number>;
  /** Special tokens by content, longest first (the order they are matched in template text). */
  private readonly specialsByContent: readonly (readonly [string, number])[];
  /** Non-special added tokens (matched in plain text too, as the tokenizer would). */
  private readonly plainAdded: readonly (readonly [string, number])[];

  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly template: Template,
    private readonly specials: { bos_token: string; eos_token: string },
    addedTokens: readonly { id: number; content: string; special?: boolean }[],
    /** Byte-level BPE without a normalizer: offsets and text come from token bytes. */
    private readonly alphabet: Map<string, number> | null,
  ) {
    const byLength = (a: readonly [string, number], b: readonly [string, number]) => b[0].length - a[0].length;
    this.specialsByContent = addedTokens
      .filter((t) => t.special)
      .map((t) => [t.content, t.id] as const)
      .sort(byLength);
    this.plainAdded = addedTokens
      .filter((t) => !t.special)
      .map((t) => [t.content, t.id] as const)
      .sort(byLength);
    this.specialIds = new Set(addedTokens.filter((t) => t.special).map((t) => t.id));
  }

  /**
   * Loads the tokenizer and chat template named in the manifest.
   * @throws Error when the files are missing or unreadable.
   */
  static async load(modelDir: string, manifest: Manifest): Promise<ModelTokenizer> {
    const [json, config] = await Promise.all([
      readFile(join(modelDir, manifest.tokenizer), "utf8").then(JSON.parse),
      readFile(join(modelDir, manifest.tokenizer_config), "utf8").then(JSON.parse),
    ]);
    // Decoding never cleans up spaces: generated text is exactly the tokens' text.
    const tokenizer = new Tokenizer(json, { ...config, clean_up_tokenization_spaces: false });
    const tokenText = (t: unknown): string =>
      typeof t === "string" ? t : t && typeof t === "object" && "content" in t ? String((t as { content: unknown }).content) : "";
    const byteLevel = json.normalizer == null && json.decoder?.type === "ByteLevel" && json.pre_tokenizer?.type === "ByteLevel";
    return new ModelTokenizer(
      tokenizer,
      new Template(manifest.chat_template),
      { bos_token: tokenText(config.bos_token), eos_token: tokenText(config.eos_token) },
      Array.isArray(json.added_tokens) ? json.added_tokens : [],
      byteLevel ? byteLevelAlphabet() : null,
    );
  }

  /**
   * Token ids of `text` as plain text: no special tokens added, and special-token strings inside
   * it (`<|im_end|>`, `<|im_start|>`, …) tokenised as ordinary characters.
   */
  encode(text: string): number[] {
    const ids: number[] = [];
    for (const piece of splitOn(text, this.plainAdded)) {
      if (typeof piece === "number") ids.push(piece);
      else ids.push(...this.encodeOrdinary(piece));
    }
    return ids;
  }

  /** Byte-pair encoding of text that holds no added token: normalizer → pre-tokenizer → model. */
  private encodeOrdinary(text: string): number[] {
    if (text.length === 0) return [];
    const t = this.tokenizer;
    const normalized = t.normalizer ? t.normalizer._call(text) : text;
    const pieces: string[] = t.pre_tokenizer ? t.pre_tokenizer._call(normalized) : [normalized];
    const tokens: string[] = t.model ? t.model._call(pieces) : pieces;
    const unk = t.model?.unk_token_id ?? 0;
    return tokens.map((s) => t.token_to_id(s) ?? unk);
  }

  /**
   * The chat prompt for `messages` as token ids, ending with the assistant generation header.
   * Special tokens come only from the template: every message's content is tokenised as plain
   * text ({@link encode}), so a user or a passage cannot open or close a turn.
   */
  encodeChat(messages: readonly Message[]): number[] {
    const ids: number[] = [];
    let text = "";
    for (const seg of this.chatSegments(messages)) {
      if ("text" in seg) text += seg.text;
      else {
        ids.push(...this.encode(text), seg.specialId);
        text = "";
      }
    }
    ids.push(...this.encode(text));
    return ids;
  }

  /**
   * Renders the template with a marker in place of every message's content, then splits the
   * result into template text, template special tokens and contents (contents are text only).
   * A template that transforms the content itself (e.g. `| trim`) sees the marker, so such a
   * transform is not applied.
   */
  private chatSegments(messages: readonly Message[]): ChatSegment[] {
    const nonce = Math.random().toString(36).slice(2);
    const marker = (i: number) => `\uFDD0${nonce}:${i}\uFDD1`;
    const rendered = this.template.render({
      messages: messages.map((m, i) => ({ ...m, content: marker(i) })),
      add_generation_prompt: true,
      ...this.specials,
    });
    const segments: ChatSegment[] = [];
    const markerRe = new RegExp(`\uFDD0${nonce}:(\\d+)\uFDD1`, "g");
    let last = 0;
    for (const m of rendered.matchAll(markerRe)) {
      for (const piece of splitOn(rendered.slice(last, m.index), this.specialsByContent)) {
        segments.push(typeof piece === "number" ? { specialId: piece } : { text: piece });
      }
      segments.push({ text: messages[Number(m[1])]!.content });
      last = m.index + m[0].length;
    }
    for (const piece of splitOn(rendered.slice(last), this.specialsByContent)) {
      segments.push(typeof piece === "number" ? { specialId: piece } : { text: piece });
    }
    return segments;
  }

  /**
   * The UTF-8 bytes a token contributes to text: its byte string for a byte-level BPE, nothing for
   * a special token (special tokens are skipped in text), the decoded text otherwise.
   */
  tokenBytes(id: number): Uint8Array {
    const hit = this.bytesCache.get(id);
    if (hit) return hit;
    let bytes = EMPTY;
    if (!this.specialIds.has(id)) {
      const piece = this.tokenizer.id_to_token(id);
      const alphabet = this.alphabet;
      if (piece !== undefined && alphabet && [...piece].every((c) => alphabet.has(c))) {
        bytes = Uint8Array.from([...piece], (c) => alphabet.get(c)!);
      } else if (piece !== undefined) {
        // An added (non-special) token's content, or a tokenizer that is not byte-level.
        bytes = utf8.encode(alphabet ? piece : this.tokenizer.decode([id], { skip_special_tokens: true }));
      }
    }
    this.bytesCache.set(id, bytes);
    return bytes;
  }

  /** Text of `ids`: special tokens skipped, spaces exactly as the tokens carry them (no clean-up). */
  decode(ids: readonly number[]): string {
    if (ids.length === 0) return "";
    if (!this.alphabet) return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: true });
    const parts = ids.map((id) => this.tokenBytes(id));
    const all = new Uint8Array(parts.reduce((s, p) => s + p.length, 0));
    let at = 0;
    for (const p of parts) {
      all.set(p, at);
      at += p.length;
    }
    return new TextDecoder().decode(all);
  }

  /**
   * Tokenises `text` as plain text ({@link encode}) and finds each token's UTF-16 range in it from
   * the tokens' bytes (see {@link TokenizedText} for the multi-byte rule). Without a byte-level
   * BPE: by decoding growing prefixes.
   */
  tokenizeWithOffsets(text: string): TokenizedText {
    const ids = this.encode(text);
    const n = ids.length;
    const charStart = new Int32Array(n);
    const charEnd = new Int32Array(n);
    const textBytes = utf8.encode(text);
    if (this.alphabet) {
      // utf16At[b] = UTF-16 offset just after the character whose last byte is b − 1 (else -1).
      const utf16At = new Int32Array(textBytes.length + 1).fill(-1);
      utf16At[0] = 0;
      let b = 0;
      let u = 0;
      for (const ch of text) {
        const cp = ch.codePointAt(0)!;
        b += cp < 0x80 ? 1 : cp < 0x800 ? 2 : cp < 0x10000 ? 3 : 4;
        u += ch.length;
        utf16At[b] = u;
      }
      let byteAt = 0;
      let settled = 0;
      let exact = true;
      for (let i = 0; i < n; i++) {
        const tb = this.tokenBytes(ids[i]!);
        for (let j = 0; j < tb.length; j++) {
          if (textBytes[byteAt + j] !== tb[j]) exact = false;
        }
        byteAt = Math.min(textBytes.length, byteAt + tb.length);
        charStart[i] = settled;
        if (utf16At[byteAt]! >= 0) settled = utf16At[byteAt]!;
        charEnd[i] = settled;
      }
      if (exact && byteAt === textBytes.length) return { ids: Int32Array.from(ids), charStart, charEnd, roundTrips: true };
    }
    let settled = 0;
    for (let i = 0; i < n; i++) {
      charStart[i] = settled;
      const prefix = this.decode(ids.slice(0, i + 1));
      if (!prefix.endsWith("\uFFFD")) settled = prefix.length;
      charEnd[i] = settled;
    }
    return { ids: Int32Array.from(ids), charStart, charEnd, roundTrips: this.decode(ids) === text };
  }
}

/** Splits `text` at every occurrence of the given token contents (longest first), left to right. */
function splitOn(text: string, tokens: readonly (readonly [string, number])[]): (string | number)[] {
  if (tokens.length === 0 || text.length === 0) return text.length === 0 ? [] : [text];
  const out: (string | number)[] = [];
  let start = 0;
  let i = 0;
  while (i < text.length) {
    const hit = tokens.find(([content]) => content.length > 0 && text.startsWith(content, i));
    if (hit) {
      if (i > start) out.push(text.slice(start, i));
      out.push(hit[1]);
      i += hit[0].length;
      start = i;
    } else i++;
  }
  if (start < text.length) out.push(text.slice(start));
  return out;
}
