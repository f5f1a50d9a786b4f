/**
 * @module batch/decoder-pool
 * Several inference hosts (one model copy and one worker thread each) behind one {@link Decoder}:
 * each job goes to the host with the fewest jobs running or queued. One host runs one job at a
 * time, so a consumer with concurrency c gets c jobs decoding in parallel only with c hosts.
 */
import type { DecodeJob } from "@nest/shared/protocol/worker";
import type { GenerateEvent } from "@nest/shared/protocol/events";
import { InferenceHost } from "../engine/inference-host.ts";
import type { Decoder } from "./consumer.ts";

export class DecoderPool implements Decoder {
  private constructor(private readonly hosts: InferenceHost[]) {}

  /**
   * Starts `numHosts` inference hosts on `modelDir` (in parallel).
   * @param threads onnxruntime intra-op threads per host (0 = its default)
   * @throws NestError `model_not_prepared` when the model cannot be loaded
   */
  static async start(modelDir: string, numHosts: number, threads = 0): Promise<DecoderPool> {
    const started = await Promise.allSettled(Array.from({ length: numHosts }, () => InferenceHost.start({ modelDir, threads })));
    const hosts = started.flatMap((r) => (r.status === "fulfilled" ? [r.value] : []));
    const failed = started.find((r): r is PromiseRejectedResult => r.status === "rejected");
    if (failed) {
      await Promise.all(hosts.map((h) => h.close()));
      throw failed.reason;
    }
    return new DecoderPool(hosts);
  }

  get model(): string {
    return this.hosts[0]!.model;
  }

  run(job: DecodeJob, signal?: AbortSignal): AsyncIterable<GenerateEvent> {
    const busy = (h: InferenceHost) => h.load.running + h.load.queued;
    const host = this.hosts.reduce((best, h) => (busy(h) < busy(best) ? h : best));
    return host.run(job, signal);
  }

  /** Stops every host's thread. */
  async close(): Promise<void> {
    await Promise.all(this.hosts.map((h) => h.close()));
  }
}
