/**
 * The playground's documents panel (issue 15) in Debian's Chromium (headless, playwright-core)
 * against the real stack (gpu-worker with the real model, the edge app over real HTTP): two pasted
 * documents, one with emoji, CRLF and a planted fact; mode `rag-nest`. Checks that the request the
 * page sent carries the documents, that the answer highlights the copied spans, and that each
 * document's view marks exactly the cited ranges `[start, end)` of its text. Screenshot in
 * `test-artifacts/`. Skipped, with a message, only when /usr/bin/chromium is missing.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { serve } from "@hono/node-server";
import { createApp } from "@nest/edge/app";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { startWorker } from "@nest/gpu-worker/server";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import type { Citation, GenerateEvent } from "@nest/shared/protocol/events";

const CHROMIUM = "/usr/bin/chromium";
const KEY = "documents-playground-key";
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`documents playground e2e skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);
const LIBRARY = "The city library lends bicycles 🚲 to members.\r\nMembers renew loans online.";
const BAKERY =
  "Harbor Bakery staff handbook 🥐.\r\nThe bakery opens at seven and closes at three 🕖.\r\n" +
  "The secret ingredient of the Harbor Bakery sourdough is smoked cardamom.\r\nAprons are washed on Fridays 🧺.";

let worker: { url: string; close(): Promise<void> };
let server: ReturnType<typeof serve>;
let url: string;
let profile: string;
let context: BrowserContext;
let page: Page;
type Globals = { __bodies: string[]; __sent: string[] };

beforeAll(async () => {
  if (!haveChromium) return;
  worker = await startWorker({ port: 0, modelDir: await prepareModel({ log: () => {} }), corpusDirs: {} });
  const app = createApp({ indexFor: async () => undefined, pool: createPoolClient(worker.url), apiKeyHashes: [await sha256Hex(KEY)] });
  server = await new Promise((resolve) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  profile = mkdtempSync(join(tmpdir(), "nest-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 1100 },
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking", "--disable-sync"],
  });
  // Test-only instrumentation: the request bodies the page sends and the SSE bodies it receives.
  await context.addInitScript(`(() => {
    const original = window.fetch.bind(window);
    window.__bodies = []; window.__sent = [];
    window.fetch = async (...args) => {
      if (String(args[0]).endsWith("v1/generate")) window.__sent.push(args[1].body);
      const res = await original(...args);
      if (String(args[0]).endsWith("v1/generate") && res.ok) res.clone().text().then((t) => window.__bodies.push(t));
      return res;
    };
  })();`);
  page = context.pages()[0] ?? (await context.newPage());
}, 600_000);

afterAll(async () => {
  await context?.close();
  if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  await worker?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

describe.skipIf(!haveChromium)("playground documents panel in Chromium", () => {
  it("sends pasted documents and marks the cited ranges in the answer and in the documents", async () => {
    await page.goto(url);
    await page.fill("#question", "What is the secret ingredient of the Harbor Bakery sourdough?");
    await page.selectOption("#mode", "rag-nest");
    await page.fill("#max-new-tokens", "48");
    await page.fill("#api-key", KEY);
    await page.click("#add-doc");
    await page.click("#add-doc");
    const docs = page.locator("#doc-list .doc");
    await docs.nth(0).locator(".doc-title").fill("Library rules");
    await docs.nth(0).locator(".doc-text").fill(LIBRARY);
    await docs.nth(1).locator(".doc-text").fill(BAKERY);
    await page.click("#run");
    await page.waitForFunction(
      () => {
        const d = (globalThis as unknown as { document: { querySelector(s: string): { dataset: Record<string, string> } | null } })
          .document;
        const pane = d.querySelector(".pane");
        return pane !== null && pane.dataset.state !== "running" && (globalThis as unknown as Globals).__bodies.length === 1;
      },
      undefined,
      { timeout: 110_000 },
    );
    expect(await page.getAttribute(".pane", "data-state")).toBe("done");

    const { sent, bodies } = await page.evaluate(() => ({
      sent: (globalThis as unknown as Globals).__sent,
      bodies: (globalThis as unknown as Globals).__bodies,
    }));
    // The textarea keeps CRLF as typed by fill(); the page sends the text as it is.
    const request = JSON.parse(sent[0]!) as { documents: Array<{ title?: string; text: string }> };
    expect(request.documents.map((d) => d.title)).toEqual(["Library rules", undefined]);
    const texts = request.documents.map((d) => d.text);
    const events: GenerateEvent[] = [];
    for await (const ev of readGenerateEvents(new Response(bodies[0]).body!)) events.push(ev);
    const cites: Citation[] = events.flatMap((e) => (e.event === "delta" && e.data.citation ? [e.data.citation] : []));
    const text = events.flatMap((e) => (e.event === "delta" ? [e.data.text] : [])).join("");
    expect(text).toContain("smoked cardamom");
    expect(cites.some((c) => c.document_index === 1)).toBe(true);

    // Each document view marks exactly the characters the citations cover (pieces cut at every
    // citation boundary, so overlapping citations are all shown), and shows the whole text.
    for (const [i, docText] of texts.entries()) {
      const covered = new Set(
        cites.filter((c) => c.document_index === i).flatMap((c) => Array.from({ length: c.end! - c.start! }, (_, k) => c.start! + k)),
      );
      const marks = await docs
        .nth(i)
        .locator("mark.doc-cite")
        .evaluateAll((ms) =>
          ms.map((m) => [
            Number((m as unknown as { dataset: Record<string, string> }).dataset.start),
            Number((m as unknown as { dataset: Record<string, string> }).dataset.end),
            m.textContent,
          ]),
        );
      for (const [start, end, t] of marks) expect(t).toBe(docText.slice(start as number, end as number));
      const marked = new Set(
        marks.flatMap(([start, end]) => Array.from({ length: (end as number) - (start as number) }, (_, k) => (start as number) + k)),
      );
      expect([...marked].sort((a, b) => a - b)).toEqual([...covered].sort((a, b) => a - b));
      if (covered.size > 0) expect(await docs.nth(i).locator(".doc-view").textContent()).toBe(docText);
    }
    // The planted sentence is marked in the bakery document.
    const fact = texts[1]!.indexOf("smoked cardamom");
    expect(await docs.nth(1).locator(".doc-view mark.doc-cite", { hasText: "cardamom" }).count()).toBeGreaterThan(0);
    expect(fact).toBeGreaterThan(0);
    // The answer highlights the copied spans (one mark per run of adjacent citations at least).
    expect(await page.locator(".pane mark.cite").count()).toBeGreaterThan(0);
    mkdirSync(join(process.cwd(), "test-artifacts"), { recursive: true });
    await page.screenshot({ path: join(process.cwd(), "test-artifacts", "playground-documents.png"), fullPage: true });
  }, 300_000);
});
