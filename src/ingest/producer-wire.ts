import type { KafkaSecurity } from "../kafka/client.ts";
import type { Message } from "../kafka/sink.ts";

/** What a producer thread is started with (`workerData`). */
export interface ProducerThreadData {
  brokers: string[];
  clientId: string;
  security: KafkaSecurity;
  logLevel: string;
  maxRecords: number;
  maxBytes: number;
  lingerMs: number;
  ackTimeoutMs: number;
}

/** One publish crossing to the thread: its number, topic and records. */
export type PublishItem = [seq: number, topic: string, messages: Message[]];

export type ToThread = { t: "publish"; items: PublishItem[] } | { t: "start" } | { t: "close" };

export type FromThread =
  | { t: "state"; ready: boolean }
  /** Publishes answered since the last message: acknowledged ones, failed ones, and the batches sent. */
  | {
      t: "done";
      ok: number[];
      failed: Array<[seq: number, message: string]>;
      batches: Array<[records: number, seconds: number, ok: boolean]>;
    }
  | { t: "closed" };
