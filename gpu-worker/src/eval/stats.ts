/**
 * @module eval/stats
 * Uncertainty of the evaluation's means: percentile bootstrap confidence intervals over questions,
 * and the paired bootstrap for the difference between two variants on the same questions (resample
 * question indices with replacement, the same indices for both variants). Deterministic: a seeded
 * PRNG (mulberry32), so a report reproduces exactly.
 */

/** Defaults: 10,000 resamples, seed 12, 95 % level. */
export const BOOTSTRAP_RESAMPLES = 10_000;
export const BOOTSTRAP_SEED = 12;
export const BOOTSTRAP_LEVEL = 0.95;

/** mulberry32: a small seeded PRNG; returns uniform floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export interface BootstrapOptions {
  /** @defaultValue {@link BOOTSTRAP_RESAMPLES} */
  resamples?: number;
  /** @defaultValue {@link BOOTSTRAP_SEED} */
  seed?: number;
  /** Two-sided confidence level in (0, 1). @defaultValue 0.95 */
  level?: number;
}

/** A point estimate with its percentile-bootstrap interval `[low, high]`. */
export interface Interval {
  /** Mean of the sample (not of the resamples). */
  estimate: number;
  low: number;
  high: number;
  /** Sample size (questions). */
  n: number;
}

/**
 * Percentile-bootstrap interval of the mean of `values`: `resamples` means of n draws with
 * replacement, sorted; low = sorted[⌊(1−level)/2 · B⌋], high = sorted[⌈(1+level)/2 · B⌉ − 1].
 * @returns null for an empty sample.
 */
export function bootstrapMean(values: readonly number[], opts: BootstrapOptions = {}): Interval | null {
  const stats = resampleMeans(values, opts);
  if (!stats) return null;
  const { low, high } = percentiles(stats, opts.level ?? BOOTSTRAP_LEVEL);
  return { estimate: meanOf(values), low, high, n: values.length };
}

/** {@link Interval} of a paired difference plus the share of resamples whose difference is ≤ 0. */
export interface PairedDifference extends Interval {
  /** Share of resampled mean differences ≤ 0: a one-sided bootstrap p-value for "a > b". */
  pNotGreater: number;
}

/**
 * Paired bootstrap of mean(a) − mean(b) over the same questions: `a[i]` and `b[i]` are one
 * question's scores under two variants; each resample draws question indices with replacement and
 * takes the mean of `a[i] − b[i]` over them.
 * @returns null for empty samples.
 * @throws Error when the samples differ in length (not paired).
 */
export function pairedBootstrap(a: readonly number[], b: readonly number[], opts: BootstrapOptions = {}): PairedDifference | null {
  if (a.length !== b.length) throw new Error(`paired bootstrap needs equal lengths, got ${a.length} and ${b.length}`);
  const diffs = a.map((x, i) => x - b[i]!);
  const stats = resampleMeans(diffs, opts);
  if (!stats) return null;
  const { low, high } = percentiles(stats, opts.level ?? BOOTSTRAP_LEVEL);
  return { estimate: meanOf(diffs), low, high, n: diffs.length, pNotGreater: stats.filter((d) => d <= 1e-12).length / stats.length };
}

function meanOf(xs: readonly number[]): number {
  return xs.reduce((s, x) => s + x, 0) / xs.length;
}

/** Sorted bootstrap means (ascending), or null for an empty sample. */
function resampleMeans(values: readonly number[], opts: BootstrapOptions): number[] | null {
  const n = values.length;
  if (n === 0) return null;
  const resamples = opts.resamples ?? BOOTSTRAP_RESAMPLES;
  if (!Number.isInteger(resamples) || resamples < 1) throw new Error(`resamples must be a positive integer, got ${resamples}`);
  const rand = mulberry32(opts.seed ?? BOOTSTRAP_SEED);
  const out = new Array<number>(resamples);
  for (let r = 0; r < resamples; r++) {
    let s = 0;
    for (let i = 0; i < n; i++) s += values[Math.floor(rand() * n)]!;
    out[r] = s / n;
  }
  return out.sort((x, y) => x - y);
}

function percentiles(sorted: readonly number[], level: number): { low: number; high: number } {
  if (!(level > 0 && level < 1)) throw new Error(`level must be in (0, 1), got ${level}`);
  const b = sorted.length;
  const lo = Math.min(b - 1, Math.floor(((1 - level) / 2) * b));
  const hi = Math.max(0, Math.ceil(((1 + level) / 2) * b) - 1);
  return { low: sorted[lo]!, high: sorted[hi]! };
}
