/**
 * Documents sent with the request (issue 15), end to end over real HTTP: the real gpu-worker and
 * model, the edge on Node with the Redis FAQ cache (127.0.0.1:6379), `POST /v1/generate` and the
 * official `openai` client with `nest.documents`. Two documents written here, one (with emoji and
 * CRLF line endings) holding a planted, unusual fact; mode `rag-nest` (the top chunks in the prompt
 * and the token store: the 135M model copies the fact and it is cited). A per-run nonce in the other
 * document keeps the worker's disk key cache and the FAQ cache from answering for an earlier run.
 */
import { randomBytes } from "node:crypto";
import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Writable } from "node:stream";
import { ask as askCli } from "@nest/cli/ask";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import OpenAI from "openai";
import { startEdge, type RunningEdge } from "@nest/edge/adapters/node/server";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { startWorker } from "@nest/gpu-worker/server";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import { DOCUMENT_LIMITS } from "@nest/shared/protocol/documents";
import type { Citation, DeltaEvent, DoneEvent, RetrievalEvent } from "@nest/shared/protocol/events";

const KEY = "documents-e2e-key";
const NONCE = randomBytes(6).toString("hex");

/** The planted fact, in a document with emoji and CRLF line endings. */
const BAKERY =
  "Harbor Bakery staff handbook 🥐.\r\n" +
  "The bakery opens at seven and closes at three 🕖.\r\n" +
  "The secret ingredient of the Harbor Bakery sourdough is smoked cardamom.\r\n" +
  "Aprons are washed on Fridays 🧺.";
const LIBRARY = `The city library lends bicycles 🚲 to members.\r\nMembers renew loans online. Visitor ticket ${NONCE}.`;
const DOCUMENTS = [
  { id: "library", title: "Library rules", text: LIBRARY },
  { id: "bakery", title: "Bakery handbook", text: BAKERY },
];
const QUESTION = "What is the secret ingredient of the Harbor Bakery sourdough?";

let worker: { url: string; close(): Promise<void> };
let edge: RunningEdge;

interface JsonAnswer {
  retrieval: RetrievalEvent;
  text: string;
  deltas: DeltaEvent[];
  done: DoneEvent;
}

async function post(body: unknown, headers: Record<string, string> = {}): Promise<Response> {
  return fetch(`${edge.url}/v1/generate`, {
    method: "POST",
    headers: { authorization: `Bearer ${KEY}`, "content-type": "application/json", accept: "application/json", ...headers },
    body: typeof body === "string" ? body : JSON.stringify(body),
  });
}

async function ask(body: object): Promise<{ answer: JsonAnswer; cache: string | null }> {
  const res = await post(body);
  expect(res.status, await res.clone().text()).toBe(200);
  return { answer: (await res.json()) as JsonAnswer, cache: res.headers.get("x-nest-cache") };
}

/** Every citation points into its document: `documents[i].text.slice(start, end) === cited_text`, and equals its delta. */
function expectExactDocumentCitations(deltas: DeltaEvent[], docs: Array<{ id?: string; title?: string; text: string }>): Citation[] {
  const cites: Citation[] = [];
  for (const d of deltas) {
    const c = d.citation;
    if (!c) continue;
    cites.push(c);
    expect(c.document_index).toBeTypeOf("number");
    const doc = docs[c.document_index!]!;
    expect(c.document_id).toBe(doc.id);
    expect(c.document_title).toBe(doc.title);
    expect(doc.text.slice(c.start, c.end)).toBe(c.cited_text);
    expect(c.cited_text).toBe(d.text);
  }
  return cites;
}

beforeAll(async () => {
  const log = () => {};
  const modelDir = await prepareModel({ log });
  const corpusDir = (await prepareCorpus({ log })).dir;
  worker = await startWorker({ port: 0, modelDir, corpusDirs: { factbook: corpusDir } });
  edge = await startEdge({
    port: 0,
    poolUrl: worker.url,
    corpusDirs: { factbook: corpusDir },
    apiKeyHashes: [await sha256Hex(KEY)],
    redisUrl: "redis://127.0.0.1:6379",
  });
}, 300_000);

