/**
 * `npm run bench`: runs every `test/bench/*.bench.ts` (or the ones named: `npm run bench -- batch`)
 * one after another, each in its own process so one's memory does not skew another's figures.
 * Arguments after the first flag go to every bench run (`npm run bench -- runtime --runs 5`); each
 * bench rejects flags it does not know, so name the bench when passing flags.
 * Each bench prints its own table and may write JSON under `bench-results/`. Benchmarks measure;
 * they assert nothing.
 */
import { spawnSync } from "node:child_process";
import { readdirSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const firstFlag = args.findIndex((a) => a.startsWith("-"));
const wanted = firstFlag < 0 ? args : args.slice(0, firstFlag);
const passed = firstFlag < 0 ? [] : args.slice(firstFlag);
const benches = readdirSync(here)
  .filter((f) => f.endsWith(".bench.ts"))
  .filter((f) => wanted.length === 0 || wanted.some((w) => f.includes(w)))
  .sort();
if (benches.length === 0) {
  console.error(`no bench matches ${wanted.join(", ")}`);
  process.exit(1);
}
let failed = 0;
for (const b of benches) {
  console.log(`\n=== ${b}`);
  const r = spawnSync(process.execPath, ["--import", "tsx", join(here, b), ...passed], { stdio: "inherit" });
  if (r.status !== 0) {
    failed++;
    console.error(`${b} exited with ${r.status ?? r.signal}`);
  }
}
process.exit(failed === 0 ? 0 : 1);
