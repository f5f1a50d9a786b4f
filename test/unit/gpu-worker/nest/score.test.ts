/**
 * Perplexity under p_M (spec §11): the aggregation by hand, and teacher-forced scoring with the
 * real model checked against step-by-step decoding.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { PassageEncoder } from "@nest/gpu-worker/engine/passage-encoder";
import { scoreContinuation } from "@nest/gpu-worker/nest/score";
import { lmDistribution } from "@nest/gpu-worker/nest/mixture";
import { emptyTokenStore, type TokenStore } from "@nest/gpu-worker/nest/token-store";
import { perplexity } from "@nest/gpu-worker/eval/summary";

const PASSAGE = {
  id: "as-capital",
  title: "Australia › Government › Capital",
  source: "t",
  text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E; time difference: UTC+10",
};
const OPTS = { k: 1024, fixedLambda: 0.7, alpha: 0.2, tau: 0.1, lmTemperature: 0.7 } as const;

let manifest: Manifest;
let lm: DecoderSession;
let tok: ModelTokenizer;
let store: TokenStore;
let prompt: number[];
let target: number[];

beforeAll(async () => {
  const dir = await findModelDir();
  manifest = await readManifest(dir);
  lm = await DecoderSession.load(dir, manifest, { precision: "fp32" });
  tok = await ModelTokenizer.load(dir, manifest);
  store = (await new PassageEncoder(lm, tok, manifest.bos_token_id, "score-test").buildStore([PASSAGE])).store;
  prompt = tok.encodeChat([{ role: "user", content: "Tell me about the capital of Australia." }]);
  target = tok.encode("Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E");
});

describe("perplexity", () => {
  it("is exp(Σ NLL ÷ Σ tokens) over scored records", () => {
    const rec = (nll: number | null, n: number | null) => ({ metrics: { nll, nll_tokens: n } }) as never;
    expect(perplexity([rec(2, 1), rec(4, 3), rec(null, null)])).toBeCloseTo(Math.exp(1.5), 12); // 4.481689
    expect(perplexity([rec(null, null)])).toBeNull();
  });
});

describe("scoreContinuation", () => {
  it("without a store equals −Σ ln p_LM from token-by-token decoding", async () => {
    const scored = await scoreContinuation(lm, prompt, target, emptyTokenStore(manifest.hidden_size), { ...OPTS, storeUse: "none" });
    expect(lm.cacheLength).toBe(0); // scoring leaves the KV cache empty
    let out = await lm.forward(prompt, 1);
    let row = prompt.length - 1;
    let nll = 0;
    for (const t of target) {
      nll -= Math.log(lmDistribution(out.logitsRow(row), OPTS.lmTemperature)[t]!);
      out = await lm.forward([t], 1);
      row = 0;
    }
    expect(scored.tokens).toBe(target.length);
    expect(scored.nll).toBeCloseTo(nll, 2);
  });

  it("with the passage in the store, p_M makes the copied text more likely than p_LM does", async () => {
    const base = await scoreContinuation(lm, prompt, target, emptyTokenStore(manifest.hidden_size), { ...OPTS, storeUse: "none" });
    const nest = await scoreContinuation(lm, prompt, target, store, { ...OPTS, storeUse: "nest" });
    console.log(`PPL p_LM ${Math.exp(base.nll / base.tokens).toFixed(2)} → p_M ${Math.exp(nest.nll / nest.tokens).toFixed(2)}`);
    expect(nest.nll).toBeLessThan(base.nll);
  });

  it("refuses an empty target", async () => {
    await expect(scoreContinuation(lm, prompt, [], store, { ...OPTS, storeUse: "nest" })).rejects.toThrow(RangeError);
  });
});