afterAll(async () => {
  await edge?.close();
  await worker?.close();
});

describe("POST /v1/generate with documents (rag-nest, real model)", () => {
  let first: JsonAnswer;

  it("answers the planted fact, cited into the right document at exact offsets (emoji, CRLF)", async () => {
    const { answer, cache } = await ask({ prompt: QUESTION, mode: "rag-nest", max_new_tokens: 48, documents: DOCUMENTS });
    first = answer;
    expect(cache).toBe("miss");
    expect(answer.retrieval.corpus).toBe("@documents");
    // Each document is one chunk (under 100 words): both retrieved, the bakery chunk first.
    expect(answer.retrieval.passages.map((p) => p.document?.index)).toEqual([1, 0]);
    expect(answer.retrieval.passages[0]!.id).toMatch(/^doc-[0-9a-f]{32}$/);
    expect(answer.text).toContain("smoked cardamom");
    const cites = expectExactDocumentCitations(answer.deltas, DOCUMENTS);
    const bakery = cites.filter((c) => c.document_index === 1);
    expect(bakery.length).toBeGreaterThan(0);
    expect(bakery.map((c) => c.cited_text).join("")).toContain("cardamom");
    // The copy lands on the planted sentence (after the two CRLF-ended, emoji-bearing lines).
    const fact = BAKERY.indexOf("smoked cardamom");
    // Line 1: 32 units (🥐 is 2) + CRLF = 34; line 2: 49 (🕖 is 2) + CRLF → "The secret" at 85; + 56.
    expect(fact).toBe(141);
    expect(bakery.some((c) => c.start! <= fact && c.end! >= fact + "smoked cardamom".length)).toBe(true);
    expect(answer.done.usage.store_passages).toBe(2);
    // The library document carries this run's nonce: it was never encoded before.
    expect(answer.done.usage.encoded_passages).toBeGreaterThanOrEqual(1);
  }, 300_000);

  it("a follow-up question over the same documents encodes nothing; the same question replays from the FAQ cache", async () => {
    const { answer, cache } = await ask({
      prompt: "Which ingredient makes the Harbor Bakery sourdough special?",
      mode: "rag-nest",
      max_new_tokens: 8,
      documents: DOCUMENTS,
    });
    expect(cache).toBe("miss");
    expect(answer.done.usage.store_passages).toBe(2);
    expect(answer.done.usage.encoded_passages).toBe(0);
    expectExactDocumentCitations(answer.deltas, DOCUMENTS);

    const again = await ask({ prompt: QUESTION, mode: "rag-nest", max_new_tokens: 48, documents: DOCUMENTS });
    expect(again.cache).toBe("hit");
    expect(again.answer.text).toBe(first.text);
    // Other documents (one character changed), other key.
    const changed = [DOCUMENTS[0]!, { ...DOCUMENTS[1]!, text: `${BAKERY} ` }];
    const other = await ask({ prompt: QUESTION, mode: "rag", max_new_tokens: 2, documents: changed });
    expect(other.cache).toBe("miss");
  }, 300_000);
});

