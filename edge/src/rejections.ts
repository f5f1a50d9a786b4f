/**
 * @module rejections
 * Promises the edge does not await, and the reasons it rejects or cancels with (issue 17).
 * Two rules keep an unhandled rejection, or one without a reason, from passing silently:
 * - every cancel, abort or rejection the edge starts carries a {@link NestError} made by
 *   {@link stopReason} or {@link reasonError}, never `undefined` (`reader.cancel()`,
 *   `controller.abort()` and `controller.error()` without an argument are not used in Worker code;
 *   test/unit/edge/rejections.test.ts checks the sources);
 * - every promise left running or awaited only for its side effect (an orphaned `next()`, a
 *   cancel, a token charge; a `ctx.waitUntil` task, should one be added) goes through
 *   {@link logRejection}, which always attaches a handler that logs the failure with what it was,
 *   instead of `.catch(() => {})`.
 * Worker-safe.
 */
import { NestError, toNestError } from "@nest/shared/protocol/errors";

/** Where failures of unawaited work are reported: one line each. */
export type LogLine = (line: string) => void;

const warn: LogLine = (line) => console.warn(line);

/**
 * The {@link NestError} for a rejection or error `reason` of `what`: a NestError as is, an Error
 * wrapped (`internal`, its message, the Error as `cause`), and a missing reason (`undefined`,
 * `null`) named as such, so no log line or response ever reads just "undefined".
 * @param what the operation that failed, e.g. "read-sse: cancel of the SSE body"
 */
export function reasonError(reason: unknown, what: string): NestError {
  if (reason === undefined || reason === null) {
    return new NestError("internal", `${what} failed without a reason (${String(reason)})`);
  }
  return toNestError(reason);
}

/**
 * The reason to cancel a stream or abort a request with when the edge stops on purpose (a reader
 * done early, a client gone): a `NestError` `cancelled` (499) saying why, so it is never counted or
 * logged as a failure of the pool.
 */
export function stopReason(why: string): NestError {
  return new NestError("cancelled", why);
}

/**
 * Attaches a handler to `p` that logs a rejection as `<what> failed: <code>: <message>`; the
 * returned promise always resolves (after logging), so it can be awaited or left running.
 */
export function logRejection(p: PromiseLike<unknown>, what: string, log: LogLine = warn): Promise<void> {
  return Promise.resolve(p).then(
    () => undefined,
    (reason: unknown) => {
      const e = reasonError(reason, what);
      // A cancel rejecting with the edge's own stop reason is the stop working, not a failure.
      if (e.code !== "cancelled") log(`${what} failed: ${e.code}: ${e.message}`);
    },
  );
}
