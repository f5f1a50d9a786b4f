import { describe, expect, it } from "vitest";
import { chunkText } from "@nest/shared/corpus/chunk";
import { DOCUMENT_LIMITS, DOCUMENTS_CORPUS, documentsHash, estimateDocumentTokens } from "@nest/shared/protocol/documents";
import { GenerateRequestSchema } from "@nest/shared/protocol/request";
import { DecodeJobSchema } from "@nest/shared/protocol/worker";
import { chunkPassageId, citeIntoDocument, DocumentIndex, documentPassages } from "@nest/shared/retrieve/documents";
import { generationEvents } from "@nest/shared/generation/pipeline";
import type { Citation, GenerateEvent } from "@nest/shared/protocol/events";

// Offsets computed by hand:
// "Hi 👋 there." = H,i,space,👋(2 units),space,t,h,e,r,e,. = 12 units; "\r\n" = 2 → next starts at 14.
const EMOJI_CRLF = "Hi 👋 there.\r\nThe vault code is 7731-Q 🔐.\r\nBye.";

describe("documentPassages", () => {
  it("chunks with the ingestion chunker: same offsets, chunk text = document slice, content-hash ids", async () => {
    const docs = [{ text: EMOJI_CRLF, title: "Vault", id: "v1" }, { text: "Plain text here." }];
    const passages = await documentPassages(docs, 4);
    const expected = chunkText(EMOJI_CRLF, { maxWords: 4 });
    expect(passages.filter((p) => p.document!.index === 0).map((p) => [p.text, p.document!.start])).toEqual(
      expected.map((c) => [c.text, c.start]),
    );
    expect(expected[0]).toEqual({ text: "Hi 👋 there.", start: 0, end: 12 });
    expect(expected[1]!.start).toBe(14);
    for (const p of passages)
      expect(docs[p.document!.index]!.text.slice(p.document!.start, p.document!.start + p.text.length)).toBe(p.text);
    expect(passages[0]).toMatchObject({
      id: await chunkPassageId("Hi 👋 there."),
      title: "Vault",
      source: "documents[0]@0-12",
      document: { index: 0, id: "v1", title: "Vault", start: 0 },
    });
    expect(passages.at(-1)).toMatchObject({ title: "documents[1]", document: { index: 1, start: 0 } });
    expect(passages.at(-1)!.document).not.toHaveProperty("id");
    expect(passages[0]!.id).toMatch(/^doc-[0-9a-f]{32}$/);
    // Same text, same id, whatever the document: the worker's key cache (id + text) reuses it.
    expect((await documentPassages([{ text: "Plain text here." }]))[0]!.id).toBe(passages.at(-1)!.id);
  });
});

describe("DocumentIndex.search", () => {
  const docs = [
    { text: "Cats sleep a lot. Dogs bark at night. Birds sing at dawn." },
    { text: "The lighthouse keeper on Varnholm island paints the tower teal every April." },
  ];

  it("returns every chunk when they fit, the matching chunk first, then document order, ranks 1..n", async () => {
    const idx = new DocumentIndex(docs);
    const hits = await idx.search("What colour does the Varnholm lighthouse keeper paint the tower?", 40);
    expect(idx.corpus).toBe(DOCUMENTS_CORPUS);
    expect(hits.length).toBe(2);
    expect(hits[0]!.document!.index).toBe(1);
    expect(hits[0]!.score).toBeGreaterThan(0);
    expect(hits.map((h) => h.rank)).toEqual([1, 2]);
  });

  it("keeps the top `passages` chunks by BM25 when there are more", async () => {
    const idx = new DocumentIndex(docs);
    // maxWords 100: each document is one chunk; ask for 1.
    const [top, ...rest] = await idx.search("dogs bark", 1);
    expect(rest).toEqual([]);
    expect(top!.document!.index).toBe(0);
    // A query with nothing searchable still yields passages (document order).
    expect((await idx.search("?!", 1))[0]!.document!.index).toBe(0);
    expect((await idx.search("?!", 1))[0]!.score).toBe(0);
  });

  it("lists a chunk text found in two documents once, where it ranks best", async () => {
    const idx = new DocumentIndex([docs[0]!, docs[1]!, { text: docs[1]!.text }]);
    const hits = await idx.search("Varnholm lighthouse", 40);
    expect(hits.map((h) => h.document!.index)).toEqual([1, 0]);
    expect(new Set(hits.map((h) => h.id)).size).toBe(2);
    expect(hits.map((h) => h.rank)).toEqual([1, 2]);
  });
});

