/**
 * A vitest reporter that says, last, how many tests were skipped and why (issue 17): a suite that
 * skips itself (the playground's Chromium tests when /usr/bin/chromium is missing) logs one line
 * `… skipped: <reason>` at load; this reporter pairs that reason with the file's skipped-test count
 * and prints `N tests skipped: <reason>` after vitest's own summary. With `NEST_SKIPPED_FILE` set
 * it also appends one JSON line per file (`{file, skipped, reason}`) there, for `scripts/test.mjs`
 * to repeat in the final line of `npm test`.
 *
 * Use: `vitest run --reporter=default --reporter=./scripts/skipped-reporter.ts`.
 */
import { appendFileSync } from "node:fs";
import { relative } from "node:path";
import type { Reporter, TestModule } from "vitest/node";

/** One file's skipped tests. */
export interface SkippedRecord {
  file: string;
  skipped: number;
  /** The reason the file logged (`… skipped: <reason>`), or the skip notes, or "no reason given". */
  reason: string;
}

/** `N tests skipped: <reason>` per distinct reason, joined with "; " ("" when nothing was skipped). */
export function skippedLine(records: readonly SkippedRecord[]): string {
  const byReason = new Map<string, number>();
  for (const r of records) byReason.set(r.reason, (byReason.get(r.reason) ?? 0) + r.skipped);
  return [...byReason].map(([reason, n]) => `${n} test${n === 1 ? "" : "s"} skipped: ${reason}`).join("; ");
}

export default class SkippedReporter implements Reporter {
  private readonly reasons = new Map<string, string>();

  onUserConsoleLog(log: { content: string; taskId?: string }): void {
    const m = /\bskipped: (.+)$/m.exec(log.content);
    if (m && log.taskId) this.reasons.set(log.taskId, m[1]!.trim());
  }

  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    const records: SkippedRecord[] = [];
    for (const mod of testModules) {
      const skipped = [...mod.children.allTests()].map((t) => t.result()).flatMap((r) => (r.state === "skipped" ? [r] : []));
      if (skipped.length === 0) continue;
      const notes = [...new Set(skipped.map((r) => r.note).filter((n): n is string => !!n))];
      const reason = this.reasons.get(mod.id) ?? (notes.length ? notes.join(", ") : "no reason given");
      records.push({ file: relative(process.cwd(), mod.moduleId), skipped: skipped.length, reason });
    }
    const file = process.env.NEST_SKIPPED_FILE;
    if (file) for (const r of records) appendFileSync(file, `${JSON.stringify(r)}\n`);
    if (records.length) console.log(`\n${skippedLine(records)}`);
  }
}
