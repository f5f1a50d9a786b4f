/**
 * The decoding loop pinned with a scripted fake LM (issue 11 item 5): literal commits, passes
 * (KV length before each), truncations, stats and sources for the span paths of Algorithm 1.
 *
 * Geometry (hand-checkable): the key of passage token v sits at (1000·p + 10·v, 0), so a query on
 * a key has ρ = 0 and λ = sigmoid(−0.3/0.01) ≈ 1e-13 (span mode, p_M ≈ p_kNN one-hot on that key's
 * value: the next key is 100 away in squared distance, weight e^{−100/√2}); a query at FAR has
 * ρ ≈ 1, λ ≈ 1 (token mode, p_M ≈ p_LM). The LM's argmax has logit 20, the rest 0, so at FAR any
 * other token has p_M ≈ e^{−20/0.7} ≈ 4e-13 < 0.5·γ·max and is rejected.
 */
import { describe, expect, it } from "vitest";
import { decodeNest, type DecodeOptions } from "../../../../gpu-worker/src/nest/decode-loop.ts";
import type { CommittedToken } from "../../../../gpu-worker/src/nest/attribution.ts";
import { buildTokenStore, type TokenStore } from "../../../../gpu-worker/src/nest/token-store.ts";
import { charPassage } from "./fixtures.ts";
import { FAR, ScriptedLM, follow, gridKeys, type ScriptStep } from "./scripted-lm.ts";

const PROMPT = "Q:";
const EOS = "$".charCodeAt(0);
const PARIS = " Paris is big.";

const storeOf = (...texts: string[]): TokenStore =>
  buildTokenStore(
    texts.map((t, p) => charPassage(`p${p}`, t, gridKeys(p, t))),
    2,
  );

const options = (o: Partial<DecodeOptions>): DecodeOptions => ({
  storeUse: "nest",
  alpha: 0.3,
  tau: 0.01,
  delta: 0.5,
  gamma: 5e-4,
  k: 2,
  maxSpan: 8,
  fixedLambda: 0.7,
  lmTemperature: 0.7,
  maxNewTokens: 40,
  eosTokenIds: [EOS],
  ...o,
});

async function run(store: TokenStore, script: Array<[string, ScriptStep]>, o: Partial<DecodeOptions>) {
  const prompt = Array.from(PROMPT, (c) => c.charCodeAt(0));
  const lm = new ScriptedLM(prompt.length, new Map(script));
  const committed: CommittedToken[] = [];
  const { finishReason, stats } = await decodeNest(lm, prompt, store, options(o), (ts) => committed.push(...ts));
  return {
    finishReason,
    text: String.fromCharCode(...committed.map((t) => t.id)),
    /** "passage:pos" per committed token, "-" when unsourced. */
    sources: committed.map((t) => (t.source ? `${t.source.passage}:${t.source.pos}` : "-")).join(" "),
    passes: lm.passes.map((p) => `${p.cachedBefore}+${JSON.stringify(p.text)}/${p.numLogits}`),
    truncations: lm.truncations,
    kvLength: lm.cacheLength,
    stats: {
      lmForwardPasses: stats.lmForwardPasses,
      prefillPasses: stats.prefillPasses,
      numDrafts: stats.numDrafts,
      draftedTokens: stats.draftedTokens,
      acceptedTokens: stats.acceptedTokens,
      completionTokens: stats.completionTokens,
    },
  };
}

