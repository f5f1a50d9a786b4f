/**
 * @module adapters/node/lancedb-log
 * Side effect only: quiets LanceDB's native logger to errors (it warns on every new dataset)
 * unless `LANCEDB_LOG` is already set. Import before `@lancedb/lancedb`.
 */
process.env.LANCEDB_LOG ??= "error";
