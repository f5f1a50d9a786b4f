/**
 * @module main
 * The `nestlm` command line (commander): `setup`, `serve`, `ask`, `demo`. Run through
 * `bin/nestlm.mjs`. Failures print `nestlm: <message>` and set exit code 1; nothing calls `exit()`
 * except the signal handlers of `serve` and a closed stdout pipe.
 */
import { randomBytes } from "node:crypto";
import { Command, InvalidArgumentError, Option } from "commander";
import { ModeSchema, type Mode } from "@nest/shared/protocol/request";
import { nestHome } from "@nest/corpus/home";
import { nodeEnv } from "@nest/shared/config/node-env";
import { PRECISIONS, type Precision } from "@nest/gpu-worker/runtime/session-options";
import { prepareModel } from "@nest/gpu-worker/runtime/prepare-model";
import { prepareCorpus } from "@nest/corpus/prepare-corpus";
import { findApiKey, hashApiKey, loadOrCreateApiKey } from "./api-key.ts";
import { startStack, DEFAULT_CORPUS } from "./stack.ts";
import { ask, AskHttpError } from "./ask.ts";
import { addBatchCommands } from "./batch.ts";
import { addEncodeCommand } from "./encode.ts";
import { addIngestCommand } from "./ingest.ts";
import { addKeysCommands } from "./keys.ts";
import { addEvalCommand } from "./eval.ts";

/** The question `nestlm demo` asks. */
export const DEMO_QUESTION = "What is the capital of Australia?";

const err = (line: string) => process.stderr.write(`${line}\n`);

function parseIntArg(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0) throw new InvalidArgumentError("expected a non-negative integer");
  return n;
}
function parsePrecisions(v: string): Precision[] {
  const list = v
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
  const bad = list.filter((p) => !(PRECISIONS as readonly string[]).includes(p));
  if (bad.length > 0) throw new InvalidArgumentError(`unknown precision ${bad.join(", ")} (choose from ${PRECISIONS.join(", ")})`);
  return list as Precision[];
}
function parseNumberArg(v: string): number {
  const n = Number(v);
  if (!Number.isFinite(n)) throw new InvalidArgumentError("expected a number");
  return n;
}

