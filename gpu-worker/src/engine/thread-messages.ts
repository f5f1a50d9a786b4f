/**
 * @module engine/thread-messages
 * Messages between the inference host (main thread) and the inference thread.
 */
import type { GenerateEvent } from "@nest/shared/protocol/events";
import type { DecodeJob } from "@nest/shared/protocol/worker";

/** Main thread → inference thread. */
export type HostMessage = { type: "run"; id: number; job: DecodeJob } | { type: "cancel"; id: number };

/** Inference thread → main thread. `end` follows the last event of a job. */
export type ThreadMessage =
  | { type: "ready"; model: string }
  | { type: "fatal"; error: { code: string; message: string } }
  | { type: "event"; id: number; event: GenerateEvent }
  | { type: "end"; id: number };
