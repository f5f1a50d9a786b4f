/**
 * @module eval/corpus
 * The first-stage index of an evaluation task: a task that brings its own passages (SQuAD
 * paragraphs, WikiText articles) is indexed once with the normal LanceDB BM25 path
 * (`buildLanceIndex`) under `$NEST_HOME/corpora/eval-<task>/<version12>/` and reused while the
 * passages are unchanged; a `jsonl` task uses an existing corpus.
 */
import { existsSync } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join } from "node:path";
import { buildLanceIndex, openLanceIndex, type LancePassageIndex } from "@nest/edge/adapters/node/lancedb-index";
import { cachePaths } from "../config.ts";
import { findCorpusDir } from "../corpus/prepare-corpus.ts";
import type { EvalTask } from "./tasks.ts";

/** Marker written last into a complete index folder. */
const READY = "READY.json";

/**
 * Opens (building first if needed) the index for `task`.
 * @param corpus for tasks without passages: the prepared corpus name (e.g. `factbook`).
 * @param indexDir for tasks without passages: an explicit LanceDB folder (wins over `corpus`).
 * @throws NestError `not_found` when the named corpus is not prepared.
 */
export async function openTaskIndex(
  task: EvalTask, opts: { home: string; corpus?: string; indexDir?: string; log?: (line: string) => void },
): Promise<{ index: LancePassageIndex; dir: string; built: boolean }> {
  if (!task.passages || !task.corpusVersion) {
    const corpus = opts.corpus ?? "factbook";
    const dir = opts.indexDir ?? (await findCorpusDir(corpus, opts.home));
    return { index: await openLanceIndex(dir, corpus), dir, built: false };
  }
  const name = `eval-${task.name}`;
  const dir = join(cachePaths(opts.home).corpora, name, task.corpusVersion.slice(0, 12));
  let built = false;
  if (!existsSync(join(dir, READY))) {
    const t0 = performance.now();
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    await mkdir(tmp, { recursive: true });
    try {
      const { rows } = await buildLanceIndex(tmp, task.passages);
      await writeFile(join(tmp, READY), JSON.stringify({ corpus: name, version: task.corpusVersion, passages: rows, createdAt: new Date().toISOString() }));
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    built = true;
    opts.log?.(`indexed ${task.passages.length} passages in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
  }
  return { index: await openLanceIndex(dir, name), dir, built };
}
