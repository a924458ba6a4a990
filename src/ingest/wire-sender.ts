/**
 * The ingest's idempotent producer with its own Produce requests: records are encoded by
 * src/kafka/record-batch.ts and sent through the connections of a kafkajs Cluster (src/kafka/kafkajs-internals.ts),
 * which also does TLS, SASL, version negotiation, metadata and the producer id. kafkajs's own producer spent
 * most of the producer thread's 34–39 µs per ingested event encoding records (bench/README.md "Issue 16").
 *
 * Promises, as GroupCommitProducer's BatchSender contract asks:
 * - send() resolves only when every partition its records went to answered without error, with acks=all;
 * - a partition whose leader moved or whose connection broke is sent again, the same bytes with the same
 *   producer id and sequence numbers, so a copy the broker already wrote is recognised as a duplicate and
 *   not written twice (Kafka's idempotent producer); until the send's deadline;
 * - any other error rejects; GroupCommitProducer then throws this sender away (a new one takes a new producer
 *   id), so sequence numbers never have to be recovered.
 */
import { setTimeout as sleep } from "node:timers/promises";
import type { Kafka } from "kafkajs";
import { describeKafkaError } from "../kafka/client.ts";
import { KAFKA_ERROR_CODES, KAFKAJS_CONNECTION_ERRORS, kafkajsCluster } from "../kafka/kafkajs-internals.ts";
import { partitionForKey } from "../kafka/murmur2.ts";
import {
  type BatchProducer,
  decodeProduceResponse,
  encodeProduceRequest,
  encodeRecordBatch,
  type ProduceResponse,
  type ProduceTopic,
} from "../kafka/record-batch.ts";
import { KafkaUnavailableError, type Message } from "../kafka/sink.ts";
import type { BatchSender } from "./batch-sender.ts";

const PRODUCE = 0;
/** Highest Produce version spoken here (v8 adds per-record errors, v9 is a flexible version). */
const PRODUCE_MAX = 7;
/** Lowest: the first with RecordBatch (magic 2), and the oldest Kafka 4 still serves. */
const PRODUCE_MIN = 3;

interface ProduceRequest {
  apiKey: number;
  apiVersion: number;
  apiName: string;
  expectResponse: () => boolean;
  encode: () => Promise<{ buf: Buffer; buffer: Buffer }>;
}

interface ProduceDecoder {
  decode(payload: Buffer): Promise<ProduceResponse & { clientSideThrottleTime: number }>;
  parse(data: ProduceResponse): Promise<ProduceResponse>;
}

/**
 * A Produce request of `version` with `body` (from encodeProduceRequest) and the decoder of its answer, as a
 * kafkajs connection sends them: its request framing takes anything shaped like its Encoder
 * (protocol/request.js), and it waits `timeoutMs` for the answer.
 */
export function produceCall(version: number, body: Buffer, timeoutMs: number) {
  const request: ProduceRequest = {
    apiKey: PRODUCE,
    apiVersion: version,
    apiName: "Produce",
    expectResponse: () => true,
    encode: async () => ({ buf: body, buffer: body }),
  };
  const response: ProduceDecoder = {
    decode: async (payload) => {
      const decoded = decodeProduceResponse(payload, version);
      // v6+: the broker answers before throttling, and the client is to wait (KIP-219).
      return { ...decoded, clientSideThrottleTime: version >= 6 ? decoded.throttleTimeMs : 0 };
    },
    parse: async (data) => data,
  };
  return { request, response, requestTimeout: timeoutMs };
}

/** The slice of a kafkajs Broker used here (broker/index.js, network/connectionPool.js). */
export interface InternalBroker {
  nodeId: number | string | null;
  versions: Record<number, { minVersion: number; maxVersion: number }> | null;
  connectionPool: {
    send(call: ReturnType<typeof produceCall>): Promise<ProduceResponse>;
  };
  initProducerId(opts: {
    transactionTimeout: number;
  }): Promise<{ producerId: string; producerEpoch: number }>;
  disconnect(): Promise<void>;
}

/** The slice of a kafkajs Cluster used here (cluster/index.js). */
export interface InternalCluster {
  connect(): Promise<void>;
  disconnect(): Promise<void>;
  refreshMetadata(): Promise<void>;
  addTargetTopic(topic: string): Promise<void>;
  findTopicPartitionMetadata(topic: string): Array<{ partitionId: number; leader: number | null }>;
  findBroker(opts: { nodeId: number }): Promise<InternalBroker>;
  findControllerBroker(): Promise<InternalBroker>;
}

/** Errors of a request that reached no broker or no answer: the partitions are sent again. */
const CONNECTION_ERRORS = new Set([...KAFKAJS_CONNECTION_ERRORS, "KafkaJSLockTimeout"]);
/** Kafka 0.11+: a duplicate of a batch already written (older brokers); the Java client counts it as written. */
const DUPLICATE_SEQUENCE_NUMBER = 46;
const READ_UNCOMMITTED = 0;
/** Tries of InitProducerId against retriable errors (a broker loading its transaction state): ≈ 4.5 s. */
const INIT_ATTEMPTS = 10;

