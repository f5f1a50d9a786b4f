/**
 * @module batch/redis-outage
 * Redis outages of the batch queue (issue 14 §5): every connection of a process to one Redis
 * address (the job API's, the consumer's, BullMQ's blocking duplicates) reports into one
 * {@link RedisOutage}, which logs **one line when the outage starts and one when Redis is back**
 * instead of a stack trace per reconnection attempt, and turns a failed queue command into a 503
 * `queue_unavailable` with `Retry-After`. ioredis reconnects by itself; nothing here restarts it.
 * Node-only.
 */
import { NestError } from "@nest/shared/protocol/errors";

/** `Retry-After` of a `queue_unavailable` answer, seconds. */
export const QUEUE_RETRY_AFTER_S = 5;

/** ioredis / BullMQ messages that mean "Redis cannot be reached", not "the command was wrong". */
const CONNECTIVITY =
  /ECONNREFUSED|ECONNRESET|ETIMEDOUT|EHOSTUNREACH|ENOTFOUND|EPIPE|max retries per request|Connection is closed|Stream isn't writeable|connect ETIMEDOUT|Socket closed/i;

/** One Redis address's outage state, shared by every connection of the process to it. */
export class RedisOutage {
  private downSinceMs: number | undefined;

  constructor(
    /** The Redis address without credentials, for the log line. */
    readonly where: string,
    private readonly log: (line: string) => void,
  ) {}

  /** Whether an outage is in progress (an error seen, no `ready` since). */
  get down(): boolean {
    return this.downSinceMs !== undefined;
  }

  /** An `error` event of any connection: logs the first one of an outage, drops the rest. */
  readonly onError = (err: Error): void => {
    if (this.downSinceMs !== undefined) return;
    this.downSinceMs = Date.now();
    this.log(`redis: unavailable at ${this.where} (${err.message}); batch routes answer 503 queue_unavailable until it is back`);
  };

  /** A `ready` event of any connection: ends the outage (one line). */
  readonly onReady = (): void => {
    if (this.downSinceMs === undefined) return;
    const s = ((Date.now() - this.downSinceMs) / 1000).toFixed(1);
    this.downSinceMs = undefined;
    this.log(`redis: back at ${this.where} after ${s} s`);
  };

  /** Listens to a connection's `error` and `ready` events (an ioredis client, a BullMQ Queue or Worker). */
  watch(conn: { on(event: "error", f: (err: Error) => void): unknown; on(event: "ready", f: () => void): unknown }): void {
    conn.on("error", this.onError);
    conn.on("ready", this.onReady);
  }

  /**
   * What a failed queue command should throw: `queue_unavailable` (503, {@link QUEUE_RETRY_AFTER_S})
   * when Redis cannot be reached, else `err` itself.
   */
  translate(err: unknown): unknown {
    if (err instanceof NestError) return err;
    const message = err instanceof Error ? err.message : String(err);
    if (!this.down && !CONNECTIVITY.test(message)) return err;
    if (!this.down) this.onError(err instanceof Error ? err : new Error(message));
    return new NestError("queue_unavailable", "the batch queue is unavailable (Redis cannot be reached); retry later", {
      retryAfterS: QUEUE_RETRY_AFTER_S,
      cause: err,
    });
  }
}

/** Whether `err` means "Redis cannot be reached" (not a refused or malformed command). */
export function isConnectivityError(err: unknown): boolean {
  return CONNECTIVITY.test(err instanceof Error ? err.message : String(err));
}

/**
 * Connects `redis` (created with `lazyConnect`) and checks its eviction policy, tolerating a Redis
 * that is down at start like one that goes down later: the outage is logged once (the connection
 * is watched by `outage`), ioredis keeps reconnecting, queue commands answer 503
 * `queue_unavailable` meanwhile, and the policy is checked on the first `ready`. A wrong policy
 * found then is logged and the connection closed, so the batch routes stay unavailable rather
 * than risk evicted jobs.
 * @param check the policy check (`assertNoEviction` bound to the address)
 * @throws the policy check's error when Redis is up at start with a wrong policy; any error that
 *   is not about reaching Redis
 */
export async function connectTolerant(
  redis: { connect(): Promise<void>; disconnect(): void; once(event: "ready", f: () => void): unknown; readonly status: string },
  check: () => Promise<void>,
  log: (line: string) => void,
): Promise<void> {
  try {
    await redis.connect();
  } catch (err) {
    if (!isConnectivityError(err)) {
      redis.disconnect();
      throw err;
    }
    redis.once("ready", () => {
      check().catch((e: unknown) => {
        log(`redis: ${e instanceof Error ? e.message : String(e)}; the batch queue stays closed`);
        redis.disconnect();
      });
    });
    return;
  }
  try {
    await check();
  } catch (err) {
    redis.disconnect();
    throw err;
  }
}

const outages = new Map<string, RedisOutage>();

/** The process-wide {@link RedisOutage} of `where` (created with `log` on first use). */
export function redisOutage(where: string, log: (line: string) => void): RedisOutage {
  let o = outages.get(where);
  if (!o) {
    o = new RedisOutage(where, log);
    outages.set(where, o);
  }
  return o;
}
