import assert from "node:assert/strict";
import { test } from "node:test";
import pino from "pino";
import { GroupCommitProducer, type IngestSenderKind } from "../src/ingest/producer.ts";
import { type InternalCluster, produceCall, wireSender } from "../src/ingest/wire-sender.ts";
import { kafkajsCluster } from "../src/kafka/kafkajs-internals.ts";
import { KafkaLog } from "../src/kafka/log-client.ts";
import { encodeProduceRequest, encodeRecordBatch } from "../src/kafka/record-batch.ts";
import { KafkaUnavailableError, type Message } from "../src/kafka/sink.ts";
import { cleanUp, createTestKafka, uniqueName } from "./helpers.ts";

const silent = pino({ level: "silent" });

/** Every record of a topic, per partition, in log order. */
async function readAll(log: KafkaLog, topic: string, partitions: number) {
  const out: string[][] = [];
  for (let p = 0; p < partitions; p++) {
    const records: string[] = [];
    let offset = 0;
    for (;;) {
      const r = await log.fetch(topic, p, offset, { maxBytes: 1 << 20, maxWaitMs: 0 });
      for (const m of r.records) {
        const headers = Object.entries(m.headers).map(([k, v]) => `${k}=${v?.toString()}`);
        records.push(`${m.key?.toString()}|${m.value?.toString()}|${headers.join(",")}`);
      }
      if (r.next >= r.highWatermark || r.records.length === 0) break;
      offset = r.next;
    }
    out.push(records);
  }
  return out;
}

test("own sender: each record lands on the partition kafkajs's producer picks, in order, with its headers", async (t) => {
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  const log = new KafkaLog(kafka);
  const topics: Record<IngestSenderKind, string> = {
    own: uniqueName("wire-own"),
    kafkajs: uniqueName("wire-kjs"),
  };
  await admin.createTopics({
    topics: Object.values(topics).map((topic) => ({ topic, numPartitions: 6 })),
    waitForLeaders: true,
  });
  t.after(() =>
    cleanUp(
      () => admin.deleteTopics({ topics: Object.values(topics) }),
      () => admin.disconnect(),
      () => log.close(),
    ),
  );
  const messages: Message[] = Array.from({ length: 300 }, (_, i) => ({
    key: `user-${i % 37}`,
    value: JSON.stringify({ i, text: "ü€" }),
    headers: { "event-id": `id-${i}`, "content-type": "application/json" },
  }));
  for (const sender of ["own", "kafkajs"] as const) {
    const producer = new GroupCommitProducer(kafka, {
      maxRecords: 40,
      maxBytes: 1 << 20,
      lingerMs: 1,
      ackTimeoutMs: 10_000,
      logger: silent,
      sender,
    });
    producer.start();
    await producer.whenReady();
    // Concurrent publishes of one and of several records, as ingest makes them.
    await Promise.all([
      ...messages.slice(0, 250).map((m) => producer.publish(topics[sender], [m])),
      producer.publish(topics[sender], messages.slice(250)),
    ]);
    await producer.close();
  }
  const own = await readAll(log, topics.own, 6);
  const reference = await readAll(log, topics.kafkajs, 6);
  assert.equal(own.flat().length, 300);
  assert.deepEqual(own, reference);
  assert.ok(own.filter((p) => p.length > 0).length >= 4, "the keys spread over the partitions");
});

test("own encoding is idempotent on the broker: the same batch sent again is written once; a gap is refused", async (t) => {
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  const topic = uniqueName("wire-idem");
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  const cluster = kafkajsCluster<InternalCluster>(kafka, "test", 0);
  t.after(() =>
    cleanUp(
      () => cluster.disconnect(),
      () => admin.deleteTopics({ topics: [topic] }),
      () => admin.disconnect(),
    ),
  );
  await cluster.connect();
  await cluster.addTargetTopic(topic);
  const leader = cluster.findTopicPartitionMetadata(topic)[0]?.leader;
  assert.equal(typeof leader, "number");
  const broker = await cluster.findBroker({ nodeId: leader as number });
  const { producerId, producerEpoch } = await broker.initProducerId({ transactionTimeout: 60_000 });
  const producer = { producerId: BigInt(producerId), producerEpoch };
  const produce = async (sequence: number, records: Message[]) => {
    const batch = encodeRecordBatch(records, producer, sequence, Date.now());
    const body = encodeProduceRequest(-1, 5000, [{ topic, partitions: [{ partition: 0, batch }] }]);
    const { partitions } = await broker.connectionPool.send(produceCall(7, body, 5000));
    assert.equal(partitions.length, 1);
    return partitions[0];
  };
  const high = async () => Number((await admin.fetchTopicOffsets(topic))[0]?.high);
  const three = [1, 2, 3].map((i) => ({ key: "k", value: `v${i}` }));

  assert.deepEqual(await produce(0, three), { topic, partition: 0, errorCode: 0, baseOffset: 0n });
  assert.equal(await high(), 3);
  // A retry of the very same batch (same producer id, epoch and sequence): acknowledged, not written again.
  const again = await produce(0, three);
  assert.equal(again?.errorCode, 0);
  assert.equal(await high(), 3);
  // The next sequence is written; a sequence that skips records is refused (OUT_OF_ORDER_SEQUENCE_NUMBER).
  assert.equal((await produce(3, [{ key: "k", value: "v4" }]))?.errorCode, 0);
  assert.equal(await high(), 4);
  assert.equal((await produce(9, [{ key: "k", value: "v5" }]))?.errorCode, 45);
  assert.equal(await high(), 4);
});

test("own sender: an error a retry cannot fix rejects the send at once, naming the partition and the error", async (t) => {
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  const topic = uniqueName("wire-too-large");
  await admin.createTopics({
    topics: [{ topic, numPartitions: 1, configEntries: [{ name: "max.message.bytes", value: "2000" }] }],
    waitForLeaders: true,
  });
  const sender = wireSender(kafka);
  t.after(() =>
    cleanUp(
      () => sender.disconnect(),
      () => admin.deleteTopics({ topics: [topic] }),
      () => admin.disconnect(),
    ),
  );
  await sender.connect();
  await sender.send(new Map([[topic, [{ key: "k", value: "small" }]]]), 5000);
  const started = performance.now();
  await assert.rejects(
    sender.send(new Map([[topic, [{ key: "k", value: "x".repeat(10_000) }]]]), 30_000),
    (err: Error) =>
      err instanceof KafkaUnavailableError && new RegExp(`${topic}/0: MESSAGE_TOO_LARGE`).test(err.message),
  );
  assert.ok(performance.now() - started < 15_000, "refused without waiting out the 30 s deadline");
  assert.equal(Number((await admin.fetchTopicOffsets(topic))[0]?.high), 1);
});
