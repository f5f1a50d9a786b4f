/**
 * @module ingest
 * `nestlm ingest <source> [--target local|upstash] [--namespace NAME] [--dry-run] [--max-words N]`:
 * reads a folder of `.md`/`.txt`/`.html`, a JSONL file or `factbook` into passages
 * (`corpus/sources`), then either builds a local hybrid corpus index at
 * `$NEST_HOME/corpora/<namespace>/` (`corpus/corpus-index`, served by the embedded stack as
 * `{corpus: "<namespace>"}`), or upserts into Upstash Vector namespace `<namespace>`
 * (`UPSTASH_VECTOR_REST_URL` / `_TOKEN`).
 *
 * Both are idempotent (content-derived ids and version) and resumable: local embedding checkpoints
 * in the corpus folder; Upstash progress is saved after each batch in
 * `$NEST_HOME/ingest/upstash-<namespace>-<content12>.json` (`{ done }`). The Upstash corpus version is
 * recorded in `$NEST_HOME/ingest/upstash-<namespace>.json` (`{ namespace, version, passages, updatedAt }`).
 */
import { mkdir, readFile, rm, writeFile } from "node:fs/promises";
import { basename, extname, join } from "node:path";
import { type Command, InvalidArgumentError, Option } from "commander";
import { z } from "zod";
import { NestError } from "@nest/shared/protocol/errors";
import type { Passage } from "@nest/shared/protocol/passage";
import { DEFAULT_CHUNK_WORDS } from "@nest/shared/corpus/chunk";
import { upsertPassages, upstashClient, type UpstashConfig } from "@nest/edge/retrieve/upstash-index";
import { nestHome } from "@nest/corpus/home";
import { nodeEnv } from "@nest/shared/config/node-env";
import { readSource } from "@nest/corpus/sources";
import { buildCorpusIndex, type BuildProgress } from "@nest/corpus/corpus-index";
import { contentVersion } from "@nest/corpus/layout";
import { progressReporter } from "@nest/corpus/progress";
import { prepareEmbedder } from "@nest/corpus/prepare-embedder";

/** `$NEST_HOME/ingest/upstash-<namespace>.json`: the version last upserted (other fields kept). */
const UpstashRecordSchema = z.looseObject({ version: z.string().optional() });
/** `$NEST_HOME/ingest/upstash-<namespace>-<content12>.json`: passages upserted so far. */
const UpstashCheckpointSchema = z.looseObject({ done: z.number().int().nonnegative().optional() });

/** Options of {@link ingest}. */
export interface IngestOptions {
  source: string;
  target: "local" | "upstash";
  /** Corpus / namespace name; default derived from the source (see {@link defaultNamespace}). */
  namespace?: string;
  dryRun?: boolean;
  maxWords?: number;
  home?: string;
  log?: (line: string) => void;
  /**
   * Upstash connection, needed by `target: "upstash"` (`nestlm ingest` builds it from
   * `UPSTASH_VECTOR_REST_URL` / `_TOKEN`, the `upstash` slice of `@nest/shared/config/node-env`).
   */
  upstash?: UpstashConfig;
  /** Passages embedded per checkpointed batch (local). @defaultValue 256 */
  batchSize?: number;
  /** Passages per upsert request. @defaultValue 100 */
  upsertBatch?: number;
  progress?: BuildProgress;
  /** Test hook: after each checkpointed batch (embedding or upsert); throw to simulate a crash. */
  afterBatch?: (done: number) => void;
}

/** Summary of an ingest run. */
export interface IngestSummary {
  target: "local" | "upstash";
  namespace: string;
  passages: number;
  /** Content version (sha256 hex over ids and texts). */
  contentVersion: string;
  /** Local index folder (local target). */
  dir?: string;
  /** Passages written this run (0 when nothing changed). */
  written: number;
  dryRun: boolean;
  seconds: number;
}

const NAME = /^[a-z0-9][a-z0-9_-]{0,63}$/;

/** `factbook` → `factbook`; `docs/My Notes/` → `my-notes`; `data/qa.jsonl` → `qa`. */
export function defaultNamespace(source: string): string {
  if (source === "factbook") return "factbook";
  const base = basename(source.replace(/[/\\]+$/, ""), extname(source)).toLowerCase();
  return (
    base
      .replace(/[^a-z0-9_-]+/g, "-")
      .replace(/^[-_]+|-+$/g, "")
      .slice(0, 64) || "corpus"
  );
}

/**
 * Runs an ingest (see module doc).
 * @throws NestError `invalid_request` on a bad namespace, source or missing Upstash credentials;
 *   `upstream_unavailable` when Upstash keeps failing (progress so far is kept)
 */
