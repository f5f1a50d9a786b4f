/**
 * Documents on the request (issue 15): what a follow-up question over the same documents saves.
 * In-process gpu-worker (real model) and edge app; two generated documents of ~2,000 words each
 * (≈ 20 chunks of 100 words each, a per-run nonce so no key cache knows them), `passages` 40, mode
 * `nest`, 16 new tokens. Asks a first question (every chunk encoded), then three follow-ups over the
 * same documents (every chunk's keys from the worker's cache), and prints encoded passages and the
 * encoding / retrieval / total times. Measures; asserts nothing.
 *
 * Run: `npm run bench -- documents`
 */
import { randomBytes } from "node:crypto";
import { createApp } from "@nest/edge/app";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { startWorker } from "@nest/gpu-worker/server";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import type { DoneEvent } from "@nest/shared/protocol/events";

const NONCE = randomBytes(4).toString("hex");
const WORDS = ["harbor", "bakery", "library", "bicycle", "ticket", "oven", "flour", "shelf", "member", "loan", "river", "bridge"];
function document(seed: number, sentences: number): string {
  const out: string[] = [];
  for (let i = 0; i < sentences; i++) {
    const w = Array.from({ length: 9 }, (_, k) => WORDS[(seed * 7 + i * 5 + k * 3) % WORDS.length]);
    out.push(`Rule ${i} of ${NONCE}-${seed}: the ${w.join(" ")}.`);
  }
  return out.join(lineBreak(seed));
}
const lineBreak = (seed: number) => (seed % 2 === 0 ? "\r\n" : " ");
const DOCS = [
  { title: "A", text: document(0, 160) },
  { title: "B", text: document(1, 160) },
];
const QUESTIONS = ["What is rule 12 about?", "What does rule 40 say about the bridge?", "Which rule mentions the oven?", "What is rule 3?"];

const worker = await startWorker({ port: 0, modelDir: await prepareModel({ log: () => {} }), corpusDirs: {} });
const app = createApp({ indexFor: async () => undefined, pool: createPoolClient(worker.url), apiKeyHashes: [await sha256Hex("k")] });
const words = DOCS.reduce((n, d) => n + d.text.split(/\s+/).length, 0);
console.log(
  `documents: 2, ${words} words, ${DOCS.reduce((n, d) => n + d.text.length, 0)} characters; passages 40, mode nest, 16 new tokens`,
);
console.log("| question | encoded_passages | store_passages | retrieval ms | encoding ms | total ms |");
console.log("| --- | --- | --- | --- | --- | --- |");
for (const [i, q] of QUESTIONS.entries()) {
  const res = await app.request("/v1/generate", {
    method: "POST",
    headers: { authorization: "Bearer k", "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ prompt: q, mode: "nest", max_new_tokens: 16, documents: DOCS }),
  });
  const { done } = (await res.json()) as { done: DoneEvent };
  const t = done.timings_ms;
  console.log(
    `| ${i === 0 ? "first" : `follow-up ${i}`} | ${done.usage.encoded_passages} | ${done.usage.store_passages} | ${t.retrieval} | ${t.encoding} | ${t.total} |`,
  );
}
await worker.close();
