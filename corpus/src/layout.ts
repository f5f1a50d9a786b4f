/**
 * @module layout
 * Corpora on disk, the one reader and writer of their files. Node-only.
 *
 * ```
 * $NEST_HOME/corpora/<name>/
 *   current.json          { version, dir }: the index folder served for <name> (written last)
 *   <version12>/          one complete index: passages.lance/, index.json, READY.json (written last)
 *   <version12>.embed/    resumable embedding work of a build in progress (see `corpus-index`)
 * ```
 *
 * A folder is an index only once its `READY.json` parses ({@link CorpusReadySchema}); a corpus is
 * prepared once `current.json` points at such a folder. The content version
 * ({@link contentVersion}) is the one hash of a corpus's passages, used for index versions, ingest
 * records and evaluation corpora alike.
 */
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { readFile, readdir, writeFile } from "node:fs/promises";
import { basename, join } from "node:path";
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";
import type { Passage } from "@nest/shared/protocol/passage";
import { cachePaths } from "./home.ts";

/** Name of the default corpus. */
export const DEFAULT_CORPUS = "factbook";

/** Marker file written last into a complete index folder. */
export const READY_FILE = "READY.json";

/** Pointer file of a corpus: the index folder currently served. */
export const CURRENT_FILE = "current.json";

/** Valid corpus names: `[a-z0-9][a-z0-9_-]*`, at most 64 characters. */
export const CORPUS_NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** Contents of {@link READY_FILE}; extra fields (e.g. `package`, `maxWords`, `source`) are kept. */
export const CorpusReadySchema = z.looseObject({
  corpus: z.string(),
  version: z.string().describe("index version (sha256 hex): format + embedder key + content version"),
  contentVersion: z.string().describe("sha256 (hex) over every passage's id and text, see contentVersion()"),
  embedderKey: z.string().describe("cache key of the dense embedder, or `bm25-only`"),
  indexFormat: z.number().int(),
  passages: z.number().int().nonnegative().describe("passages in the index"),
  createdAt: z.string(),
  buildSeconds: z.number().nonnegative().describe("build time, seconds (embedding included)"),
});
export type CorpusReady = z.infer<typeof CorpusReadySchema>;

/** Contents of {@link CURRENT_FILE}. */
export const CorpusCurrentSchema = z.object({ version: z.string(), dir: z.string() });
export type CorpusCurrent = z.infer<typeof CorpusCurrentSchema>;

/** sha256 (hex) over every passage's `id`, a newline, its `text`, a newline, in order. */
export function contentVersion(passages: Iterable<Passage>): string {
  const h = createHash("sha256");
  for (const p of passages) h.update(`${p.id}\n${p.text}\n`);
  return h.digest("hex");
}

/** `$NEST_HOME/corpora/<name>`. */
export function corpusRoot(name: string, home?: string): string {
  return join(cachePaths(home).corpora, name);
}

const parseReady = (text: string): CorpusReady | null => {
  try {
    const r = CorpusReadySchema.safeParse(JSON.parse(text));
    return r.success ? r.data : null;
  } catch {
    return null;
  }
};

/** READY.json of `dir`, or null when absent, unreadable or not a {@link CorpusReady}. */
export async function readReady(dir: string): Promise<CorpusReady | null> {
  return parseReady(await readFile(join(dir, READY_FILE), "utf8").catch(() => ""));
}

/** Synchronous {@link readReady}. */
export function readReadySync(dir: string): CorpusReady | null {
  try {
    return parseReady(readFileSync(join(dir, READY_FILE), "utf8"));
  } catch {
    return null;
  }
}

/** Writes READY.json into `dir` (call it last: it marks the folder complete). */
export async function writeReady(dir: string, info: CorpusReady): Promise<void> {
  await writeFile(join(dir, READY_FILE), `${JSON.stringify(CorpusReadySchema.parse(info), null, 2)}\n`);
}

/** Points corpus `name` at the index folder `dir` (its `current.json`). */
export async function writeCurrent(name: string, current: CorpusCurrent, home?: string): Promise<void> {
  await writeFile(join(corpusRoot(name, home), CURRENT_FILE), `${JSON.stringify(current, null, 2)}\n`);
}

/**
 * `current.json` of corpus `name`, or null when absent or malformed. `dir` is the index folder of
 * that name inside this corpus root, wherever `$NEST_HOME` was when it was written (a home copied
 * to a volume or baked into an image is mounted at another path, e.g. /var/lib/nest).
 */
export async function readCurrent(name: string, home?: string): Promise<CorpusCurrent | null> {
  try {
    const root = corpusRoot(name, home);
    const r = CorpusCurrentSchema.safeParse(JSON.parse(await readFile(join(root, CURRENT_FILE), "utf8")));
    return r.success ? { ...r.data, dir: join(root, basename(r.data.dir)) } : null;
  } catch {
    return null;
  }
}

/**
 * The folder of the prepared index for `corpus`.
 *
 * @throws NestError `not_found` ("… run `nestlm setup`") if it was never prepared or is incomplete
 */
export async function findCorpusDir(corpus = DEFAULT_CORPUS, home?: string): Promise<string> {
  const dir = (await readCurrent(corpus, home))?.dir;
  if (!dir || !(await readReady(dir))) {
    throw new NestError("not_found", `corpus "${corpus}" is not prepared in ${corpusRoot(corpus, home)}; run \`nestlm setup\``);
  }
  return dir;
}

/**
 * Every prepared corpus in the cache (`corpora/<name>/current.json` pointing at a folder with
 * `READY.json`): name → index folder. Names that are not valid corpus names ({@link CORPUS_NAME})
 * are skipped.
 */
export async function listCorpora(home?: string): Promise<Record<string, string>> {
  const out: Record<string, string> = {};
  let names: string[];
  try {
    names = await readdir(cachePaths(home).corpora);
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    if (!CORPUS_NAME.test(name)) continue;
    try {
      out[name] = await findCorpusDir(name, home);
    } catch {
      // not prepared (or incomplete): skipped
    }
  }
  return out;
}