describe("decodeNest with a scripted LM", () => {
  it("mid-span rejection: keeps v_1..v_a, cuts the KV cache back, commits the replacement", async () => {
    const store = storeOf(PARIS);
    const r = await run(
      store,
      [
        ...follow(store, 0, "", 1, 6), // the LM follows "Paris " ...
        ["Paris ", { lm: "w", hidden: FAR }], // ... then wants "was", not "is"
        ["Paris w", { lm: "a", hidden: FAR }],
        ["Paris wa", { lm: "s", hidden: FAR }],
        ["Paris was", { lm: "$", hidden: FAR }],
      ],
      {},
    );
    expect(r.text).toBe("Paris was");
    expect(r.finishReason).toBe("stop");
    // Draft "Paris is" (n = 8) in one pass; "i" rejected at row 5; KV cut to prompt + 6.
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Paris is"/8', '8+"w"/1', '9+"a"/1', '10+"s"/1']);
    expect(r.truncations).toEqual([8]);
    expect(r.kvLength).toBe(11);
    expect(r.stats).toEqual({
      lmForwardPasses: 4,
      prefillPasses: 1,
      numDrafts: 1,
      draftedTokens: 8,
      acceptedTokens: 6,
      completionTokens: 9,
    });
    // The replacement "w" has no source; token-mode "s" equals its nearest unmasked neighbour
    // (passage token 8, "s" of "is": keys 1-6 are masked after the copy), so it is sourced there.
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5 0:6 - - 0:8");
  });

  it("full accept + continuation streaming: drafts the same passage straight on, no kNN proposal", async () => {
    const store = storeOf(PARIS);
    const r = await run(store, [...follow(store, 0, "", 1, 13), ["Paris is big.", { lm: "$", hidden: FAR }]], { maxSpan: 4 });
    expect(r.text).toBe("Paris is big.");
    expect(r.finishReason).toBe("stop");
    // Each fully accepted pass also gives the next position; the passage end stops streaming and
    // the EOS is a token-mode step after the last pass.
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Pari"/4', '6+"s is"/4', '10+" big"/4', '14+"."/1']);
    expect(r.truncations).toEqual([]);
    expect(r.kvLength).toBe(15);
    expect(r.stats).toEqual({
      lmForwardPasses: 4,
      prefillPasses: 1,
      numDrafts: 4,
      draftedTokens: 13,
      acceptedTokens: 13,
      completionTokens: 13,
    });
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5 0:6 0:7 0:8 0:9 0:10 0:11 0:12 0:13");
  });

  it("first draft token rejected (a streamed continuation): the replacement costs one pass", async () => {
    const store = storeOf(PARIS);
    const r = await run(store, [...follow(store, 0, "", 1, 5), ["Paris", { lm: ",", hidden: FAR }], ["Paris,", { lm: "$", hidden: FAR }]], {
      maxSpan: 5,
    });
    expect(r.text).toBe("Paris,");
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Paris"/5', '7+","/1']);
    expect(r.truncations).toEqual([]);
    expect(r.kvLength).toBe(8);
    // The streamed draft " is b" is rejected at v_1 against the state the previous pass left.
    expect(r.stats).toEqual({
      lmForwardPasses: 2,
      prefillPasses: 1,
      numDrafts: 2,
      draftedTokens: 10,
      acceptedTokens: 5,
      completionTokens: 6,
    });
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5 -");
  });

  it("EOS inside a span: commits up to the EOS and stops", async () => {
    const store = storeOf(" Paris$ more.");
    const r = await run(store, follow(store, 0, "", 1, 8), {});
    expect(r.text).toBe("Paris");
    expect(r.finishReason).toBe("stop");
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Paris$ m"/8']);
    expect(r.kvLength).toBe(10);
    expect(r.stats).toEqual({
      lmForwardPasses: 1,
      prefillPasses: 1,
      numDrafts: 1,
      draftedTokens: 8,
      acceptedTokens: 8,
      completionTokens: 5,
    });
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5");
  });

  it("token budget inside a span: the draft is cut to the tokens left", async () => {
    const store = storeOf(PARIS);
    const r = await run(store, follow(store, 0, "", 1, 13), { maxNewTokens: 3 });
    expect(r.text).toBe("Par");
    expect(r.finishReason).toBe("length");
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Par"/3']);
    expect(r.kvLength).toBe(5);
    expect(r.stats).toEqual({
      lmForwardPasses: 1,
      prefillPasses: 1,
      numDrafts: 1,
      draftedTokens: 3,
      acceptedTokens: 3,
      completionTokens: 3,
    });
    expect(r.sources).toBe("0:1 0:2 0:3");
  });
});

