import { Producer as PlatformaticProducer, ProduceAcks } from "@platformatic/kafka";
import { CompressionTypes, type ICustomPartitioner, type Kafka, type RecordMetadata } from "kafkajs";
import { describeKafkaError } from "../kafka/client.ts";
import { fastDefaultPartitioner, partitionForKey } from "../kafka/murmur2.ts";
import { KafkaUnavailableError, type Message } from "../kafka/sink.ts";

/**
 * One idempotent Kafka producer as GroupCommitProducer uses it: connect, send one batch (acks=all) at a time,
 * disconnect. After a failed batch GroupCommitProducer throws the sender away and makes a new one (a new
 * producer id), so a sender never has to recover its sequence numbers.
 */
export interface BatchSender {
  connect(): Promise<void>;
  /**
   * Resolves once Kafka acknowledged every record with acks=all — every partition the records went to
   * answered without error — and rejects otherwise.
   */
  send(topics: Map<string, Message[]>, timeoutMs: number): Promise<void>;
  disconnect(): Promise<void>;
  /** A one-line description of a connection failure, for the log. */
  describe(err: unknown): string;
}

/** "topic/partition" of each partition in `expected` with no acknowledgement in `answered`. */
function unanswered(expected: Map<string, Set<number>>, answered: Iterable<string>): string[] {
  const got = new Set(answered);
  const missing: string[] = [];
  for (const [topic, partitions] of expected) {
    for (const p of partitions) if (!got.has(`${topic}/${p}`)) missing.push(`${topic}/${p}`);
  }
  return missing;
}

function partialAck(missing: string[]): KafkaUnavailableError {
  return new KafkaUnavailableError(
    `Kafka acknowledged only part of the batch (no answer for ${missing.join(", ")})`,
  );
}

/** Wraps a partitioner so every partition it picks is noted in `assigned` (topic → partitions). */
function recordingPartitioner(
  create: ICustomPartitioner,
  assigned: Map<string, Set<number>>,
): ICustomPartitioner {
  return () => {
    const partition = create();
    return (args) => {
      const chosen = partition(args);
      let partitions = assigned.get(args.topic);
      if (!partitions) {
        partitions = new Set();
        assigned.set(args.topic, partitions);
      }
      partitions.add(chosen);
      return chosen;
    };
  };
}

/**
 * kafkajs's idempotent producer. kafkajs 2.2.4's send retry skips partitions whose leader moved to a broker
 * that had already answered the first try (its per-broker response map survives the retry), and resolves
 * without ever sending them (tulios/kafkajs#1303, #1798) — the broker-loss fault test lost acknowledged
 * events that way. So a batch counts as acknowledged only when every partition it went to answered.
 */
export function kafkajsSender(kafka: Kafka, maxInFlightRequests?: number): BatchSender {
  const assigned = new Map<string, Set<number>>();
  const producer = kafka.producer({
    idempotent: true,
    // Java-compatible murmur2 (kafkajs's DefaultPartitioner, with a 15× cheaper hash).
    createPartitioner: recordingPartitioner(fastDefaultPartitioner, assigned),
    allowAutoTopicCreation: false,
    maxInFlightRequests,
  });
  return {
    connect: () => producer.connect(),
    disconnect: () => producer.disconnect(),
    describe: (err) => describeKafkaError(kafka, err),
    async send(topics, timeoutMs) {
      assigned.clear();
      const topicMessages = [...topics].map(([topic, messages]) => ({ topic, messages }));
      const answered: RecordMetadata[] = await producer.sendBatch({
        acks: -1,
        timeout: timeoutMs,
        compression: CompressionTypes.None,
        topicMessages,
      });
      const missing = unanswered(
        assigned,
        answered.map((r) => `${r.topicName}/${r.partition}`),
      );
      if (missing.length > 0) throw partialAck(missing);
    },
  };
}

export interface PlatformaticSenderOptions {
  brokers: string[];
  clientId: string;
  /** How long one Produce request may take. */
  requestTimeoutMs: number;
}

/**
 * @platformatic/kafka's idempotent producer, measured by bench:ingest beside kafkajs (row (b)); not wired into
 * the gateway yet (bench/README.md "Issue 16" says why). The partition of each record
 * is computed here with the same murmur2 as kafkajs and the Java client, and set on the record, so both
 * clients put a user's events on the same partition and the acknowledged partitions can be checked.
 */
export function platformaticSender(opts: PlatformaticSenderOptions): BatchSender {
  const producer = new PlatformaticProducer<string | null, string | Buffer | null, string, string | Buffer>({
    clientId: opts.clientId,
    bootstrapBrokers: opts.brokers,
    idempotent: true,
    acks: ProduceAcks.ALL,
    autocreateTopics: false,
    // One try: a failed batch is refused (503) and the sender replaced, as with kafkajs.
    retries: 0,
    connectTimeout: 3000,
    timeout: opts.requestTimeoutMs,
    serializers: {
      key: (k) => (k === null || k === undefined ? undefined : Buffer.from(k)),
      value: (v) => (v === null || v === undefined ? undefined : typeof v === "string" ? Buffer.from(v) : v),
      headerKey: (k) => (k === undefined ? undefined : Buffer.from(k)),
      headerValue: (v) => (v === undefined ? undefined : typeof v === "string" ? Buffer.from(v) : v),
    },
  });
  let partitions = new Map<string, number>();
  return {
    async connect() {
      // Connects and takes a producer id.
      await producer.initIdempotentProducer({});
    },
    async disconnect() {
      await producer.close(true);
    },
    describe: (err) => (err instanceof Error ? err.message : String(err)),
    async send(topics) {
      const expected = new Map<string, Set<number>>();
      const messages = [];
      for (const [topic, list] of topics) {
        let count = partitions.get(topic);
        if (count === undefined) {
          const metadata = await producer.metadata({ topics: [topic] });
          count = metadata.topics.get(topic)?.partitionsCount;
          if (!count) throw new KafkaUnavailableError(`no metadata for topic ${topic}`);
          partitions = new Map(partitions).set(topic, count);
        }
        const used = new Set<number>();
        expected.set(topic, used);
        for (const m of list) {
          const partition = m.key === null ? 0 : partitionForKey(m.key, count);
          used.add(partition);
          messages.push({ topic, partition, key: m.key, value: m.value, headers: m.headers });
        }
      }
      const result = await producer.send({ messages });
      const missing = unanswered(
        expected,
        (result.offsets ?? []).map((o) => `${o.topic}/${o.partition}`),
      );
      if (missing.length > 0) throw partialAck(missing);
    },
  };
}
