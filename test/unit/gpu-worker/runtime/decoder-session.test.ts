/**
 * The ONNX decoder's KV cache through `DecoderSession`: verifying m draft tokens in one pass gives
 * the same logits as feeding them one at a time (spec §6), and cutting the cache after a rejection
 * leaves exactly the committed prefix (spec §12.12). Both float32 graphs: the traced export (fp32)
 * and the fused GroupQueryAttention graph (fused-fp32, the CPU default).
 */
import { beforeAll, describe, expect, it } from "vitest";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { readManifest } from "@nest/gpu-worker/runtime/manifest";
import { DecoderSession } from "@nest/gpu-worker/runtime/decoder-session";
import { ModelTokenizer } from "@nest/gpu-worker/runtime/tokenizer";

/** Measured: ≤ 2e-4 between the batched and the step-by-step path; 1e-3 leaves room for thread-count noise. */
const LOGIT_TOLERANCE = 1e-3;

const sessions: Record<string, DecoderSession> = {};
let prompt: number[];
let draft: number[];

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

beforeAll(async () => {
  const dir = await findModelDir();
  const manifest = await readManifest(dir);
  for (const precision of ["fp32", "fused-fp32"] as const) sessions[precision] = await DecoderSession.load(dir, manifest, { precision });
  const tok = await ModelTokenizer.load(dir, manifest);
  prompt = tok.encodeChat([{ role: "user", content: "What is the capital of Australia?" }]);
  draft = tok.encode("The capital of Australia is Canberra");
  expect(draft.length).toBeGreaterThanOrEqual(6);
});

describe.each(["fp32", "fused-fp32"])("DecoderSession (%s)", (precision) => {
  let lm: DecoderSession;
  beforeAll(() => {
    lm = sessions[precision]!;
  });

  it("scores an m-token draft in one pass like m single steps", async () => {
    lm.reset();
    await lm.forward(prompt);
    const batched = await lm.forward(draft);
    const rows = draft.map((_, i) => Float32Array.from(batched.logitsRow(i)));
    const hidden = draft.map((_, i) => Float32Array.from(batched.hiddenRow(i)));
    expect(lm.cacheLength).toBe(prompt.length + draft.length);

    lm.reset();
    await lm.forward(prompt);
    let worst = 0;
    let worstHiddenRel = 0;
    for (let i = 0; i < draft.length; i++) {
      const out = await lm.forward([draft[i]!]);
      worst = Math.max(worst, maxAbsDiff(rows[i]!, out.logitsRow(0)));
      const h = out.hiddenRow(0);
      const scale = Math.max(...Array.from(h, Math.abs));
      worstHiddenRel = Math.max(worstHiddenRel, maxAbsDiff(hidden[i]!, h) / scale);
    }
    console.log(`draft parity: max |Δ logits| = ${worst.toExponential(2)}, max relative |Δ hidden| = ${worstHiddenRel.toExponential(2)}`);
    expect(worst).toBeLessThan(LOGIT_TOLERANCE);
    expect(worstHiddenRel).toBeLessThan(1e-4);
  });

  it("after truncation the cache holds exactly the committed prefix", async () => {
    // Verify 6 draft tokens, accept 2, then feed a replacement: same logits as a fresh run over prompt + 2 + replacement.
    const replacement = draft[5]!;
    lm.reset();
    await lm.forward(prompt);
    await lm.forward(draft.slice(0, 6));
    lm.truncate(prompt.length + 2);
    expect(lm.cacheLength).toBe(prompt.length + 2);
    const cut = Float32Array.from((await lm.forward([replacement])).logitsRow(0));
    expect(lm.cacheLength).toBe(prompt.length + 3);

    lm.reset();
    const fresh = await lm.forward([...prompt, draft[0]!, draft[1]!, replacement]);
    expect(maxAbsDiff(cut, fresh.logitsRow(prompt.length + 2))).toBeLessThan(LOGIT_TOLERANCE);
  });

  it("refuses to grow the cache by truncation and an empty forward", async () => {
    lm.reset();
    await lm.forward(prompt.slice(0, 3));
    expect(() => lm.truncate(4)).toThrow(RangeError);
    expect(() => lm.truncate(-1)).toThrow(RangeError);
    await expect(lm.forward([])).rejects.toThrow(RangeError);
  });
});
