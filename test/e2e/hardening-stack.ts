/**
 * Helpers of the hardening tests (issue 14): the real `nestlm serve` as a child process, reached
 * only over HTTP, so the same test files run against any checkout (`NEST_E2E_ROOT=/path/to/checkout`
 * runs them against that tree's `bin/nestlm.mjs`, e.g. the commit before the fixes). It runs with a
 * temporary `NEST_HOME` whose entries link to the prepared model and corpora (`~/.cache/nest`) and
 * whose `keys.json` holds the test's key records; a random `NEST_BATCH_PREFIX` keeps its batch
 * queue apart on a shared Redis. Also: a private `redis-server` on a random port, for outages.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdtempSync, readdirSync, rmSync, symlinkSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import { homedir, tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";

/** The checkout whose `nestlm serve` is tested. */
export const ROOT = process.env.NEST_E2E_ROOT ?? resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const SOURCE_HOME = process.env.NEST_HOME ?? join(homedir(), ".cache", "nest");

export const sha256 = (s: string) => createHash("sha256").update(s).digest("hex");

/** A free TCP port on 127.0.0.1. */
export async function freePort(): Promise<number> {
  return new Promise((r, j) => {
    const s = createServer();
    s.once("error", j);
    s.listen(0, "127.0.0.1", () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => r(port));
    });
  });
}

export interface KeySpec {
  key: string;
  name: string;
  scopes: string[];
}

export interface Serve {
  edgeUrl: string;
  workerUrl: string;
  proc: ChildProcess;
  /** stderr so far (the servers' log lines). */
  stderr(): string;
  /** Resolves when stderr matches `re` (polls every 100 ms). */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<string>;
  prefix: string;
  secret: string;
  stop(): Promise<void>;
}

/**
 * Starts `nestlm serve` on free ports; resolves once it printed both URLs.
 * @param opts.keys key records of `keys.json` (besides the static `staticKey`)
 */
