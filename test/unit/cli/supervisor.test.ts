/** Backoffs of issue 14: the supervisor's restart delay and a batch item's wait at capacity, by hand. */
import { describe, expect, it } from "vitest";
import { restartDelayMs } from "@nest/cli/supervisor";
import { capacityDelayMs } from "@nest/gpu-worker/batch/consumer";
import { RedisOutage } from "@nest/gpu-worker/batch/redis-outage";

describe("backoffs", () => {
  it("restarts after 250 ms, doubling per consecutive crash, at most 10 s", () => {
    expect([1, 2, 3, 4, 5, 6, 7, 8].map(restartDelayMs)).toEqual([250, 500, 1000, 2000, 4000, 8000, 10000, 10000]);
  });

  it("waits Retry-After (≤ 5 s, else 1 s) plus up to 50 % jitter at capacity", () => {
    expect(capacityDelayMs(5, () => 0)).toBe(5000);
    expect(capacityDelayMs(5, () => 1)).toBe(7500);
    expect(capacityDelayMs(60, () => 0.5)).toBe(6250);
    expect(capacityDelayMs(undefined, () => 0.2)).toBe(1100);
  });
});

describe("RedisOutage", () => {
  it("logs one line per outage and turns connection errors into queue_unavailable", () => {
    const lines: string[] = [];
    const o = new RedisOutage("redis://127.0.0.1:1", (l) => lines.push(l));
    const refused = new Error("connect ECONNREFUSED 127.0.0.1:1");
    o.onError(refused);
    o.onError(refused);
    o.onError(new Error("Reached the max retries per request limit (which is 3)."));
    expect(lines).toEqual([
      "redis: unavailable at redis://127.0.0.1:1 (connect ECONNREFUSED 127.0.0.1:1); batch routes answer 503 queue_unavailable until it is back",
    ]);
    expect(o.translate(new Error("Reached the max retries per request limit (which is 3)."))).toMatchObject({
      code: "queue_unavailable",
      status: 503,
      retryAfterS: 5,
    });
    o.onReady();
    expect(lines[1]).toMatch(/^redis: back at redis:\/\/127\.0\.0\.1:1 after \d+\.\d s$/);
    const wrong = new Error("WRONGTYPE Operation against a key holding the wrong kind of value");
    expect(o.translate(wrong)).toBe(wrong);
    expect(lines.length).toBe(2);
  });
});
