/**
 * Issue 16 §4 end to end: the Node edge in front of two gpu-worker *processes* (worker-main.ts,
 * the container image's command) as two pools, HMAC secret on, real model. One pool is killed
 * (SIGKILL) while both stream; the request it was serving ends with an `error` event, every request
 * after it succeeds on the other pool; the edge's and the surviving worker's `/metrics` count
 * exactly the requests sent. Then SIGTERM on the survivor mid-stream: the stream still ends with
 * `done` and the process exits 0 (graceful drain). Few, short requests: two model copies on 2 cores.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { once } from "node:events";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { startEdge, type RunningEdge } from "@nest/edge/adapters/node/server";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { hashApiKey } from "@nest/cli/api-key";
import { REPO_ROOT } from "@nest/corpus/home";
import { listCorpora } from "@nest/corpus/layout";
import type { GenerateEvent } from "@nest/shared/protocol/events";

const KEY = "e2e-pools-key";
const SECRET = "e2e-pools-secret-0123456789";

interface WorkerProcess {
  child: ChildProcess;
  url: string;
  stderr: string[];
}

/** Starts worker-main.ts on a free port; resolves with its URL once it prints `gpu-worker ready`. */
async function startWorkerProcess(): Promise<WorkerProcess> {
  const child = spawn(process.execPath, ["--import", "tsx", join("gpu-worker", "src", "worker-main.ts")], {
    cwd: REPO_ROOT,
    env: {
      ...process.env,
      NEST_WORKER_PORT: "0",
      NEST_WORKER_HOST: "127.0.0.1",
      NEST_POOL_SECRET: SECRET,
      NEST_THREADS: "1",
      NEST_REDIS_URL: "",
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const stderr: string[] = [];
  child.stderr!.on("data", (b: Buffer) => stderr.push(b.toString()));
  const url = await new Promise<string>((resolve, reject) => {
    let out = "";
    child.stdout!.on("data", (b: Buffer) => {
      out += b.toString();
      const m = /gpu-worker ready (http:\/\/\S+)/.exec(out);
      if (m) resolve(m[1]!);
    });
    child.once("exit", (code) => reject(new Error(`worker exited with ${code} before ready: ${stderr.join("")}`)));
  });
  return { child, url, stderr };
}

let w1: WorkerProcess;
let w2: WorkerProcess;
let edge: RunningEdge;

beforeAll(async () => {
  [w1, w2] = await Promise.all([startWorkerProcess(), startWorkerProcess()]);
  edge = await startEdge({
    port: 0,
    poolUrl: w1.url,
    extraPoolUrls: [w2.url],
    poolSecret: SECRET,
    corpusDirs: await listCorpora(),
    apiKeyHashes: [hashApiKey(KEY)],
    healthCheckMs: 1000,
  });
});

afterAll(async () => {
  await edge?.close();
  for (const w of [w1, w2]) if (w && w.child.exitCode === null && w.child.signalCode === null) w.child.kill("SIGKILL");
});

function generate(maxNewTokens: number): Promise<Response> {
  return fetch(`${edge.url}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json" },
    body: JSON.stringify({ prompt: "Tell me about the history of Australia.", mode: "base", max_new_tokens: maxNewTokens }),
  });
}

/** Reads events until the first delta; `rest()` reads the remainder. */
async function firstDelta(res: Response): Promise<{ seen: GenerateEvent[]; rest(): Promise<GenerateEvent[]> }> {
  const it = readGenerateEvents(res.body!)[Symbol.asyncIterator]();
  const seen: GenerateEvent[] = [];
  for (;;) {
    const r = await it.next();
    if (r.done) break;
    seen.push(r.value);
    if (r.value.event === "delta") break;
  }
  return {
    seen,
    rest: async () => {
      for (;;) {
        const r = await it.next().catch((e: unknown) => ({
          done: false as const,
          value: { event: "error", data: { error: { code: "read_failed", message: String(e) } } } as GenerateEvent,
        }));
        if (r.done) return seen;
        seen.push(r.value);
        if (r.value.event === "error" && r.value.data.error.code === "read_failed") return seen;
      }
    },
  };
}

/** The value of one sample in Prometheus text; labels as written by prom-client, in order. */
function sample(text: string, name: string, labels: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${name}{${labels}} `) || (labels === "" && l.startsWith(`${name} `)));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(" ") + 1));
}

