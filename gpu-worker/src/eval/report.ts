/**
 * @module eval/report
 * Writes an evaluation's outputs into one folder: `examples.jsonl` (one record per generation,
 * written by the CLI as it goes), `summary.json`, `report.md` (tables: main, attribution, speed,
 * γ sweep, ablation) and the SVG plots `speed.svg` and `gamma.svg`.
 */
import { writeFile } from "node:fs/promises";
import { join } from "node:path";
import type { PairedAlr, VariantSummary } from "./summary.ts";
import type { PlannedVariants } from "./variants.ts";
import { logLineSvg, stackedBarSvg } from "./plots.ts";

/** Run settings echoed in the report. */
export interface ReportMeta {
  task: string;
  data: string;
  model: string;
  examples: number;
  maxNewTokens: number;
  passages: number;
  params: Record<string, number | string>;
  startedAt: string;
  wallSeconds: number;
  /** Selection and settings that change what was run (split, offset, WikiText store, resume). */
  selection?: Record<string, string | number | boolean>;
}

const pct = (x: number | null) => (x === null ? "–" : (100 * x).toFixed(1));
const num = (x: number | null, d = 2) => (x === null ? "–" : x.toFixed(d));

function table(head: string[], rows: string[][]): string {
  return [`| ${head.join(" | ")} |`, `|${head.map(() => "---").join("|")}|`, ...rows.map((r) => `| ${r.join(" | ")} |`)].join("\n");
}

/** The main table (quality + attribution + speed per requested mode), as Markdown. */
export function mainTable(summaries: readonly VariantSummary[], plan: PlannedVariants, kind: "qa" | "completion"): string {
  const by = new Map(summaries.map((s) => [s.variant, s]));
  const rows = plan.modes.map((name) => by.get(name)!).filter(Boolean);
  const abstain = kind === "qa" && rows.some((s) => s.unanswerable > 0);
  const quality = kind === "qa" ? ["ALR % [95 % CI]", "EM %", "F1 %", ...(abstain ? ["abstain %"] : [])] : ["RG-1", "RG-2", "RG-L", "PPL"];
  return table(
    [
      "mode",
      "n",
      ...quality,
      "attrib %",
      "copied %",
      "1-tok cites %",
      "cites/ans",
      "run len",
      "cite prec %",
      "gold cov %",
      "passes/tok",
      "tok/s",
      "latency ms",
    ],
    rows.map((s) => [
      s.variant,
      String(s.examples),
      ...(kind === "qa"
        ? [alrCell(s), pct(s.em), pct(s.f1), ...(abstain ? [`${pct(s.abstention)} (${s.unanswerable})`] : [])]
        : [pct(s.rouge1), pct(s.rouge2), pct(s.rougeL), num(s.perplexity, 2)]),
      pct(s.attribution_ratio),
      pct(s.copied_ratio),
      pct(s.single_token_citation_share),
      num(s.citations_per_example, 1),
      num(s.attribution_run_length, 1),
      pct(s.citation_precision),
      pct(s.gold_covered),
      num(s.forward_passes_per_token, 3),
      num(s.tokens_per_s, 1),
      s.latency_ms.toFixed(0),
    ]),
  );
}

function alrCell(s: VariantSummary): string {
  return s.alr_ci ? `${pct(s.alr)} [${pct(s.alr_ci.low)}, ${pct(s.alr_ci.high)}]` : pct(s.alr);
}

/** The paired-bootstrap table of ALR differences (points). */
export function pairedTable(paired: readonly PairedAlr[]): string {
  const pts = (x: number) => `${x >= 0 ? "+" : ""}${(100 * x).toFixed(1)}`;
  return table(
    ["difference", "n", "Δ ALR (points)", "95 % CI", "P(Δ ≤ 0)"],
    paired.map((p) => [`${p.a} − ${p.b}`, String(p.n), pts(p.diff), `[${pts(p.low)}, ${pts(p.high)}]`, p.p_not_greater.toFixed(3)]),
  );
}