describe("citeIntoDocument", () => {
  it("adds the document's index, id, title and offsets in its own text", async () => {
    const docs = [{ text: "Intro.\r\n\r\n😀 The code is 7731-Q.", id: "d0", title: "T" }];
    const [p1, p2] = await documentPassages(docs, 1000).then((ps) => ps);
    expect(p2).toBeUndefined();
    // Chunk = whole trimmed text, starting at 0. Cite "7731-Q" inside it.
    const at = docs[0]!.text.indexOf("7731-Q");
    expect(at).toBe(25); // "Intro." 6 + \r\n\r\n 4 + 😀 2 + " The code is " 13
    const c: Citation = {
      passage_id: p1!.id,
      title: "T",
      source: p1!.source,
      passage_start: at,
      passage_end: at + 6,
      text_start: 0,
      text_end: 6,
      cited_text: "7731-Q",
    };
    const out = citeIntoDocument(c, [p1!]);
    expect(out).toMatchObject({ document_index: 0, document_id: "d0", document_title: "T", start: 25, end: 31 });
    expect(docs[0]!.text.slice(out.start, out.end)).toBe(out.cited_text);
    // A citation of a corpus passage is left alone.
    expect(citeIntoDocument({ ...c, passage_id: "factbook-1" }, [p1!])).toEqual({ ...c, passage_id: "factbook-1" });
  });

  it("is applied by generationEvents to the deltas of a document request", async () => {
    const docs = [{ text: "Alpha beta. Gamma delta epsilon." }];
    const passages = await documentPassages(docs, 2);
    const second = passages[1]!; // "Gamma delta" at 12
    async function* upstream(): AsyncGenerator<GenerateEvent> {
      yield {
        event: "delta",
        data: {
          text: "delta",
          tokens: 1,
          citation: {
            passage_id: second.id,
            title: second.title,
            source: second.source,
            passage_start: 6,
            passage_end: 11,
            text_start: 0,
            text_end: 5,
            cited_text: "delta",
          },
        },
      };
      yield {
        event: "done",
        data: {
          finish_reason: "stop",
          mode: "nest",
          model: "m",
          usage: {
            prompt_tokens: 1,
            completion_tokens: 1,
            lm_forward_passes: 1,
            drafted_tokens: 0,
            accepted_tokens: 0,
            num_drafts: 0,
            attributed_tokens: 1,
            attribution_ratio: 1,
            cited_tokens: 1,
            cited_ratio: 1,
            copied_tokens: 0,
            copied_ratio: 0,
            citations: 1,
            single_token_citations: 1,
            store_passages: 2,
            store_keys: 4,
          },
          timings_ms: { retrieval: 0, encoding: 0, knn: 0, lm: 0, total: 0 },
        },
      };
    }
    const out: GenerateEvent[] = [];
    for await (const ev of generationEvents(
      upstream(),
      { retrievalMs: 1, passages: passages.map((p, i) => ({ ...p, score: 0, rank: i + 1 })) },
      performance.now(),
    ))
      out.push(ev);
    const c = out[0]!.event === "delta" ? out[0]!.data.citation! : undefined;
    expect(second.document!.start).toBe(12);
    expect(c).toMatchObject({ document_index: 0, start: 18, end: 23 });
    expect(docs[0]!.text.slice(c!.start, c!.end)).toBe("delta");
  });
});

describe("`documents` on the request schema", () => {
  const doc = { text: "Some text." };
  const issue = (body: object) => {
    const r = GenerateRequestSchema.safeParse(body);
    expect(r.success).toBe(false);
    return { path: r.error!.issues[0]!.path.join("."), message: r.error!.issues[0]!.message };
  };

  it("defaults corpus to @documents, re-parses to itself (the decode job), and keeps factbook otherwise", () => {
    const r = GenerateRequestSchema.parse({ prompt: "q", documents: [doc] });
    expect(r.corpus).toBe(DOCUMENTS_CORPUS);
    expect(GenerateRequestSchema.parse(r)).toEqual(r);
    expect(DecodeJobSchema.parse({ request: r, passages: [] }).request).toEqual(r);
    expect(GenerateRequestSchema.parse({ prompt: "q" }).corpus).toBe("factbook");
  });

  it("refuses bad documents naming the field", () => {
    expect(issue({ prompt: "q", documents: [doc], corpus: "factbook" })).toEqual({
      path: "corpus",
      message: "give either `documents` or `corpus`, not both",
    });
    expect(issue({ prompt: "q", corpus: DOCUMENTS_CORPUS }).path).toBe("corpus");
    expect(issue({ prompt: "q", documents: Array.from({ length: DOCUMENT_LIMITS.maxDocuments + 1 }, () => doc) }).path).toBe("documents");
    expect(issue({ prompt: "q", documents: [] }).path).toBe("documents");
    expect(issue({ prompt: "q", documents: [doc, { text: "" }] }).path).toBe("documents.1.text");
    expect(issue({ prompt: "q", documents: [{ text: " \r\n " }] }).path).toBe("documents.0.text");
    expect(issue({ prompt: "q", documents: [{ text: "x".repeat(DOCUMENT_LIMITS.maxDocumentChars + 1) }] }).path).toBe("documents.0.text");
    const big = { text: "x".repeat(DOCUMENT_LIMITS.maxDocumentChars) };
    expect(issue({ prompt: "q", documents: [big, big, doc] }).path).toBe("documents");
    expect(issue({ prompt: "q", documents: [{ text: "a", url: "u" }] }).path).toBe("documents.0");
  });

  it("hashes documents (order, id, title, text) and estimates their tokens as ⌈chars / 4⌉", async () => {
    const h = await documentsHash([doc]);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    expect(await documentsHash([doc])).toBe(h);
    expect(await documentsHash([{ ...doc, title: "t" }])).not.toBe(h);
    expect(estimateDocumentTokens([doc, { text: "abcdefg" }])).toBe(5); // (10 + 7) / 4 = 4.25 → 5
    expect(estimateDocumentTokens(undefined)).toBe(0);
  });
});