const doneTokens = (evs: GenerateEvent[]) => evs.flatMap((e) => (e.event === "done" ? [e.data.usage.completion_tokens] : []));

describe("two pools, one killed mid-load", () => {
  it("the killed pool's stream ends with an error, the rest succeed on the other pool, and /metrics counts them", async () => {
    for (const w of [w1, w2]) expect(await (await fetch(`${w.url}/readyz`)).json()).toEqual({ status: "ready" });

    // A goes to w1 (least outstanding, ties in list order), B to w2 while A is in flight.
    const a = await generate(48);
    expect(a.status).toBe(200);
    const b = await generate(48);
    expect(b.status).toBe(200);
    const [sa, sb] = await Promise.all([firstDelta(a), firstDelta(b)]);
    w1.child.kill("SIGKILL");
    await once(w1.child, "exit");
    const [evA, evB] = await Promise.all([sa.rest(), sb.rest()]);
    expect(evA.some((e) => e.event === "done")).toBe(false);
    expect(evA.at(-1)!.event).toBe("error");
    expect(evB.at(-1)!.event).toBe("done");

    const after: GenerateEvent[][] = [];
    for (let i = 0; i < 3; i++) {
      const res = await generate(4);
      expect(res.status).toBe(200);
      after.push(await (await firstDelta(res)).rest());
    }
    for (const evs of after) expect(evs.at(-1)!.event).toBe("done");
    const completed = [...doneTokens(evB), ...after.flatMap(doneTokens)];
    expect(completed).toHaveLength(4);
    const tokens = completed.reduce((s, n) => s + n, 0);

    const edgeText = await (await fetch(`${edge.url}/metrics`)).text();
    expect(sample(edgeText, "nest_edge_requests_total", 'route="/v1/generate",mode="base",status="200"')).toBe(5);
    expect(sample(edgeText, "nest_edge_completion_tokens_total", 'route="/v1/generate",mode="base"')).toBe(tokens);
    expect(sample(edgeText, "nest_edge_time_to_first_token_seconds_count", 'route="/v1/generate",mode="base"')).toBe(5);
    expect(sample(edgeText, "nest_edge_request_duration_seconds_count", 'route="/v1/generate",mode="base"')).toBe(5);
    const errors = edgeText.split("\n").filter((l) => l.startsWith("nest_edge_stream_errors_total{"));
    expect(errors.reduce((s, l) => s + Number(l.split(" ").at(-1)), 0)).toBe(1);
    expect(sample(edgeText, "nest_edge_inflight_requests", "")).toBe(0);
    expect(sample(edgeText, "nest_edge_pool_up", `pool="${w1.url}"`)).toBe(0);
    expect(sample(edgeText, "nest_edge_pool_up", `pool="${w2.url}"`)).toBe(1);
    expect(sample(edgeText, "nest_edge_pool_outstanding_requests", `pool="${w2.url}"`)).toBe(0);

    // The surviving pool served B and the 3 later requests, nothing else.
    const w2Text = await (await fetch(`${w2.url}/metrics`)).text();
    expect(sample(w2Text, "nest_worker_requests_total", 'route="/v1/decode",mode="base",status="200"')).toBe(4);
    expect(sample(w2Text, "nest_worker_completion_tokens_total", 'source="http",mode="base"')).toBe(tokens);
    const outcomes = ["stop", "length"].map(
      (o) => sample(w2Text, "nest_worker_decode_outcomes_total", `source="http",mode="base",outcome="${o}"`) ?? 0,
    );
    expect(outcomes[0]! + outcomes[1]!).toBe(4);
    // The warm-up generation at start is not counted (the registry is reset at ready).
    expect(sample(w2Text, "nest_worker_time_to_first_token_seconds_count", 'source="http",mode="base"')).toBe(4);
    expect(sample(w2Text, "nest_worker_inflight_requests", 'source="http"')).toBe(0);
  });

  it("SIGTERM drains: the running stream ends with done, the process exits 0", async () => {
    const res = await generate(24);
    expect(res.status).toBe(200);
    const s = await firstDelta(res);
    const exited = once(w2.child, "exit");
    w2.child.kill("SIGTERM");
    const evs = await s.rest();
    expect(evs.at(-1)!.event).toBe("done");
    const [code] = await exited;
    expect(code).toBe(0);
    expect(w2.stderr.join("")).toContain("SIGTERM: draining");
  });
});
