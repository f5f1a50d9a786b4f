/**
 * @module nest/stats
 * One statistics object per request: forward passes, drafts, acceptance and phase times (ms).
 */
import type { SpeculationUsage } from "@nest/shared/protocol/events";

/** Counters and timings of one decoding request (reported in the `done` event's usage and timings). */
export class DecodeStats {
  promptTokens = 0;
  completionTokens = 0;
  /** LM forward passes during decoding (the prompt prefill is counted apart). */
  lmForwardPasses = 0;
  prefillPasses = 0;
  numDrafts = 0;
  draftedTokens = 0;
  acceptedTokens = 0;
  /** Entry i: drafts whose token i (0-based) was accepted. */
  acceptedPerPosition: number[] = [];
  /** Token steps withheld from drafting by `speculation: auto`. */
  pausedSteps = 0;
  storePassages = 0;
  storeKeys = 0;
  encodingMs = 0;
  knnMs = 0;
  lmMs = 0;

  /** Records one verified draft of `numDraft` tokens of which the first `numAccepted` were accepted. */
  observeDraft(numDraft: number, numAccepted: number): void {
    this.numDrafts++;
    this.draftedTokens += numDraft;
    this.acceptedTokens += numAccepted;
    for (let i = 0; i < numAccepted; i++) this.acceptedPerPosition[i] = (this.acceptedPerPosition[i] ?? 0) + 1;
  }

  /**
   * The `usage.speculation` record: mean acceptance length `1 + accepted / drafts` and acceptance
   * rate `accepted / drafted` (null on a zero denominator), per-position counts, paused steps.
   */
  speculationUsage(mode: SpeculationUsage["mode"]): SpeculationUsage {
    return {
      mode,
      mean_acceptance_length: this.numDrafts === 0 ? null : 1 + this.acceptedTokens / this.numDrafts,
      acceptance_rate: this.draftedTokens === 0 ? null : this.acceptedTokens / this.draftedTokens,
      accepted_per_position: [...this.acceptedPerPosition],
      paused_steps: this.pausedSteps,
    };
  }
}
