/**
 * @module progress
 * Progress reporting for long corpus jobs (embedding, upserts): a cli-progress bar with rate and ETA
 * on a TTY, else a log line every 10% (also with rate and ETA).
 */
import cliProgress from "cli-progress";
import type { BuildProgress } from "./corpus-index.ts";

/**
 * A progress reporter for `label` counting `unit`s (e.g. `passages`).
 *
 * @param log line sink used when stderr is not a TTY
 */
export function progressReporter(label: string, unit: string, log: (line: string) => void): BuildProgress {
  let t0 = 0;
  let startDone = 0;
  let total = 0;
  const rate = (done: number) => (done - startDone) / Math.max((performance.now() - t0) / 1000, 1e-3);
  if (process.stderr.isTTY) {
    const bar = new cliProgress.SingleBar(
      {
        format: `${label} [{bar}] {percentage}% | {value}/{total} ${unit} | {rate}/s | ETA {eta_formatted}`,
        hideCursor: true,
        stream: process.stderr,
        etaBuffer: 50,
      },
      cliProgress.Presets.shades_classic,
    );
    return {
      start(t, done) {
        total = t;
        t0 = performance.now();
        startDone = done;
        bar.start(total, done, { rate: "-" });
      },
      update: (done) => bar.update(done, { rate: rate(done).toFixed(1) }),
      stop: () => bar.stop(),
    };
  }
  let next = 0.1;
  return {
    start(t, done) {
      total = t;
      t0 = performance.now();
      startDone = done;
      next = Math.floor((done / Math.max(total, 1)) * 10 + 1) / 10;
      if (done > 0) log(`${label}: resuming at ${done}/${total} ${unit}`);
    },
    update(done) {
      if (done / total < next && done < total) return;
      while (done / total >= next) next += 0.1;
      const r = rate(done);
      const eta = r > 0 ? (total - done) / r : 0;
      log(`${label}: ${done}/${total} ${unit} (${r.toFixed(1)}/s, ETA ${eta.toFixed(0)} s)`);
    },
    stop() {},
  };
}
