/**
 * @module worker-process
 * The gpu-worker as a child process of `nestlm serve` (issue 14 §4; the parent is
 * {@link superviseWorker} in supervisor.ts). Protocol over the IPC channel:
 * - parent → child `{type: "start", options}` (the {@link WorkerServerOptions} minus `log`; the
 *   HMAC secret travels here, never in argv or the environment);
 * - child → parent `{type: "log", line}` per log line, then `{type: "ready", url}` once it listens,
 *   or `{type: "failed", error: {code, message}}` and exit 1 when it cannot start.
 * SIGTERM or a lost parent (IPC disconnect) closes the worker (running batch items drain) and exits 0.
 */
import { startWorker, type WorkerServerOptions } from "@nest/gpu-worker/server";
import { toNestError } from "@nest/shared/protocol/errors";

/** Messages of the IPC protocol. */
export type ParentMessage = { type: "start"; options: Omit<WorkerServerOptions, "log"> };
export type ChildMessage =
  | { type: "log"; line: string }
  | { type: "ready"; url: string; pid: number }
  | { type: "failed"; error: { code: string; message: string } };

function send(m: ChildMessage): void {
  if (process.connected) process.send?.(m, undefined, {}, () => {});
}

let closing = false;
let close: (() => Promise<void>) | undefined;

/** Closes the worker once (later signals are ignored), then exits with `code`. */
function shutdown(code: number): void {
  if (closing) return;
  closing = true;
  (close?.() ?? Promise.resolve()).then(
    () => process.exit(code),
    () => process.exit(1),
  );
}

process.on("SIGTERM", () => shutdown(0));
process.on("SIGINT", () => shutdown(0));
process.on("disconnect", () => shutdown(0));

process.once("message", (m: ParentMessage) => {
  if (m?.type !== "start") return;
  startWorker({ ...m.options, log: (line) => send({ type: "log", line }) }).then(
    (worker) => {
      close = worker.close;
      send({ type: "ready", url: worker.url, pid: process.pid });
    },
    (err: unknown) => {
      const e = toNestError(err);
      send({ type: "failed", error: { code: e.code, message: e.message } });
      process.exitCode = 1;
      process.disconnect?.();
    },
  );
});
