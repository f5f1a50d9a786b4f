/**
 * @module retrieve/upstash-index
 * First-stage retrieval (nest-algorithm.md §1) on Upstash Vector through `@upstash/vector`: a hybrid
 * index (dense built-in embedding model + BM25 sparse) queried by text (`query-data`), fused by
 * Upstash with RRF or DBSF, one namespace per corpus. Records carry the passage's `title`, `text`
 * and `source` in metadata (and `title + " " + text` as data), so citations need nothing else; ids
 * are the same as the local index's. Worker-safe (fetch only). Index settings: docs/retrieval.md.
 *
 * Requests go through our own requester (injectable `fetch`) that retries 429 and 5xx answers and
 * network errors with exponential backoff (`baseDelayMs · 2^attempt`, capped, honouring
 * `Retry-After`), which the SDK's own client does not do for HTTP statuses.
 */
import { Index } from "@upstash/vector";
import type { Passage, ScoredPassage } from "@nest/shared/protocol/passage";
import { NestError } from "@nest/shared/protocol/errors";
import { type PassageIndex, checkPassages, withRanks } from "@nest/shared/retrieve/passage-index";
import type { FusionMethod } from "@nest/shared/retrieve/fusion";

/** Upstash's server-side fusion algorithms. */
export type UpstashFusion = "RRF" | "DBSF";

/** Metadata stored with each record. */
export interface UpstashPassageMeta {
  title: string;
  text: string;
  source: string;
  [key: string]: unknown;
}

/** Connection and retry settings. */
export interface UpstashConfig {
  /** `UPSTASH_VECTOR_REST_URL`. */
  url: string;
  /** `UPSTASH_VECTOR_REST_TOKEN`. */
  token: string;
  fetchFn?: typeof fetch;
  /** Retries after the first try on 429/5xx/network errors. @defaultValue 5 */
  retries?: number;
  /** First backoff in ms (doubles each retry, capped at 30 s). @defaultValue 200 */
  baseDelayMs?: number;
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * An `@upstash/vector` `Index` whose HTTP goes through `fetchFn` with retries (see module doc).
 * @throws (from its commands) NestError `upstream_unavailable` after the last retry, `invalid_request`
 *   on another 4xx (with Upstash's error message)
 */
export function upstashClient(cfg: UpstashConfig): Index {
  const base = cfg.url.replace(/\/$/, "");
  const fetchFn = cfg.fetchFn ?? ((input, init) => fetch(input, init));
  const retries = cfg.retries ?? 5;
  const baseDelay = cfg.baseDelayMs ?? 200;
  const requester = {
    async request<T>(req: { path?: string[]; body?: unknown }): Promise<{ result?: T; error?: string }> {
      const url = [base, ...(req.path ?? [])].join("/");
      let last = "";
      for (let attempt = 0; attempt <= retries; attempt++) {
        let res: Response | undefined;
        try {
          res = await fetchFn(url, {
            method: "POST",
            headers: { authorization: `Bearer ${cfg.token}`, "content-type": "application/json" },
            body: JSON.stringify(req.body),
          });
        } catch (err) {
          last = `network error: ${(err as Error).message}`;
        }
        if (res) {
          const body = (await res.json().catch(() => ({}))) as { result?: T; error?: string };
          if (res.ok) return { result: body.result, error: body.error };
          last = `HTTP ${res.status}: ${body.error ?? res.statusText}`;
          if (res.status !== 429 && res.status < 500)
            throw new NestError("invalid_request", `Upstash Vector ${req.path?.join("/")}: ${last}`);
          const ra = Number(res.headers.get("retry-after"));
          if (attempt < retries && Number.isFinite(ra) && ra > 0) {
            await sleep(Math.min(ra * 1000, 30_000));
            continue;
          }
        }
        if (attempt < retries) await sleep(Math.min(baseDelay * 2 ** attempt, 30_000));
      }
      throw new NestError("upstream_unavailable", `Upstash Vector ${req.path?.join("/")} failed after ${retries + 1} tries: ${last}`);
    },
  };
  return new Index(requester);
}

/** Options for {@link createUpstashIndex}. */
export interface UpstashIndexOptions extends UpstashConfig {
  /** Corpus name reported by the index. */
  corpus: string;
  /** Namespace holding the corpus. @defaultValue the corpus name */
  namespace?: string;
  /** Upstash fusion. @defaultValue "RRF" */
  fusion?: UpstashFusion;
}

/** Our fusion names mapped onto Upstash's query modes / fusion algorithms. */
function upstashQueryMode(f: FusionMethod | undefined, fallback: UpstashFusion) {
  if (f === "dense") return { queryMode: "DENSE" as const };
  if (f === "bm25") return { queryMode: "SPARSE" as const };
  if (f === "rrf") return { queryMode: "HYBRID" as const, fusionAlgorithm: "RRF" as const };
  return { queryMode: "HYBRID" as const, fusionAlgorithm: fallback };
}

/**
 * A {@link PassageIndex} on Upstash Vector. `search(query, passages, {fusion})`: `rrf` → hybrid RRF,
 * `dense` / `bm25` → one side only, anything else → the configured fusion (`adaptive` has no
 * server-side equivalent and uses it). `score` = Upstash's score.
 *
 * @throws (from `search`) NestError `upstream_unavailable` when Upstash keeps failing,
 *   `invalid_request` on a 4xx
 */
export function createUpstashIndex(opts: UpstashIndexOptions): PassageIndex {
  const ns = upstashClient(opts).namespace(opts.namespace ?? opts.corpus);
  const fallback = opts.fusion ?? "RRF";
  return {
    corpus: opts.corpus,
    async search(query: string, passages: number, searchOpts?: { fusion?: FusionMethod }): Promise<ScoredPassage[]> {
      checkPassages(passages);
      const data = query.normalize("NFKC").trim();
      if (!data) return [];
      const mode = upstashQueryMode(searchOpts?.fusion, fallback);
      const hits = await ns.query<UpstashPassageMeta>({
        data,
        topK: passages,
        includeMetadata: true,
        ...(mode as object),
      } as Parameters<typeof ns.query>[0]);
      return withRanks(
        hits
          .filter((h) => h.metadata && typeof h.metadata.text === "string" && h.metadata.text)
          .map((h) => ({
            id: String(h.id),
            title: String(h.metadata!.title ?? ""),
            text: String(h.metadata!.text),
            source: String(h.metadata!.source ?? ""),
            score: h.score,
          }))
          .sort((a, b) => b.score - a.score)
          .slice(0, passages),
      );
    },
  };
}

/** The record upserted for a passage: `data` (embedded by Upstash, both dense and sparse) and metadata. */
export function upstashRecord(p: Passage): { id: string; data: string; metadata: UpstashPassageMeta } {
  return { id: p.id, data: p.title ? `${p.title} ${p.text}` : p.text, metadata: { title: p.title, text: p.text, source: p.source } };
}

/**
 * Upserts `passages` (one `upsert-data` request) into `namespace`.
 * @throws NestError as {@link upstashClient}
 */
export async function upsertPassages(index: Index, namespace: string, passages: readonly Passage[]): Promise<void> {
  if (passages.length === 0) return;
  await index.upsert(passages.map(upstashRecord), { namespace });
}
