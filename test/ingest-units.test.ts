import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import { isoTime, UUIDV7_PATTERN, uuidv7, uuidv7Time } from "../src/ingest/event-id.ts";
import { type BatchTrigger, GroupCommitProducer } from "../src/ingest/producer.ts";
import { type PublishWire, packPublish, unpackPublishes } from "../src/ingest/producer-wire.ts";
import { ensureTopics } from "../src/ingest/topics.ts";
import { KafkaUnavailableError, type Message } from "../src/kafka/sink.ts";
import { openStore } from "../src/store/db.ts";
import {
  completeIdempotencyKey,
  findIdempotencyKey,
  purgeExpiredIdempotencyKeys,
  RESERVED,
  reserveIdempotencyKey,
} from "../src/store/idempotency.ts";
import { createTestKafka, uniqueName } from "./helpers.ts";

const silent = pino({ level: "silent" });

test("uuidv7: RFC 9562 layout, the current time, strictly increasing, unique", () => {
  const before = Date.now();
  const ids = Array.from({ length: 50_000 }, () => uuidv7());
  const after = Date.now();
  for (const id of ids.slice(0, 1000)) assert.match(id, UUIDV7_PATTERN);
  const t = uuidv7Time(ids[0] as string);
  assert.ok(t >= before && t <= after + 1, `${t} within [${before}, ${after}]`);
  for (let i = 1; i < ids.length; i++) {
    assert.ok((ids[i - 1] as string) < (ids[i] as string), `ids[${i}] sorts after ids[${i - 1}]`);
  }
  assert.equal(new Set(ids).size, ids.length);
  // Thousands of ids in one millisecond keep their order (the counter borrows the next millisecond).
  const sameMs = Array.from({ length: 10_000 }, () => uuidv7(1_700_000_000_000));
  for (let i = 1; i < sameMs.length; i++) assert.ok((sameMs[i - 1] as string) < (sameMs[i] as string));
  assert.equal(uuidv7Time("017f22e2-79b0-7cc3-98c4-dc0c0c07398f"), 0x017f22e279b0);
});

test("isoTime: the same text as toISOString for every millisecond, asked in any order", () => {
  const base = Date.UTC(2026, 11, 4, 23, 59, 59, 998);
  for (const ms of [base, base, base + 1, base + 2, base, 0, -1, 8.64e15, base + 2]) {
    assert.equal(isoTime(ms), new Date(ms).toISOString());
  }
});

test("producer thread wire: publishes survive packing and a structured clone unchanged, Buffers as Buffers", () => {
  const publishes: Array<[number, string, Message[]]> = [
    [
      1,
      "events",
      [{ key: "u1", value: '{"a":1}', headers: { "event-id": "e1", "content-type": "application/json" } }],
    ],
    [
      7,
      "state",
      [
        { key: "k", value: null },
        { key: null, value: Buffer.from([0, 1, 2, 255]), headers: { bin: Buffer.from("héllo"), text: "t" } },
        { key: "x", value: "", headers: {} },
      ],
    ],
    [9, "events", []],
  ];
  const wire: PublishWire = [];
  for (const [seq, topic, messages] of publishes) packPublish(wire, seq, topic, messages);
  const got: Array<[number, string, Message[]]> = [];
  unpackPublishes(structuredClone(wire), (seq, topic, messages) => got.push([seq, topic, messages]));
  // An empty headers object comes back as none: kafkajs writes both as zero headers.
  const expected = publishes.map(([seq, topic, messages]) => [
    seq,
    topic,
    messages.map((m) =>
      m.headers && Object.keys(m.headers).length === 0 ? { key: m.key, value: m.value } : m,
    ),
  ]);
  assert.deepEqual(got, expected);
  const binary = got[1]?.[2][1];
  assert.ok(
    Buffer.isBuffer(binary?.value) && Buffer.isBuffer(binary?.headers?.bin),
    "Buffers, not Uint8Arrays",
  );
});

