import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadJsonl, loadSquad, loadWikitext, squadSplit, SQUAD_REPORT_QUESTIONS, type EvalExample } from "@nest/gpu-worker/eval/tasks";
import {
  answerMetrics,
  citationMetrics,
  citationRuns,
  excludeWindow,
  rescoreRecord,
  type ExampleRecord,
} from "@nest/gpu-worker/eval/runner";
import { pairedAlr, summarize } from "@nest/gpu-worker/eval/summary";
import type { ScoredPassage } from "@nest/shared/protocol/passage";

const dir = mkdtempSync(join(tmpdir(), "nest-eval-scoring-"));

describe("JSONL / factbook tasks", () => {
  it("accepts answers: [] (no answer in the corpus) and gold_passages", async () => {
    const path = join(dir, "fb.jsonl");
    writeFileSync(
      path,
      [
        JSON.stringify({ id: "a", question: "What is the capital of Kenya?", answers: ["Nairobi"], gold_passages: ["fb-ke-1"] }),
        JSON.stringify({ id: "b", question: "Who painted the Mona Lisa?", answers: [] }),
        "",
      ].join("\n"),
    );
    const task = await loadJsonl(path, {}, "factbook");
    expect(task.name).toBe("factbook");
    expect(task.examples.map((e) => [e.id, e.answers, e.goldPassages])).toEqual([
      ["a", ["Nairobi"], ["fb-ke-1"]],
      ["b", [], undefined],
    ]);
    expect((await loadJsonl(path, { limit: 2, offset: 1 })).examples.map((e) => e.id)).toEqual(["b"]);
  });

  it("scores an unanswerable question for abstention only", () => {
    const task = { kind: "qa" as const, origins: new Map() };
    const ex = { answers: [] as string[] };
    expect(answerMetrics(task, ex, "I don't know.", [])).toEqual({
      alr: null,
      em: null,
      f1: null,
      abstained: 1,
      citations: 0,
      single_token_citations: 0,
      citation_precision: null,
      gold_covered: null,
    });
    expect(answerMetrics(task, ex, "Leonardo da Vinci.", []).abstained).toBe(0);
  });

  it("factbook citation precision and coverage against gold passage ids", () => {
    const ex = { answers: ["Nairobi"], goldPassages: ["fb-ke-1"] };
    const output = "The capital is Nairobi.";
    // " Nairobi" (chars 14–22) cited to the gold passage in two deltas that continue each other; " is" to another passage.
    const cites = [
      { passage_id: "fb-ke-1", passage_start: 15, passage_end: 19, text_start: 14, text_end: 18 }, // " Nai"
      { passage_id: "fb-ke-1", passage_start: 19, passage_end: 23, text_start: 18, text_end: 22 }, // "robi"
      { passage_id: "fb-xx-9", passage_start: 0, passage_end: 3, text_start: 11, text_end: 14 },
    ];
    // distinct cited passages: fb-ke-1 (gold), fb-xx-9 → precision 1/2; the merged run " Nairobi" holds the answer.
    expect(citationMetrics({ origins: new Map() }, ex, cites, output)).toEqual({ citation_precision: 0.5, gold_covered: 1 });
    // neither delta alone quotes the whole answer
    expect(citationMetrics({ origins: new Map() }, ex, [cites[0]!], output)).toEqual({ citation_precision: 1, gold_covered: 0 });
  });

  it("citationRuns joins only citations that continue each other in passage and output", () => {
    const runs = citationRuns([
      { passage_id: "p", passage_start: 0, passage_end: 4, text_start: 0, text_end: 4 },
      { passage_id: "p", passage_start: 4, passage_end: 9, text_start: 4, text_end: 9 },
      { passage_id: "p", passage_start: 9, passage_end: 12, text_start: 10, text_end: 13 }, // a gap in the output
      { passage_id: "q", passage_start: 12, passage_end: 15, text_start: 13, text_end: 16 },
    ]);
    expect(runs.map((r) => [r.passage_id, r.passage_start, r.passage_end, r.text_start, r.text_end])).toEqual([
      ["p", 0, 9, 0, 9],
      ["p", 9, 12, 10, 13],
      ["q", 12, 15, 13, 16],
    ]);
  });
});

