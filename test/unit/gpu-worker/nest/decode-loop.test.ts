/**
 * The decoding loop with the real model over hand-written passages: KV bookkeeping (the cache never
 * holds a rejected draft token when the next pass starts), counts, EOS/length stops, and modes.
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest, type Manifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";
import { PassageEncoder } from "@nest/gpu-worker/engine/passage-encoder";
import { decodeNest, type DecodeOptions } from "@nest/gpu-worker/nest/decode-loop";
import type { CausalLM, ForwardOutput } from "@nest/gpu-worker/nest/causal-lm";
import type { CommittedToken } from "@nest/gpu-worker/nest/attribution";
import type { TokenStore } from "@nest/gpu-worker/nest/token-store";

const PASSAGES = [
  {
    id: "as-capital",
    title: "Australia › Government › Capital",
    source: "test",
    text: "Australia, capital: name: Canberra; geographic coordinates: 35 17 S, 149 08 E; time difference: UTC+10 (15 hours ahead of Washington, DC, during Standard Time)",
  },
  {
    id: "np-elevation",
    title: "Nepal › Geography › Elevation extremes",
    source: "test",
    text: "Nepal, elevation extremes: lowest point: Kanchan Kalan 70 m; highest point: Mount Everest 8,850 m (highest peak in Asia and highest point on earth above sea level)",
  },
];

/** Delegates to the real session and records what the KV cache holds. */
class TracedLM implements CausalLM {
  content: number[] = [];
  forwards: number[][] = [];
  constructor(private readonly inner: DecoderSession) {}
  get vocabSize() {
    return this.inner.vocabSize;
  }
  get hiddenSize() {
    return this.inner.hiddenSize;
  }
  get cacheLength() {
    return this.inner.cacheLength;
  }
  async forward(ids: readonly number[]): Promise<ForwardOutput> {
    this.forwards.push([...ids]);
    const out = await this.inner.forward(ids);
    this.content.push(...ids);
    return out;
  }
  truncate(length: number) {
    this.inner.truncate(length);
    this.content.length = length;
  }
  reset() {
    this.inner.reset();
    this.content = [];
  }
}

let manifest: Manifest;
let session: DecoderSession;
let tok: ModelTokenizer;
let store: TokenStore;

const options = (o: Partial<DecodeOptions>): DecodeOptions => ({
  storeUse: "nest",
  alpha: 0.3,
  tau: 0.1,
  delta: 0.5,
  gamma: 5e-4,
  k: 1024,
  maxSpan: 64,
  fixedLambda: 0.7,
  lmTemperature: 0.7,
  maxNewTokens: 40,
  eosTokenIds: manifest.eos_token_ids,
  ...o,
});

async function run(question: string, o: Partial<DecodeOptions>) {
  const lm = new TracedLM(session);
  lm.reset();
  const prompt = tok.encodeChat([{ role: "user", content: question }]);
  const committed: number[] = [];
  const sources: CommittedToken["source"][] = [];
  const violations: string[] = [];
  // Before every decoding pass, the cache must be a prefix of prompt + committed tokens.
  const inner = lm.forward.bind(lm);
  lm.forward = async (ids) => {
    const expected = [...prompt, ...committed];
    if (lm.forwards.length > 0) {
      const ok = lm.content.length <= expected.length && lm.content.every((t, i) => t === expected[i]);
      if (!ok) violations.push(`cache ${lm.content.length} not a prefix of committed ${expected.length}`);
    }
    return inner(ids);
  };
  const { finishReason, stats } = await decodeNest(lm, prompt, store, options(o), (ts) => {
    for (const t of ts) {
      committed.push(t.id);
      sources.push(t.source);
    }
  });
  return { finishReason, stats, committed, sources, violations, text: tok.decode(committed), lm, prompt };
}

beforeAll(async () => {
  const dir = await findModelDir();
  manifest = await readManifest(dir);
  session = await DecoderSession.load(dir, manifest);
  tok = await ModelTokenizer.load(dir, manifest);
  store = (await new PassageEncoder(session, tok, manifest.bos_token_id, manifest.source.key).buildStore(PASSAGES)).store;
});

describe("decodeNest with the real model", () => {
  it("base mode is plain greedy decoding: one pass per token, no sources, stops at EOS", async () => {
    const r = await run("What is the capital of Australia?", { storeUse: "none" });
    expect(r.text).toBe("The capital of Australia is Canberra.");
    expect(r.finishReason).toBe("stop");
    expect(r.stats.lmForwardPasses).toBe(r.committed.length); // one advance per token, the EOS pass included
    expect(r.sources.every((s) => s === undefined)).toBe(true);
  });

  it("keeps the KV cache to committed tokens through mid-span rejections (strict γ)", async () => {
    const r = await run("What is the highest point in Nepal?", { gamma: 1, alpha: 0.5 });
    expect(r.violations).toEqual([]);
    expect(r.stats.draftedTokens).toBeGreaterThan(r.stats.acceptedTokens); // some draft was cut
    expect(r.stats.acceptedTokens).toBeGreaterThan(0);
    expect(r.committed.length).toBe(r.stats.completionTokens);
  });

  it("nest mode copies corpus spans with sources and needs fewer passes than tokens", async () => {
    const r = await run("What is the highest point in Nepal?", {});
    expect(r.violations).toEqual([]);
    expect(r.text).toContain("Everest");
    expect(r.stats.lmForwardPasses).toBeLessThan(r.committed.length);
    const np = r.sources.filter((s) => s && s.passage === 1).length;
    expect(np).toBeGreaterThan(3);
    // Every sourced token is the passage token at its recorded position.
    r.committed.forEach((id, i) => {
      const s = r.sources[i];
      if (s) expect(store.passages[s.passage]!.tokens[s.pos]).toBe(id);
    });
  });

  it("stops at max_new_tokens, even inside a span", async () => {
    const r = await run("What is the highest point in Nepal?", { maxNewTokens: 5 });
    expect(r.committed.length).toBe(5);
    expect(r.finishReason).toBe("length");
  });

  it("speculation auto falls back under a strict γ and gives the text of off (issue 13 item 4)", async () => {
    // The strictest verification (greedy: only argmax-p_M tokens pass), λ kept near 1 (α = 0, so
    // p_M ≈ p_LM) and span mode at every step (δ = 1), on a prompt the passages do not continue:
    // each draft is a nearest neighbour's continuation that the LM does not follow past v_1.
    const strict = { acceptance: "greedy" as const, alpha: 0, delta: 1, maxNewTokens: 32 };
    const prompt = "Write one sentence about the weather today.";
    const off = await run(prompt, { ...strict, speculation: "off" });
    const auto = await run(prompt, { ...strict, speculation: "auto" });
    const on = await run(prompt, { ...strict, speculation: "on" });
    expect(on.stats.acceptedTokens).toBe(on.stats.numDrafts);
    expect(off.stats.numDrafts).toBe(0);
    expect(auto.stats.pausedSteps).toBeGreaterThan(0);
    expect(auto.stats.draftedTokens).toBeLessThan(on.stats.draftedTokens);
    expect(auto.violations).toEqual([]);
    expect(auto.text).toBe(off.text);
  });

  it("an empty store falls back to the LM (λ = 1)", async () => {
    const empty = (await new PassageEncoder(session, tok, manifest.bos_token_id, manifest.source.key).buildStore([])).store;
    const saved = store;
    store = empty;
    try {
      const r = await run("What is the capital of Australia?", {});
      expect(r.text).toBe("The capital of Australia is Canberra.");
      expect(r.stats.draftedTokens).toBe(0);
    } finally {
      store = saved;
    }
  });
});