test("idempotency store: reserve once, complete, expire, purge", () => {
  const path = join(tmpdir(), `${uniqueName("idem")}.db`);
  const store = openStore(path);
  try {
    const row = { key: "k", requestHash: "h", response: '{"ids":["a"]}', createdAt: 1000, expiresAt: 2000 };
    assert.equal(reserveIdempotencyKey(store.db, row), true);
    assert.equal(reserveIdempotencyKey(store.db, { ...row, requestHash: "other" }), false, "live key kept");
    assert.equal(findIdempotencyKey(store.db, "k", 1500)?.status, RESERVED);
    completeIdempotencyKey(store.db, "k", 202);
    assert.equal(findIdempotencyKey(store.db, "k", 1500)?.status, 202);
    assert.equal(findIdempotencyKey(store.db, "k", 2000), undefined, "expired keys are not found");
    // An expired key is replaced by a new reservation.
    assert.equal(
      reserveIdempotencyKey(store.db, { ...row, requestHash: "new", createdAt: 2500, expiresAt: 3000 }),
      true,
    );
    assert.equal(findIdempotencyKey(store.db, "k", 2600)?.requestHash, "new");
    assert.equal(findIdempotencyKey(store.db, "k", 2600)?.status, RESERVED);
    reserveIdempotencyKey(store.db, { ...row, key: "old", createdAt: 10, expiresAt: 20 });
    assert.equal(purgeExpiredIdempotencyKeys(store.db, 2600), 1);
    assert.equal(purgeExpiredIdempotencyKeys(store.db, 3000), 1);
  } finally {
    store.close();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
  }
});

test("ensureTopics creates missing topics once and leaves existing ones alone", async () => {
  const kafka = createTestKafka();
  const a = uniqueName("ensure-a");
  const b = uniqueName("ensure-b");
  const admin = kafka.admin();
  await admin.connect();
  try {
    await admin.createTopics({ topics: [{ topic: a, numPartitions: 2 }], waitForLeaders: true });
    const first = await ensureTopics(kafka, { topics: [a, b], partitions: 5 });
    assert.deepEqual(first.created, [b]);
    assert.deepEqual(first.existing, [a]);
    assert.equal(first.replicationFactor, 1, "min(3, brokers) on a one-broker cluster");
    const second = await ensureTopics(kafka, { topics: [a, b], partitions: 5 });
    assert.deepEqual(second.created, []);
    const meta = await admin.fetchTopicMetadata({ topics: [a, b] });
    const partitions = Object.fromEntries(meta.topics.map((t) => [t.name, t.partitions.length]));
    assert.deepEqual(partitions, { [a]: 2, [b]: 5 });
  } finally {
    await admin.deleteTopics({ topics: [a, b] }).catch(() => {});
    await admin.disconnect();
  }
});