describe("re-scoring a stored record", () => {
  it("recomputes whole-word ALR and single-token citation counts from output and citations", () => {
    const stored = {
      variant: "nest",
      mode: "nest",
      id: "q",
      query: "?",
      output: "It is known.",
      answers: ["no"],
      metrics: {
        alr: 1,
        em: 0,
        f1: 0,
        rouge1: null,
        rouge2: null,
        rougeL: null,
        citation_precision: null,
        gold_covered: null,
        attribution_ratio: 0.5,
        attribution_run_length: 1,
        nll: null,
        nll_tokens: null,
      },
      usage: {},
      timings_ms: {},
      finish_reason: "stop",
      citations: [
        { passage_id: "p", passage_start: 0, passage_end: 3, text_start: 0, text_end: 2, tokens: 1 },
        { passage_id: "p", passage_start: 9, passage_end: 15, text_start: 2, text_end: 8, tokens: 2 },
      ],
    } as unknown as ExampleRecord;
    const r = rescoreRecord({ kind: "qa", origins: new Map() }, { answers: ["no"] }, stored);
    // the old substring ALR said "no" ⊂ "known" → 1; whole words say 0
    expect(r.metrics.alr).toBe(0);
    expect([r.metrics.citations, r.metrics.single_token_citations, r.metrics.attribution_ratio]).toEqual([2, 1, 0.5]);
    // an old record without token counts cannot say
    const old = { ...stored, citations: stored.citations.map(({ tokens: _t, ...c }) => c) } as ExampleRecord;
    expect(rescoreRecord({ kind: "qa", origins: new Map() }, { answers: ["no"] }, old).metrics.single_token_citations).toBeNull();
  });
});

const rec = (
  variant: string,
  id: string,
  alr: number | null,
  answers: string[],
  extra: Partial<ExampleRecord["metrics"]> = {},
  citations: ExampleRecord["citations"] = [],
) =>
  ({
    variant,
    mode: variant,
    id,
    query: "",
    output: "",
    answers,
    finish_reason: "stop",
    citations,
    metrics: {
      alr,
      em: 0,
      f1: 0,
      rouge1: null,
      rouge2: null,
      rougeL: null,
      citation_precision: null,
      gold_covered: null,
      attribution_ratio: null,
      attribution_run_length: null,
      nll: null,
      nll_tokens: null,
      ...extra,
    },
    usage: {
      prompt_tokens: 1,
      completion_tokens: 10,
      lm_forward_passes: 5,
      drafted_tokens: 0,
      accepted_tokens: 4,
      num_drafts: 0,
      attributed_tokens: 0,
      attribution_ratio: 0,
      store_passages: 0,
      store_keys: 0,
    },
    timings_ms: { retrieval: 0, encoding: 0, knn: 0, lm: 0, total: 1000 },
  }) as ExampleRecord;

describe("summary", () => {
  it("ALR over answerable questions with its CI, abstention over the others, single-token citation share", () => {
    const rs = [
      rec("rag", "1", 1, ["x"], { abstained: 0, citations: 2, single_token_citations: 1 }),
      rec("rag", "2", 0, ["x"], { abstained: 1, citations: 2, single_token_citations: 2 }),
      rec("rag", "3", null, [], { abstained: 1, citations: 0, single_token_citations: 0 }),
    ];
    const [s] = summarize(rs);
    expect([s!.examples, s!.answerable, s!.unanswerable, s!.alr, s!.abstention, s!.false_abstention]).toEqual([3, 2, 1, 0.5, 1, 0.5]);
    // sample [1, 0] → interval [0, 1] (stats.test.ts)
    expect(s!.alr_ci).toEqual({ low: 0, high: 1 });
    // 3 of 4 citations are single tokens; 4 citations over 3 answers
    expect(s!.single_token_citation_share).toBe(0.75);
    expect(s!.citations_per_example).toBeCloseTo(4 / 3, 12);
    expect(s!.copied_ratio).toBeCloseTo(12 / 30, 12);
    expect(s!.forward_passes_per_token).toBeCloseTo(0.5, 12);
  });

  it("pairs ALR by question id; unanswerable questions are left out", () => {
    const rs = [
      rec("rag", "1", 1, ["x"]),
      rec("rag", "2", 1, ["x"]),
      rec("rag", "3", 0, ["x"]),
      rec("rag", "4", 0, ["x"]),
      rec("rag", "5", null, []),
      rec("base", "1", 0, ["x"]),
      rec("base", "2", 1, ["x"]),
      rec("base", "3", 0, ["x"]),
      rec("base", "4", 0, ["x"]),
      rec("base", "5", null, []),
    ];
    const [p] = pairedAlr(rs);
    // a − b per question = [1, 0, 0, 0] → Δ 0.25, interval [0, 0.75] (stats.test.ts)
    expect([p!.a, p!.b, p!.n, p!.diff, p!.low, p!.high]).toEqual(["rag", "base", 4, 0.25, 0, 0.75]);
    expect(pairedAlr(rs, [["nest", "rag"]])).toEqual([]);
  });
});

