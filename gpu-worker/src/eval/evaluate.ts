/**
 * @module eval/evaluate
 * One evaluation end to end: load the task, open (or build) its index, load the model, run every
 * variant, and write `examples.jsonl`, `summary.json`, `report.md` and the plots into `out`.
 */
import { createWriteStream, existsSync } from "node:fs";
import { mkdir, readFile } from "node:fs/promises";
import { join } from "node:path";
import { once } from "node:events";
import type { Mode } from "@nest/shared/protocol/request";
import { Engine } from "../engine/engine.ts";
import { findModelDir } from "../runtime/prepare-model.ts";
import { readManifest } from "../runtime/manifest.ts";
import { ModelTokenizer } from "../runtime/tokenizer.ts";
import { openTaskIndex } from "./corpus.ts";
import { rescoreRecord, runEval, type ExampleRecord } from "./runner.ts";
import { pairedAlr, summarize, type PairedAlr, type VariantSummary } from "./summary.ts";
import { loadJsonl, loadSquad, loadWikitext, type EvalTask, type SquadSplit, type TaskName, type WikitextStore } from "./tasks.ts";
import { planVariants, type PlannedVariants } from "./variants.ts";
import { mainTable, writeReport } from "./report.ts";
import { nodeEnv } from "@nest/shared/config/node-env";

export interface EvaluateOptions {
  task: TaskName;
  data: string;
  out: string;
  modes: readonly Mode[];
  /** Examples to run, spread evenly over the file (after `split`); all when absent. */
  limit?: number;
  /** Skip this many of the selected examples. @defaultValue 0 */
  offset?: number;
  /** SQuAD question split (tasks.ts `squadSplit`). @defaultValue "all" */
  split?: SquadSplit;
  /** WikiText: keep each example's own window out of its retrieval (default) or not. */
  wikitextStore?: WikitextStore;
  /**
   * Keep the records already in `out/examples.jsonl` and run only the missing (example, variant)
   * pairs, appending. Only sound when the code and settings are unchanged since those records.
   */
  resume?: boolean;
  /**
   * A folder holding an earlier run's `examples.jsonl` on the same task (e.g. the issue-12
   * baseline): its records are re-scored with the current metrics and each mode's ALR is compared
   * with the same mode there, question for question (paired bootstrap rows `nest − before nest`).
   */
  baseline?: string;
  /** Request parameters for every variant (e.g. `{ alpha: 0.3 }`). */
  params?: Record<string, number | string>;
  gammas?: readonly number[];
  ablation?: boolean;
  /** @defaultValue 64 */
  maxNewTokens?: number;
  /** First-stage passages b. @defaultValue 40 (spec §1) */
  passages?: number;
  /** `jsonl`: prepared corpus name (default `factbook`) or an explicit LanceDB folder. */
  corpus?: string;
  indexDir?: string;
  home: string;
  /** Model folder; default the prepared default model in `home`. */
  modelDir?: string;
  /**
   * Do not decode: rebuild summary.json and report.md from `out/examples.jsonl` (e.g. of an
   * interrupted run; only the examples it holds are summarised).
   */
  reportOnly?: boolean;
  /** onnxruntime intra-op threads (0 = its choice). */
  threads?: number;
  log?: (line: string) => void;
}

export interface EvaluateResult {
  records: ExampleRecord[];
  summaries: VariantSummary[];
  plan: PlannedVariants;
  task: EvalTask;
  /** Paired-bootstrap ALR differences (QA tasks). */
  paired: PairedAlr[];
  /** The report's main table (Markdown). */
  mainTable: string;
  report: string;
}

/**
 * Runs the evaluation described by `opts` (module doc).
 * @throws NestError `model_not_prepared` / `not_found` when the model or the corpus is missing;
 *   `invalid_request` for a malformed data file; Error for bad variant parameters.
 */