describe("speculation on / off / auto (issue 13 item 4) with a scripted LM", () => {
  // Every step starts on a key (span mode, v_1 = the key's value, always accepted) and the LM then
  // disagrees with the passage (v_2 rejected): drafts never pay. Passage " a1b2…j0"; the LM wants
  // "a x b y …": after letter i it says X[i], not the passage's digit.
  const LETTERS = "abcdefghij";
  const LM = "xyzwvutsrq";
  const PASSAGE = ` ${Array.from(LETTERS, (c, i) => c + String((i + 1) % 10)).join("")}`;
  const store = storeOf(PASSAGE);
  const script: Array<[string, ScriptStep]> = [];
  let text = "";
  for (let i = 0; i < LETTERS.length; i++) {
    script.push([text, { lm: LETTERS[i]!, hidden: [10 * (2 * i + 1), 0] }]); // on the key of value pos 2i+1
    script.push([text + LETTERS[i]!, { lm: LM[i]!, hidden: FAR }]);
    text += LETTERS[i]! + LM[i]!;
  }
  script.push([text, { lm: "$", hidden: FAR }]);
  const EXPECTED = "axbyczdwevfugthsirjq";

  it("off never drafts: token mode at every step, one pass per token", async () => {
    const r = await run(store, script, { speculation: "off" });
    expect(r.text).toBe(EXPECTED);
    expect(r.stats).toMatchObject({ lmForwardPasses: 20, numDrafts: 0, draftedTokens: 0 });
  });

  it("on drafts at every span-mode step: same text, 68 draft tokens verified for 10 accepted", async () => {
    const r = await run(store, script, { speculation: "on" });
    expect(r.text).toBe(EXPECTED);
    // Drafts start at value positions 1, 3, …, 19 with n = 8, cut at the passage end (20).
    expect(r.stats).toMatchObject({ lmForwardPasses: 20, numDrafts: 10, draftedTokens: 68, acceptedTokens: 10 });
  });

  it("auto falls back after drafts that do not pay and gives the text of off", async () => {
    const prompt = Array.from(PROMPT, (c) => c.charCodeAt(0));
    const lm = new ScriptedLM(prompt.length, new Map(script));
    const committed: number[] = [];
    const { stats } = await decodeNest(lm, prompt, store, options({ speculation: "auto" }), (ts) => committed.push(...ts.map((t) => t.id)));
    expect(String.fromCharCode(...committed)).toBe(EXPECTED);
    // Draft at "" (m 8, a 1: saved 1 − 1 − 0.05·7 < 0) → pause 4 token steps (b y c z); draft at
    // "axbycz" → pause 8 (e v f u g t h s); draft at "…ths" (m 4) → pause 16: j, q and the EOS step.
    expect(stats.numDrafts).toBe(3);
    expect(stats.draftedTokens).toBe(20);
    expect(stats.acceptedTokens).toBe(3);
    expect(stats.pausedSteps).toBe(15);
    expect(stats.lmForwardPasses).toBe(20);
    expect(stats.speculationUsage("auto")).toEqual({
      mode: "auto",
      mean_acceptance_length: 2, // 1 + 3/3
      acceptance_rate: 3 / 20,
      accepted_per_position: [3],
      paused_steps: 15,
    });
  });

  it("auto keeps drafting while drafts pay (the streaming passage of the full-accept case)", async () => {
    const paris = storeOf(PARIS);
    const r = await run(paris, [...follow(paris, 0, "", 1, 13), ["Paris is big.", { lm: "$", hidden: FAR }]], {
      maxSpan: 4,
      speculation: "auto",
    });
    expect(r.text).toBe("Paris is big.");
    // Drafts of 4, 4, 4 (saved 3 − 0.15 > 0 each), then "." alone (m 1, a 1: saved 0) → a pause
    // that only the final EOS step sees.
    expect(r.stats).toMatchObject({ lmForwardPasses: 4, numDrafts: 4, draftedTokens: 13, acceptedTokens: 13 });
  });
});

describe("speculation metrics", () => {
  it("null ratios without drafts; per-position counts as vLLM reports them", async () => {
    const { DecodeStats } = await import("../../../../gpu-worker/src/nest/stats.ts");
    const s = new DecodeStats();
    expect(s.speculationUsage("on")).toEqual({
      mode: "on",
      mean_acceptance_length: null,
      acceptance_rate: null,
      accepted_per_position: [],
      paused_steps: 0,
    });
    s.observeDraft(4, 2);
    s.observeDraft(3, 3);
    s.observeDraft(5, 0);
    expect(s.speculationUsage("on")).toEqual({
      mode: "on",
      mean_acceptance_length: 1 + 5 / 3,
      acceptance_rate: 5 / 12,
      accepted_per_position: [2, 2, 1],
      paused_steps: 0,
    });
  });
});

