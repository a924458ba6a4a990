/**
 * The publishing contract the rest of the gateway uses (ingest, dead letters): Kafka-shaped, client-free.
 * GroupCommitProducer (src/ingest/producer.ts) implements it.
 */

/** One record to publish. `key` decides the partition (kafkajs's Java-compatible murmur2). */
export interface Message {
  key: string | null;
  /** null: a tombstone (a compacted topic forgets the key). */
  value: string | Buffer | null;
  headers?: Record<string, string | Buffer>;
}

/**
 * The narrow interface the rest of the gateway publishes through (ingest, and the delivery workers for
 * dead letters). `publish` resolves once every in-sync replica holds the messages (acks=all) and rejects
 * with {@link KafkaUnavailableError} otherwise — never both, never neither.
 */
export interface RecordSink {
  publish(topic: string, messages: Message[]): Promise<void>;
  /**
   * The batch being gathered may leave now instead of waiting out its linger: whoever could add to it is
   * waiting for an answer already (ingest calls it; a sink that does not gather batches need not have it).
   */
  sendNow?(): void;
  close(): Promise<void>;
}

/** Kafka did not (or could not be asked to) acknowledge the messages; the caller may retry later. */
export class KafkaUnavailableError extends Error {
  override name = "KafkaUnavailableError";
}
