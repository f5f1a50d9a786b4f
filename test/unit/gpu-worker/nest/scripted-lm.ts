/**
 * A scripted fake `CausalLM` for the decoding loop's unit tests: the test chooses the logits and
 * the hidden state at every position, as a function of the tokens generated so far. Tokens are
 * character codes (vocabulary 128), hidden states are 2-d. The fake keeps its own KV cache (the
 * token ids it holds), honours `truncate`, computes only the last `numLogits` logits rows as the
 * real session does, and records every pass, so tests can assert literal KV lengths.
 *
 * This is a fake at the one boundary the loop cannot reach cheaply in a unit test (the ONNX model);
 * the real-model behaviour is covered by decode-loop.test.ts.
 */
import type { CausalLM, ForwardOutput } from "../../../../gpu-worker/src/nest/causal-lm.ts";
import type { TokenStore } from "../../../../gpu-worker/src/nest/token-store.ts";

export const VOCAB = 128;
/** A hidden state far from every key of the test stores: ρ ≈ 1, so λ ≈ 1 and p_M ≈ p_LM. */
export const FAR: readonly [number, number] = [0, 1e6];
/** Logit of the LM's preferred token; every other token gets 0 unless listed in `alt`. */
const TOP_LOGIT = 20;

/** What the LM outputs after a context. */
export interface ScriptStep {
  /** The LM's argmax character. */
  readonly lm: string;
  /** Extra logits for other characters (e.g. `{ i: 19 }` makes "i" a close second). */
  readonly alt?: Readonly<Record<string, number>>;
  /** The hidden state (kNN query) at this position. */
  readonly hidden: readonly [number, number];
}

/** One forward pass as the fake saw it. */
export interface PassRecord {
  /** KV length before the pass. */
  readonly cachedBefore: number;
  /** The fed tokens, as text. */
  readonly text: string;
  readonly numLogits: number;
}

/**
 * Script keyed by the generated text (everything after the prompt). Contexts not in the script
 * answer `?` at `FAR`, so an unexpected path shows up as `?` in the literal expectations.
 */
export class ScriptedLM implements CausalLM {
  readonly vocabSize = VOCAB;
  readonly hiddenSize = 2;
  /** Token ids in the KV cache. */
  content: number[] = [];
  passes: PassRecord[] = [];
  truncations: number[] = [];

  constructor(
    private readonly promptLength: number,
    private readonly script: ReadonlyMap<string, ScriptStep>,
  ) {}

  get cacheLength(): number {
    return this.content.length;
  }

  async forward(ids: readonly number[], numLogits = ids.length): Promise<ForwardOutput> {
    this.passes.push({ cachedBefore: this.content.length, text: String.fromCharCode(...ids), numLogits });
    const first = this.content.length;
    this.content.push(...ids);
    const steps = ids.map((_, i) => this.stepAfter(first + i));
    const n = ids.length;
    return {
      numTokens: n,
      logitsRow: (row) => {
        if (row < n - numLogits || row >= n) throw new RangeError(`no logits for row ${row}`);
        return logitsOf(steps[row]!);
      },
      hiddenRow: (row) => Float32Array.from(steps[row]!.hidden),
    };
  }

  truncate(length: number): void {
    if (length < 0 || length > this.content.length) throw new RangeError(`cannot keep ${length} of ${this.content.length}`);
    this.truncations.push(length);
    this.content.length = length;
  }

  reset(): void {
    this.content = [];
  }

  /** The step after the token at cache index `i`. */
  private stepAfter(i: number): ScriptStep {
    const generated = String.fromCharCode(...this.content.slice(this.promptLength, i + 1));
    return this.script.get(generated) ?? { lm: "?", hidden: FAR };
  }
}

function logitsOf(step: ScriptStep): Float32Array {
  const logits = new Float32Array(VOCAB);
  for (const [c, v] of Object.entries(step.alt ?? {})) logits[c.charCodeAt(0)] = v;
  logits[step.lm.charCodeAt(0)] = TOP_LOGIT;
  return logits;
}

/** Key coordinates of the key whose value is token `valuePos` of passage `p` in `keyGrid` stores. */
export function keyAt(p: number, valuePos: number): [number, number] {
  return [1000 * p + 10 * valuePos, 0];
}

/** Keys for `charPassage`: the key of value position v sits at `keyAt(p, v)`, 10 apart. */
export function gridKeys(p: number, text: string): number[][] {
  return Array.from({ length: text.length - 1 }, (_, i) => keyAt(p, i + 1));
}

/**
 * Script entries for generated texts `prefix + passageText[from .. from+i)` (i = 0..count−1)
 * whose hidden state is the key of the next passage token, with the LM agreeing: an LM that
 * follows passage `p` from position `from`.
 */
export function follow(store: TokenStore, p: number, prefix: string, from: number, count: number): Array<[string, ScriptStep]> {
  const tokens = store.passages[p]!.tokens;
  const text = String.fromCharCode(...tokens);
  const out: Array<[string, ScriptStep]> = [];
  for (let i = 0; i < count; i++) {
    out.push([prefix + text.slice(from, from + i), { lm: text[from + i]!, hidden: keyAt(p, from + i) }]);
  }
  return out;
}