export async function ingest(opts: IngestOptions): Promise<IngestSummary> {
  const t0 = performance.now();
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const home = opts.home ?? nestHome();
  const namespace = opts.namespace ?? defaultNamespace(opts.source);
  if (!NAME.test(namespace)) throw new NestError("invalid_request", `namespace "${namespace}" must match [a-z0-9][a-z0-9_-]* (≤ 64 chars)`);
  const passages = await readSource(opts.source, opts.maxWords ?? DEFAULT_CHUNK_WORDS);
  if (passages.length === 0) throw new NestError("invalid_request", `ingest source ${opts.source} has no text`);
  const version = contentVersion(passages);
  const done = (written: number, dir?: string): IngestSummary => ({
    target: opts.target,
    namespace,
    passages: passages.length,
    contentVersion: version,
    dir,
    written,
    dryRun: !!opts.dryRun,
    seconds: Math.round((performance.now() - t0) / 100) / 10,
  });
  log(`ingest: ${passages.length} passages from ${opts.source} → ${opts.target} "${namespace}" (version ${version.slice(0, 12)})`);
  if (opts.dryRun) return done(0);
  if (opts.target === "local") {
    const embedder = await prepareEmbedder({ home, log });
    const res = await buildCorpusIndex(namespace, passages, {
      home,
      log,
      embedder,
      afterBatch: opts.afterBatch,
      batchSize: opts.batchSize,
      meta: { source: opts.source, maxWords: opts.maxWords ?? DEFAULT_CHUNK_WORDS },
      progress: opts.progress ?? progressReporter(`${namespace}: embedding`, "passages", log),
    });
    return done(res.built ? passages.length : 0, res.dir);
  }
  return done(await ingestUpstash(passages, namespace, version, home, opts, log));
}

async function ingestUpstash(
  passages: Passage[],
  namespace: string,
  version: string,
  home: string,
  opts: IngestOptions,
  log: (s: string) => void,
): Promise<number> {
  const cfg = opts.upstash;
  if (!cfg?.url || !cfg.token)
    throw new NestError("invalid_request", "--target upstash needs UPSTASH_VECTOR_REST_URL and UPSTASH_VECTOR_REST_TOKEN");
  const dir = join(home, "ingest");
  await mkdir(dir, { recursive: true });
  const record = join(dir, `upstash-${namespace}.json`);
  const prev = await readFile(record, "utf8").then(
    (s) => UpstashRecordSchema.safeParse(JSON.parse(s)).data ?? {},
    () => ({}) as { version?: string },
  );
  if (prev.version === version) {
    log(`ingest: upstash namespace "${namespace}" already holds version ${version.slice(0, 12)}; nothing to do`);
    return 0;
  }
  const checkpoint = join(dir, `upstash-${namespace}-${version.slice(0, 12)}.json`);
  let doneN = await readFile(checkpoint, "utf8").then(
    (s) => UpstashCheckpointSchema.safeParse(JSON.parse(s)).data?.done ?? 0,
    () => 0,
  );
  const client = upstashClient(cfg);
  const batch = opts.upsertBatch ?? 100;
  const bar = opts.progress ?? progressReporter(`upstash ${namespace}: upserting`, "passages", log);
  const start = doneN;
  bar.start(passages.length, doneN);
  try {
    while (doneN < passages.length) {
      const slice = passages.slice(doneN, doneN + batch);
      await upsertPassages(client, namespace, slice);
      doneN += slice.length;
      await writeFile(checkpoint, JSON.stringify({ done: doneN }));
      bar.update(doneN);
      opts.afterBatch?.(doneN);
    }
  } finally {
    bar.stop();
  }
  await writeFile(
    record,
    `${JSON.stringify({ namespace, version, passages: passages.length, updatedAt: new Date().toISOString() }, null, 2)}\n`,
  );
  await rm(checkpoint, { force: true });
  return doneN - start;
}

function parsePositive(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
  return n;
}

/** Adds `nestlm ingest` to `program`. */
export function addIngestCommand(program: Command): void {
  program
    .command("ingest")
    .description("chunk a folder (.md/.txt/.html), a JSONL file or `factbook` into passages and index them")
    .argument("<source>", "folder, .jsonl file, or `factbook`")
    .addOption(new Option("--target <target>", "where to index").choices(["local", "upstash"]).default("local"))
    .option("--namespace <name>", "corpus / namespace name (default: from the source name)")
    .option("--dry-run", "read and chunk only; print what would be written")
    .option("--max-words <n>", "word budget per passage", parsePositive, DEFAULT_CHUNK_WORDS)
    .action(async (source: string, o: { target: "local" | "upstash"; namespace?: string; dryRun?: boolean; maxWords: number }) => {
      const env = nodeEnv(process.env);
      const { UPSTASH_VECTOR_REST_URL: url = "", UPSTASH_VECTOR_REST_TOKEN: token = "" } = env.upstash;
      const s = await ingest({
        source,
        target: o.target,
        namespace: o.namespace,
        dryRun: o.dryRun,
        maxWords: o.maxWords,
        home: nestHome(env.home),
        upstash: { url, token },
      });
      const what = s.dryRun ? "would write" : s.written ? "wrote" : "unchanged,";
      console.log(
        `ingest ${s.target} "${s.namespace}": ${s.passages} passages, ${what} ${s.written || (s.dryRun ? s.passages : 0)} in ${s.seconds} s; version ${s.contentVersion.slice(0, 12)}${s.dir ? `; index ${s.dir}` : ""}`,
      );
      if (s.target === "local" && !s.dryRun)
        console.log(`use it: POST /v1/generate {"corpus": "${s.namespace}", ...} (restart \`nestlm serve\`)`);
    });
}
