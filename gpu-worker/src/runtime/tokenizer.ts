/**
 * @module runtime/tokenizer
 * The model's tokenizer (tokenizer.json, pure JS via `@huggingface/tokenizers`) and chat template
 * (Jinja via `@huggingface/jinja`), both read from the prepared model folder.
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
  /** @shape [numTokens] */
  readonly charStart: Int32Array;
  /** @shape [numTokens] */
  readonly charEnd: Int32Array;
  /** True when decoding `ids` gives back the text exactly (byte-level BPE does). */
  readonly roundTrips: boolean;
}

export class ModelTokenizer {
  private constructor(
    private readonly tokenizer: Tokenizer,
    private readonly template: Template,
    private readonly specials: { bos_token: string; eos_token: string },
  ) {}

  /**
   * Loads the tokenizer and chat template named in the manifest.
   * @throws Error when the files are missing or unreadable.
   */
  static async load(modelDir: string, manifest: Manifest): Promise<ModelTokenizer> {
    const [json, config] = await Promise.all([
      readFile(join(modelDir, manifest.tokenizer), "utf8").then(JSON.parse),
      readFile(join(modelDir, manifest.tokenizer_config), "utf8").then(JSON.parse),
    ]);
    const tokenizer = new Tokenizer(json, config);
    const tokenText = (t: unknown): string =>
      typeof t === "string" ? t : t && typeof t === "object" && "content" in t ? String((t as { content: unknown }).content) : "";
    return new ModelTokenizer(tokenizer, new Template(manifest.chat_template), {
      bos_token: tokenText(config.bos_token),
      eos_token: tokenText(config.eos_token),
    });
  }

  /** Token ids of `text`, without special tokens added. */
  encode(text: string): number[] {
    return this.tokenizer.encode(text, { add_special_tokens: false }).ids;
  }

  /** Text of `ids`, special tokens skipped. */
  decode(ids: readonly number[]): string {
    return this.tokenizer.decode(Array.from(ids), { skip_special_tokens: true });
  }

  /**
   * Tokenises `text` and finds each token's character range by decoding growing prefixes. A token
   * that ends inside a multi-byte character gets an empty range; the token completing the character
   * covers all of it.
   */
  tokenizeWithOffsets(text: string): TokenizedText {
    const ids = this.encode(text);
    const n = ids.length;
    const charStart = new Int32Array(n);
    const charEnd = new Int32Array(n);
    let settled = 0;
    for (let i = 0; i < n; i++) {
      charStart[i] = settled;
      const prefix = this.decode(ids.slice(0, i + 1));
      if (!prefix.endsWith("\uFFFD")) settled = prefix.length;
      charEnd[i] = settled;
    }
    return { ids: Int32Array.from(ids), charStart, charEnd, roundTrips: this.decode(ids) === text };
  }

  /** The chat prompt for `messages`, ending with the assistant generation header. */
  applyChatTemplate(messages: readonly Message[]): string {
    return this.template.render({ messages, add_generation_prompt: true, ...this.specials });
  }
}
