import { randomUUID } from "node:crypto";
import type { RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { acceptedRollupMessage } from "../state/records.ts";
import { type AcceptedRollup, bucketOf } from "../store/stats.ts";
import type { EventInput } from "./events.ts";

/** Users one roll-up record names (the heaviest of its second); the rest count only in the per-type totals. */
export const STATS_TOP_USERS = 100;

export interface IngestRollupOptions {
  sink: Pick<RecordSink, "publish">;
  /** The outcomes topic: every replica's view reads it and adds the counts to its stats tables. */
  topic: string;
  logger: Logger;
  flushMs?: number;
}

/**
 * Counts accepted events per type and per user in memory and publishes them once a second as one record
 * on the outcomes topic, so GET /api/stats on any replica counts the events every replica accepted (Kafka
 * first, the view second, like all shared state). A crash loses at most the last second's counts.
 */
export class IngestRollup {
  readonly #replica = randomUUID();
  #opts: IngestRollupOptions;
  #types = new Map<string, number>();
  #users = new Map<string, number>();
  #bucket = 0;
  #timer: NodeJS.Timeout;

  constructor(opts: IngestRollupOptions) {
    this.#opts = opts;
    this.#timer = setInterval(() => void this.flush(), opts.flushMs ?? 1000);
    this.#timer.unref();
  }

  add(events: readonly EventInput[], at: number): void {
    const bucket = bucketOf(at);
    if (bucket !== this.#bucket && this.#types.size > 0) void this.flush();
    this.#bucket = bucket;
    for (const e of events) {
      this.#types.set(e.type, (this.#types.get(e.type) ?? 0) + 1);
      this.#users.set(e.userID, (this.#users.get(e.userID) ?? 0) + 1);
    }
  }

  async flush(): Promise<void> {
    if (this.#types.size === 0) return;
    const users = [...this.#users].sort((a, b) => b[1] - a[1]).slice(0, STATS_TOP_USERS);
    const rollup: AcceptedRollup = {
      bucket: this.#bucket,
      types: Object.fromEntries(this.#types),
      users: Object.fromEntries(users),
    };
    this.#types = new Map();
    this.#users = new Map();
    try {
      await this.#opts.sink.publish(this.#opts.topic, [acceptedRollupMessage(this.#replica, rollup)]);
    } catch (err) {
      this.#opts.logger.warn({ err }, "could not publish the ingest roll-up; its counts are lost");
    }
  }

  /** Publishes what is counted, waiting at most `waitMs` (Kafka may be gone: a stop must not hang on it). */
  async close(waitMs = 2000): Promise<void> {
    clearInterval(this.#timer);
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.flush(),
      new Promise<void>((done) => {
        timer = setTimeout(done, waitMs);
      }),
    ]);
    clearTimeout(timer);
  }
}
