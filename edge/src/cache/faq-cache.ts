/**
 * @module cache/faq-cache
 * Cached FAQ answers (issue 5): a finished generation's event sequence (`retrieval`, `delta`*,
 * `done`) stored under a key made of the normalised question, the corpus and its version, the
 * model, the mode and every decoding parameter, so a repeated question is answered without a GPU
 * worker. A new corpus version (re-ingest) changes every key, which invalidates old answers; TTL
 * bounds their life. Backed by a {@link KvStore} (Redis locally, Workers KV in production).
 * Worker-safe.
 */
import type { GenerateRequest } from "@nest/shared/protocol/request";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { sha256Hex } from "../middleware/auth.ts";
import type { KvStore } from "../store/kv.ts";
import { documentsHash } from "@nest/shared/protocol/documents";

/** Default time to live of a cached answer, in seconds (1 day). */
export const DEFAULT_FAQ_TTL_S = 86_400;

/**
 * Case, whitespace and punctuation folded: NFKC, lower case, every run of characters that are not
 * letters, digits or marks becomes one space, trimmed. `"  What's the CAPITAL of Australia?? "` →
 * `"what s the capital of australia"`.
 */
export function normalizeQuestion(text: string): string {
  return text
    .normalize("NFKC")
    .toLowerCase()
    .replace(/[^\p{L}\p{N}\p{M}]+/gu, " ")
    .trim();
}

/**
 * Version of the stored answer's shape (events, citation rule). Part of every key, so answers
 * cached by an older release (e.g. before citations became evidence, issue 12) are never replayed
 * after an upgrade. Bump it whenever what a cached answer contains changes.
 */
export const ANSWER_FORMAT_VERSION = 2;

/** What identifies an answer besides the question. */
export interface AnswerContext {
  corpusVersion: string;
  model: string;
}

/**
 * The cache key of `req` (`faq:` + hex SHA-256 of a canonical JSON of the normalised question or
 * messages, the answer format version, corpus, corpus version, model, mode and decoding
 * parameters, keys sorted).
 */
export async function faqCacheKey(req: GenerateRequest, ctx: AnswerContext): Promise<string> {
  const { prompt, messages, documents, ...rest } = req;
  // A request's documents enter the key as their hash (protocol/documents.ts documentsHash).
  const params = documents ? { ...rest, documents: await documentsHash(documents) } : rest;
  const question =
    prompt !== undefined ? normalizeQuestion(prompt) : (messages ?? []).map((m) => `${m.role}:${normalizeQuestion(m.content)}`).join("\n");
  const sorted = Object.fromEntries(Object.entries(params).sort(([a], [b]) => a.localeCompare(b)));
  return `faq:${await sha256Hex(JSON.stringify({ f: ANSWER_FORMAT_VERSION, q: question, v: ctx.corpusVersion, m: ctx.model, p: sorted }))}`;
}

/** Stored answers over a {@link KvStore}. Store failures never fail a request: they count as misses. */
export class FaqCache {
  /**
   * @param kv the store
   * @param ttlS time to live of an entry, seconds (default {@link DEFAULT_FAQ_TTL_S})
   * @param log where store failures are reported
   */
  constructor(
    readonly kv: KvStore,
    readonly ttlS: number = DEFAULT_FAQ_TTL_S,
    private readonly log?: (line: string) => void,
  ) {}

  /** The cached event sequence, or undefined on a miss (or a store failure). */
  async get(key: string): Promise<GenerateEvent[] | undefined> {
    try {
      const raw = await this.kv.get(key);
      return raw === null ? undefined : (JSON.parse(raw) as GenerateEvent[]);
    } catch (err) {
      this.log?.(`faq-cache: get failed: ${(err as Error).message}`);
      return undefined;
    }
  }

  /** Stores a finished sequence (it must end with `done`; others are ignored). */
  async put(key: string, events: readonly GenerateEvent[]): Promise<void> {
    if (events.at(-1)?.event !== "done") return;
    try {
      await this.kv.put(key, JSON.stringify(events), this.ttlS);
    } catch (err) {
      this.log?.(`faq-cache: put failed: ${(err as Error).message}`);
    }
  }
}
