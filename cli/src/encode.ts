/**
 * @module encode
 * `nestlm encode [--corpus factbook] [--precision fp16|int8|fp32] [--limit N]`: encodes a whole
 * corpus ahead of time into its compact key store (`gpu-worker/src/engine/corpus-key-store.ts`,
 * under `$NEST_HOME/keys/<model key>/corpora/<corpus>/`), so requests over it do no LM encoding
 * (issue 13 item 2). Passages go through the LM in right-padded batches; the store is appended every
 * chunk, so an interrupted run resumes where it stopped (passages already stored are skipped).
 */
import type { Command } from "commander";
import { InvalidArgumentError, Option } from "commander";
import { join } from "node:path";
import { readIndexPassages } from "@nest/corpus/lancedb-index";
import { cachePaths } from "@nest/corpus/home";
import type { Passage } from "@nest/shared/protocol/passage";
import { Engine } from "@nest/gpu-worker/engine/engine";
import { findModelDir } from "@nest/gpu-worker/runtime/prepare-model";
import { findCorpusDir } from "@nest/corpus/layout";
import { progressReporter } from "@nest/corpus/progress";
import { bytesPerToken, corpusKeysDir, CorpusKeyWriter, KEY_PRECISIONS, type KeyPrecision } from "@nest/gpu-worker/engine/corpus-key-store";
import { nodeEnv } from "@nest/shared/config/node-env";

/** Every passage of a prepared corpus, in table order (`limit` first ones when given). */
export async function corpusPassages(corpus: string, limit?: number): Promise<Passage[]> {
  return readIndexPassages(await findCorpusDir(corpus), limit);
}

/** Passages encoded per store append (and per progress update). */
const CHUNK_PASSAGES = 128;

export interface EncodeCorpusOptions {
  corpus: string;
  /** Key precision in the store (default fp16: answers identical to on-the-fly encoding in our tests). */
  precision?: KeyPrecision;
  /** Only the first `limit` passages of the corpus. */
  limit?: number;
  /** Encode exactly these passages instead of the corpus's (the e2e bench encodes what its prompts retrieve). */
  passages?: readonly Passage[];
  /** Most passages per LM pass (default: the encoder's, `NEST_ENCODE_BATCH`). */
  batch?: number;
  /** Cache folder the key store goes under (default NEST_HOME; the model and corpus always come from NEST_HOME). */
  keysHome?: string;
  log?: (s: string) => void;
}

export interface EncodeCorpusResult {
  dir: string;
  precision: KeyPrecision;
  /** Passages the LM encoded in this run. */
  encoded: number;
  /** Passages found in the store already (resumed). */
  cached: number;
  /** Passage tokens encoded in this run. */
  tokens: number;
  /** Wall time of the encoding (model load excluded), in seconds. */
  seconds: number;
  /** Bytes stored per token. */
  bytesPerToken: number;
}

/**
 * Encodes the passages of `corpus` into its key store, resuming a store that exists.
 * @throws Error when a store of another precision or model is in the way; NestError
 *   `model_not_prepared` / `not_found` when the model or corpus is not prepared.
 */
export async function encodeCorpus(opts: EncodeCorpusOptions): Promise<EncodeCorpusResult> {
  const log = opts.log ?? ((s: string) => process.stderr.write(`${s}\n`));
  const precision = opts.precision ?? "fp16";
  const passages = opts.passages ?? (await corpusPassages(opts.corpus, opts.limit));
  // An Engine creation site: the decoder and the encoder's batching read the environment, parsed here.
  const engine = await Engine.load(
    await findModelDir(),
    { diskKeyCache: false, corpusKeys: false, home: opts.keysHome },
    nodeEnv(process.env),
  );
  const encoder = engine.passageEncoder;
  const hiddenSize = engine.manifest.hidden_size;
  const dir = corpusKeysDir(join(cachePaths(opts.keysHome).home, "keys", encoder.modelKey), opts.corpus);
  const writer = await CorpusKeyWriter.open(dir, { corpus: opts.corpus, modelKey: encoder.modelKey, hiddenSize, precision });
  const todo = passages.filter((p) => !writer.has(p));
  const cached = passages.length - todo.length;
  const progress = progressReporter(`${opts.corpus}: encoding keys (${precision})`, "passages", log);
  progress.start(passages.length, cached);
  let tokens = 0;
  const t0 = performance.now();
  try {
    for (let i = 0; i < todo.length; i += CHUNK_PASSAGES) {
      const entries = await encoder.encode(todo.slice(i, i + CHUNK_PASSAGES), undefined, opts.batch);
      await writer.append(entries);
      for (const e of entries) tokens += e.tokens.length;
      progress.update(cached + Math.min(todo.length, i + CHUNK_PASSAGES));
    }
  } finally {
    progress.stop();
    await engine.session.release();
  }
  const seconds = (performance.now() - t0) / 1000;
  const bpt = bytesPerToken(precision, hiddenSize);
  log(
    `${opts.corpus}: ${todo.length} passages (${tokens} tokens) encoded in ${seconds.toFixed(1)} s ` +
      `(${(tokens / Math.max(seconds, 1e-3)).toFixed(0)} tokens/s), ${cached} already stored; ` +
      `${precision}, ${bpt} bytes per token; store ${dir}`,
  );
  return { dir, precision, encoded: todo.length, cached, tokens, seconds, bytesPerToken: bpt };
}

/** Adds `nestlm encode` to the program. */
export function addEncodeCommand(program: Command): void {
  const positive = (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 1) throw new InvalidArgumentError("expected a positive integer");
    return n;
  };
  program
    .command("encode")
    .description("pre-encode a corpus into its compact key store, so requests over it do no LM encoding (resumable)")
    .option("--corpus <name>", "corpus to encode", "factbook")
    .addOption(new Option("--precision <p>", "key precision in the store").choices(KEY_PRECISIONS).default("fp16"))
    .option("--limit <n>", "only the first n passages", positive)
    .option("--batch <n>", "passages per LM pass (default NEST_ENCODE_BATCH, else 8)", positive)
    .action(async (o: { corpus: string; precision: KeyPrecision; limit?: number; batch?: number }) => {
      await encodeCorpus(o);
    });
}