describe("bad documents are refused before anything is encoded", () => {
  it("400 naming the field: too many, empty text, over the per-document limit, documents with corpus", async () => {
    const planted = { text: `Nothing to see ${NONCE} here, rejected first.` };
    const cases: Array<[object, RegExp]> = [
      [{ prompt: QUESTION, documents: Array.from({ length: DOCUMENT_LIMITS.maxDocuments + 1 }, () => planted) }, /^field `documents`: /],
      [{ prompt: QUESTION, documents: [planted, { text: "" }] }, /^field `documents\.1\.text`: /],
      [
        { prompt: QUESTION, documents: [planted, { text: "y".repeat(DOCUMENT_LIMITS.maxDocumentChars + 1) }] },
        /^field `documents\.1\.text`: /,
      ],
      [{ prompt: QUESTION, documents: [planted], corpus: "factbook" }, /^field `corpus`: give either `documents` or `corpus`, not both$/],
    ];
    for (const [body, message] of cases) {
      const res = await post({ ...body, mode: "nest", max_new_tokens: 4 });
      expect(res.status).toBe(400);
      const { error } = (await res.json()) as { error: { code: string; message: string } };
      expect(error.code).toBe("invalid_request");
      expect(error.message).toMatch(message);
    }
    // The planted document was in every rejected request: its one chunk is encoded now, by this one.
    const { answer } = await ask({ prompt: QUESTION, mode: "nest", max_new_tokens: 2, documents: [planted] });
    expect(answer.done.usage.store_passages).toBe(1);
    expect(answer.done.usage.encoded_passages).toBe(1);
  }, 300_000);

  it("raises the body limit only for requests that carry documents (413 otherwise)", async () => {
    const filler = "word ".repeat(14_000); // 70 000 bytes: over 64 KiB
    const noDocs = await post({ prompt: QUESTION, mode: "base", max_new_tokens: 1, system: filler });
    expect(noDocs.status).toBe(413);
    expect(((await noDocs.json()) as { error: { code: string; message: string } }).error.message).toMatch(
      /exceeds 65536 bytes .*`documents`/,
    );
    const withDocs = await post({ prompt: QUESTION, mode: "rag", max_new_tokens: 1, documents: [{ text: `${filler}${NONCE}` }] });
    expect(withDocs.status).toBe(200);
  }, 300_000);
});

describe("OpenAI-compatible route with the official client (nest.documents)", () => {
  it("chat.completions.create answers over the documents with exact document citations", async () => {
    const client = new OpenAI({ apiKey: KEY, baseURL: `${edge.url}/v1`, maxRetries: 0 });
    const r = await client.chat.completions.create({
      model: "nest",
      messages: [{ role: "user", content: QUESTION }],
      max_tokens: 48,
      // @ts-expect-error the NEST extension field
      nest: { mode: "rag-nest", documents: DOCUMENTS },
    });
    expect(r.choices[0]!.message.content).toContain("smoked cardamom");
    const nest = (r as unknown as { nest: { citations: Citation[] } }).nest;
    expect(nest.citations.some((c) => c.document_index === 1)).toBe(true);
    for (const c of nest.citations) expect(DOCUMENTS[c.document_index!]!.text.slice(c.start, c.end)).toBe(c.cited_text);

    const bad = await client.chat.completions
      .create({
        model: "nest",
        messages: [{ role: "user", content: QUESTION }], // @ts-expect-error the NEST extension field
        nest: { documents: [{ text: "" }] },
      })
      .catch((e: unknown) => e);
    expect(bad).toBeInstanceOf(OpenAI.BadRequestError);
    expect((bad as InstanceType<typeof OpenAI.BadRequestError>).param).toBe("nest.documents.0.text");
  }, 300_000);
});

describe("nestlm ask --doc FILE (repeatable)", () => {
  it("sends the files as documents and lists sources with offsets into the files", async () => {
    const dir = await mkdtemp(join(tmpdir(), "nest-docs-"));
    try {
      const [lib, bakery] = [join(dir, "library.txt"), join(dir, "bakery.txt")];
      await writeFile(lib, LIBRARY);
      await writeFile(bakery, BAKERY);
      let printed = "";
      const out = new Writable({
        write: (chunk, _enc, cb) => {
          printed += String(chunk);
          cb();
        },
      });
      const result = await askCli({
        url: edge.url,
        key: KEY,
        question: QUESTION,
        mode: "rag-nest",
        maxNewTokens: 48,
        doc: [lib, bakery],
        out,
      });
      expect(result.text).toContain("smoked cardamom");
      const bakeryCites = result.citations.filter((c) => c.document_index === 1);
      expect(bakeryCites.length).toBeGreaterThan(0);
      for (const c of result.citations) {
        expect([LIBRARY, BAKERY][c.document_index!]!.slice(c.start, c.end)).toBe(c.cited_text);
        expect(c.document_id).toBe([lib, bakery][c.document_index!]);
        expect(c.document_title).toBe(["library.txt", "bakery.txt"][c.document_index!]);
      }
      const c = bakeryCites[0]!;
      expect(printed).toContain(`bakery.txt (documents[1]) chars ${c.start}–${c.end}: ${JSON.stringify(c.cited_text)}`);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  }, 300_000);
});