export async function startServe(opts: { staticKey: string; keys?: KeySpec[]; env?: Record<string, string> }): Promise<Serve> {
  const home = mkdtempSync(join(tmpdir(), "nest-h14-"));
  for (const e of readdirSync(SOURCE_HOME)) {
    if (e === "keys.json" || e === "api-key") continue;
    symlinkSync(join(SOURCE_HOME, e), join(home, e));
  }
  const records: Record<string, string> = {};
  for (const k of opts.keys ?? []) {
    const hash = sha256(k.key);
    records[`key:${hash}`] = JSON.stringify({
      hash,
      name: k.name,
      scopes: k.scopes,
      rpm: 0,
      tokens_per_day: 0,
      created_at: new Date().toISOString(),
    });
  }
  writeFileSync(join(home, "keys.json"), JSON.stringify(records), { mode: 0o600 });
  const prefix = `nest-h14-${randomBytes(4).toString("hex")}`;
  const secret = randomBytes(24).toString("hex");
  const proc = spawn(process.execPath, ["bin/nestlm.mjs", "serve", "--port", "0", "--worker-port", "0"], {
    cwd: ROOT,
    env: {
      ...process.env,
      NEST_HOME: home,
      NEST_API_KEY: opts.staticKey,
      NEST_POOL_SECRET: secret,
      NEST_BATCH_PREFIX: prefix,
      ...opts.env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let err = "";
  proc.stdout!.on("data", (d) => (out += String(d)));
  proc.stderr!.on("data", (d) => (err += String(d)));
  const exited = new Promise<void>((r) => proc.once("exit", () => r()));
  const urls = await new Promise<{ edge: string; worker: string }>((res, rej) => {
    const timer = setInterval(() => {
      const edge = /nest edge\s+(http:\/\/\S+)/.exec(out)?.[1];
      const worker = /gpu-worker\s+(http:\/\/\S+)/.exec(out)?.[1];
      if (edge && worker) {
        clearInterval(timer);
        res({ edge, worker });
      }
    }, 100);
    void exited.then(() => {
      clearInterval(timer);
      rej(new Error(`nestlm serve exited before it was up:\n${err}`));
    });
  });
  return {
    edgeUrl: urls.edge,
    workerUrl: urls.worker,
    proc,
    prefix,
    secret,
    stderr: () => err,
    waitForLog: async (re, timeoutMs = 60_000) => {
      const t0 = Date.now();
      for (;;) {
        const m = re.exec(err);
        if (m) return m[0];
        if (Date.now() - t0 > timeoutMs) throw new Error(`no log line ${re} within ${timeoutMs} ms; stderr:\n${err}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    },
    stop: async () => {
      if (proc.exitCode === null && proc.signalCode === null) {
        proc.kill("SIGTERM");
        const t = setTimeout(() => proc.kill("SIGKILL"), 20_000);
        await exited;
        clearTimeout(t);
      }
      rmSync(home, { recursive: true, force: true });
    },
  };
}

/** A private redis-server (no persistence beyond an explicit `SHUTDOWN SAVE`), for outage tests. */
export interface PrivateRedis {
  port: number;
  url: string;
  /** `SHUTDOWN SAVE`: the data is written to its folder, the server exits. */
  stop(): Promise<void>;
  /** Starts it again on the same port with the saved data. */
  start(): Promise<void>;
  /** Stops it for good and deletes its folder. */
  dispose(): Promise<void>;
}

export async function startPrivateRedis(): Promise<PrivateRedis> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), "nest-h14-redis-"));
  let proc: ChildProcess | undefined;
  const start = async () => {
    proc = spawn(
      "redis-server",
      ["--port", String(port), "--bind", "127.0.0.1", "--dir", dir, "--save", "", "--appendonly", "no", "--maxmemory-policy", "noeviction"],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let out = "";
    await new Promise<void>((r, j) => {
      proc!.stdout!.on("data", (d) => {
        out += String(d);
        if (out.includes("Ready to accept connections")) r();
      });
      proc!.once("exit", (code) => j(new Error(`redis-server exited (${code}): ${out}`)));
    });
  };
  const stop = async () => {
    const p = proc;
    if (!p || p.exitCode !== null) return;
    const exited = new Promise<void>((r) => p.once("exit", () => r()));
    spawn("redis-cli", ["-p", String(port), "SHUTDOWN", "SAVE"], { stdio: "ignore" });
    await exited;
  };
  await start();
  return {
    port,
    url: `redis://127.0.0.1:${port}`,
    stop,
    start,
    dispose: async () => {
      if (proc && proc.exitCode === null) {
        const p = proc;
        const exited = new Promise<void>((r) => p.once("exit", () => r()));
        p.kill("SIGKILL");
        await exited;
      }
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Reads an SSE body into `{event, data, atMs}` records (atMs: ms since `t0`). */
export async function readSse(res: Response, t0 = performance.now(), onEvent?: (ev: { event: string; data: string }) => void) {
  const events: { event: string; data: string; atMs: number }[] = [];
  const reader = res.body!.pipeThrough(new TextDecoderStream()).getReader();
  let buf = "";
  try {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buf += value;
      let i: number;
      while ((i = buf.indexOf("\n\n")) >= 0) {
        const block = buf.slice(0, i);
        buf = buf.slice(i + 2);
        let event = "message";
        const data: string[] = [];
        for (const line of block.split("\n")) {
          if (line.startsWith("event: ")) event = line.slice(7);
          else if (line.startsWith("data: ")) data.push(line.slice(6));
        }
        if (data.length === 0) continue;
        const ev = { event, data: data.join("\n"), atMs: performance.now() - t0 };
        events.push(ev);
        onEvent?.(ev);
      }
    }
  } catch {
    // a truncated body (connection dropped): what arrived so far is returned
  }
  return events;
}
