/**
 * @module eval/tasks
 * Evaluation tasks (nest-algorithm.md §11): their examples and, when the task brings its own
 * corpus, its passages (chunked with the normal ingestion chunker, `shared/corpus/chunk`).
 * - `squad`: SQuAD v1.1 JSON; corpus = the paragraphs; gold paragraph and answer spans kept for
 *   citation metrics.
 * - `jsonl`: one `{question, answers[], id?}` object per line, asked against an existing corpus.
 * - `wikitext`: WikiText raw layout (` = Title = ` lines start articles); corpus = the articles;
 *   examples = 128-token prefix → 256-token target windows (spec §11).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { chunkText, DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import { contentVersion } from "@nest/corpus/layout";
import { NestError } from "@nest/shared/protocol/errors";
import type { Passage } from "@nest/shared/protocol/passage";

export type TaskName = "squad" | "jsonl" | "wikitext";
export const TASK_NAMES: readonly TaskName[] = ["squad", "jsonl", "wikitext"];

/** Character span `[start, end)` (UTF-16) inside a gold paragraph. */
export interface CharSpan {
  start: number;
  end: number;
}

/** One evaluation example. */
export interface EvalExample {
  id: string;
  /** The user prompt sent to the model. */
  prompt: string;
  /** First-stage retrieval query. */
  query: string;
  /** Gold answers (QA tasks); empty for completion. */
  answers: string[];
  /** SQuAD: key of the gold paragraph and the gold answers' spans in it. */
  gold?: { paragraph: string; spans: CharSpan[] };
  /** WikiText: the reference continuation (decoded 256-token target). */
  reference?: string;
}

/** Where a passage sits in its source paragraph (for citation coverage). */
export interface PassageOrigin {
  paragraph: string;
  /** Offset of the passage text in the paragraph, UTF-16 code units. */
  start: number;
}

/** A loaded task. `passages` is undefined when the task uses an existing corpus (`jsonl`). */
export interface EvalTask {
  name: TaskName;
  kind: "qa" | "completion";
  examples: EvalExample[];
  passages?: Passage[];
  /** Passage id → origin (SQuAD only). */
  origins: Map<string, PassageOrigin>;
  /** sha256 (hex) of the corpus passages, to reuse a built index. */
  corpusVersion?: string;
}

const SquadSchema = z.object({
  data: z.array(
    z.object({
      title: z.string(),
      paragraphs: z.array(
        z.object({
          context: z.string().min(1),
          qas: z.array(
            z.object({
              id: z.string(),
              question: z.string().min(1),
              answers: z.array(z.object({ text: z.string(), answer_start: z.number().int().nonnegative() })),
            }),
          ),
        }),
      ),
    }),
  ),
});

const sha = (s: string) => createHash("sha256").update(s).digest("hex");

/** Chunks `text` into passages `{idPrefix}-{i}`; records each passage's offset under `paragraph`. */
function chunkParagraph(
  text: string, title: string, source: string, idPrefix: string, paragraph: string, origins: Map<string, PassageOrigin>,
): Passage[] {
  return chunkText(text, { maxWords: DEFAULT_CHUNK_WORDS }).map((c, i) => {
    const id = `${idPrefix}-${i}`;
    origins.set(id, { paragraph, start: c.start });
    return { id, title, text: c.text, source: `${source}@${c.start}` };
  });
}

