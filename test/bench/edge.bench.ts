/**
 * Edge overhead per request (issue 5), p50/p99, on the FAQ-cache hit path and the miss path, against
 * the real embedded stack (`startStack`: gpu-worker + Node edge, Redis FAQ cache, HMAC-signed pool
 * calls). Not a test.
 *
 *   node --import tsx test/bench/edge.bench.ts [--hits 200] [--misses 30] [--max-new-tokens 4] [--passages 8]
 *
 * Method:
 * - **hit**: one question is answered once (miss, fills the cache), then asked `hits` times; a hit
 *   never reaches a gpu-worker, so the client's total time (request sent → last byte read, over
 *   HTTP on 127.0.0.1) is all edge: key check, validation, cache key (SHA-256), Redis GET, replay
 *   and framing. Measured for the SSE stream and for `Accept: application/json`.
 * - **miss**: `misses` distinct questions (mode `nest`). Per question: a probe request with another
 *   `max_new_tokens` (so it is another cache key) warms the worker's passage-encoding cache; then
 *   the measured request through the edge (`x-nest-cache: miss`, total time `edge`) and the very
 *   same decode job (the validated request + the passages of the edge's `retrieval` event) sent
 *   straight to the worker's `POST /v1/decode`, signed like the edge does (`direct`), in
 *   alternating order so load drift cancels. Greedy
 *   decoding makes both do the same work, so **overhead = edge − direct**, per question; the
 *   edge's first-stage retrieval (`retrieval_ms` of the event: BM25 + dense query embedding on
 *   LanceDB) is part of it and is shown on its own.
 * Writes `bench-results/edge.json`. The 1-minute load average is printed: on a shared 2-core
 * machine it explains most of the spread.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { randomBytes } from "node:crypto";
import { cpus, loadavg } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import { startStack } from "@nest/cli/stack";
import { nestHome, REPO_ROOT } from "@nest/corpus/home";
import { hashApiKey } from "@nest/cli/api-key";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { signedFetch } from "@nest/edge/route/signed-fetch";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import type { GenerateEvent, RetrievalEvent } from "@nest/shared/protocol/events";
import { COUNTRIES } from "./countries.ts";

const { values } = parseArgs({
  options: {
    hits: { type: "string", default: "200" },
    misses: { type: "string", default: "30" },
    "max-new-tokens": { type: "string", default: "4" },
    passages: { type: "string", default: "8" },
  },
});
const HITS = Number(values.hits);
const MISSES = Number(values.misses);
const MAX_NEW = Number(values["max-new-tokens"]);
const PASSAGES = Number(values.passages);

process.env.NEST_FAQ_TTL_S ??= "600"; // the bench's cache entries do not outlive it for long
const KEY = `bench-${randomBytes(8).toString("hex")}`;
const SECRET = randomBytes(24).toString("base64url");
const RUN = randomBytes(3).toString("hex"); // fresh cache keys per run
const stack = await startStack({
  home: nestHome(),
  port: 0,
  workerPort: 0,
  host: "127.0.0.1",
  apiKeyHashes: [hashApiKey(KEY)],
  poolSecret: SECRET,
});
const workerFetch = signedFetch(SECRET);

/** Reads a whole SSE body; returns its events. */
async function events(res: Response): Promise<GenerateEvent[]> {
  const out: GenerateEvent[] = [];
  for await (const ev of readGenerateEvents(res.body!)) out.push(ev);
  return out;
}