/** One partition's share of a send: its records, encoded once, sent as often as needed. */
interface PartitionBatch {
  topic: string;
  partition: number;
  records: number;
  batch: Buffer;
  /** Why the last try failed (for the error when the deadline passes). */
  lastError: string;
}

function errorName(err: unknown): string {
  return (err as { name?: string } | null)?.name ?? "Error";
}

/** Sequence numbers wrap to 0 after Int32 max (Kafka's DefaultRecordBatch.incrementSequence). */
function nextSequence(sequence: number, records: number): number {
  const next = sequence + records;
  return next > 0x7fffffff ? next - 0x80000000 : next;
}

export function wireSender(kafka: Kafka): BatchSender {
  return new WireSender(kafka);
}

class WireSender implements BatchSender {
  #kafka: Kafka;
  #cluster: InternalCluster;
  #producer: BatchProducer | undefined;
  /** "topic\npartition" → the next record's sequence number. */
  #sequences = new Map<string, number>();
  /** topic → leader node id per partition (index), from the last metadata this sender read. */
  #leaders = new Map<string, Array<number | null>>();
  /** Round-robin position for records without a key. */
  #roundRobin = 0;
  #brokers = new Set<InternalBroker>();
  #closed = false;

  constructor(kafka: Kafka) {
    this.#kafka = kafka;
    this.#cluster = kafkajsCluster<InternalCluster>(
      kafka,
      "the ingest producer (src/ingest/wire-sender.ts)",
      READ_UNCOMMITTED,
    );
  }

  async connect(): Promise<void> {
    await this.#cluster.connect();
    await this.#cluster.refreshMetadata();
    // A producer id without a transactional id may come from any broker. A broker that is still loading its
    // transaction state answers with a retriable error (as kafkajs's own producer does, try again).
    for (let attempt = 1; ; attempt++) {
      const broker = await this.#cluster.findControllerBroker();
      this.#brokers.add(broker);
      try {
        const { producerId, producerEpoch } = await broker.initProducerId({ transactionTimeout: 60_000 });
        this.#producer = { producerId: BigInt(producerId), producerEpoch };
        return;
      } catch (err) {
        if (this.#closed || attempt >= INIT_ATTEMPTS || !(err as { retriable?: boolean }).retriable)
          throw err;
        await sleep(100 * attempt);
      }
    }
  }

  async disconnect(): Promise<void> {
    this.#closed = true;
    await this.#cluster.disconnect().catch(() => {});
    await Promise.all([...this.#brokers].map((b) => b.disconnect().catch(() => {})));
  }

  describe(err: unknown): string {
    return describeKafkaError(this.#kafka, err);
  }

  async send(topics: Map<string, Message[]>, timeoutMs: number): Promise<void> {
    const producer = this.#producer;
    if (!producer) throw new KafkaUnavailableError("the producer is not connected");
    const deadline = performance.now() + timeoutMs;
    const timestamp = Date.now();
    let pending: PartitionBatch[] = [];
    for (const [topic, messages] of topics) {
      const byPartition = await this.#partition(topic, messages);
      for (const [partition, records] of byPartition) {
        const key = `${topic}\n${partition}`;
        const sequence = this.#sequences.get(key) ?? 0;
        pending.push({
          topic,
          partition,
          records: records.length,
          batch: encodeRecordBatch(records, producer, sequence, timestamp),
          lastError: "",
        });
      }
    }
    for (let attempt = 0; ; attempt++) {
      pending = await this.#sendOnce(pending, deadline);
      if (pending.length === 0) return;
      const left = deadline - performance.now();
      if (this.#closed || left <= 0) {
        const reasons = pending.map((p) => `${p.topic}/${p.partition}: ${p.lastError}`);
        throw new KafkaUnavailableError(`Kafka did not acknowledge ${reasons.join("; ")}`);
      }
      // A leader election takes a few hundred ms: back off, then ask who leads now.
      await sleep(Math.min(left, 50 * 2 ** Math.min(attempt, 4) * (0.8 + Math.random() * 0.4)));
      await this.#refreshLeaders().catch(() => {});
    }
  }

  /** Sends each pending partition batch once, to its leader; resolves with those to send again. */
  async #sendOnce(pending: PartitionBatch[], deadline: number): Promise<PartitionBatch[]> {
    const byLeader = new Map<number, PartitionBatch[]>();
    const retry: PartitionBatch[] = [];
    for (const p of pending) {
      const leader = this.#leaders.get(p.topic)?.[p.partition];
      if (leader === null || leader === undefined) {
        p.lastError = "no leader known";
        retry.push(p);
        continue;
      }
      let list = byLeader.get(leader);
      if (!list) {
        list = [];
        byLeader.set(leader, list);
      }
      list.push(p);
    }
    await Promise.all(
      [...byLeader].map(async ([nodeId, batches]) => {
        const failed = await this.#sendToBroker(nodeId, batches, deadline);
        for (const p of failed) retry.push(p);
      }),
    );
    return retry;
  }

  /** One Produce request to one broker; resolves with the batches to send again, rejects on a fatal error. */
  async #sendToBroker(
    nodeId: number,
    batches: PartitionBatch[],
    deadline: number,
  ): Promise<PartitionBatch[]> {
    const timeoutMs = Math.max(1, Math.round(deadline - performance.now()));
    let broker: InternalBroker;
    let response: ProduceResponse;
    try {
      broker = await this.#cluster.findBroker({ nodeId });
      this.#brokers.add(broker);
      const range = broker.versions?.[PRODUCE];
      const version = Math.min(PRODUCE_MAX, range?.maxVersion ?? PRODUCE_MIN);
      if (version < PRODUCE_MIN || (range && range.minVersion > version)) {
        throw new KafkaUnavailableError(
          `broker ${nodeId} speaks Produce v${range?.minVersion}–v${range?.maxVersion}; this gateway speaks v${PRODUCE_MIN}–v${PRODUCE_MAX}`,
        );
      }
      const body = encodeProduceRequest(-1, timeoutMs, groupByTopic(batches));
      response = await broker.connectionPool.send(produceCall(version, body, timeoutMs));
    } catch (err) {
      if (err instanceof KafkaUnavailableError || !CONNECTION_ERRORS.has(errorName(err))) throw err;
      const reason = `${errorName(err)}: ${(err as Error).message}`;
      for (const p of batches) p.lastError = reason;
      // kafkajs's broker drops a closed connection the same way (broker/index.js sendRequest).
      if (errorName(err) === "KafkaJSConnectionClosedError") await this.#dropBroker(nodeId);
      return batches;
    }
    const answers = new Map<string, number>();
    for (const r of response.partitions) answers.set(`${r.topic}\n${r.partition}`, r.errorCode);
    const retry: PartitionBatch[] = [];
    for (const p of batches) {
      const key = `${p.topic}\n${p.partition}`;
      const code = answers.get(key);
      if (code === 0 || code === DUPLICATE_SEQUENCE_NUMBER) {
        this.#sequences.set(key, nextSequence(this.#sequences.get(key) ?? 0, p.records));
        continue;
      }
      if (code === undefined) {
        p.lastError = `broker ${nodeId} did not answer for it`;
        retry.push(p);
        continue;
      }
      const known = KAFKA_ERROR_CODES.get(code);
      const name = known?.type ?? `error code ${code}`;
      if (!known?.retriable) {
        throw new KafkaUnavailableError(
          `Kafka refused ${p.topic}/${p.partition}: ${name}${known ? ` (${known.message})` : ""}`,
        );
      }
      p.lastError = name;
      retry.push(p);
    }
    return retry;
  }

  async #dropBroker(nodeId: number): Promise<void> {
    for (const b of this.#brokers) {
      if (b.nodeId === nodeId || b.nodeId === String(nodeId)) {
        this.#brokers.delete(b);
        await b.disconnect().catch(() => {});
      }
    }
  }

  /** The messages of one topic by partition: the key's murmur2 (as the Java client and kafkajs), else round robin. */
  async #partition(topic: string, messages: Message[]): Promise<Map<number, Message[]>> {
    let leaders = this.#leaders.get(topic);
    if (!leaders) {
      await this.#cluster.addTargetTopic(topic);
      leaders = this.#readLeaders(topic);
    }
    const count = leaders.length;
    if (count === 0) throw new KafkaUnavailableError(`topic ${topic} has no partitions known to this client`);
    const out = new Map<number, Message[]>();
    for (const m of messages) {
      const partition = m.key === null ? this.#roundRobin++ % count : partitionForKey(m.key, count);
      let list = out.get(partition);
      if (!list) {
        list = [];
        out.set(partition, list);
      }
      list.push(m);
    }
    return out;
  }

  #readLeaders(topic: string): Array<number | null> {
    const leaders: Array<number | null> = [];
    for (const p of this.#cluster.findTopicPartitionMetadata(topic))
      leaders[p.partitionId] = p.leader ?? null;
    this.#leaders.set(topic, leaders);
    return leaders;
  }

  async #refreshLeaders(): Promise<void> {
    await this.#cluster.refreshMetadata();
    for (const topic of this.#leaders.keys()) {
      // The partition count stays what it was: keys must keep their partition within one sender.
      const before = this.#leaders.get(topic) ?? [];
      const now = this.#readLeaders(topic);
      if (now.length !== before.length) this.#leaders.set(topic, now.slice(0, before.length));
    }
  }
}

function groupByTopic(batches: PartitionBatch[]): ProduceTopic[] {
  const topics = new Map<string, ProduceTopic>();
  for (const p of batches) {
    let t = topics.get(p.topic);
    if (!t) {
      t = { topic: p.topic, partitions: [] };
      topics.set(p.topic, t);
    }
    t.partitions.push({ partition: p.partition, batch: p.batch });
  }
  return [...topics.values()];
}