describe("SQuAD splits", () => {
  it("report = the 200 spread questions; tune = questions of other paragraphs only", () => {
    // 1,000 questions, 5 per paragraph
    const exs: EvalExample[] = Array.from({ length: 1000 }, (_, i) => ({
      id: `q${i}`,
      prompt: "",
      query: "",
      answers: ["a"],
      gold: { paragraph: `p${Math.floor(i / 5)}`, spans: [] },
    }));
    const report = squadSplit(exs, "report");
    expect(report).toHaveLength(SQUAD_REPORT_QUESTIONS);
    // every 5th question: q0, q5, …, q995 → every paragraph holds one report question → tune is empty
    expect(report.slice(0, 3).map((e) => e.id)).toEqual(["q0", "q5", "q10"]);
    expect(squadSplit(exs, "tune")).toHaveLength(0);
    const exs2 = exs.map((e, i) => ({ ...e, gold: { paragraph: `p${Math.floor(i / 2)}`, spans: [] } }));
    // 2 per paragraph: report q0, q5, q10, … touches paragraphs 0, 2, 5, … (200 of 500) → tune holds the other 300 × 2
    const tune = squadSplit(exs2, "tune");
    expect(tune).toHaveLength(600);
    const reported = new Set(squadSplit(exs2, "report").map((e) => e.gold!.paragraph));
    expect(tune.some((e) => reported.has(e.gold!.paragraph))).toBe(false);
  });

  it("loadSquad applies split, limit and offset", async () => {
    const path = join(dir, "squad.json");
    const context = "Quiv is the capital of Zorbland.";
    writeFileSync(
      path,
      JSON.stringify({
        data: [
          {
            title: "Z",
            paragraphs: [
              {
                context,
                qas: Array.from({ length: 10 }, (_, i) => ({
                  id: `q${i}`,
                  question: `Q${i}?`,
                  answers: [{ text: "Quiv", answer_start: 0 }],
                })),
              },
            ],
          },
        ],
      }),
    );
    expect((await loadSquad(path, { limit: 5, offset: 3 })).examples.map((e) => e.id)).toEqual(["q6", "q8"]);
  });
});

describe("WikiText held-out window", () => {
  // A character tokenizer: token i is character i, so window offsets are token offsets.
  const chars = {
    encode: (t: string) => Array.from(t, (c) => c.codePointAt(0)!),
    decode: (ids: readonly number[]) => String.fromCodePoint(...ids),
  };

  it("each example excludes its own 384-token window; passages overlapping it are dropped", async () => {
    const body = "x".repeat(900);
    const path = join(dir, "wiki.txt");
    writeFileSync(path, ` = Alpha = \n ${body} \n`);
    const task = await loadWikitext(path, chars);
    // windows start at i = 0, 128, 256, 384, 512 (i + 384 < 900) → 5 examples
    expect(task.examples.map((e) => [e.exclude!.start, e.exclude!.end])).toEqual([
      [0, 384],
      [128, 512],
      [256, 640],
      [384, 768],
      [512, 896],
    ]);
    expect((await loadWikitext(path, chars, {}, "full")).examples[0]!.exclude).toBeUndefined();
    const key = task.examples[0]!.exclude!.paragraph;
    const origins = new Map([
      ["a", { paragraph: key, start: 0 }],
      ["b", { paragraph: key, start: 400 }],
      ["c", { paragraph: key, start: 600 }],
      ["z", { paragraph: "other", start: 0 }],
    ]);
    const p = (id: string, len: number) => ({ id, title: "", text: "x".repeat(len), source: "", score: 1, rank: 0 }) as ScoredPassage;
    // window [128, 512): a = [0, 200) overlaps, b = [400, 600) overlaps, c = [600, 800) is outside, z is another article
    expect(excludeWindow({ origins }, task.examples[1]!, [p("a", 200), p("b", 200), p("c", 200), p("z", 200)]).map((x) => x.id)).toEqual([
      "c",
      "z",
    ]);
    // a passage ending exactly at the window start is kept: [0, 128)
    expect(excludeWindow({ origins }, task.examples[1]!, [p("a", 128)]).map((x) => x.id)).toEqual(["a"]);
  });
});

describe("the factbook dev set", () => {
  it("loads: 62 questions, 5 without an answer, every answerable one names its gold passage(s)", async () => {
    const task = await loadJsonl(join(import.meta.dirname, "../../../fixtures/eval/factbook-dev.jsonl"), {}, "factbook");
    expect(task.examples).toHaveLength(62);
    const unanswerable = task.examples.filter((e) => e.answers.length === 0);
    expect(unanswerable).toHaveLength(5);
    expect(unanswerable.every((e) => e.goldPassages === undefined || e.goldPassages.length === 0)).toBe(true);
    for (const e of task.examples.filter((x) => x.answers.length > 0))
      expect(e.goldPassages!.every((id) => /^fb-[a-z]{2}-[0-9a-f]{12}$/.test(id))).toBe(true);
    expect(new Set(task.examples.map((e) => e.id)).size).toBe(62);
  });
});
