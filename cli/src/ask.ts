/**
 * @module ask
 * `nestlm ask`: POST a question to the edge's `/v1/generate`, stream the answer as it arrives with
 * copied spans marked inline (`[n]` after each copied run, underlined on a TTY; a run streamed in
 * pieces, `citation.continues`, is one source), then list the sources and the usage and timing
 * summary. `--json` prints the raw events as JSON lines instead. `--doc FILE` (repeatable)
 * sends files as the request's `documents` (README "Your own documents"): the answer is over them,
 * its sources cite into the files' text.
 */
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import type { Writable } from "node:stream";
import type { RequestDocument } from "@nest/shared/protocol/documents";
import type { Citation, DoneEvent, GenerateEvent, RetrievalEvent } from "@nest/shared/protocol/events";
import type { Mode } from "@nest/shared/protocol/request";
import { joinContinuedCitations } from "@nest/shared/protocol/citations";
import { NestError } from "@nest/shared/protocol/errors";
import { readGenerateEvents } from "@nest/edge/route/read-sse";

export interface AskOptions {
  /** Edge base URL, e.g. `http://127.0.0.1:8787`. */
  url: string;
  key: string;
  question: string;
  mode?: Mode;
  maxNewTokens?: number;
  passages?: number;
  gamma?: number;
  /** The corpus to retrieve from (`corpus`; default: the server's, `factbook`), e.g. one made by `nestlm ingest`. */
  corpus?: string;
  /** Files sent as `documents` (UTF-8; id = the path as given, title = its base name), in order. */
  doc?: string[];
  /** Print raw events as JSON lines. */
  json?: boolean;
  /** Where to write (default stdout); ANSI styling only when it is a TTY. */
  out?: Writable & { isTTY?: boolean };
}

export interface AskResult {
  text: string;
  /** One per cited run: pieces that continue a citation (`continues`) are joined into it. */
  citations: Citation[];
  retrieval?: RetrievalEvent;
  done?: DoneEvent;
  /** Set when the stream ended with an `error` event. */
  error?: { code: string; message: string };
  /** The edge's `x-nest-cache` header: `hit` when the answer was replayed from the FAQ cache. */
  cache?: string;
}

/** A non-2xx answer of the edge; `body` is its JSON error body as text. */
export class AskHttpError extends Error {
  constructor(
    readonly status: number,
    readonly body: string,
  ) {
    super(`the edge answered HTTP ${status}: ${body}`);
    this.name = "AskHttpError";
  }
}

const ANSI = { underline: "\x1b[4m", noUnderline: "\x1b[24m", dim: "\x1b[2m", normal: "\x1b[22m" };

/**
 * `[n] title (source) chars a–b: "text"` for citation number `n` (1-based); a citation into a
 * request document: `[n] title (documents[i]) chars a–b: "text"`, a–b in the document's own text.
 */
export function formatSource(n: number, c: Citation, text: string): string {
  if (c.document_index !== undefined && c.start !== undefined && c.end !== undefined) {
    return `[${n}] ${c.document_title ?? c.document_id ?? c.title} (documents[${c.document_index}]) chars ${c.start}–${c.end}: ${JSON.stringify(text)}`;
  }
  return `[${n}] ${c.title} (${c.source}) chars ${c.passage_start}–${c.passage_end}: ${JSON.stringify(text)}`;
}

/** The two summary lines printed after an answer. */
export function formatSummary(done: DoneEvent): string[] {
  const u = done.usage;
  const t = done.timings_ms;
  const pct = (x: number | null) => (x === null ? "n/a" : `${(x * 100).toFixed(1)}%`);
  return [
    `${u.completion_tokens} tokens (prompt ${u.prompt_tokens}) · ` +
      `${u.cited_tokens} cited in ${u.citations} citation${u.citations === 1 ? "" : "s"} (${pct(u.cited_ratio)}; ${u.single_token_citations} of one token) · ` +
      `${u.copied_tokens} copied through verified spans (${pct(u.copied_ratio)}) · ` +
      `attribution ${pct(u.attribution_ratio)} (${u.attributed_tokens} with provenance) · ` +
      `${u.lm_forward_passes} LM ${u.lm_forward_passes === 1 ? "pass" : "passes"} · drafted ${u.drafted_tokens}, accepted ${u.accepted_tokens} · ${done.mode} · ${done.model} · finish ${done.finish_reason}`,
    `timings ms: retrieval ${t.retrieval} · encoding ${t.encoding} · knn ${t.knn} · lm ${t.lm} · total ${t.total}`,
  ];
}

/**
 * Asks the edge and renders the stream to `opts.out`.
 * @throws AskHttpError for a non-2xx answer; NestError `upstream_unavailable` when the edge cannot
 *   be reached. An SSE `error` event does not throw:
 *   it is returned in `result.error` (and printed).
 */