/** Prepares the model and the default corpus (idempotent); prints what it did. */
export async function setup(
  home: string,
  log: (line: string) => void = err,
  opts: { dense?: boolean; precisions?: Precision[] } = {},
): Promise<void> {
  const t0 = performance.now();
  log(`nestlm setup: cache folder ${home}`);
  const modelDir = await prepareModel({ home, log, precisions: opts.precisions });
  const corpus = await prepareCorpus({ home, log, dense: opts.dense });
  log(`ready: model ${modelDir}`);
  log(`ready: corpus \`${DEFAULT_CORPUS}\`, ${corpus.passages} passages (version ${corpus.version.slice(0, 12)}) in ${corpus.dir}`);
  log(`setup done in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
}

async function serve(opts: { port: number; workerPort: number; host: string; verbose?: boolean }): Promise<void> {
  const env = nodeEnv(process.env);
  const home = nestHome(env.home);
  const apiKey = loadOrCreateApiKey(home, env.cli);
  const stack = await startStack({
    home,
    env,
    port: opts.port,
    workerPort: opts.workerPort,
    host: opts.host,
    apiKeyHashes: [hashApiKey(apiKey.key)],
    log: (line) => err(`  ${line}`),
  });
  const keyExpr = apiKey.origin === "env" ? "$NEST_API_KEY" : `$(cat ${apiKey.file})`;
  console.log(`nest edge   ${stack.edgeUrl}   (POST /v1/generate, GET /healthz)`);
  console.log(`gpu-worker  ${stack.workerUrl}`);
  console.log(`API key     ${apiKey.origin === "env" ? "from NEST_API_KEY" : `in ${apiKey.file}`}`);
  console.log(`\nTry:\n  curl -N ${stack.edgeUrl}/v1/generate \\\n    -H "Authorization: Bearer ${keyExpr}" \\`);
  console.log(`    -H "Content-Type: application/json" \\\n    -d '{"prompt":"${DEMO_QUESTION}","mode":"nest"}'`);
  console.log(`  node bin/nestlm.mjs ask "${DEMO_QUESTION}" --url ${stack.edgeUrl}\n\nCtrl-C stops.`);
  const stop = (signal: string) => {
    err(`\n${signal}: stopping`);
    stack.close().then(
      () => process.exit(0),
      (e: unknown) => {
        err(`nestlm: ${(e as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.once("SIGINT", () => stop("SIGINT"));
  process.once("SIGTERM", () => stop("SIGTERM"));
}

async function askCommand(
  question: string,
  opts: {
    url: string;
    mode: Mode;
    json?: boolean;
    maxNewTokens?: number;
    passages?: number;
    gamma?: number;
    corpus?: string;
    key?: string;
    doc?: string[];
  },
): Promise<void> {
  const env = nodeEnv(process.env);
  const home = nestHome(env.home);
  const key = opts.key ?? findApiKey(home, env.cli)?.key;
  if (!key) throw new Error(`no API key: set NEST_API_KEY or start \`nestlm serve\` once (it writes ${home}/api-key)`);
  const result = await ask({ ...opts, key, question });
  if (result.error) process.exitCode = 1;
}

async function demo(opts: { verbose?: boolean }): Promise<void> {
  const env = nodeEnv(process.env);
  const home = nestHome(env.home);
  err("nest demo: checking the model and the corpus (only the first run downloads and exports the model: a few minutes)");
  await setup(home, err, { dense: env.corpus.NEST_FACTBOOK_DENSE });
  const key = randomBytes(24).toString("base64url");
  const stack = await startStack({
    home,
    env,
    port: 0,
    workerPort: 0,
    host: "127.0.0.1",
    apiKeyHashes: [hashApiKey(key)],
    log: opts.verbose ? (line) => err(`  ${line}`) : undefined,
  });
  err(`stack up: edge ${stack.edgeUrl}, gpu-worker ${stack.workerUrl}\n`);
  console.log(`Q: ${DEMO_QUESTION} (mode nest)\n`);
  try {
    const result = await ask({ url: stack.edgeUrl, key, question: DEMO_QUESTION, mode: "nest" });
    if (result.error) throw new Error(`the answer failed: ${result.error.code}: ${result.error.message}`);
    if (!result.done) throw new Error("the stream ended without a `done` event");
  } finally {
    await stack.close();
  }
  err("\ndemo done: stack stopped.");
}

/** Builds the `nestlm` program (exported for tests). */
export function buildProgram(): Command {
  const program = new Command("nestlm")
    .description("NEST: attributed generation over a corpus (Nearest Neighbor Speculative Decoding)")
    .showHelpAfterError();

  program
    .command("setup")
    .description("prepare the model (ONNX export, plus the fused-fp32 graph the CPU runs by default) and the default corpus in $NEST_HOME")
    .option("--dense", "also embed the factbook passages for hybrid retrieval (10-60 min on 2 cores)")
    .option(
      "--precision <list>",
      "also prepare these decoder precisions, comma-separated: int8,int4,fp16,fused-int8,fused-int4 (fp32, and fused-fp32 for Llama-family models, are always built)",
      parsePrecisions,
    )
    .action((o: { dense?: boolean; precision?: Precision[] }) => {
      const env = nodeEnv(process.env);
      return setup(nestHome(env.home), err, { dense: o.dense ?? env.corpus.NEST_FACTBOOK_DENSE, precisions: o.precision });
    });

  program
    .command("serve")
    .description("start the gpu-worker and the edge in this process")
    .option("--port <port>", "edge port", parseIntArg, 8787)
    .option("--worker-port <port>", "gpu-worker port (binds 127.0.0.1)", parseIntArg, 8788)
    .option("--host <host>", "interface the edge binds", "127.0.0.1")
    .action(serve);

  program
    .command("ask")
    .description("ask a running edge a question; stream the attributed answer")
    .argument("<question>", "the prompt")
    .addOption(new Option("--mode <mode>", "decoding mode").choices(ModeSchema.options).default("nest"))
    .option("--url <url>", "edge base URL", "http://127.0.0.1:8787")
    .option("--key <key>", "API key (default: $NEST_API_KEY, else $NEST_HOME/api-key)")
    .option("--json", "print the raw events as JSON lines")
    .option("--max-new-tokens <n>", "tokens to generate at most", parseIntArg)
    .option("--passages <n>", "first-stage passages", parseIntArg)
    .option("--gamma <g>", "relaxed-acceptance leniency γ ∈ (0, 1]", parseNumberArg)
    .option("--corpus <name>", "corpus to retrieve from (default: the server's, factbook; e.g. one made by `nestlm ingest`)")
    .option("--doc <file>", "answer over this file instead of the corpus (repeatable)", (f: string, prev: string[] = []) => [...prev, f])
    .action(askCommand);

  program
    .command("demo")
    .description("set up if needed, start the stack, ask one question in nest mode, stop")
    .option("--verbose", "print server logs")
    .action(demo);

  addBatchCommands(program);
  addEncodeCommand(program);
  addIngestCommand(program);
  addKeysCommands(program);
  addEvalCommand(program);
  return program;
}

/** Runs the CLI on `argv` (`process.argv` layout). Sets `process.exitCode` on failure. */
export async function main(argv: string[] = process.argv): Promise<void> {
  // A closed pipe (`nestlm ask --json | head -1`) ends the output quietly.
  process.stdout.on("error", (e: NodeJS.ErrnoException) => {
    if (e.code === "EPIPE") process.exit(0);
    throw e;
  });
  try {
    await buildProgram().parseAsync(argv);
  } catch (e) {
    if (e instanceof AskHttpError) err(e.body);
    else err(`nestlm: ${e instanceof Error ? e.message : String(e)}`);
    process.exitCode = 1;
  }
}
