import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Kafka } from "kafkajs";
import pino from "pino";
import { loadConfig } from "../src/config.ts";
import { type Gateway, startGateway } from "../src/gateway.ts";
import { createKafka } from "../src/kafka/client.ts";
import type { Logger } from "../src/log.ts";
import { testBrokers, uniqueName } from "./helpers.ts";

export interface TopicRecord {
  partition: number;
  offset: number;
  key: string | null;
  value: string;
  headers: Record<string, string>;
}

export interface IngestGateway {
  gateway: Gateway;
  kafka: Kafka;
  topic: string;
  deadLetterTopic: string;
  dbPath: string;
  partitions: number;
  /** CONSUMER_GROUP_PREFIX of this gateway (a restart on the same database passes it again). */
  groupPrefix: string;
  post(path: string, body: unknown, headers?: Record<string, string>): Promise<Response>;
  /** An admin API call with this gateway's token; a body (when given) is sent as JSON. */
  admin(method: string, path: string, body?: unknown): Promise<Response>;
  /** Every record of the events topic (its end offsets decide how many there are). */
  readTopic(): Promise<TopicRecord[]>;
  /** Number of records in the events topic, from its offsets. */
  countRecords(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * A whole gateway in-process on PORT=0 with its own topics and SQLite file, as main.ts would start it.
 * `env` overrides the test defaults (e.g. KAFKA_BROKERS of a broker the test owns).
 */
export async function startIngestGateway(
  env: Record<string, string> = {},
  opts: {
    /**
     * Wait until the gateway's view of the shared state has caught up (its admin API answers), as a
     * client waiting for /readyz would. Tests that start the gateway before Kafka pass false.
     */
    awaitState?: boolean;
    /** The gateway's logger (silent by default); a test reading what was logged passes its own. */
    logger?: Logger;
  } = {},
): Promise<IngestGateway> {
  // A replica or a restart passes the deployment's topics; the fixture deletes only topics it named itself.
  const ownsTopics = env.EVENTS_TOPIC === undefined && env.DEAD_LETTER_TOPIC === undefined;
  const topic = env.EVENTS_TOPIC ?? uniqueName("ingest");
  const deadLetterTopic = env.DEAD_LETTER_TOPIC ?? uniqueName("ingest-dead");
  const dbPath = join(tmpdir(), `${uniqueName("ingest")}.db`);
  const partitions = Number(env.TOPIC_PARTITIONS ?? 12);
  const config = loadConfig({
    PORT: "0",
    KAFKA_BROKERS: testBrokers().join(","),
    DB_PATH: dbPath,
    EVENTS_TOPIC: topic,
    DEAD_LETTER_TOPIC: deadLetterTopic,
    TOPIC_PARTITIONS: String(partitions),
    LOG_LEVEL: "silent",
    ADMIN_TOKEN: "test-admin-token-0123456789",
    // Each gateway its own delivery and progress groups (a test that restarts one passes the same prefix).
    CONSUMER_GROUP_PREFIX: uniqueName("gw"),
    ...env,
  });
  const brokers = config.KAFKA_BROKERS ?? [];
  const gateway = await startGateway(config, opts.logger ?? pino({ level: "silent" }));
  if (opts.awaitState !== false) await gateway.state.ready;
  const kafka = createKafka({
    brokers,
    clientId: uniqueName("ingest-test"),
    overrides: { retry: { retries: 3 } },
  });

  async function countRecords(): Promise<number> {
    // A fresh admin may hold metadata from before the topic's leaders settled: retry NOT_LEADER.
    for (let attempt = 1; ; attempt++) {
      const admin = kafka.admin();
      try {
        await admin.connect();
        const offsets = await admin.fetchTopicOffsets(topic);
        return offsets.reduce((sum, o) => sum + Number(o.high) - Number(o.low), 0);
      } catch (err) {
        if (attempt >= 10 || !(err as { retriable?: boolean }).retriable) throw err;
        await new Promise((done) => setTimeout(done, 200));
      } finally {
        await admin.disconnect();
      }
    }
  }

  async function readTopic(): Promise<TopicRecord[]> {
    const expected = await countRecords();
    if (expected === 0) return [];
    const consumer = kafka.consumer({ groupId: uniqueName("ingest-reader") });
    await consumer.connect();
    await consumer.subscribe({ topic, fromBeginning: true });
    const records: TopicRecord[] = [];
    try {
      await new Promise<void>((done, fail) => {
        const timer = setTimeout(
          () => fail(new Error(`read ${records.length} of ${expected} records`)),
          30_000,
        );
        void consumer.run({
          eachMessage: async ({ partition, message }) => {
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(message.headers ?? {})) headers[k] = String(v);
            records.push({
              partition,
              offset: Number(message.offset),
              key: message.key ? message.key.toString() : null,
              value: message.value ? message.value.toString() : "",
              headers,
            });
            if (records.length >= expected) {
              clearTimeout(timer);
              done();
            }
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    return records;
  }

  return {
    gateway,
    kafka,
    topic,
    deadLetterTopic,
    dbPath,
    partitions,
    groupPrefix: config.CONSUMER_GROUP_PREFIX,
    post(path, body, headers = {}) {
      return fetch(`${gateway.url}${path}`, {
        method: "POST",
        headers: { "content-type": "application/json", ...headers },
        body: typeof body === "string" ? body : JSON.stringify(body),
      });
    },
    admin(method, path, body) {
      const auth = { authorization: `Bearer ${config.adminToken}` };
      return fetch(`${gateway.url}${path}`, {
        method,
        headers: body === undefined ? auth : { ...auth, "content-type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    },
    readTopic,
    countRecords,
    async stop() {
      await gateway.stop();
      if (ownsTopics) {
        const admin = kafka.admin();
        try {
          await admin.connect();
          await admin.deleteTopics({ topics: [topic, deadLetterTopic] }).catch(() => {});
        } catch {
          // A broker the test already stopped: nothing to delete.
        } finally {
          await admin.disconnect().catch(() => {});
        }
      }
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
    },
  };
}

/**
 * Kafka's own murmur2 (org.apache.kafka.common.utils.Utils.murmur2), written out here so the tests check
 * the gateway's partitioning against Java's, not against kafkajs's copy of it.
 */
export function javaMurmur2(data: Buffer): number {
  const seed = 0x9747b28c;
  const m = 0x5bd1e995;
  const r = 24;
  const length = data.length;
  let h = seed ^ length;
  const length4 = Math.floor(length / 4);
  for (let i = 0; i < length4; i++) {
    const i4 = i * 4;
    let k =
      (data[i4] as number) |
      ((data[i4 + 1] as number) << 8) |
      ((data[i4 + 2] as number) << 16) |
      ((data[i4 + 3] as number) << 24);
    k = Math.imul(k, m);
    k ^= k >>> r;
    k = Math.imul(k, m);
    h = Math.imul(h, m);
    h ^= k;
  }
  const rest = length % 4;
  const base = length & ~3;
  if (rest === 3) h ^= (data[base + 2] as number) << 16;
  if (rest >= 2) h ^= (data[base + 1] as number) << 8;
  if (rest >= 1) {
    h ^= data[base] as number;
    h = Math.imul(h, m);
  }
  h ^= h >>> 13;
  h = Math.imul(h, m);
  h ^= h >>> 15;
  return h | 0;
}

/** The partition Java's default partitioner picks for a keyed record. */
export function javaPartition(key: string, partitions: number): number {
  return (javaMurmur2(Buffer.from(key)) & 0x7fffffff) % partitions;
}
