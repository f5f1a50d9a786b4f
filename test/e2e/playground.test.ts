/**
 * The playground page (issue 8) in Debian's Chromium (headless, driven by playwright-core) against
 * the real stack: the gpu-worker with the model and corpus of `nestlm setup`, and the edge app of
 * `createApp` with the playground routes, over real HTTP. Asks "What is the capital of Australia?"
 * in `nest` mode, then `nest` beside `base`. The events the page received are read back from the
 * browser's network log and compared with what it rendered; passage texts come from the LanceDB
 * index. Screenshots go to `test-artifacts/`.
 *
 * Skipped, with a message, only when /usr/bin/chromium is missing (`apt-get install chromium`).
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { AddressInfo } from "node:net";
import { afterAll, beforeAll, describe, expect, it } from "vitest";
import { chromium, type BrowserContext, type Page } from "playwright-core";
import { serve } from "@hono/node-server";
import { createApp } from "@nest/edge/app";
import { registerPlayground } from "@nest/edge/routes/playground";
import { createPoolClient } from "@nest/edge/route/pool-client";
import { openLanceIndex, type LancePassageIndex } from "@nest/corpus/lancedb-index";
import { sha256Hex } from "@nest/edge/middleware/auth";
import { readGenerateEvents } from "@nest/edge/route/read-sse";
import { startWorker } from "@nest/gpu-worker/server";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import type { DoneEvent, GenerateEvent, RetrievalEvent } from "@nest/shared/protocol/events";

const CHROMIUM = "/usr/bin/chromium";
const QUESTION = "What is the capital of Australia?";
const KEY = "playground-key";
const MAX_NEW_TOKENS = 48;
const CONTEXT_CHARS = 160; // render.js CONTEXT_CHARS
const ARTIFACTS = join(process.cwd(), "test-artifacts");
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium) console.warn(`playground e2e skipped: ${CHROMIUM} is missing (apt-get install -y chromium)`);

let worker: { url: string; close(): Promise<void> };
let server: ReturnType<typeof serve>;
let url: string;
let index: LancePassageIndex;
let profile: string;
let context: BrowserContext;
let page: Page;
let texts: Map<string, string>;
/** What page-side callbacks read of an element (the test's tsconfig has no DOM types). */
type Dataset = { dataset: Record<string, string | undefined> };
type PageGlobals = {
  document: { querySelectorAll(selector: string): Iterable<Dataset> };
  sessionStorage: { getItem(key: string): string | null };
  localStorage: { length: number };
  __sseBodies: (string | null)[];
};

/**
 * Test-only instrumentation, added before the page's scripts: tees every `/v1/generate` response the
 * page receives and keeps the full text (decoded as UTF-8, as the page decodes it) in `__sseBodies`.
 */
const TEE_FETCH = `(() => {
  const original = window.fetch.bind(window);
  window.__sseBodies = [];
  window.fetch = async (...args) => {
    const res = await original(...args);
    if (String(args[0]).endsWith("v1/generate") && res.ok) {
      const slot = window.__sseBodies.push(null) - 1;
      res.clone().text().then((t) => { window.__sseBodies[slot] = t; });
    }
    return res;
  };
})();`;

/** Clicks Ask, waits until every pane finished, and returns the events each pane received. */
async function askAndWait(numPanes: number): Promise<GenerateEvent[][]> {
  await page.evaluate(() => {
    (globalThis as unknown as PageGlobals).__sseBodies.length = 0;
  });
  await page.click("#run");
  await page.waitForFunction(
    (n) => {
      const g = globalThis as unknown as PageGlobals;
      const panes = [...g.document.querySelectorAll(".pane")];
      return panes.length === n && panes.every((p) => p.dataset.state !== "running") && g.__sseBodies.every((b) => b !== null);
    },
    numPanes,
    { timeout: 110_000 },
  );
  for (const p of await page.$$(".pane")) {
    const state = await p.getAttribute("data-state");
    expect(state, `pane ${await p.getAttribute("data-mode")}: ${await p.$eval(".status", (s) => s.textContent)}`).toBe("done");
  }
  const bodies = await page.evaluate(() => (globalThis as unknown as PageGlobals).__sseBodies as string[]);
  expect(bodies).toHaveLength(numPanes);
  const all: GenerateEvent[][] = [];
  for (const body of bodies) {
    const events: GenerateEvent[] = [];
    for await (const ev of readGenerateEvents(new Response(body).body!)) events.push(ev);
    all.push(events);
  }
  return all;
}

function modeOf(events: GenerateEvent[]): string {
  return (events.at(-1)!.data as DoneEvent).mode;
}

