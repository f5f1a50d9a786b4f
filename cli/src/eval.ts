/**
 * @module eval
 * `nestlm eval --task <squad|jsonl|factbook|wikitext> --data <path> --modes base,rag,... [--limit N]
 * [--offset N] [--split all|report|tune] [--param k=v]... [--gamma-sweep g1,g2,...] [--ablation]
 * [--resume] [--wikitext-store exclude-window|full] --out <dir>`: runs the evaluation harness
 * (gpu-worker/src/eval) in this process, through the server's decoding code, and prints the main
 * table. Writes `examples.jsonl`, `summary.json`, `report.md`, `speed.svg`, `gamma.svg` into `--out`.
 */
import { join } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { ModeSchema, type Mode } from "@nest/shared/protocol/request";
import { nestHome } from "@nest/corpus/home";
import { evaluate } from "@nest/gpu-worker/eval/evaluate";
import { SQUAD_SPLITS, TASK_NAMES, type SquadSplit, type TaskName, type WikitextStore } from "@nest/gpu-worker/eval/tasks";

function parseModes(v: string): Mode[] {
  const modes = v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  for (const m of modes)
    if (!ModeSchema.safeParse(m).success) throw new InvalidArgumentError(`unknown mode "${m}" (one of ${ModeSchema.options.join(", ")})`);
  if (modes.length === 0) throw new InvalidArgumentError("give at least one mode");
  return modes as Mode[];
}

/** `key=value` → accumulated params; numeric values become numbers. */
export function parseParam(v: string, acc: Record<string, number | string> = {}): Record<string, number | string> {
  const m = /^([a-z_]+)=(.+)$/.exec(v.trim());
  if (!m) throw new InvalidArgumentError(`expected key=value (e.g. gamma=0.05), got "${v}"`);
  const n = Number(m[2]);
  return { ...acc, [m[1]!]: Number.isFinite(n) ? n : m[2]! };
}

function parseNumbers(v: string): number[] {
  const xs = v.split(",").map(Number);
  if (xs.some((x) => !(x > 0 && x <= 1))) throw new InvalidArgumentError("expected comma-separated γ values in (0, 1]");
  return xs;
}

function parseNonNegative(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a non-negative integer");
  return n;
}

function parsePositive(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

interface EvalCliOptions {
  task: TaskName;
  data: string;
  modes: Mode[];
  limit?: number;
  offset?: number;
  split?: SquadSplit;
  param: Record<string, number | string>;
  gammaSweep?: number[];
  ablation?: boolean;
  out?: string;
  maxNewTokens: number;
  passages: number;
  corpus?: string;
  index?: string;
  threads: number;
  reportOnly?: boolean;
  resume?: boolean;
  wikitextStore: WikitextStore;
  baseline?: string;
}

/** Adds `nestlm eval` to `program`. */
export function addEvalCommand(program: Command): void {
  program
    .command("eval")
    .description("evaluate decoding modes on a task; writes per-example JSONL, summary.json, report.md and SVG plots")
    .addOption(new Option("--task <task>", "task").choices([...TASK_NAMES]).makeOptionMandatory())
    .requiredOption(
      "--data <path>",
      "data file (SQuAD v1.1 JSON, WikiText raw text, or {question, answers[], gold_passages?} JSONL; factbook = JSONL over the factbook corpus)",
    )
    .option("--modes <list>", "comma-separated modes", parseModes, ["base", "rag", "knnlm", "nest", "rag-nest"] as Mode[])
    .option("--limit <n>", "examples, spread evenly over the file (after --split)", parsePositive)
    .option("--offset <n>", "skip this many of the selected examples (e.g. --limit 200 --offset 100: the second half)", parseNonNegative)
    .addOption(
      new Option(
        "--split <split>",
        "squad: fixed question split (report = eval:dev's 200 questions; tune = questions from other paragraphs)",
      ).choices([...SQUAD_SPLITS]),
    )
    .option(
      "--param <k=v>",
      "request parameter for every mode (repeatable), e.g. alpha=0.3",
      (v, acc: Record<string, number | string>) => parseParam(v, acc),
      {},
    )
    .option("--gamma-sweep <list>", "also run nest at these γ values, e.g. 0.5,0.05,5e-3,5e-4,5e-5", parseNumbers)
    .option("--ablation", "also run the paper's Table 3 ablation")
    .option("--out <dir>", "output folder (default $NEST_HOME/eval/<task>-<UTC time>)")
    .option("--max-new-tokens <n>", "tokens to generate at most", parsePositive, 64)
    .option("--passages <n>", "first-stage passages per example", parsePositive, 40)
    .option("--corpus <name>", "jsonl: prepared corpus to retrieve from", "factbook")
    .option("--index <dir>", "jsonl: LanceDB index folder (overrides --corpus)")
    .option(
      "--report-only",
      "do not decode: re-score --out/examples.jsonl with the current metrics and rebuild the report (e.g. of an interrupted run)",
    )
    .option(
      "--baseline <dir>",
      "compare each mode's ALR with the same mode in <dir>/examples.jsonl (paired bootstrap, question for question)",
    )
    .option("--resume", "keep the generations already in --out/examples.jsonl and run only the missing ones (same code and settings!)")
    .addOption(
      new Option(
        "--wikitext-store <setting>",
        "wikitext: keep each example's own window out of its retrieval, or index it (the old, inflated setting)",
      )
        .choices(["exclude-window", "full"])
        .default("exclude-window"),
    )
    .option("--threads <n>", "onnxruntime intra-op threads (0 = auto)", (v) => Number(v), 0)
    .action(async (o: EvalCliOptions) => {
      const home = nestHome();
      if (o.reportOnly && !o.out) throw new InvalidArgumentError("--report-only needs --out");
      if (o.resume && !o.out) throw new InvalidArgumentError("--resume needs --out");
      const out = o.out ?? join(home, "eval", `${o.task}-${new Date().toISOString().replace(/[:.]/g, "-")}`);
      const result = await evaluate({
        task: o.task,
        data: o.data,
        out,
        modes: o.modes,
        limit: o.limit,
        offset: o.offset,
        split: o.split,
        params: o.param,
        gammas: o.gammaSweep,
        resume: o.resume,
        wikitextStore: o.wikitextStore,
        baseline: o.baseline,
        ablation: o.ablation,
        maxNewTokens: o.maxNewTokens,
        passages: o.passages,
        corpus: o.corpus,
        indexDir: o.index,
        threads: o.threads,
        home,
        reportOnly: o.reportOnly,
        log: (line) => process.stderr.write(`${line}\n`),
      });
      console.log(result.mainTable);
      console.log(`\nreport: ${join(out, "report.md")}`);
    });
}
