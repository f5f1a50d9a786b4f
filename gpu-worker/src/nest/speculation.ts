/**
 * @module nest/speculation
 * Whether the loop may draft at a step: the per-request `speculation` setting (issue 13 item 4;
 * docs/nest-algorithm.md §15).
 *
 * - `on`: draft whenever span selection asks for it (the paper).
 * - `off`: never draft: every step is a token-mode step (argmax p_M with the RRC λ, one LM pass per
 *   token, provenance from the neighbours), i.e. the "+ RRC" row of paper Table 3. No anchor, no
 *   continuation streaming, no masking (nothing is copied through a span).
 * - `auto`: draft like `on`, but stop when drafting does not pay and go back after a pause. A
 *   verified draft of m tokens with a accepted costs one LM pass over m tokens and saves the a
 *   single-token passes plain decoding would have spent on the accepted tokens, less the pass that
 *   the recovered (or next) token needs anyway. In units of a one-token pass:
 *
 *     saved = a − 1 − c·(m − 1)        (a ≥ 1: the pass ran)
 *     saved = 0                        (a = 0: v_1 failed against the current state, no pass ran)
 *
 *   with `c` the cost of one more token in a pass relative to a one-token pass (`draftTokenCost`).
 *   saved ≤ 0 means the accepted tokens per ms of verification fell below plain decoding's tokens
 *   per ms: drafting pauses for P token steps, P = 4, 8, 16, … (doubling on every draft that did
 *   not pay, capped at 64) and resets to 4 after a draft that paid. The decision uses counts and
 *   the fixed `c`, not wall-clock times, so one request always gives the same text (answer caches
 *   and evaluations stay reproducible). Weak retrieval needs no extra rule: the loop only drafts in
 *   span mode (λ ≤ δ), and a weak neighbourhood gives ρ → 1, λ → 1, token mode.
 */

/** Per-request speculation setting. */
export type SpeculationMode = "auto" | "on" | "off";

/** First pause after a draft that did not pay, in token steps. */
export const FIRST_PAUSE_STEPS = 4;
/** Longest pause, in token steps. */
export const MAX_PAUSE_STEPS = 64;

/** The drafting gate of one request (see the module doc). */
export class SpeculationGate {
  /** Token steps during which `auto` withheld drafting. */
  pausedSteps = 0;
  private pauseLeft = 0;
  private nextPause = FIRST_PAUSE_STEPS;

  /**
   * @param draftTokenCost `c`: extra cost of one more token in a verification pass, in one-token
   *   passes (≥ 0).
   */
  constructor(
    readonly mode: SpeculationMode,
    private readonly draftTokenCost: number,
  ) {}

  /** Whether a draft may be proposed at this step. A withheld step counts as paused. */
  allows(): boolean {
    if (this.mode === "off") return false;
    if (this.mode === "on" || this.pauseLeft === 0) return true;
    return false;
  }

  /** Called once per step that committed without a draft. */
  onTokenStep(): void {
    if (this.pauseLeft > 0) {
      this.pauseLeft--;
      this.pausedSteps++;
    }
  }

  /** Passes saved by a draft (module doc). */
  savedPasses(numDrafted: number, numAccepted: number): number {
    return numAccepted === 0 ? 0 : numAccepted - 1 - this.draftTokenCost * (numDrafted - 1);
  }

  /** Records one verified draft; in `auto`, a draft that did not pay starts a pause. */
  observe(numDrafted: number, numAccepted: number): void {
    if (this.mode !== "auto") return;
    if (this.savedPasses(numDrafted, numAccepted) > 0) {
      this.nextPause = FIRST_PAUSE_STEPS;
      return;
    }
    this.pauseLeft = this.nextPause;
    this.nextPause = Math.min(MAX_PAUSE_STEPS, this.nextPause * 2);
  }
}
