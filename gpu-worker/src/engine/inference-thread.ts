/**
 * @module engine/inference-thread
 * The inference worker thread: owns the ONNX session (whose `run()` blocks the thread it runs on),
 * runs decode jobs one at a time, and posts their events back. Started by `inference-host.ts`.
 */
import { parentPort, workerData } from "node:worker_threads";
import { nodeEnv } from "@nest/shared/config/node-env";
import { toNestError } from "@nest/shared/protocol/errors";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import { Engine } from "./engine.ts";
import type { HostMessage, ThreadMessage } from "./thread-messages.ts";

const port = parentPort;
if (!port) throw new Error("inference-thread must run in a worker thread");
const post = (m: ThreadMessage) => port.postMessage(m);

const { modelDir, threads } = workerData as { modelDir: string; threads?: number };
const controllers = new Map<number, AbortController>();
let engine: Engine;

try {
  // The thread's copy of the process environment (taken when the thread started), parsed once here.
  engine = await Engine.load(modelDir, { threads }, nodeEnv(process.env));
  post({ type: "ready", model: engine.modelName });
} catch (err) {
  const e = toNestError(err);
  post({ type: "fatal", error: { code: e.code, message: e.message } });
  process.exit(1);
}

port.on("message", (m: HostMessage) => {
  if (m.type === "cancel") {
    controllers.get(m.id)?.abort(new Error("cancelled"));
    return;
  }
  void runJob(m.id, m.job);
});

async function runJob(id: number, job: DecodeJob): Promise<void> {
  const controller = new AbortController();
  controllers.set(id, controller);
  try {
    await engine.run(
      job,
      {
        delta: (data) => post({ type: "event", id, event: { event: "delta", data } }),
        done: (data) => post({ type: "event", id, event: { event: "done", data } }),
      },
      controller.signal,
    );
    post({ type: "end", id });
  } catch (err) {
    const e = toNestError(err);
    post({ type: "event", id, event: { event: "error", data: { error: { code: e.code, message: e.message } } } });
    post({ type: "end", id });
  } finally {
    controllers.delete(id);
  }
}