/** Picks `limit` items spread evenly over `items` (every (n/limit)-th), or all when `limit` is absent. */
export function spread<T>(items: readonly T[], limit?: number): T[] {
  if (limit === undefined || limit >= items.length) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/**
 * Loads a SQuAD v1.1 file. Passage ids: `sq-{sha256(context)[0:12]}-{chunk}`; paragraph key:
 * `sha256(context)[0:12]`. Questions are spread evenly over the file when `limit` is set.
 * @throws NestError `invalid_request` when the file is not SQuAD v1.1 JSON.
 */
export async function loadSquad(path: string, limit?: number): Promise<EvalTask> {
  const parsed = SquadSchema.safeParse(JSON.parse(await readFile(path, "utf8")));
  if (!parsed.success) throw new NestError("invalid_request", `${path} is not SQuAD v1.1 JSON: ${parsed.error.issues[0]?.message}`);
  const passages: Passage[] = [];
  const origins = new Map<string, PassageOrigin>();
  const examples: EvalExample[] = [];
  const seen = new Set<string>();
  for (const article of parsed.data.data) {
    const title = article.title.replace(/_/g, " ");
    article.paragraphs.forEach((p, pi) => {
      const key = sha(p.context).slice(0, 12);
      if (!seen.has(key)) {
        seen.add(key);
        passages.push(...chunkParagraph(p.context, title, `squad:${article.title}#p${pi}`, `sq-${key}`, key, origins));
      }
      for (const qa of p.qas) {
        const answers = [...new Set(qa.answers.map((a) => a.text.trim()).filter((a) => a.length > 0))];
        if (answers.length === 0) continue;
        const spans = qa.answers.map((a) => ({ start: a.answer_start, end: a.answer_start + a.text.length }));
        examples.push({ id: qa.id, prompt: qa.question, query: qa.question, answers, gold: { paragraph: key, spans } });
      }
    });
  }
  return { name: "squad", kind: "qa", examples: spread(examples, limit), passages, origins, corpusVersion: contentVersion(passages) };
}

const JsonlLineSchema = z.object({
  id: z.union([z.string(), z.number()]).optional(),
  question: z.string().min(1),
  answers: z.array(z.string()).min(1),
});

/**
 * Loads `{question, answers[], id?}` lines (blank lines skipped); the corpus is an existing index.
 * @throws NestError `invalid_request` naming the first bad line.
 */
export async function loadJsonl(path: string, limit?: number): Promise<EvalTask> {
  const lines = (await readFile(path, "utf8")).split("\n");
  const examples: EvalExample[] = [];
  lines.forEach((line, i) => {
    if (line.trim().length === 0) return;
    let value: unknown;
    try {
      value = JSON.parse(line);
    } catch {
      throw new NestError("invalid_request", `${path}:${i + 1}: not JSON`);
    }
    const r = JsonlLineSchema.safeParse(value);
    if (!r.success) throw new NestError("invalid_request", `${path}:${i + 1}: expected {question, answers[]}: ${r.error.issues[0]?.message}`);
    examples.push({ id: String(r.data.id ?? i + 1), prompt: r.data.question, query: r.data.question, answers: r.data.answers });
  });
  if (examples.length === 0) throw new NestError("invalid_request", `${path} holds no examples`);
  return { name: "jsonl", kind: "qa", examples: spread(examples, limit), origins: new Map() };
}

/** Tokenizer functions the WikiText windows need (no special tokens). */
export interface TextTokenizer {
  encode(text: string): number[];
  decode(ids: readonly number[]): string;
}

/** WikiText completion window sizes, tokens (spec §11). */
export const WIKITEXT_PREFIX_TOKENS = 128;
export const WIKITEXT_TARGET_TOKENS = 256;

/**
 * Splits WikiText raw text into articles: a line ` = Title = ` (exactly one `=` each side) starts
 * an article; body lines are trimmed and joined with a space (the raw layout has no tokenised
 * `@-@` marks to undo). Headings ` = = … = = ` stay in the body as plain lines.
 */
export function wikitextArticles(raw: string): Array<{ title: string; text: string }> {
  const out: Array<{ title: string; body: string[] }> = [];
  for (const line of raw.split("\n")) {
    const m = /^ = ([^=].*[^=]) = $/.exec(line);
    if (m) out.push({ title: m[1]!.trim(), body: [] });
    else if (line.trim().length > 0 && out.length > 0) out.at(-1)!.body.push(line.trim());
  }
  return out.map((a) => ({ title: a.title, text: a.body.join(" ") })).filter((a) => a.text.length > 0);
}

/**
 * Loads a WikiText raw test file: corpus = every article chunked; examples = for each article and
 * `i = 0, 128, …` while `i + 384 < tokens`, prefix = tokens `[i, i+128)`, target = `[i+128, i+384)`
 * (spec §11), prompt = "Continue the article:\n{title}\n{prefix}", query = the prefix.
 */
export async function loadWikitext(path: string, tokenizer: TextTokenizer, limit?: number): Promise<EvalTask> {
  const articles = wikitextArticles(await readFile(path, "utf8"));
  if (articles.length === 0) throw new NestError("invalid_request", `${path} holds no ` + "` = Title = `" + " articles");
  const passages: Passage[] = [];
  const origins = new Map<string, PassageOrigin>();
  const examples: EvalExample[] = [];
  const span = WIKITEXT_PREFIX_TOKENS + WIKITEXT_TARGET_TOKENS;
  articles.forEach((a, ai) => {
    const key = sha(a.text).slice(0, 12);
    passages.push(...chunkParagraph(a.text, a.title, `wikitext:${a.title}`, `wt-${key}`, key, origins));
    const ids = tokenizer.encode(a.text);
    for (let i = 0; i + span < ids.length; i += WIKITEXT_PREFIX_TOKENS) {
      const prefix = tokenizer.decode(ids.slice(i, i + WIKITEXT_PREFIX_TOKENS));
      const reference = tokenizer.decode(ids.slice(i + WIKITEXT_PREFIX_TOKENS, i + span));
      examples.push({ id: `${ai}:${i}`, prompt: `Continue the article:\n${a.title}\n${prefix}`, query: prefix, answers: [], reference });
    }
  });
  return { name: "wikitext", kind: "completion", examples: spread(examples, limit), passages, origins, corpusVersion: contentVersion(passages) };
}
