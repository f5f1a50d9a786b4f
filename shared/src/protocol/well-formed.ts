/**
 * @module protocol/well-formed
 * Well-formed UTF-16 for everything parsed from a client (issue 14 §7): lone surrogates (a high
 * surrogate not followed by a low one, or a low one not preceded by a high one) become U+FFFD, as
 * `String.prototype.toWellFormed` does, so no field the API echoes carries ill-formed text.
 * Worker-safe.
 */

const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** `s` with every lone UTF-16 surrogate replaced by U+FFFD. */
export function wellFormed(s: string): string {
  return s.replace(LONE_SURROGATE, "\uFFFD");
}

/** A `JSON.parse` reviver applying {@link wellFormed} to every string value. */
export function wellFormedReviver(_key: string, value: unknown): unknown {
  return typeof value === "string" ? wellFormed(value) : value;
}
