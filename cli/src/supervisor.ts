/**
 * @module supervisor
 * Runs the gpu-worker of `nestlm serve` as a supervised child process (issue 14 §4): a crash of the
 * worker (a native fault in onnxruntime, an OOM kill, `kill -9`) no longer takes the edge down. The
 * edge stays up, sends the open streams an SSE `error` event `upstream_unavailable` (the pool
 * connection drops), answers `GET /readyz` 503 while no worker is up, and the supervisor starts a
 * new worker **on the same port** after a backoff: 250 ms, doubling per consecutive crash, at most
 * 10 s; a worker that stayed up 30 s resets the backoff. Batch items the dead worker held are
 * recovered by BullMQ's stalled-job check in the new one (no item lost, none run twice to
 * completion).
 */
import { fork, type ChildProcess } from "node:child_process";
import { fileURLToPath } from "node:url";
import { NestError, ERROR_STATUS, type ErrorCode } from "@nest/shared/protocol/errors";
import type { WorkerServerOptions } from "@nest/gpu-worker/server";
import type { ChildMessage, ParentMessage } from "./worker-process.ts";

/** Backoff before restart number n (1-based) after consecutive crashes, in ms: 250·2^(n−1), at most 10 s. */
export function restartDelayMs(consecutiveCrashes: number): number {
  return Math.min(10_000, 250 * 2 ** Math.max(0, consecutiveCrashes - 1));
}

/** A worker that stayed up this long (ms) before dying resets the backoff. */
export const STABLE_UPTIME_MS = 30_000;

export interface SupervisedWorker {
  /** Base URL of the worker (the same across restarts). */
  readonly url: string;
  /** Process id of the worker running now (undefined while restarting). */
  pid(): number | undefined;
  /** Restarts so far. */
  restarts(): number;
  /** Stops supervising, sends SIGTERM (running batch items drain), SIGKILL after `graceMs`. */
  close(graceMs?: number): Promise<void>;
}

interface Started {
  child: ChildProcess;
  url: string;
  pid: number;
}

const ENTRY = fileURLToPath(new URL("./worker-process.ts", import.meta.url));
const TSX = import.meta.resolve("tsx");

function startChild(options: Omit<WorkerServerOptions, "log">, log: (line: string) => void): Promise<Started> {
  const child = fork(ENTRY, [], { execArgv: ["--import", TSX], stdio: ["ignore", "inherit", "inherit", "ipc"] });
  return new Promise<Started>((resolve, reject) => {
    const onExit = (code: number | null, signal: string | null) =>
      reject(new NestError("internal", `gpu-worker exited before it was ready (${signal ?? `code ${code}`})`));
    child.once("exit", onExit);
    child.on("message", (m: ChildMessage) => {
      if (m.type === "log") log(m.line);
      else if (m.type === "ready") {
        child.off("exit", onExit);
        resolve({ child, url: m.url, pid: m.pid });
      } else if (m.type === "failed") {
        child.off("exit", onExit);
        const code = Object.hasOwn(ERROR_STATUS, m.error.code) ? (m.error.code as ErrorCode) : "internal";
        reject(new NestError(code, m.error.message));
      }
    });
    child.send({ type: "start", options } satisfies ParentMessage);
  });
}

/**
 * Starts the worker in a child process and keeps it running.
 * @throws the first start's error (e.g. NestError `model_not_prepared`, a listen error): a worker
 *   that cannot start once is not retried.
 */
export async function superviseWorker(
  options: Omit<WorkerServerOptions, "log">,
  log: (line: string) => void = () => {},
): Promise<SupervisedWorker> {
  let current: Started | undefined = await startChild(options, log);
  const port = Number(new URL(current.url).port);
  const url = current.url;
  let closed = false;
  let restarts = 0;
  let crashes = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;

  const watch = (s: Started) => {
    const upSince = Date.now();
    s.child.once("exit", (code, signal) => {
      if (current === s) current = undefined;
      if (closed) return;
      crashes = Date.now() - upSince >= STABLE_UPTIME_MS ? 1 : crashes + 1;
      const delayMs = restartDelayMs(crashes);
      log(`gpu-worker: pid ${s.pid} exited (${signal ?? `code ${code}`}); restarting in ${delayMs} ms`);
      timer = setTimeout(restart, delayMs);
    });
  };
  const restart = () => {
    timer = undefined;
    if (closed) return;
    startChild({ ...options, port }, log).then(
      (s) => {
        if (closed) {
          s.child.kill("SIGTERM");
          return;
        }
        restarts++;
        current = s;
        log(`gpu-worker: restarted as pid ${s.pid} at ${s.url}`);
        watch(s);
      },
      (err: unknown) => {
        if (closed) return;
        crashes++;
        const delayMs = restartDelayMs(crashes);
        log(`gpu-worker: restart failed (${(err as Error).message}); next try in ${delayMs} ms`);
        timer = setTimeout(restart, delayMs);
      },
    );
  };
  watch(current);
  log(`gpu-worker: supervised child pid ${current.pid}`);

  return {
    url,
    pid: () => current?.pid,
    restarts: () => restarts,
    close: async (graceMs = 30_000) => {
      closed = true;
      if (timer) clearTimeout(timer);
      const s = current;
      if (!s || s.child.exitCode !== null || s.child.signalCode !== null) return;
      const exited = new Promise<void>((r) => s.child.once("exit", () => r()));
      s.child.kill("SIGTERM");
      const kill = setTimeout(() => s.child.kill("SIGKILL"), graceMs);
      await exited;
      clearTimeout(kill);
    },
  };
}