export async function evaluate(opts: EvaluateOptions): Promise<EvaluateResult> {
  const log = opts.log ?? (() => {});
  const t0 = performance.now();
  const startedAt = new Date().toISOString();
  const modelDir = opts.modelDir ?? (await findModelDir(opts.home));
  const plan = planVariants({ modes: opts.modes, params: opts.params ?? {}, gammas: opts.gammas, ablation: opts.ablation });
  const task = await loadTask(opts, modelDir);
  log(
    `task ${task.name}: ${task.examples.length} examples${task.passages ? `, ${task.passages.length} passages` : ""}; ${plan.variants.length} variants: ${plan.variants.map((v) => v.name).join(", ")}`,
  );
  if (opts.reportOnly) return rebuildReport(opts, task, plan, startedAt);
  const needsIndex = plan.variants.some((v) => v.mode !== "base");
  // An Engine creation site: the decoder, the encoder and the index fusion read the environment, parsed here.
  const env = nodeEnv(process.env);
  const opened = needsIndex
    ? await openTaskIndex(task, { home: opts.home, corpus: opts.corpus, indexDir: opts.indexDir, fusion: env.corpus.NEST_FUSION, log })
    : undefined;
  const engine = await Engine.load(modelDir, { threads: opts.threads ?? 0 }, env);
  await mkdir(opts.out, { recursive: true });
  const jsonlPath = join(opts.out, "examples.jsonl");
  const previous = opts.resume && existsSync(jsonlPath) ? await readRecords(jsonlPath) : [];
  const have = new Set(previous.map((r) => `${r.id}\u0000${r.variant}`));
  if (previous.length > 0) log(`resuming: ${previous.length} generations already in ${jsonlPath}`);
  const jsonl = createWriteStream(jsonlPath, { flags: opts.resume ? "a" : "w" });
  const maxNewTokens = opts.maxNewTokens ?? 64;
  const passages = opts.passages ?? 40;
  let records: ExampleRecord[];
  try {
    records = await runEval({
      engine,
      index: opened?.index,
      task,
      variants: plan.variants,
      maxNewTokens,
      passages,
      skip: (id, variant) => have.has(`${id}\u0000${variant}`),
      onRecord: (r, done, total) => {
        jsonl.write(JSON.stringify(r) + "\n");
        if (done % 25 === 0 || done === total) log(`${done}/${total} generations, ${((performance.now() - t0) / 1000).toFixed(0)} s`);
      },
    });
  } finally {
    jsonl.end();
    await once(jsonl, "close");
    opened?.index.close();
  }
  const wanted = new Set(task.examples.map((e) => e.id));
  records = [...previous.filter((r) => wanted.has(r.id)), ...records];
  const summaries = summarize(records);
  const paired = task.kind === "qa" ? [...pairedAlr(records), ...(await versusBaseline(opts, task, plan, records))] : [];
  const report = await writeReport(
    opts.out,
    {
      task: task.name,
      data: opts.data,
      model: engine.modelName,
      examples: task.examples.length,
      maxNewTokens,
      passages,
      params: opts.params ?? {},
      startedAt,
      wallSeconds: (performance.now() - t0) / 1000,
      selection: selection(opts, previous.length),
    },
    summaries,
    plan,
    task.kind,
    paired,
  );
  return { records, summaries, paired, plan, task, mainTable: mainTable(summaries, plan, task.kind), report };
}

function selection(opts: EvaluateOptions, resumed: number): Record<string, string | number | boolean> {
  return {
    ...(opts.split ? { split: opts.split } : {}),
    ...(opts.offset ? { offset: opts.offset } : {}),
    ...(opts.task === "wikitext" ? { "wikitext store": opts.wikitextStore ?? "exclude-window" } : {}),
    ...(resumed > 0 ? { "resumed generations": resumed } : {}),
  };
}

/** Paired ALR of every mode against the same mode in `opts.baseline` (re-scored), on the questions both ran. */
async function versusBaseline(
  opts: EvaluateOptions,
  task: EvalTask,
  plan: PlannedVariants,
  records: readonly ExampleRecord[],
): Promise<PairedAlr[]> {
  if (!opts.baseline) return [];
  const byId = new Map(task.examples.map((e) => [e.id, e]));
  const before = (await readRecords(join(opts.baseline, "examples.jsonl"))).flatMap((r) => {
    const ex = byId.get(r.id);
    return ex ? [{ ...rescoreRecord(task, ex, r), variant: `before ${r.variant}` }] : [];
  });
  return pairedAlr(
    [...records, ...before],
    plan.modes.map((m) => [m, `before ${m}`] as const),
  );
}

async function readRecords(path: string): Promise<ExampleRecord[]> {
  return (await readFile(path, "utf8"))
    .split("\n")
    .filter((l) => l.trim())
    .map((l) => JSON.parse(l) as ExampleRecord);
}

/**
 * `--report-only`: re-scores the stored records with the current metric code (answer and citation
 * metrics from the stored output and citations, runner.ts `rescoreRecord`) against the task's gold
 * data — so a JSONL written by an older harness gets today's metrics — and rewrites the report.
 * Records of examples the task does not hold are dropped.
 */
async function rebuildReport(opts: EvaluateOptions, task: EvalTask, plan: PlannedVariants, startedAt: string): Promise<EvaluateResult> {
  const byId = new Map(task.examples.map((e) => [e.id, e]));
  const stored = await readRecords(join(opts.out, "examples.jsonl"));
  const records = stored.flatMap((r) => {
    const ex = byId.get(r.id);
    return ex ? [rescoreRecord(task, ex, r)] : [];
  });
  const summaries = summarize(records);
  const paired = task.kind === "qa" ? [...pairedAlr(records), ...(await versusBaseline(opts, task, plan, records))] : [];
  const examples = new Set(records.map((r) => r.id)).size;
  const manifest = await readManifest(opts.modelDir ?? (await findModelDir(opts.home)));
  const report = await writeReport(
    opts.out,
    {
      task: task.name,
      data: opts.data,
      model: manifest.name,
      examples,
      maxNewTokens: opts.maxNewTokens ?? 64,
      passages: opts.passages ?? 40,
      params: opts.params ?? {},
      startedAt,
      wallSeconds: 0,
      selection: selection(opts, 0),
    },
    summaries,
    plan,
    task.kind,
    paired,
  );
  return { records, summaries, paired, plan, task, mainTable: mainTable(summaries, plan, task.kind), report };
}

async function loadTask(opts: EvaluateOptions, modelDir: string): Promise<EvalTask> {
  const sel = { limit: opts.limit, offset: opts.offset, split: opts.split };
  switch (opts.task) {
    case "squad":
      return loadSquad(opts.data, sel);
    case "jsonl":
    case "factbook":
      return loadJsonl(opts.data, sel, opts.task);
    case "wikitext": {
      const manifest = await readManifest(modelDir);
      return loadWikitext(opts.data, await ModelTokenizer.load(modelDir, manifest), sel, opts.wikitextStore);
    }
  }
}
