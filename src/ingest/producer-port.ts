import type { RecordSink } from "../kafka/sink.ts";

/**
 * What the gateway needs of its producer: a RecordSink that connects in the background and says whether it
 * can be acknowledged now. GroupCommitProducer (same thread) and ThreadedProducer (the same producer on a
 * thread of its own) implement it.
 */
export interface IngestProducer extends RecordSink {
  /** True while a producer is connected and publish() can be acknowledged. */
  readonly ready: boolean;
  /** Starts connecting in the background, retrying with backoff until it succeeds or close() is called. */
  start(): void;
  /** Resolves the next time the producer is connected (at once if it is); stays pending once closed. */
  whenReady(): Promise<void>;
}
