/**
 * @module batch
 * `nestlm batch submit <file.jsonl> | status <id> | results <id>` against the edge's `/v1/batches`
 * routes. `submit --wait` and `status --watch` show a progress bar (cli-progress on a TTY, else a
 * line each time the count of finished items changes) until the batch is `completed` or `canceled`.
 */
import { readFile, writeFile } from "node:fs/promises";
import cliProgress from "cli-progress";
import type { Command } from "commander";
import type { BatchStatus, SubmitResponse } from "@nest/gpu-worker/batch/protocol";
import { nestHome } from "@nest/corpus/home";
import { findApiKey } from "./api-key.ts";
import { AskHttpError } from "./ask.ts";
import { nodeEnv } from "@nest/shared/config/node-env";

/** Where and as whom to call the edge. */
export interface BatchClientOptions {
  /** Edge base URL, e.g. `http://127.0.0.1:8787`. */
  url: string;
  key: string;
}

const FINAL = new Set(["completed", "canceled"]);

/**
 * One call to the edge's batch API.
 * @throws AskHttpError on a non-2xx answer (its JSON error body as text)
 */
async function call(
  opts: BatchClientOptions,
  method: string,
  path: string,
  init: { body?: string; headers?: Record<string, string> } = {},
): Promise<Response> {
  const res = await fetch(opts.url.replace(/\/+$/, "") + path, {
    method,
    headers: { authorization: `Bearer ${opts.key}`, ...init.headers },
    body: init.body,
  });
  if (!res.ok) throw new AskHttpError(res.status, await res.text());
  return res;
}

/**
 * Submits the JSONL (or JSON array) text `body`.
 * @throws AskHttpError when the edge refuses it (e.g. 400 naming the bad line)
 */
export async function submitBatch(opts: BatchClientOptions, body: string, idempotencyKey?: string): Promise<SubmitResponse> {
  const headers: Record<string, string> = { "content-type": "application/x-ndjson" };
  if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
  return (await call(opts, "POST", "/v1/batches", { body, headers })).json() as Promise<SubmitResponse>;
}

/** Status of batch `id`. @throws AskHttpError (404 for an unknown id) */
export async function batchStatus(opts: BatchClientOptions, id: string): Promise<BatchStatus> {
  return (await call(opts, "GET", `/v1/batches/${encodeURIComponent(id)}`)).json() as Promise<BatchStatus>;
}

/** Cancels batch `id`. @throws AskHttpError */
export async function cancelBatch(opts: BatchClientOptions, id: string): Promise<BatchStatus> {
  return (await call(opts, "POST", `/v1/batches/${encodeURIComponent(id)}/cancel`)).json() as Promise<BatchStatus>;
}

/** The results JSONL of batch `id` (finished items, input order) and the batch state when read. */
export async function batchResults(opts: BatchClientOptions, id: string): Promise<{ jsonl: string; status: string }> {
  const res = await call(opts, "GET", `/v1/batches/${encodeURIComponent(id)}/results`);
  return { jsonl: await res.text(), status: res.headers.get("x-batch-status") ?? "unknown" };
}

/**
 * Polls until the batch is `completed` or `canceled`, calling `onStatus` after each poll.
 * @param intervalMs poll period in ms (default 1000)
 */
export async function waitForBatch(
  opts: BatchClientOptions,
  id: string,
  onStatus: (s: BatchStatus) => void,
  intervalMs = 1000,
): Promise<BatchStatus> {
  for (;;) {
    const s = await batchStatus(opts, id);
    onStatus(s);
    if (FINAL.has(s.status)) return s;
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A progress display for {@link waitForBatch} on stderr. */
function progressBar(): { update(s: BatchStatus): void; stop(): void } {
  const finished = (s: BatchStatus) => s.counts.done + s.counts.failed + s.counts.canceled;
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: "batch [{bar}] {percentage}% | {value}/{total} | running {running} | failed {failed} | {state}",
        hideCursor: true,
        stream: process.stderr,
      },
      cliProgress.Presets.shades_classic,
    );
    let started = false;
    return {
      update(s) {
        const payload = { running: s.counts.running, failed: s.counts.failed, state: s.status };
        if (!started) bar.start(s.total, finished(s), payload);
        else bar.update(finished(s), payload);
        started = true;
      },
      stop: () => bar.stop(),
    };
  }
  let last = -1;
  return {
    update(s) {
      if (finished(s) === last) return;
      last = finished(s);
      process.stderr.write(
        `batch ${s.id}: ${last}/${s.total} finished (done ${s.counts.done}, failed ${s.counts.failed}, canceled ${s.counts.canceled}) ${s.status}\n`,
      );
    },
    stop() {},
  };
}