test("group commit: concurrent publishes share batches, span topics, split at maxRecords, all acknowledged", async () => {
  const kafka = createTestKafka();
  const t1 = uniqueName("gc-1");
  const t2 = uniqueName("gc-2");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [
      { topic: t1, numPartitions: 3 },
      { topic: t2, numPartitions: 1 },
    ],
    waitForLeaders: true,
  });
  const batches: number[] = [];
  const producer = new GroupCommitProducer(kafka, {
    maxRecords: 50,
    maxBytes: 1024 * 1024,
    lingerMs: 5,
    ackTimeoutMs: 10_000,
    logger: silent,
    onBatch: (records, _seconds, ok) => {
      assert.ok(ok);
      batches.push(records);
    },
  });
  try {
    await assert.rejects(producer.publish(t1, [{ key: "k", value: "v" }]), KafkaUnavailableError);
    producer.start();
    await producer.whenReady();
    assert.equal(producer.ready, true);

    const msg = (i: number): Message => ({ key: `user-${i % 7}`, value: JSON.stringify({ i }) });
    await Promise.all(
      Array.from({ length: 400 }, (_, i) => producer.publish(i % 4 === 0 ? t2 : t1, [msg(i)])),
    );
    const total = batches.reduce((s, n) => s + n, 0);
    assert.equal(total, 400);
    assert.ok(
      batches.every((n) => n <= 50),
      `no batch over maxRecords: ${batches}`,
    );
    assert.ok(batches.length < 400 / 5, `publishes were grouped: ${batches.length} batches`);

    // A publish larger than maxRecords still goes out (alone) rather than being split across batches.
    await producer.publish(
      t1,
      Array.from({ length: 120 }, (_, i) => msg(i)),
    );
    assert.equal(batches.at(-1), 120);

    const offsets = async (topic: string) =>
      (await admin.fetchTopicOffsets(topic)).reduce((s, o) => s + Number(o.high), 0);
    assert.equal(await offsets(t1), 300 + 120);
    assert.equal(await offsets(t2), 100);
  } finally {
    await producer.close();
    await assert.rejects(producer.publish(t1, [{ key: "k", value: "v" }]), KafkaUnavailableError);
    await admin.deleteTopics({ topics: [t1, t2] }).catch(() => {});
    await admin.disconnect();
  }
});

test("group commit: sendNow() lets the open batch leave without its linger; each batch says what sent it", {
  timeout: 30_000,
}, async () => {
  const kafka = createTestKafka();
  const topic = uniqueName("gc-now");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const sent: Array<[number, BatchTrigger]> = [];
  const producer = new GroupCommitProducer(kafka, {
    maxRecords: 3,
    maxBytes: 1024 * 1024,
    // Longer than the test may run: only sendNow(), size or close() can send a batch here.
    lingerMs: 600_000,
    ackTimeoutMs: 10_000,
    logger: silent,
    onBatch: (records, _seconds, ok, trigger) => {
      assert.ok(ok);
      sent.push([records, trigger]);
    },
  });
  try {
    producer.start();
    await producer.whenReady();
    producer.sendNow(); // nothing open: nothing happens
    const msg = (i: number): Message => ({ key: `user-${i}`, value: `${i}` });
    // Three fill a batch, which leaves at once; the fourth opens the next, told to leave while the first is
    // still in flight: it goes as soon as the first is answered.
    const full = [0, 1, 2].map((i) => producer.publish(topic, [msg(i)]));
    const fourth = producer.publish(topic, [msg(3)]);
    producer.sendNow();
    await Promise.all([...full, fourth]);
    assert.deepEqual(sent, [
      [3, "size"],
      [1, "all_waiting"],
    ]);
    // Left open, a batch goes at close().
    const fifth = producer.publish(topic, [msg(4)]);
    await producer.close();
    await fifth;
    assert.deepEqual(sent.at(-1), [1, "shutdown"]);
    const offsets = await admin.fetchTopicOffsets(topic);
    assert.equal(
      offsets.reduce((n, o) => n + Number(o.high), 0),
      5,
    );
  } finally {
    await producer.close();
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  }
});

test("group commit: close() sends what is queued before disconnecting", async () => {
  const kafka = createTestKafka();
  const topic = uniqueName("gc-close");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }], waitForLeaders: true });
  const producer = new GroupCommitProducer(kafka, {
    maxRecords: 1000,
    maxBytes: 1024 * 1024,
    lingerMs: 200,
    ackTimeoutMs: 10_000,
    logger: silent,
  });
  try {
    producer.start();
    await producer.whenReady();
    const pending = Array.from({ length: 10 }, (_, i) =>
      producer.publish(topic, [{ key: null, value: `${i}` }]),
    );
    await producer.close();
    await Promise.all(pending);
    const [offset] = await admin.fetchTopicOffsets(topic);
    assert.equal(Number(offset?.high), 10);
  } finally {
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  }
});
