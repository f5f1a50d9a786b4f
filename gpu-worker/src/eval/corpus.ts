/**
 * @module eval/corpus
 * The first-stage index of an evaluation task: a task that brings its own passages (SQuAD
 * paragraphs, WikiText articles) is indexed once with the normal LanceDB BM25 path
 * (`buildLanceIndex`) under `$NEST_HOME/corpora/eval-<task>/<content12>/` (READY.json through
 * `@nest/corpus/layout`; no `current.json`, so `nestlm serve` does not serve it) and reused while
 * the passages are unchanged; a `jsonl` task uses an existing corpus.
 */
import { mkdir, rename, rm } from "node:fs/promises";
import { join } from "node:path";
import { buildLanceIndex, openLanceIndex, type LancePassageIndex } from "@nest/corpus/lancedb-index";
import { BM25_ONLY, INDEX_FORMAT } from "@nest/corpus/corpus-index";
import { corpusRoot, findCorpusDir, readReady, writeReady } from "@nest/corpus/layout";
import type { EvalTask } from "./tasks.ts";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";

/**
 * Opens (building first if needed) the index for `task`.
 * @param corpus for tasks without passages: the prepared corpus name (e.g. `factbook`).
 * @param indexDir for tasks without passages: an explicit LanceDB folder (wins over `corpus`).
 * @param fusion of a hybrid index when a request names none (`NEST_FUSION`); default `rrf`.
 * @throws NestError `not_found` when the named corpus is not prepared.
 */
export async function openTaskIndex(
  task: EvalTask,
  opts: { home: string; corpus?: string; indexDir?: string; fusion?: FusionMethod; log?: (line: string) => void },
): Promise<{ index: LancePassageIndex; dir: string; built: boolean }> {
  if (!task.passages || !task.corpusVersion) {
    const corpus = opts.corpus ?? "factbook";
    const dir = opts.indexDir ?? (await findCorpusDir(corpus, opts.home));
    return { index: await openLanceIndex(dir, corpus, { fusion: opts.fusion }), dir, built: false };
  }
  const name = `eval-${task.name}`;
  const dir = join(corpusRoot(name, opts.home), task.corpusVersion.slice(0, 12));
  let built = false;
  if (!(await readReady(dir))) {
    const t0 = performance.now();
    const tmp = `${dir}.tmp-${process.pid}-${Date.now()}`;
    await mkdir(tmp, { recursive: true });
    try {
      const { rows } = await buildLanceIndex(tmp, task.passages);
      await writeReady(tmp, {
        corpus: name,
        version: task.corpusVersion,
        contentVersion: task.corpusVersion,
        embedderKey: BM25_ONLY,
        indexFormat: INDEX_FORMAT,
        passages: rows,
        createdAt: new Date().toISOString(),
        buildSeconds: Math.round((performance.now() - t0) / 100) / 10,
      });
      await rm(dir, { recursive: true, force: true });
      await rename(tmp, dir);
    } catch (e) {
      await rm(tmp, { recursive: true, force: true });
      throw e;
    }
    built = true;
    opts.log?.(`indexed ${task.passages.length} passages in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${dir}`);
  }
  return { index: await openLanceIndex(dir, name, { fusion: opts.fusion }), dir, built };
}
