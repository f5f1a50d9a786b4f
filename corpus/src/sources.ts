/**
 * @module sources
 * Reads an ingestion source into passages (`nestlm ingest <source>`): a folder of `.md` / `.txt` /
 * `.html` files (recursive, sorted by path), a JSONL file (`{id?, title, text, source?}` per line),
 * or the built-in `factbook`. Text is chunked sentence-aware (`shared/corpus/chunk`, ~100 words).
 *
 * Ids are content-derived and stable: `d-<first 16 hex of sha256(docKey + "\n" + chunkIndex + "\n" + text)>`
 * where docKey is the file's path relative to the folder, or the JSONL record's `id` (else its
 * title). A JSONL record with an `id` whose text fits one chunk keeps that id as is; longer ones get
 * `<id>#<chunkIndex>`. Source: `<relative path>#chars=<start>-<end>` (offsets into the file's
 * cleaned text) for files, the record's `source` (else `<file name>:<line>`) for JSONL.
 */
import { createHash } from "node:crypto";
import { readFile, readdir, stat } from "node:fs/promises";
import { basename, extname, join, relative } from "node:path";
import { z } from "zod";
import type { Passage } from "@nest/shared/protocol/passage";
import { DEFAULT_CHUNK_WORDS, chunkText } from "@nest/shared/corpus/chunk";
import { NestError } from "@nest/shared/protocol/errors";
import { readFactbook } from "./factbook.ts";

/** File extensions read from a folder. */
export const TEXT_EXTENSIONS = [".md", ".markdown", ".txt", ".html", ".htm"];

const JsonlRecord = z.object({
  id: z.string().min(1).optional(),
  title: z.string().default(""),
  text: z.string(),
  source: z.string().optional(),
});

const hashId = (docKey: string, i: number, text: string) =>
  `d-${createHash("sha256").update(`${docKey}\n${i}\n${text}`).digest("hex").slice(0, 16)}`;

const ENTITIES: Record<string, string> = { amp: "&", lt: "<", gt: ">", quot: '"', apos: "'", nbsp: " " };

/** Visible text of an HTML document (scripts/styles dropped, tags → spaces, entities decoded) and its `<title>`. */
export function htmlToText(html: string): { title: string; text: string } {
  const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(html)?.[1]?.trim() ?? "";
  const text = html
    .replace(/<(script|style|head)[\s\S]*?<\/\1>/gi, " ")
    .replace(/<\/(p|div|h[1-6]|li|tr|br|section|article)>|<br\s*\/?>/gi, "\n")
    .replace(/<[^>]*>/g, " ")
    .replace(/&(amp|lt|gt|quot|apos|nbsp);/g, (_, e: string) => ENTITIES[e]!)
    .replace(/&#(\d+);/g, (_, d: string) => String.fromCodePoint(Number(d)))
    .replace(/[ \t]+/g, " ")
    .replace(/\s*\n\s*/g, "\n")
    .trim();
  return { title: decodeTitle(title), text };
}
const decodeTitle = (t: string) => t.replace(/&(amp|lt|gt|quot|apos|nbsp);/g, (_, e: string) => ENTITIES[e]!);

/** Passages of one document (see module doc for ids and sources). */
export function documentPassages(
  docKey: string,
  title: string,
  text: string,
  maxWords: number,
  sourceOf: (start: number, end: number) => string,
  keepId?: string,
): Passage[] {
  const chunks = chunkText(text, { maxWords });
  return chunks.map((c, i) => ({
    id: keepId ? (chunks.length === 1 ? keepId : `${keepId}#${i}`) : hashId(docKey, i, c.text),
    title,
    text: c.text,
    source: sourceOf(c.start, c.end),
  }));
}

async function listFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    if (e.name.startsWith(".")) continue;
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await listFiles(p)));
    else if (TEXT_EXTENSIONS.includes(extname(e.name).toLowerCase())) out.push(p);
  }
  return out.sort();
}

/** Passages of every `.md`/`.txt`/`.html` file under `dir`. Title: `<title>`, else the first `# ` heading, else the file name. */
export async function readFolder(dir: string, maxWords = DEFAULT_CHUNK_WORDS): Promise<Passage[]> {
  const out: Passage[] = [];
  for (const file of await listFiles(dir)) {
    const rel = relative(dir, file).split("\\").join("/");
    const raw = await readFile(file, "utf8");
    const isHtml = /\.html?$/i.test(file);
    const { title: htmlTitle, text } = isHtml ? htmlToText(raw) : { title: "", text: raw };
    const heading = /^#\s+(.+?)\s*$/m.exec(text)?.[1];
    const title = htmlTitle || heading || basename(file, extname(file));
    out.push(...documentPassages(rel, title, text, maxWords, (s, e) => `${rel}#chars=${s}-${e}`));
  }
  return out;
}

/**
 * Passages of a JSONL file.
 * @throws NestError `invalid_request` naming the line of a malformed record
 */
export async function readJsonl(file: string, maxWords = DEFAULT_CHUNK_WORDS): Promise<Passage[]> {
  const out: Passage[] = [];
  const lines = (await readFile(file, "utf8")).split(/\r?\n/);
  const name = basename(file);
  for (let n = 0; n < lines.length; n++) {
    const line = lines[n]!.trim();
    if (!line) continue;
    let rec: z.infer<typeof JsonlRecord>;
    try {
      rec = JsonlRecord.parse(JSON.parse(line));
    } catch (err) {
      throw new NestError(
        "invalid_request",
        `${file}:${n + 1}: expected {"id"?, "title", "text", "source"?}: ${(err as Error).message.slice(0, 200)}`,
      );
    }
    const source = rec.source ?? `${name}:${n + 1}`;
    out.push(...documentPassages(rec.id ?? `${rec.title}\n${source}`, rec.title, rec.text, maxWords, () => source, rec.id));
  }
  return out;
}

/**
 * Reads `source` (`factbook`, a folder, or a `.jsonl` file) into passages.
 * @throws NestError `not_found` when the path does not exist, `invalid_request` on an unsupported file
 */
export async function readSource(source: string, maxWords = DEFAULT_CHUNK_WORDS): Promise<Passage[]> {
  if (source === "factbook") {
    const out: Passage[] = [];
    for await (const p of readFactbook({ maxWords })) out.push(p);
    return out;
  }
  const st = await stat(source).catch(() => null);
  if (!st) throw new NestError("not_found", `ingest source ${source} does not exist`);
  if (st.isDirectory()) return readFolder(source, maxWords);
  if (/\.jsonl$/i.test(source)) return readJsonl(source, maxWords);
  throw new NestError("invalid_request", `ingest source ${source}: expected a folder, a .jsonl file or "factbook"`);
}