/** One `/v1/generate` call, body fully read. @returns ms, cache header and events (SSE) */
async function viaEdge(body: object, json = false): Promise<{ ms: number; cache: string | null; events: GenerateEvent[] }> {
  const t0 = performance.now();
  const res = await fetch(`${stack.edgeUrl}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", ...(json ? { accept: "application/json" } : {}) },
    body: JSON.stringify(body),
  });
  if (res.status !== 200) throw new Error(`edge answered ${res.status}: ${await res.text()}`);
  if (json) await res.json();
  const evs = json ? [] : await events(res);
  const ms = performance.now() - t0;
  if (!json && evs.at(-1)?.event !== "done") throw new Error(`stream ended with ${JSON.stringify(evs.at(-1))}`);
  return { ms, cache: res.headers.get("x-nest-cache"), events: evs };
}

/** The same decode job straight to the worker (signed). @returns ms, body fully read */
async function direct(body: object, retrieval: RetrievalEvent): Promise<number> {
  const job = {
    request: GenerateRequestSchema.parse(body),
    passages: retrieval.passages.map(({ id, title, text, source }) => ({ id, title, text, source })),
  };
  const t0 = performance.now();
  const res = await workerFetch(`${stack.workerUrl}/v1/decode`, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "text/event-stream" },
    body: JSON.stringify(job),
  });
  if (res.status !== 200) throw new Error(`worker answered ${res.status}: ${await res.text()}`);
  const evs = await events(res);
  const ms = performance.now() - t0;
  if (evs.at(-1)?.event !== "done") throw new Error(`worker stream ended with ${JSON.stringify(evs.at(-1))}`);
  return ms;
}

function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}
function stats(xs: number[]) {
  const r = (x: number) => Math.round(x * 100) / 100;
  return {
    n: xs.length,
    p50_ms: r(pct(xs, 50)),
    p99_ms: r(pct(xs, 99)),
    mean_ms: r(xs.reduce((a, b) => a + b, 0) / xs.length),
    min_ms: r(Math.min(...xs)),
  };
}

try {
  const base = { mode: "nest", passages: PASSAGES };
  // hit path
  const hitBody = { ...base, prompt: `What is the capital of Australia? [bench ${RUN}]`, max_new_tokens: MAX_NEW };
  const fill = await viaEdge(hitBody);
  if (fill.cache !== "miss") throw new Error(`expected the first call to miss, got ${fill.cache}`);
  for (let i = 0; i < 20; i++) await viaEdge(hitBody); // warm-up (JIT, connections)
  const hitSse: number[] = [];
  const hitJson: number[] = [];
  for (let i = 0; i < HITS; i++) {
    const a = await viaEdge(hitBody);
    const b = await viaEdge(hitBody, true);
    if (a.cache !== "hit" || b.cache !== "hit") throw new Error("expected cache hits");
    hitSse.push(a.ms);
    hitJson.push(b.ms);
  }
  // miss path
  const edgeMs: number[] = [];
  const directMs: number[] = [];
  const overhead: number[] = [];
  const retrievalMs: number[] = [];
  for (let i = 0; i < MISSES; i++) {
    const prompt = `What is the capital of ${COUNTRIES[i % COUNTRIES.length]}? [bench ${RUN} ${i}]`;
    // probe: warms passage encodings; its retrieval is the measured request's (same query, same b)
    const probe = (await viaEdge({ ...base, prompt, max_new_tokens: MAX_NEW + 1 })).events[0]!;
    if (probe.event !== "retrieval") throw new Error("no retrieval event");
    const body = { ...base, prompt, max_new_tokens: MAX_NEW };
    // alternate which goes first, so drift in the machine's load cancels out
    const first = i % 2 === 1 ? await direct(body, probe.data) : undefined;
    const e = await viaEdge(body);
    const d = first ?? (await direct(body, probe.data));
    if (e.cache !== "miss") throw new Error(`expected a miss, got ${e.cache}`);
    const retrieval = e.events[0]!;
    if (retrieval.event !== "retrieval") throw new Error("no retrieval event");
    if (retrieval.data.passages.map((p) => p.id).join() !== probe.data.passages.map((p) => p.id).join()) {
      throw new Error("the probe retrieved other passages than the measured request");
    }
    edgeMs.push(e.ms);
    directMs.push(d);
    overhead.push(e.ms - d);
    retrievalMs.push(retrieval.data.retrieval_ms);
  }

  const rows: [string, ReturnType<typeof stats>][] = [
    ["hit, SSE (all edge)", stats(hitSse)],
    ["hit, JSON (all edge)", stats(hitJson)],
    ["miss, through the edge", stats(edgeMs)],
    ["miss, same job direct to worker", stats(directMs)],
    ["miss, edge overhead (edge - direct)", stats(overhead)],
    ["miss, of which edge retrieval", stats(retrievalMs)],
  ];
  const load = loadavg()[0]!;
  console.log(
    `edge overhead: mode nest, max_new_tokens ${MAX_NEW}, passages ${PASSAGES}; load average ${load.toFixed(1)} on ${cpus().length} cores`,
  );
  console.log(`${"path".padEnd(38)} ${"n".padStart(4)} ${"p50 ms".padStart(9)} ${"p99 ms".padStart(9)} ${"mean ms".padStart(9)}`);
  for (const [name, s] of rows) {
    console.log(
      `${name.padEnd(38)} ${String(s.n).padStart(4)} ${s.p50_ms.toFixed(2).padStart(9)} ${s.p99_ms.toFixed(2).padStart(9)} ${s.mean_ms.toFixed(2).padStart(9)}`,
    );
  }
  console.log(
    "hit: client total time, no gpu-worker involved. miss overhead: per question, edge total minus the same decode job sent straight to the worker (p50/p99 of the differences).",
  );
  const dir = join(REPO_ROOT, "bench-results");
  mkdirSync(dir, { recursive: true });
  writeFileSync(
    join(dir, "edge.json"),
    `${JSON.stringify(
      {
        bench: "edge",
        date: new Date().toISOString(),
        load_average_1m: load,
        cores: cpus().length,
        params: { mode: "nest", max_new_tokens: MAX_NEW, passages: PASSAGES, hits: HITS, misses: MISSES },
        method:
          "hit = client total (request to last byte) of a cached answer, no worker; miss overhead = per question, total through the edge minus the same decode job (validated request + the edge's passages) sent signed to the worker's /v1/decode, passage encodings warmed first, edge/direct order alternating",
        results: Object.fromEntries(rows.map(([name, s]) => [name, s])),
      },
      null,
      2,
    )}\n`,
  );
  console.log(`wrote ${join(dir, "edge.json")}`);
} finally {
  await stack.close();
}
