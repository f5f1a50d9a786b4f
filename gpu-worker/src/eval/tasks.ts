/**
 * @module eval/tasks
 * Evaluation tasks (nest-algorithm.md §11): their examples and, when the task brings its own
 * corpus, its passages (chunked with the normal ingestion chunker, `shared/corpus/chunk`).
 * - `squad`: SQuAD v1.1 JSON; corpus = the paragraphs; gold paragraph and answer spans kept for
 *   citation metrics.
 * - `jsonl`: one `{question, answers[], id?, gold_passages?}` object per line, asked against an
 *   existing corpus; `answers: []` marks a question without an answer in the corpus (scored for
 *   abstention, metrics.ts `abstains`).
 * - `factbook`: a `jsonl` file over the default corpus (factbook) whose lines name the passage(s)
 *   holding the answer (`gold_passages`), for citation precision (test/fixtures/eval/factbook-dev.jsonl).
 * - `wikitext`: WikiText raw layout (` = Title = ` lines start articles); corpus = the articles;
 *   examples = 128-token prefix → 256-token target windows (spec §11). By default each example's
 *   own window (prefix and target) is kept out of its first-stage results (`exclude`), so the
 *   continuation is not copied from the store; `wikitextStore: "full"` keeps the old setting.
 *
 * Selection: `limit` spreads examples evenly over the task, `offset` then skips that many of them;
 * SQuAD has a fixed `split` (see {@link squadSplit}).
 */
import { createHash } from "node:crypto";
import { readFile } from "node:fs/promises";
import { z } from "zod";
import { chunkText, DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import { contentVersion } from "@nest/corpus/layout";
import { NestError } from "@nest/shared/protocol/errors";
import type { Passage } from "@nest/shared/protocol/passage";

export type TaskName = "squad" | "jsonl" | "factbook" | "wikitext";
export const TASK_NAMES: readonly TaskName[] = ["squad", "jsonl", "factbook", "wikitext"];

/** SQuAD question splits (docs/eval.md "Splits"). */
export type SquadSplit = "all" | "report" | "tune";
export const SQUAD_SPLITS: readonly SquadSplit[] = ["all", "report", "tune"];
/** Size of the SQuAD report split: `npm run eval:dev`'s questions. */
export const SQUAD_REPORT_QUESTIONS = 200;

/** WikiText store setting: keep each example's own window out of its retrieval, or not. */
export type WikitextStore = "exclude-window" | "full";

/** Which examples of a task to run. */
export interface Selection {
  /** Examples spread evenly over the task (after the split); all when absent. */
  limit?: number;
  /** Skip this many of the selected examples (e.g. to run the second half). @defaultValue 0 */
  offset?: number;
  /** SQuAD only. @defaultValue "all" */
  split?: SquadSplit;
}

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
  /** Gold answers (QA tasks); empty for completion, and for a question without an answer in the corpus. */
  answers: string[];
  /** Ids of the corpus passages that hold the answer (factbook/jsonl with `gold_passages`). */
  goldPassages?: string[];
  /**
   * WikiText: the example's own window `[start, end)` in its article (UTF-16 offsets of the
   * paragraph key `paragraph`); passages overlapping it are dropped from its first-stage results.
   */
  exclude?: { paragraph: string; start: number; end: number };
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
  text: string,
  title: string,
  source: string,
  idPrefix: string,
  paragraph: string,
  origins: Map<string, PassageOrigin>,
): Passage[] {
  return chunkText(text, { maxWords: DEFAULT_CHUNK_WORDS }).map((c, i) => {
    const id = `${idPrefix}-${i}`;
    origins.set(id, { paragraph, start: c.start });
    return { id, title, text: c.text, source: `${source}@${c.start}` };
  });
}

/** {@link spread} then skip `offset`. */
export function select<T>(items: readonly T[], sel: Pick<Selection, "limit" | "offset"> = {}): T[] {
  return spread(items, sel.limit).slice(sel.offset ?? 0);
}