export async function ask(opts: AskOptions): Promise<AskResult> {
  const out = opts.out ?? process.stdout;
  const tty = Boolean(out.isTTY) && !opts.json;
  const body: Record<string, unknown> = { prompt: opts.question, mode: opts.mode ?? "nest" };
  if (opts.maxNewTokens !== undefined) body.max_new_tokens = opts.maxNewTokens;
  if (opts.passages !== undefined) body.passages = opts.passages;
  if (opts.gamma !== undefined) body.gamma = opts.gamma;
  if (opts.corpus !== undefined) body.corpus = opts.corpus;
  if (opts.doc && opts.doc.length > 0) body.documents = await readDocuments(opts.doc);

  let res: Response;
  try {
    res = await fetch(`${opts.url.replace(/\/+$/, "")}/v1/generate`, {
      method: "POST",
      headers: { authorization: `Bearer ${opts.key}`, "content-type": "application/json", accept: "text/event-stream" },
      body: JSON.stringify(body),
    });
  } catch (err) {
    throw new NestError("upstream_unavailable", `cannot reach the edge at ${opts.url}: ${(err as Error).message}`, { cause: err });
  }
  if (!res.ok || !res.body) throw new AskHttpError(res.status, await res.text());

  const result: AskResult = { text: "", citations: [], cache: res.headers.get("x-nest-cache") ?? undefined };
  const marker = { n: 0 }; // the number of the cited run being printed, 0 when none is
  for await (const ev of readGenerateEvents(res.body)) {
    if (opts.json) out.write(`${JSON.stringify(ev)}\n`);
    else render(ev, result, out, tty, marker);
    collect(ev, result);
  }
  if (!opts.json) endMarker(out, tty, marker);
  if (!opts.json && result.done) {
    out.write("\n\n");
    result.citations.forEach((c, i) => out.write(`${formatSource(i + 1, c, result.text.slice(c.text_start, c.text_end))}\n`));
    if (result.citations.length > 0) out.write("\n");
    const summary = formatSummary(result.done);
    if (result.cache === "hit")
      summary.push("answer from the FAQ cache (x-nest-cache: hit): usage and timings are those of the answer cached");
    for (const line of summary) out.write(`${tty ? ANSI.dim : ""}${line}${tty ? ANSI.normal : ""}\n`);
  }
  return result;
}

/**
 * The `documents` of `--doc` files: UTF-8 text as read (CRLF kept: offsets are into the file's
 * text), id = the path as given, title = its base name.
 * @throws the file system's errors (ENOENT, ...)
 */
export async function readDocuments(paths: readonly string[]): Promise<RequestDocument[]> {
  return Promise.all(paths.map(async (path) => ({ id: path, title: basename(path), text: await readFile(path, "utf8") })));
}

function collect(ev: GenerateEvent, result: AskResult): void {
  switch (ev.event) {
    case "retrieval":
      result.retrieval = ev.data;
      break;
    case "delta":
      result.text += ev.data.text;
      if (ev.data.citation) {
        const last = result.citations.pop();
        result.citations.push(...joinContinuedCitations(last ? [last, ev.data.citation] : [ev.data.citation]));
      }
      break;
    case "done":
      result.done = ev.data;
      break;
    case "error":
      result.error = ev.data.error;
      break;
  }
}

/** Prints the `[n]` of the cited run just printed, if any (a run's pieces share one marker). */
function endMarker(out: Writable, tty: boolean, marker: { n: number }): void {
  if (marker.n === 0) return;
  out.write(tty ? `${ANSI.dim}[${marker.n}]${ANSI.normal}` : `[${marker.n}]`);
  marker.n = 0;
}

function render(ev: GenerateEvent, result: AskResult, out: Writable, tty: boolean, marker: { n: number }): void {
  const c = ev.event === "delta" ? ev.data.citation : undefined;
  if (!(c?.continues && marker.n > 0)) endMarker(out, tty, marker);
  if (ev.event === "retrieval") {
    const top = ev.data.passages[0];
    const lead = `${ev.data.passages.length} passages from \`${ev.data.corpus}\` in ${ev.data.retrieval_ms} ms`;
    out.write(`${tty ? ANSI.dim : ""}${lead}${top ? `; top: ${top.title}` : ""}${tty ? ANSI.normal : ""}\n\n`);
  } else if (ev.event === "delta") {
    if (!c) out.write(ev.data.text);
    else {
      // `collect` runs after `render`: a new run gets the next number, a continuing piece keeps its run's.
      if (marker.n === 0) marker.n = result.citations.length + 1;
      out.write(tty ? `${ANSI.underline}${ev.data.text}${ANSI.noUnderline}` : ev.data.text);
    }
  } else if (ev.event === "error") {
    out.write(`\nerror ${ev.data.error.code}: ${ev.data.error.message}\n`);
  }
}