function clientOptions(opts: { url: string; key?: string }): BatchClientOptions {
  const env = nodeEnv(process.env);
  const home = nestHome(env.home);
  const key = opts.key ?? findApiKey(home, env.cli)?.key;
  if (!key) throw new Error(`no API key: set NEST_API_KEY or start \`nestlm serve\` once (it writes ${home}/api-key)`);
  return { url: opts.url, key };
}

function printStatus(s: BatchStatus): void {
  const c = s.counts;
  console.log(
    `${s.id}  ${s.status}  ${Math.round(s.progress * 100)}%  total ${s.total}  queued ${c.queued}  running ${c.running}  done ${c.done}  failed ${c.failed}  canceled ${c.canceled}`,
  );
}

async function watch(client: BatchClientOptions, id: string): Promise<BatchStatus> {
  const bar = progressBar();
  try {
    return await waitForBatch(client, id, (s) => bar.update(s));
  } finally {
    bar.stop();
  }
}

/** Adds `batch submit|status|results|cancel` to the `nestlm` program. */
export function addBatchCommands(program: Command): void {
  const batch = program.command("batch").description("batch jobs: many generation requests through the queue");
  const common = (cmd: Command) =>
    cmd
      .option("--url <url>", "edge base URL", "http://127.0.0.1:8787")
      .option("--key <key>", "API key (default: $NEST_API_KEY, else $NEST_HOME/api-key)");

  common(
    batch
      .command("submit")
      .description("submit a JSONL file (one generation request per line, optional custom_id); prints the batch id")
      .argument("<file>", "JSONL file, or a JSON array")
      .option("--idempotency-key <key>", "resubmitting with the same key returns the same batch")
      .option("--wait", "show progress until the batch finishes"),
  ).action(async (file: string, opts: { url: string; key?: string; idempotencyKey?: string; wait?: boolean }) => {
    const client = clientOptions(opts);
    const res = await submitBatch(client, await readFile(file, "utf8"), opts.idempotencyKey);
    console.log(res.id);
    if (res.idempotent_replay) process.stderr.write(`(the Idempotency-Key was already used: same batch)\n`);
    if (opts.wait) printStatus(await watch(client, res.id));
  });

  common(
    batch
      .command("status")
      .description("show a batch's state and counts")
      .argument("<id>")
      .option("--watch", "show progress until the batch finishes"),
  ).action(async (id: string, opts: { url: string; key?: string; watch?: boolean }) => {
    const client = clientOptions(opts);
    printStatus(opts.watch ? await watch(client, id) : await batchStatus(client, id));
  });

  common(
    batch
      .command("results")
      .description("print (or save) the results as JSONL, in input order")
      .argument("<id>")
      .option("-o, --output <file>", "write to this file instead of stdout"),
  ).action(async (id: string, opts: { url: string; key?: string; output?: string }) => {
    const { jsonl, status } = await batchResults(clientOptions(opts), id);
    if (opts.output) await writeFile(opts.output, jsonl);
    else process.stdout.write(jsonl);
    if (!FINAL.has(status)) process.stderr.write(`batch is ${status}: only finished items are listed\n`);
  });

  common(batch.command("cancel").description("cancel the items that have not started").argument("<id>")).action(
    async (id: string, opts: { url: string; key?: string }) => printStatus(await cancelBatch(clientOptions(opts), id)),
  );
}