beforeAll(async () => {
  if (!haveChromium) return;
  const log = () => {};
  const modelDir = await prepareModel({ log });
  const corpusDir = (await prepareCorpus({ log })).dir;
  worker = await startWorker({ port: 0, modelDir, corpusDirs: { factbook: corpusDir } });
  index = await openLanceIndex(corpusDir, "factbook");
  texts = new Map((await index.search(QUESTION, 40)).map((p) => [p.id, p.text]));
  const app = createApp({
    indexFor: async (corpus) => (corpus === "factbook" ? index : undefined),
    pool: createPoolClient(worker.url),
    apiKeyHashes: [await sha256Hex(KEY)],
  });
  registerPlayground(app);
  server = await new Promise((resolve, reject) => {
    const s = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, () => resolve(s));
    s.once("error", reject);
  });
  url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  profile = mkdtempSync(join(tmpdir(), "nest-chromium-"));
  context = await chromium.launchPersistentContext(profile, {
    executablePath: CHROMIUM,
    headless: true,
    viewport: { width: 1360, height: 900 },
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  await context.addInitScript(TEE_FETCH);
  page = context.pages()[0] ?? (await context.newPage());
  mkdirSync(ARTIFACTS, { recursive: true });
});

afterAll(async () => {
  await context?.close();
  if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  await index?.close?.();
  await worker?.close();
  if (profile) rmSync(profile, { recursive: true, force: true });
});

describe.skipIf(!haveChromium)("playground page in Chromium over the real stack", () => {
  let events: GenerateEvent[] = [];

  it("loads with the defaults and keeps the API key in session storage only", async () => {
    const external: string[] = [];
    page.on("request", (r) => {
      if (!r.url().startsWith(url.slice(0, -1)) && !r.url().startsWith("data:")) external.push(r.url());
    });
    await page.goto(url);
    expect(await page.inputValue("#question")).toBe(QUESTION);
    expect(await page.inputValue("#mode")).toBe("nest");
    expect(await page.inputValue("#gamma")).toBe("0.0005");
    expect(await page.inputValue("#passages")).toBe("40");
    expect(await page.inputValue("#max-new-tokens")).toBe("128");
    await page.selectOption("#mode", "rag-nest");
    expect(await page.inputValue("#gamma")).toBe("0.5");
    await page.selectOption("#mode", "nest");
    await page.fill("#api-key", KEY);
    await page.fill("#max-new-tokens", String(MAX_NEW_TOKENS));
    const stored = await page.evaluate(() => {
      const g = globalThis as unknown as PageGlobals;
      return [g.sessionStorage.getItem("nest.apiKey"), g.localStorage.length];
    });
    expect(stored).toEqual([KEY, 0]);
    await page.reload();
    expect(await page.inputValue("#api-key")).toBe(KEY);
    await page.fill("#max-new-tokens", String(MAX_NEW_TOKENS));
    expect(external).toEqual([]);
  });

  it("streams the nest answer with every highlighted span equal to its cited passage range", async () => {
    events = (await askAndWait(1))[0]!;
    const retrieval = events[0]!.data as RetrievalEvent;
    const marks = await page.$$eval(".pane mark.cite", (ms) =>
      ms.map((m) => {
        const d = (m as unknown as Dataset).dataset;
        return { text: m.textContent as string, passage: d.passage, pstart: d.pstart, pend: d.pend };
      }),
    );
    // Expected spans: cited deltas, a delta that continues the previous one in its passage joined to it.
    const expected: { passage: string; pstart: string; pend: string; text: string }[] = [];
    let previousCited = false;
    for (const ev of events) {
      if (ev.event !== "delta") continue;
      const c = ev.data.citation;
      const last = expected.at(-1);
      if (c && previousCited && last!.passage === c.passage_id && last!.pend === String(c.passage_start)) {
        last!.pend = String(c.passage_end);
        last!.text += ev.data.text;
      } else if (c) {
        expected.push({ passage: c.passage_id, pstart: String(c.passage_start), pend: String(c.passage_end), text: ev.data.text });
      }
      previousCited = c !== undefined;
    }
    expect(expected.length).toBeGreaterThan(0);
    expect(marks).toEqual(expected);
    const retrieved = new Set(retrieval.passages.map((p) => p.id));
    for (const m of marks) {
      expect(retrieved.has(m.passage!)).toBe(true);
      expect(m.text).toBe(texts.get(m.passage!)!.slice(Number(m.pstart), Number(m.pend)));
    }
    const answer = await page.$eval(".pane .answer", (a) => a.textContent);
    const streamed = events.flatMap((e) => (e.event === "delta" ? [e.data.text] : [])).join("");
    expect(answer).toBe(streamed);
    expect(answer).toContain("Canberra");
  });

  it("shows attribution ratio, tokens, LM passes, tokens/s and the timing bar after done", async () => {
    const done = events.at(-1)!.data as DoneEvent;
    const stat = (name: string) => page.$eval(`.stat[data-stat="${name}"] dd`, (d) => d.textContent);
    expect(await stat("Attribution")).toBe(`${(done.usage.attribution_ratio! * 100).toFixed(1)}%`);
    expect(await stat("Tokens")).toBe(String(done.usage.completion_tokens));
    expect(await stat("LM forward passes")).toBe(String(done.usage.lm_forward_passes));
    const t = done.timings_ms;
    const tps = done.usage.completion_tokens / ((t.total - t.retrieval - t.encoding) / 1000);
    expect(await stat("Tokens/s")).toBe(tps.toFixed(1));
    const fmt = (ms: number) => (ms >= 100 ? String(Math.round(ms)) : ms.toFixed(1));
    const legend = await page.$$eval(".legend li", (lis) => lis.map((li) => li.textContent));
    expect(legend.slice(0, 4)).toEqual((["retrieval", "encoding", "knn", "lm"] as const).map((k) => `${k} ${fmt(t[k])} ms`));
    expect(legend.at(-1)).toBe(`total ${fmt(t.total)} ms`);
    expect(await page.$$(".bar .seg")).toHaveLength(legend.length - 1);
  });

  it("hover shows the source title and focus + Enter pins it in the sources panel", async () => {
    const first = page.locator(".pane mark.cite").first();
    const passageId = (await first.getAttribute("data-passage"))!;
    const citation = events.flatMap((e) => (e.event === "delta" && e.data.citation ? [e.data.citation] : []))[0]!;
    await first.hover();
    await page.waitForSelector("#tip:not([hidden])");
    expect(await page.textContent("#tip .card-title strong")).toBe(citation.title);
    expect(await page.textContent("#tip [data-role=cited]")).toBe(await first.textContent());
    await page.mouse.move(0, 0);
    await first.focus();
    await page.waitForSelector("#tip:not([hidden])");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#pinned:not([hidden])");
    expect(await page.textContent("#pinned .card-title strong")).toBe(citation.title);
    expect(await page.getAttribute("#source-list li.current", "data-passage")).toBe(passageId);
    const listed = await page.$$eval("#source-list li", (lis) => lis.map((l) => (l as unknown as Dataset).dataset.passage));
    expect(listed).toEqual([
      ...new Set(events.flatMap((e) => (e.event === "delta" && e.data.citation ? [e.data.citation.passage_id] : []))),
    ]);
    await page.keyboard.press("Escape");
    await page.waitForSelector("#tip", { state: "hidden" });
    await page.screenshot({ path: join(ARTIFACTS, "playground.png"), fullPage: true });
    await page.locator(".pane .answer").screenshot({ path: join(ARTIFACTS, "playground-answer.png") });
    await first.hover();
    await page.waitForSelector("#tip:not([hidden])");
    await page.screenshot({ path: join(ARTIFACTS, "playground-hover.png") });
  });

  it("shows the cited range in its passage context (text from the retrieval event)", async () => {
    const retrieval = events[0]!.data as RetrievalEvent;
    for (const p of retrieval.passages) expect(p.text, `retrieval passage ${p.id} carries its text`).toBe(texts.get(p.id));
    const first = page.locator(".pane mark.cite").first();
    const text = texts.get((await first.getAttribute("data-passage"))!)!;
    const [s, e] = [Number(await first.getAttribute("data-pstart")), Number(await first.getAttribute("data-pend"))];
    await first.hover();
    const from = Math.max(0, s - CONTEXT_CHARS);
    const to = Math.min(text.length, e + CONTEXT_CHARS);
    expect(await page.textContent("#tip .ctx-before")).toBe((from > 0 ? "…" : "") + text.slice(from, s));
    expect(await page.textContent("#tip .ctx-cited")).toBe(text.slice(s, e));
    expect(await page.textContent("#tip .ctx-after")).toBe(text.slice(e, to) + (to < text.length ? "…" : ""));
  });

  it("runs nest and base side by side", async () => {
    await page.check("#compare");
    await page.selectOption("#mode-b", "base");
    const both = await askAndWait(2);
    expect(both.map(modeOf).sort()).toEqual(["base", "nest"]);
    expect(await page.$$eval(".pane", (ps) => ps.map((p) => (p as unknown as Dataset).dataset.mode))).toEqual(["nest", "base"]);
    for (const events of both) {
      const mode = modeOf(events);
      const streamed = events.flatMap((e) => (e.event === "delta" ? [e.data.text] : [])).join("");
      expect(streamed.length).toBeGreaterThan(0);
      expect(await page.$eval(`.pane[data-mode="${mode}"] .answer`, (a) => a.textContent)).toBe(streamed);
      expect(await page.$$eval(`.pane[data-mode="${mode}"] .stat`, (s) => s.map((d) => (d as unknown as Dataset).dataset.stat))).toEqual([
        "Attribution",
        "Cited",
        "Copied",
        "Tokens",
        "LM forward passes",
        "Tokens/s",
      ]);
    }
    expect(await page.$$(`.pane[data-mode="base"] mark.cite`)).toHaveLength(0); // base: no retrieval, no citations
    await page.screenshot({ path: join(ARTIFACTS, "playground-side-by-side.png"), fullPage: true });
  });
});
