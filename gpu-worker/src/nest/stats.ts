/**
 * @module nest/stats
 * One statistics object per request: forward passes, drafts, acceptance and phase times (ms).
 */

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
  storePassages = 0;
  storeKeys = 0;
  encodingMs = 0;
  knnMs = 0;
  lmMs = 0;

  /** Records one verified draft of `numDraft` tokens of which `numAccepted` were accepted. */
  observeDraft(numDraft: number, numAccepted: number): void {
    this.numDrafts++;
    this.draftedTokens += numDraft;
    this.acceptedTokens += numAccepted;
  }
}
