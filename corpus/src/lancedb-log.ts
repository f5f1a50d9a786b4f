/**
 * @module lancedb-log
 * Side effects only, before `@lancedb/lancedb` loads (import this first):
 * - quiets LanceDB's native logger to errors (it warns on every new dataset) unless `LANCEDB_LOG`
 *   is already set;
 * - unless `LANCE_CPU_THREADS` is set, sizes Lance's CPU pool to `max(4, cores)`. Lance's default
 *   (cores − 2, at least 1) leaves one thread on a 2-core machine, and building a full-text index
 *   whose posting lists fill more than one batch then deadlocks for good (0 % CPU, every thread
 *   parked; lancedb/lancedb#3568, lance-format/lance#7350): here, any corpus above ~50k passages.
 */
import { availableParallelism } from "node:os";

process.env.LANCEDB_LOG ??= "error";
process.env.LANCE_CPU_THREADS ??= String(Math.max(4, availableParallelism()));