describe("question anchor and copy verification in the loop (docs §14)", () => {
  const store = storeOf(PARIS);
  const query = "Is Paris big?";

  it("anchor verify: the sentence's v_1 fails against the LM's choice, so the step is a token step", async () => {
    const r = await run(
      store,
      [
        ["", { lm: "T", hidden: FAR }],
        ["T", { lm: "$", hidden: FAR }],
      ],
      { anchor: "verify", query },
    );
    expect(r.text).toBe("T");
    expect(r.stats).toMatchObject({ numDrafts: 0, lmForwardPasses: 1 });
  });

  it("anchor trust: the best sentence is copied from its first token, then streamed on", async () => {
    const r = await run(
      store,
      [["", { lm: "T", hidden: FAR }], ...follow(store, 0, "", 1, 13).slice(1), ["Paris is big.", { lm: "$", hidden: FAR }]],
      {
        anchor: "trust",
        query,
      },
    );
    expect(r.text).toBe("Paris is big.");
    // Anchor "Paris is" (n = 8) in one pass, then the continuation " big." (5 tokens, passage end).
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Paris is"/8', '10+" big."/5']);
    expect(r.stats).toMatchObject({ numDrafts: 2, draftedTokens: 13, acceptedTokens: 13 });
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5 0:6 0:7 0:8 0:9 0:10 0:11 0:12 0:13");
  });

  it("anchor sentence: the whole best sentence is copied unchecked, verification resumes after it", async () => {
    const two = storeOf(" Paris is big. It rains.");
    // The LM wants "?" everywhere after its first choice "T": only the quote gets through.
    const r = await run(two, [["", { lm: "T", hidden: FAR }]], { anchor: "sentence", query, maxSpan: 16, maxNewTokens: 15 });
    expect(r.text).toBe("Paris is big.??");
    // The draft (n = 16) is cut to the 15-token budget; " " after the sentence is rejected.
    expect(r.passes).toEqual(['0+"Q:"/1', '2+"Paris is big. I"/15', '15+"?"/1']);
    expect(r.truncations).toEqual([15]);
    expect(r.stats).toMatchObject({ numDrafts: 1, draftedTokens: 15, acceptedTokens: 13, completionTokens: 15 });
  });

  it("anchor sentence: the quote is streamed before the first LM pass (time to first token)", async () => {
    const two = storeOf(" Paris is big. It rains.");
    const prompt = Array.from(PROMPT, (c) => c.charCodeAt(0));
    const lm = new ScriptedLM(prompt.length, new Map<string, ScriptStep>([["", { lm: "T", hidden: FAR }]]));
    const calls: Array<{ text: string; passesBefore: number }> = [];
    await decodeNest(lm, prompt, two, options({ anchor: "sentence", query, maxSpan: 16, maxNewTokens: 15 }), (ts) =>
      calls.push({ text: String.fromCharCode(...ts.map((t) => t.id)), passesBefore: lm.passes.length }),
    );
    // The 13-token sentence goes out with no LM pass run; the rest after the verification pass.
    expect(calls).toEqual([
      { text: "Paris is big.", passesBefore: 0 },
      { text: "?", passesBefore: 2 },
      { text: "?", passesBefore: 3 },
    ]);
  });

  it("anchor sentence: a budget inside the quote needs no LM pass at all", async () => {
    const two = storeOf(" Paris is big. It rains.");
    const r = await run(two, [], { anchor: "sentence", query, maxSpan: 16, maxNewTokens: 5 });
    expect(r.text).toBe("Paris");
    expect(r.finishReason).toBe("length");
    expect(r.passes).toEqual([]);
    expect(r.sources).toBe("0:1 0:2 0:3 0:4 0:5");
    expect(r.stats).toMatchObject({ numDrafts: 1, draftedTokens: 5, acceptedTokens: 5, completionTokens: 5, prefillPasses: 0 });
  });

  // After "Paris" the kNN is sure of another passage's token ("X"), the LM agrees with the copy.
  const two = storeOf(PARIS, " X.");
  const script: Array<[string, ScriptStep]> = [
    ...follow(two, 0, "", 1, 13),
    ["Paris", { lm: " ", hidden: [1000 + 10, 0] }], // on passage 1's key of value pos 1 ("X")
    ["ParisX", { lm: "$", hidden: FAR }],
    ["Paris is big.", { lm: "$", hidden: FAR }],
  ];

  it("copy_verify mixture (the paper): the kNN's other passage cuts the continuation", async () => {
    const r = await run(two, script, { maxSpan: 5 });
    expect(r.text).toBe("ParisX");
    expect(r.stats).toMatchObject({ numDrafts: 2, draftedTokens: 10, acceptedTokens: 5 });
  });

  it("copy_verify lm: p_LM alone verifies the continuation, so the copy goes on", async () => {
    const r = await run(two, script, { maxSpan: 5, copyVerify: "lm" });
    expect(r.text).toBe("Paris is big.");
    expect(r.stats).toMatchObject({ numDrafts: 3, draftedTokens: 13, acceptedTokens: 13 });
  });
});
