// `npm test` (run with `node --import tsx scripts/test.ts`) after install and setup: the main suite (vitest.config.ts), then the workerd suite
// (test/workerd/vitest.config.ts), as before, stopping at the first that fails; then one final
// line with both results and the tests that did not run, e.g.
//   npm test: main suite passed, workerd suite passed; 6 tests skipped: /usr/bin/chromium is missing (apt-get install -y chromium)
// (scripts/skipped-reporter.ts collects the skips). Exit status: the first failing suite's.
import { spawnSync } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { skippedLine, type SkippedRecord } from "./skipped-reporter.ts";

const dir = mkdtempSync(join(tmpdir(), "nest-test-"));
const skippedFile = join(dir, "skipped.jsonl");
const reporters = ["--reporter=default", "--reporter=./scripts/skipped-reporter.ts"];
const suites = [
  { name: "main suite", args: ["vitest", "run", ...reporters] },
  { name: "workerd suite", args: ["vitest", "run", "--config", "test/workerd/vitest.config.ts", ...reporters] },
];

const results: string[] = [];
let status = 0;
for (const suite of suites) {
  if (status !== 0) {
    results.push(`${suite.name} not run`);
    continue;
  }
  const run = spawnSync("npx", suite.args, { stdio: "inherit", env: { ...process.env, NEST_SKIPPED_FILE: skippedFile } });
  status = run.status ?? 1;
  results.push(`${suite.name} ${status === 0 ? "passed" : `FAILED (exit ${run.status ?? run.signal})`}`);
}

let records: SkippedRecord[] = [];
try {
  records = readFileSync(skippedFile, "utf8")
    .trim()
    .split("\n")
    .filter(Boolean)
    .map((l) => JSON.parse(l) as SkippedRecord);
} catch {
  // nothing skipped
}
rmSync(dir, { recursive: true, force: true });
const skipped = skippedLine(records);
console.log(`\nnpm test: ${results.join(", ")}; ${skipped || "no tests skipped"}`);
process.exit(status);
