import { mkdtempSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";
import { loadJsonl, loadSquad, spread, wikitextArticles } from "@nest/gpu-worker/eval/tasks";
import { citationMetrics } from "@nest/gpu-worker/eval/runner";
import { planVariants } from "@nest/gpu-worker/eval/variants";

const dir = mkdtempSync(join(tmpdir(), "nest-eval-tasks-"));

describe("tasks", () => {
  it("spreads a limit evenly", () => {
    expect(spread([0, 1, 2, 3, 4, 5, 6, 7, 8, 9], 4)).toEqual([0, 2, 5, 7]);
    expect(spread([1, 2], 5)).toEqual([1, 2]);
  });

  it("loads SQuAD: passages per paragraph, gold spans, citation metrics", async () => {
    const context = "Zorbland is a small island. Its capital is Quiv.";
    const path = join(dir, "squad.json");
    writeFileSync(
      path,
      JSON.stringify({
        data: [
          {
            title: "Zorb_land",
            paragraphs: [
              {
                context,
                qas: [
                  {
                    id: "q1",
                    question: "What is the capital of Zorbland?",
                    answers: [
                      { text: "Quiv", answer_start: 43 },
                      { text: "Quiv", answer_start: 43 },
                    ],
                  },
                ],
              },
            ],
          },
        ],
      }),
    );
    const task = await loadSquad(path);
    expect(task.passages).toHaveLength(1);
    const p = task.passages![0]!;
    expect([p.title, p.text]).toEqual(["Zorb land", context]);
    const ex = task.examples[0]!;
    expect(ex.answers).toEqual(["Quiv"]);
    expect(ex.gold!.spans[0]).toEqual({ start: 43, end: 47 });
    // A citation of chars 28-48 ("Its capital is Quiv.") covers the gold span; one of another passage does not count.
    const covering = { passage_id: p.id, passage_start: 28, passage_end: 48 };
    expect(citationMetrics(task, ex, [covering, { passage_id: "other", passage_start: 0, passage_end: 4 }])).toEqual({
      citation_precision: 0.5,
      gold_covered: 1,
    });
    expect(citationMetrics(task, ex, [{ passage_id: p.id, passage_start: 0, passage_end: 8 }])).toEqual({
      citation_precision: 1,
      gold_covered: 0,
    });
    expect(citationMetrics(task, ex, [])).toEqual({ citation_precision: null, gold_covered: 0 });
  });

  it("rejects a bad JSONL line with its number", async () => {
    const path = join(dir, "bad.jsonl");
    writeFileSync(path, `{"question":"a?","answers":["b"]}\n{"question":"c?"}\n`);
    await expect(loadJsonl(path)).rejects.toThrow(/bad\.jsonl:2: expected \{question, answers\[\]\}/);
  });

  it("splits WikiText raw articles on single-level titles", () => {
    const raw = "\n = Alpha = \n\n Alpha is a letter . \n\n = = History = = \n\n Old . \n = Beta = \n Beta too . \n";
    expect(wikitextArticles(raw)).toEqual([
      { title: "Alpha", text: "Alpha is a letter . = = History = = Old ." },
      { title: "Beta", text: "Beta too ." },
    ]);
  });
});

describe("variants", () => {
  it("dedupes the ablation and the γ sweep against the modes", () => {
    const plan = planVariants({ modes: ["base", "knnlm", "nest"], params: {}, gammas: [0.05, 5e-4], ablation: true });
    expect(plan.variants.map((v) => v.name)).toEqual(["base", "knnlm", "nest", "nest γ=5e-2", "abl + RRC", "abl + dynamic span selection"]);
    expect(plan.gamma.map((g) => g.variant)).toEqual(["nest γ=5e-2", "nest"]);
    expect(plan.ablation.map((a) => a.variant)).toEqual(["knnlm", "abl + RRC", "abl + dynamic span selection", "nest"]);
  });
});
