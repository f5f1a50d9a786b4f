/**
 * End to end: `evaluate` (what `nestlm eval` runs) on a three-paragraph SQuAD file and two
 * questions written here, with the real model, a real LanceDB index built in a temporary
 * NEST_HOME, and the server's decoding code. Does not read ../shared.
 */
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { beforeAll, describe, expect, it } from "vitest";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { evaluate, type EvaluateResult } from "@nest/gpu-worker/eval/evaluate";
import { answerRecall, exactMatch, maxF1 } from "@nest/gpu-worker/eval/metrics";

const CONTEXTS = [
  "Zorbland is an island nation in the Quill Sea. The capital of Zorbland is Quivertown, a port founded in 1712.",
  "The Quill Sea is shallow and warm. Fishermen from Zorbland catch silver eels there every spring.",
  "Mount Brask is the highest peak of Velmora, rising 4,210 metres above sea level.",
];
const QAS = [
  { context: 0, id: "q1", question: "What is the capital of Zorbland?", answer: "Quivertown" },
  { context: 2, id: "q2", question: "What is the highest peak of Velmora?", answer: "Mount Brask" },
];

let result: EvaluateResult;
let out: string;

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), "nest-eval-e2e-"));
  const data = join(dir, "tiny-squad.json");
  writeFileSync(
    data,
    JSON.stringify({
      data: [
        {
          title: "Tiny",
          paragraphs: CONTEXTS.map((context, i) => ({
            context,
            qas: QAS.filter((q) => q.context === i).map((q) => ({
              id: q.id,
              question: q.question,
              answers: [{ text: q.answer, answer_start: context.indexOf(q.answer) }],
            })),
          })),
        },
      ],
    }),
  );
  out = join(dir, "out");
  const modelDir = await prepareModel({ log: () => {} });
  result = await evaluate({
    task: "squad",
    data,
    out,
    modes: ["base", "nest"],
    gammas: [0.5],
    maxNewTokens: 24,
    passages: 3,
    home: join(dir, "home"),
    modelDir,
  });
});

describe("nestlm eval on a corpus written by the test", () => {
  it("runs every example × variant and writes the outputs", () => {
    // variants: base, nest, nest γ=5e-1 (the sweep's 5e-4 would be `nest` itself).
    expect(result.plan.variants.map((v) => v.name)).toEqual(["base", "nest", "nest γ=5e-1"]);
    expect(result.records).toHaveLength(6);
    expect(readFileSync(join(out, "examples.jsonl"), "utf8").trim().split("\n")).toHaveLength(6);
    const report = readFileSync(join(out, "report.md"), "utf8");
    expect(report).toContain("## Main table");
    expect(report).toContain("## γ sweep (nest)");
    expect(readFileSync(join(out, "speed.svg"), "utf8")).toMatch(/^<svg /);
    expect(existsSync(join(out, "gamma.svg"))).toBe(true);
  });

  it("scores each output with the metric functions", () => {
    for (const r of result.records) {
      expect(r.metrics.alr).toBe(answerRecall(r.output, r.answers));
      expect(r.metrics.em).toBe(exactMatch(r.output, r.answers));
      expect(r.metrics.f1).toBe(maxF1(r.output, r.answers));
    }
  });

  it("base: no store, no citations, one LM pass per token after the first", () => {
    for (const r of result.records.filter((x) => x.variant === "base")) {
      expect([r.usage.store_keys, r.usage.attributed_tokens, r.citations.length, r.timings_ms.retrieval]).toEqual([0, 0, 0, 0]);
      // Each committed token but the last is fed back; a stop at EOS feeds the last one too.
      expect(r.usage.lm_forward_passes).toBe(r.usage.completion_tokens - (r.finish_reason === "length" ? 1 : 0));
    }
  });

  it("nest: citations quote the cited passage exactly and the summary pools tokens", () => {
    const passages = new Map(result.task.passages!.map((p) => [p.id, p]));
    const nest = result.records.filter((x) => x.variant === "nest");
    for (const r of nest) {
      expect(r.usage.store_passages).toBeGreaterThan(0);
      for (const c of r.citations) {
        expect(r.output.slice(c.text_start, c.text_end)).toBe(passages.get(c.passage_id)!.text.slice(c.passage_start, c.passage_end));
      }
    }
    // The planted fact: base invents a capital, nest copies it from the corpus with a citation.
    const q1 = (v: string) => result.records.find((x) => x.variant === v && x.id === "q1")!;
    expect([
      q1("base").metrics.alr,
      q1("nest").metrics.alr,
      q1("nest").metrics.gold_covered,
      q1("nest").metrics.citation_precision,
    ]).toEqual([0, 1, 1, 1]);
    const s = result.summaries.find((x) => x.variant === "nest")!;
    const tokens = nest.reduce((a, r) => a + r.usage.completion_tokens, 0);
    expect(s.attribution_ratio).toBeCloseTo(nest.reduce((a, r) => a + r.usage.attributed_tokens, 0) / tokens, 12);
    expect(s.forward_passes_per_token).toBeCloseTo(nest.reduce((a, r) => a + r.usage.lm_forward_passes, 0) / tokens, 12);
  });
});

describe("nestlm eval --task wikitext: ROUGE and perplexity under p_M", () => {
  it("scores the 256-token reference continuation, and the corpus lowers p_M's perplexity", async () => {
    const dir = mkdtempSync(join(tmpdir(), "nest-eval-wt-"));
    const sentences = [
      "The Harrow Canal was dug between 1791 and 1798 to carry coal from the Oakdene pits to the river port of Lenmouth.",
      "Its engineer, Abel Crane, laid out eleven locks over a rise of forty metres and a tunnel of 640 metres under Greyhill.",
      "Traffic peaked in 1841, when barges moved more than 90,000 tonnes of coal, lime and grain along its fourteen miles.",
      "The opening of the Lenmouth railway in 1852 halved its tolls within a decade, and the company sold the canal in 1874.",
      "A volunteer trust restored the lower locks from 1968 onwards, and pleasure boats reached Greyhill tunnel again in 1994.",
    ];
    const body = Array.from({ length: 4 }, (_, i) => sentences.map((s) => s.replace("1791", String(1791 + i))).join(" ")).join("\n");
    const data = join(dir, "wiki.test.raw");
    writeFileSync(data, ` = Harrow Canal = \n\n${body}\n`);
    const r = await evaluate({
      // "full": the example's own window stays in the store (the default excludes it), so the target is in the corpus.
      task: "wikitext",
      data,
      out: join(dir, "out"),
      modes: ["base", "nest"],
      limit: 1,
      maxNewTokens: 8,
      passages: 5,
      wikitextStore: "full",
      home: join(dir, "home"),
      modelDir: await prepareModel({ log: () => {} }),
    });
    const base = r.summaries.find((s) => s.variant === "base")!;
    const nest = r.summaries.find((s) => s.variant === "nest")!;
    for (const rec of r.records) {
      expect(rec.metrics.nll_tokens).toBeGreaterThan(200); // the 256-token target, re-tokenised
      expect(rec.metrics.rouge1).not.toBeNull();
    }
    console.log(`wikitext PPL: base ${base.perplexity?.toFixed(2)}, nest ${nest.perplexity?.toFixed(2)}`);
    expect(base.perplexity).toBeGreaterThan(1);
    expect(nest.perplexity!).toBeLessThan(base.perplexity!); // the target is in the corpus
    expect(readFileSync(join(dir, "out", "report.md"), "utf8")).toContain("PPL");
  });
});
