/**
 * @module engine/inference-host
 * Main-thread side of inference: starts the inference thread, queues jobs (one runs at a time),
 * streams their events, cancels on abort, and refuses work beyond the queue bound (503).
 */
import { Worker } from "node:worker_threads";
import { type ErrorCode, NestError } from "@nest/shared/protocol/errors";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import type { DecodeJob } from "@nest/shared/protocol/worker";
import type { HostMessage, ThreadMessage } from "./thread-messages.ts";

export interface InferenceHostOptions {
  readonly modelDir: string;
  /** onnxruntime intra-op threads (0 = its default). */
  readonly threads?: number;
  /** Jobs waiting beyond the running one before new ones get 503. */
  readonly maxQueued?: number;
}

interface Pending {
  readonly id: number;
  readonly job: DecodeJob;
  push(e: GenerateEvent | null): void;
}

/** Error codes of a failed model load that `start` passes on as they are. */
const STARTUP_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(["model_not_prepared", "invalid_request"]);
const isStartupCode = (code: string): code is ErrorCode => (STARTUP_CODES as ReadonlySet<string>).has(code);

export class InferenceHost {
  private nextId = 1;
  private running: Pending | undefined;
  private readonly queue: Pending[] = [];
  /** Resolvers of `close()` waiting for the running job to end. */
  private readonly idleWaiters: (() => void)[] = [];
  private dead: Error | undefined;

  private constructor(
    private readonly worker: Worker,
    readonly model: string,
    private readonly maxQueued: number,
  ) {
    worker.on("message", (m: ThreadMessage) => this.onMessage(m));
    worker.on("error", (err) => this.fail(err));
    worker.on("exit", (code) => this.fail(new Error(`inference thread exited with code ${code}`)));
  }

  /**
   * Starts the inference thread and waits until the model is loaded.
   * @throws NestError `model_not_prepared` when the model or its precision is not prepared,
   *   `invalid_request` for a setting it cannot run with, `internal` for any other load error.
   */
  static async start(opts: InferenceHostOptions): Promise<InferenceHost> {
    const worker = new Worker(new URL("./inference-thread.mjs", import.meta.url), {
      workerData: { modelDir: opts.modelDir, threads: opts.threads },
    });
    const model = await new Promise<string>((resolve, reject) => {
      const onMessage = (m: ThreadMessage) => {
        if (m.type === "ready") resolve(m.model);
        else if (m.type === "fatal")
          // A missing model and a bad setting keep their codes (the CUDA refusal of a fused graph is
          // `invalid_request`); any other load failure is `internal`.
          reject(new NestError(isStartupCode(m.error.code) ? m.error.code : "internal", m.error.message));
      };
      worker.once("message", onMessage);
      worker.once("error", reject);
    });
    return new InferenceHost(worker, model, opts.maxQueued ?? 8);
  }

  /** Jobs running or waiting. */
  get load(): { running: number; queued: number } {
    return { running: this.running ? 1 : 0, queued: this.queue.length };
  }

  /**
   * Queues `job` at once and returns its events (`delta`*, then `done` or `error`).
   * Aborting `signal` cancels it (removed from the queue, or stopped between LM passes).
   * @throws NestError `at_capacity` (503, retry after 5 s) when the queue is full; `internal` if the
   *   thread died. Both are thrown synchronously, before any event.
   */
  run(job: DecodeJob, signal?: AbortSignal): AsyncGenerator<GenerateEvent> {
    if (this.dead) throw new NestError("internal", `inference thread is down: ${this.dead.message}`);
    if (this.queue.length >= this.maxQueued) {
      throw new NestError("at_capacity", "all inference slots are busy", { retryAfterS: 5 });
    }
    const events: (GenerateEvent | null)[] = [];
    const waiter: { wake?: () => void } = {};
    const pending: Pending = {
      id: this.nextId++,
      job,
      push: (e) => {
        events.push(e);
        waiter.wake?.();
      },
    };
    const onAbort = () => this.cancel(pending);
    signal?.addEventListener("abort", onAbort, { once: true });
    this.queue.push(pending);
    this.pump();
    return this.stream(pending, events, waiter, () => signal?.removeEventListener("abort", onAbort));
  }

  private async *stream(
    pending: Pending,
    events: (GenerateEvent | null)[],
    waiter: { wake?: () => void },
    detach: () => void,
  ): AsyncGenerator<GenerateEvent> {
    try {
      for (;;) {
        while (events.length === 0) await new Promise<void>((r) => (waiter.wake = r));
        const e = events.shift()!;
        if (e === null) return;
        yield e;
      }
    } finally {
      detach();
      if (this.running === pending || this.queue.includes(pending)) this.cancel(pending);
    }
  }

  /**
   * Stops the inference thread: refuses new jobs, ends queued ones, cancels the running job and
   * waits (at most `drainMs`) until the thread reports it ended, then terminates the thread.
   * Terminating while an onnxruntime `run()` is in flight lets its completion call into a torn-down
   * environment: node-addon-api then throws `Napi::Error` outside any handler and the whole process
   * aborts (exit 134) — seen at the end of test runs that cancel a stream just before teardown.
   * @param drainMs how long to wait for the running job, ms (default 30,000).
   */
  async close(drainMs = 30_000): Promise<void> {
    this.dead ??= new Error("closed");
    for (const p of this.queue.splice(0)) p.push(null);
    const running = this.running;
    if (running) {
      let timer: ReturnType<typeof setTimeout> | undefined;
      const ended = new Promise<void>((resolve) => this.idleWaiters.push(resolve));
      this.post({ type: "cancel", id: running.id });
      await Promise.race([ended, new Promise<void>((resolve) => (timer = setTimeout(resolve, drainMs)))]);
      clearTimeout(timer);
    }
    await this.worker.terminate();
  }

  private cancel(p: Pending): void {
    const i = this.queue.indexOf(p);
    if (i >= 0) {
      this.queue.splice(i, 1);
      p.push(null);
    } else if (this.running === p) {
      this.post({ type: "cancel", id: p.id });
    }
  }

  private pump(): void {
    if (this.running || this.dead) return;
    const next = this.queue.shift();
    if (!next) return;
    this.running = next;
    this.post({ type: "run", id: next.id, job: next.job });
  }

  private onMessage(m: ThreadMessage): void {
    const p = this.running;
    if (!p || (m.type !== "event" && m.type !== "end") || m.id !== p.id) return;
    if (m.type === "event") {
      p.push(m.event);
      return;
    }
    this.running = undefined;
    p.push(null);
    this.notifyIdle();
    this.pump();
  }

  /** Wakes `close()` once no job is running. */
  private notifyIdle(): void {
    for (const wake of this.idleWaiters.splice(0)) wake();
  }

  private fail(err: Error): void {
    // While closing (`dead` already set) the thread's exit still ends whatever it was running.
    this.dead ??= err;
    const error = { event: "error" as const, data: { error: { code: "internal", message: `inference thread failed: ${err.message}` } } };
    for (const p of [this.running, ...this.queue]) {
      if (!p) continue;
      p.push(error);
      p.push(null);
    }
    this.running = undefined;
    this.queue.length = 0;
    this.notifyIdle();
  }

  private post(m: HostMessage): void {
    this.worker.postMessage(m);
  }
}