/** Writes summary.json, report.md, speed.svg and (with a sweep) gamma.svg into `dir`. @returns report.md's text. */
export async function writeReport(
  dir: string,
  meta: ReportMeta,
  summaries: readonly VariantSummary[],
  plan: PlannedVariants,
  kind: "qa" | "completion",
  paired: readonly PairedAlr[] = [],
): Promise<string> {
  const by = new Map(summaries.map((s) => [s.variant, s]));
  const quality = (s: VariantSummary) => (kind === "qa" ? s.alr : s.rouge1);
  const qName = kind === "qa" ? "ALR %" : "ROUGE-1";
  const phases = ["retrieval", "encoding", "knn", "lm", "other"] as const;
  await writeFile(
    join(dir, "speed.svg"),
    stackedBarSvg(
      `Mean latency per example by phase (${meta.task}, ${meta.model})`,
      [...phases],
      summaries.map((s) => ({ label: s.variant, values: phases.map((p) => s.breakdown_ms[p]) })),
      "ms per example",
    ),
  );
  const md: string[] = [
    `# Evaluation: ${meta.task}`,
    "",
    `Data \`${meta.data}\` · model \`${meta.model}\` · ${meta.examples} examples · max_new_tokens ${meta.maxNewTokens} · ` +
      `passages ${meta.passages} · params ${JSON.stringify(meta.params)} · started ${meta.startedAt} · wall ${meta.wallSeconds.toFixed(0)} s` +
      (meta.selection && Object.keys(meta.selection).length > 0
        ? ` · ${Object.entries(meta.selection)
            .map(([k, v]) => `${k} ${v}`)
            .join(" · ")}`
        : ""),
    "",
    "## Main table",
    "",
    mainTable(summaries, plan, kind),
    "",
    "ALR = a gold answer occurs in the output as whole words after SQuAD normalisation (answerable questions; 95 % percentile-bootstrap interval over questions, 10,000 resamples, seed 12); " +
      "abstain = share of questions without an answer (count in brackets) whose output abstains (docs/eval.md); " +
      "attrib % = attributed ÷ generated tokens (span copies plus token-mode tokens that a neighbour carries); copied % = tokens accepted from verified drafts ÷ generated tokens; " +
      "1-tok cites = share of citations that cover a single token; cites/ans = citations per answer; run len = mean attributed run, tokens (spec §7); " +
      "cite prec = share of distinct cited passages that are gold (SQuAD: the gold paragraph; factbook: the passages holding the answer), mean over answers that cite; " +
      "gold cov = share of answers where a run of contiguous citations of a gold passage contains a gold answer; passes/tok = LM forward passes (prefill excluded) per generated token.",
    "",
    ...(paired.length > 0
      ? [
          "## Paired bootstrap of ALR differences",
          "",
          pairedTable(paired),
          "",
          "Questions resampled with replacement (the same questions for both modes), 10,000 resamples, seed 12; a difference whose interval contains 0 is not evidence either way.",
          "",
        ]
      : []),
    "## Speed breakdown (mean ms per example)",
    "",
    table(
      ["variant", ...phases, "total", "tokens", "draft acc %"],
      summaries.map((s) => [
        s.variant,
        ...phases.map((p) => s.breakdown_ms[p].toFixed(0)),
        s.latency_ms.toFixed(0),
        s.mean_completion_tokens.toFixed(1),
        pct(s.draft_acceptance),
      ]),
    ),
    "",
    "`lm` includes the prompt prefill; `other` = mixture, verification, detokenising, prompt building.",
    "",
    "![latency by phase](speed.svg)",
  ];
  if (plan.gamma.length > 0) {
    const rows = plan.gamma.map((g) => ({ g: g.gamma, s: by.get(g.variant)! }));
    await writeFile(
      join(dir, "gamma.svg"),
      logLineSvg(
        `nest: quality and attributed run length against γ (${meta.task})`,
        "γ",
        rows.map((r) => r.g),
        [
          { name: qName, ys: rows.map((r) => (quality(r.s) === null ? null : 100 * quality(r.s)!)) },
          { name: "run len (tok)", ys: rows.map((r) => r.s.attribution_run_length) },
          { name: "attrib %", ys: rows.map((r) => (r.s.attribution_ratio === null ? null : 100 * r.s.attribution_ratio)) },
        ],
        "value",
      ),
    );
    md.push(
      "",
      "## γ sweep (nest)",
      "",
      table(
        ["γ", qName, "attrib %", "run len", "draft acc %", "passes/tok", "tok/s", "latency ms"],
        rows.map(({ g, s }) => [
          g.toExponential(0),
          pct(quality(s)),
          pct(s.attribution_ratio),
          num(s.attribution_run_length, 1),
          pct(s.draft_acceptance),
          num(s.forward_passes_per_token, 3),
          num(s.tokens_per_s, 1),
          s.latency_ms.toFixed(0),
        ]),
      ),
      "",
      "![gamma sweep](gamma.svg)",
    );
  }
  if (plan.ablation.length > 0) {
    md.push(
      "",
      "## Ablation (paper Table 3)",
      "",
      table(
        ["configuration", qName, ...(kind === "qa" ? ["F1 %"] : []), "attrib %", "copied %", "run len", "passes/tok"],
        plan.ablation.map(({ label, variant }) => {
          const s = by.get(variant)!;
          return [
            label,
            pct(quality(s)),
            ...(kind === "qa" ? [pct(s.f1)] : []),
            pct(s.attribution_ratio),
            pct(s.copied_ratio),
            num(s.attribution_run_length, 1),
            num(s.forward_passes_per_token, 3),
          ];
        }),
      ),
    );
  }
  const text = md.join("\n") + "\n";
  await writeFile(join(dir, "report.md"), text);
  await writeFile(join(dir, "summary.json"), JSON.stringify({ meta, plan, summaries, paired }, null, 2) + "\n");
  return text;
}