/**
 * The fixed SQuAD splits over the file's questions (in file order): `report` = the
 * {@link SQUAD_REPORT_QUESTIONS} questions spread evenly over the file (what `npm run eval:dev`
 * reports); `tune` = every question whose paragraph holds no report question (3,558; so tuning never sees
 * a report question's paragraph); `all` = everything.
 */
export function squadSplit(examples: readonly EvalExample[], split: SquadSplit): EvalExample[] {
  if (split === "all") return [...examples];
  const report = spread(examples, SQUAD_REPORT_QUESTIONS);
  if (split === "report") return report;
  const reported = new Set(report.map((e) => e.gold?.paragraph));
  return examples.filter((e) => !reported.has(e.gold?.paragraph));
}

/** Picks `limit` items spread evenly over `items` (every (n/limit)-th), or all when `limit` is absent. */
export function spread<T>(items: readonly T[], limit?: number): T[] {
  if (limit === undefined || limit >= items.length) return [...items];
  return Array.from({ length: limit }, (_, i) => items[Math.floor((i * items.length) / limit)]!);
}

/**
 * Loads a SQuAD v1.1 file. Passage ids: `sq-{sha256(context)[0:12]}-{chunk}`; paragraph key:
 * `sha256(context)[0:12]`. Questions: the split ({@link squadSplit}), then {@link select}.
 * @throws NestError `invalid_request` when the file is not SQuAD v1.1 JSON.
 */
export async function loadSquad(path: string, sel: Selection = {}): Promise<EvalTask> {
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
  return {
    name: "squad",
    kind: "qa",
    examples: select(squadSplit(examples, sel.split ?? "all"), sel),
    passages,
    origins,
    corpusVersion: contentVersion(passages),
  };
}

const JsonlLineSchema = z.object({
  id: z.union([z.string(), z.number()]).optional(),
  question: z.string().min(1),
  answers: z.array(z.string()),
  gold_passages: z.array(z.string()).optional(),
});

/**
 * Loads `{question, answers[], id?, gold_passages?}` lines (blank lines skipped); the corpus is an
 * existing index. `answers: []`: no answer in the corpus (abstention is right).
 * @param name `jsonl`, or `factbook` (the same format; the CLI then defaults the corpus to factbook).
 * @throws NestError `invalid_request` naming the first bad line.
 */
export async function loadJsonl(path: string, sel: Selection = {}, name: "jsonl" | "factbook" = "jsonl"): Promise<EvalTask> {
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
    if (!r.success)
      throw new NestError("invalid_request", `${path}:${i + 1}: expected {question, answers[]}: ${r.error.issues[0]?.message}`);
    const answers = r.data.answers.map((a) => a.trim()).filter((a) => a.length > 0);
    examples.push({
      id: String(r.data.id ?? i + 1),
      prompt: r.data.question,
      query: r.data.question,
      answers,
      ...(r.data.gold_passages ? { goldPassages: r.data.gold_passages } : {}),
    });
  });
  if (examples.length === 0) throw new NestError("invalid_request", `${path} holds no examples`);
  return { name, kind: "qa", examples: select(examples, sel), origins: new Map() };
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
 * (spec §11), prompt = "Continue the article:\n{title}\n{prefix}", query = the prefix. With
 * `store: "exclude-window"` (default) each example carries its window's character range
 * (`decode(ids[0, i)).length` to `decode(ids[0, i+384)).length`) as `exclude`.
 */
export async function loadWikitext(
  path: string,
  tokenizer: TextTokenizer,
  sel: Selection = {},
  store: WikitextStore = "exclude-window",
): Promise<EvalTask> {
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
      const exclude =
        store === "exclude-window"
          ? { paragraph: key, start: tokenizer.decode(ids.slice(0, i)).length, end: tokenizer.decode(ids.slice(0, i + span)).length }
          : undefined;
      examples.push({
        id: `${ai}:${i}`,
        prompt: `Continue the article:\n${a.title}\n${prefix}`,
        query: prefix,
        answers: [],
        reference,
        ...(exclude ? { exclude } : {}),
      });
    }
  });
  return {
    name: "wikitext",
    kind: "completion",
    examples: select(examples, sel),
    passages,
    origins,
    corpusVersion: contentVersion(passages),
  };
}
