import assert from "node:assert/strict";
import { type TestContext, test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type Admin, CompressionTypes, type Kafka, Partitioners } from "kafkajs";
import { createKafka } from "../src/kafka/client.ts";
import { GroupNotEmptyError, KafkaLog, OffsetOutOfRangeError } from "../src/kafka/log-client.ts";
import { startLocalKafka } from "../src/kafka/runner.ts";
import { createTestKafka, uniqueName } from "./helpers.ts";

interface LogFixture {
  kafka: Kafka;
  log: KafkaLog;
  topic: string;
  /** Group ids the test used; deleted afterwards. */
  groups: string[];
  produce(
    messages: Array<{
      partition: number;
      key: string;
      value: string;
      timestamp?: number;
      headers?: Record<string, string>;
    }>,
    gzip?: boolean,
  ): Promise<void>;
}

/** A fresh topic, a connected KafkaLog and a producer on the given (default: the run's) Kafka; all cleaned up. */
async function logFixture(
  t: TestContext,
  partitions = 2,
  kafka: Kafka = createTestKafka(),
): Promise<LogFixture> {
  const topic = uniqueName("log");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: partitions }], waitForLeaders: true });
  const producer = kafka.producer({ createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const log = new KafkaLog(kafka);
  await log.connect();
  const groups: string[] = [];
  t.after(async () => {
    await log.deleteGroups(groups).catch(() => {});
    await log.close();
    await producer.disconnect();
    await admin.deleteTopics({ topics: [topic] }).catch(() => {});
    await admin.disconnect();
  });
  return {
    kafka,
    log,
    topic,
    groups,
    async produce(messages, gzip = false) {
      await producer.send({
        topic,
        compression: gzip ? CompressionTypes.GZIP : CompressionTypes.None,
        messages: messages.map((m) => ({
          ...m,
          timestamp: m.timestamp === undefined ? undefined : String(m.timestamp),
        })),
      });
    },
  };
}

/** Moves partition 0's log start to `offset` (admin.deleteTopicRecords needs the topic's metadata loaded first). */
async function deleteRecordsBefore(admin: Admin, topic: string, offset: number): Promise<void> {
  await admin.fetchTopicOffsets(topic);
  await admin.deleteTopicRecords({ topic, partitions: [{ partition: 0, offset: String(offset) }] });
}

function group(f: LogFixture): string {
  const id = uniqueName("log-group");
  f.groups.push(id);
  return id;
}

test("a KafkaLog needs kafkajs's private cluster factory and says which version lacks it", () => {
  assert.throws(() => new KafkaLog({} as Kafka), /private:Kafka:createCluster.*kafkajs 2\.2\.4/s);
});

test("commit writes member-less offsets that committed() and kafkajs admin.fetchOffsets both read", async (t) => {
  const f = await logFixture(t, 3);
  const groupId = group(f);
  assert.deepEqual(await f.log.committed(groupId, f.topic), new Map());

  await f.log.commit(groupId, f.topic, [
    { partition: 0, offset: 5, metadata: "pending=7,9" },
    { partition: 2, offset: 0 },
  ]);
  assert.deepEqual(
    await f.log.committed(groupId, f.topic),
    new Map([
      [0, 5],
      [2, 0],
    ]),
  );
  // A later commit of one partition leaves the others as they were.
  await f.log.commit(groupId, f.topic, [{ partition: 0, offset: 12 }]);
  assert.deepEqual(
    await f.log.committed(groupId, f.topic),
    new Map([
      [0, 12],
      [2, 0],
    ]),
  );

  const admin = f.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await f.log.commit(groupId, f.topic, [{ partition: 2, offset: 3, metadata: "m" }]);
  const [seen] = await admin.fetchOffsets({ groupId, topics: [f.topic] });
  assert.deepEqual(
    seen?.partitions
      .map(({ partition, offset, metadata }) => ({ partition, offset, metadata }))
      .sort((a, b) => a.partition - b.partition),
    [
      { partition: 0, offset: "12", metadata: null },
      { partition: 1, offset: "-1", metadata: null },
      { partition: 2, offset: "3", metadata: "m" },
    ],
  );
});

test("committedMany reads 50 groups; a group without commits maps to an empty map", async (t) => {
  const f = await logFixture(t, 2);
  const ids = Array.from({ length: 50 }, () => group(f));
  await Promise.all(
    ids.slice(1).map((id, i) => f.log.commit(id, f.topic, [{ partition: i % 2, offset: i * 10 }])),
  );
  const all = await f.log.committedMany(ids, f.topic);
  assert.equal(all.size, 50);
  assert.deepEqual(all.get(ids[0] as string), new Map());
  ids.slice(1).forEach((id, i) => {
    assert.deepEqual(all.get(id), new Map([[i % 2, i * 10]]), id);
  });
});

test("a commit into a group with a running kafkajs consumer is refused with Kafka's error name", async (t) => {
  const f = await logFixture(t, 1);
  const groupId = group(f);
  // A short fetch wait lets the consumer leave quickly once the test disconnects it.
  const consumer = f.kafka.consumer({ groupId, maxWaitTimeInMs: 100 });
  t.after(() => consumer.disconnect());
  const joined = new Promise<void>((done) => consumer.on(consumer.events.GROUP_JOIN, () => done()));
  await consumer.connect();
  await consumer.subscribe({ topic: f.topic });
  await consumer.run({ eachMessage: async () => {} });
  await joined;

  const refusal = await f.log.commit(groupId, f.topic, [{ partition: 0, offset: 1 }]).then(
    () => assert.fail("the commit was accepted"),
    (err: unknown) => err,
  );
  assert.ok(refusal instanceof GroupNotEmptyError, String(refusal));
  assert.match(refusal.kafkaError ?? "", /^(UNKNOWN_MEMBER_ID|ILLEGAL_GENERATION|REBALANCE_IN_PROGRESS)$/);
  assert.match(refusal.message, new RegExp(`${groupId}.*has active members.*${refusal.kafkaError}`));
  await assert.rejects(f.log.deleteGroups([groupId]), (err: unknown) => err instanceof GroupNotEmptyError);

  // Once the consumer has left, the same commit goes through.
  await consumer.disconnect();
  await f.log.commit(groupId, f.topic, [{ partition: 0, offset: 1 }]);
  assert.deepEqual(await f.log.committed(groupId, f.topic), new Map([[0, 1]]));
});

test("endOffsets, startOffsets and offsetsForTime follow the records' timestamps and deleteRecords", async (t) => {
  const f = await logFixture(t, 2);
  const base = Date.now() - 60_000;
  // Partition 0: five records one second apart; partition 1 stays empty.
  for (let i = 0; i < 5; i++) {
    await f.produce([{ partition: 0, key: `k${i}`, value: `v${i}`, timestamp: base + i * 1000 }]);
  }
  assert.deepEqual(
    await f.log.endOffsets(f.topic),
    new Map([
      [0, 5],
      [1, 0],
    ]),
  );
  assert.deepEqual(
    await f.log.startOffsets(f.topic),
    new Map([
      [0, 0],
      [1, 0],
    ]),
  );
  const at = async (ms: number) => (await f.log.offsetsForTime(f.topic, ms)).get(0);
  assert.equal(await at(base - 1), 0);
  assert.equal(await at(base), 0);
  assert.equal(await at(base + 1), 1);
  assert.equal(await at(base + 2500), 3);
  assert.equal(await at(base + 4000), 4);
  assert.equal(await at(base + 4001), 5, "after the newest record: the end offset");
  assert.equal((await f.log.offsetsForTime(f.topic, base)).get(1), 0, "an empty partition: its end offset");

  const admin = f.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await deleteRecordsBefore(admin, f.topic, 2);
  assert.equal((await f.log.startOffsets(f.topic)).get(0), 2);
  assert.equal(await at(base), 2, "a time before the log start: the first offset still there");
});

test("fetch from the middle of a batch returns exactly the records from that offset, and long-polls at the end", async (t) => {
  const f = await logFixture(t, 1);
  const batch = (from: number, n: number) =>
    Array.from({ length: n }, (_, i) => ({
      partition: 0,
      key: `key-${from + i}`,
      value: JSON.stringify({ n: from + i }),
      headers: { "event-id": `e${from + i}`, trace: "t" },
    }));
  await f.produce(batch(0, 10)); // one record batch, offsets 0–9
  await f.produce(batch(10, 10), true); // one gzip record batch, offsets 10–19

  const opts = { maxBytes: 1024 * 1024, maxWaitMs: 1000 };
  const fromThree = await f.log.fetch(f.topic, 0, 3, opts);
  assert.deepEqual(
    fromThree.records.map((r) => r.offset),
    Array.from({ length: 17 }, (_, i) => i + 3),
  );
  const r3 = fromThree.records[0];
  assert.equal(r3?.key?.toString(), "key-3");
  assert.equal(r3?.value?.toString(), '{"n":3}');
  assert.deepEqual(
    Object.fromEntries(Object.entries(r3?.headers ?? {}).map(([k, v]) => [k, v?.toString()])),
    { "event-id": "e3", trace: "t" },
  );
  assert.ok(Math.abs((r3?.timestamp ?? 0) - Date.now()) < 60_000);
  assert.equal(fromThree.next, 20);
  assert.equal(fromThree.highWatermark, 20);
  assert.equal(fromThree.logStartOffset, 0);

  const inGzip = await f.log.fetch(f.topic, 0, 15, opts);
  assert.deepEqual(
    inGzip.records.map((r) => [r.offset, r.key?.toString()]),
    [15, 16, 17, 18, 19].map((o) => [o, `key-${o}`]),
  );
  assert.equal(inGzip.next, 20);

  // A tiny maxBytes still returns one whole batch (KIP-74); following `next` reads everything once.
  const seen: number[] = [];
  for (let at = 0; at < 20; ) {
    const page = await f.log.fetch(f.topic, 0, at, { maxBytes: 1, maxWaitMs: 100 });
    assert.ok(page.next > at, `no progress at ${at}`);
    seen.push(...page.records.map((r) => r.offset));
    at = page.next;
  }
  assert.deepEqual(
    seen,
    Array.from({ length: 20 }, (_, i) => i),
  );

  // At the end the broker holds the request for maxWaitMs and answers with nothing. (A lower bound: it shows
  // the long poll, not speed.)
  const started = Date.now();
  const empty = await f.log.fetch(f.topic, 0, 20, { maxBytes: 1024, maxWaitMs: 400 });
  assert.ok(Date.now() - started >= 350, `returned after ${Date.now() - started} ms`);
  assert.deepEqual(empty.records, []);
  assert.equal(empty.next, 20);
  assert.equal(empty.highWatermark, 20);
});

test("fetch outside the log rejects with OffsetOutOfRangeError carrying the log's range", async (t) => {
  const f = await logFixture(t, 1);
  await f.produce(Array.from({ length: 5 }, (_, i) => ({ partition: 0, key: `k${i}`, value: `v${i}` })));
  const admin = f.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  await deleteRecordsBefore(admin, f.topic, 2);

  const opts = { maxBytes: 1024, maxWaitMs: 100 };
  for (const offset of [0, 6, 1000]) {
    await assert.rejects(f.log.fetch(f.topic, 0, offset, opts), (err: unknown) => {
      assert.ok(err instanceof OffsetOutOfRangeError, String(err));
      assert.deepEqual(
        [err.topic, err.partition, err.offset, err.logStartOffset, err.highWatermark],
        [f.topic, 0, offset, 2, 5],
      );
      return true;
    });
  }
  assert.deepEqual(
    (await f.log.fetch(f.topic, 0, 2, opts)).records.map((r) => r.offset),
    [2, 3, 4],
  );
});

test("fetchMany reads many partitions of several topics in one call per broker; out of range names its partition", async (t) => {
  const a = await logFixture(t, 4);
  const b = await logFixture(t, 3, a.kafka);
  await a.produce(Array.from({ length: 12 }, (_, i) => ({ partition: i % 4, key: `a${i}`, value: `a${i}` })));
  await b.produce(Array.from({ length: 9 }, (_, i) => ({ partition: i % 3, key: `b${i}`, value: `b${i}` })));
  const positions = [
    ...[0, 1, 2, 3].map((partition) => ({ topic: a.topic, partition, offset: partition === 0 ? 1 : 0 })),
    ...[0, 1, 2].map((partition) => ({ topic: b.topic, partition, offset: 0 })),
  ];
  const opts = { maxBytes: 1024 * 1024, maxBytesPerPartition: 64 * 1024, maxWaitMs: 100 };
  const results = await a.log.fetchMany(positions, opts);
  const got = new Map(results.map((r) => [`${r.topic}/${r.partition}`, r]));
  assert.equal(
    got.size,
    7,
    "an answer for every partition asked (kafkajs lists a topic once per shuffled run)",
  );
  assert.deepEqual(
    got.get(`${a.topic}/0`)?.records.map((r) => r.value?.toString()),
    ["a4", "a8"],
    "from the asked offset on",
  );
  assert.equal(got.get(`${a.topic}/0`)?.next, 3);
  assert.deepEqual(
    got.get(`${b.topic}/2`)?.records.map((r) => r.value?.toString()),
    ["b2", "b5", "b8"],
  );
  for (const r of results) assert.equal(r.highWatermark, 3);

  const beyond = positions.map((p) => (p.topic === b.topic && p.partition === 1 ? { ...p, offset: 50 } : p));
  await assert.rejects(a.log.fetchMany(beyond, opts), (err: unknown) => {
    assert.ok(err instanceof OffsetOutOfRangeError, String(err));
    assert.deepEqual([err.topic, err.partition, err.offset], [b.topic, 1, 50]);
    return true;
  });
});

test("deleteGroups removes member-less groups; unknown groups count as deleted", async (t) => {
  const f = await logFixture(t, 1);
  const ids = [group(f), group(f), group(f)];
  for (const id of ids) await f.log.commit(id, f.topic, [{ partition: 0, offset: 4 }]);
  const admin = f.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  const listed = async () => new Set((await admin.listGroups()).groups.map((g) => g.groupId));
  const before = await listed();
  assert.ok(
    ids.every((id) => before.has(id)),
    "the groups exist before",
  );

  await f.log.deleteGroups([...ids, uniqueName("never-existed")]);
  const after = await listed();
  assert.deepEqual(
    ids.filter((id) => after.has(id)),
    [],
  );
  for (const [id, offsets] of await f.log.committedMany(ids, f.topic))
    assert.deepEqual(offsets, new Map(), id);
  await f.log.deleteGroups(ids); // again: nothing left, still fine
});

// Retention of a member-less group's offsets, on a broker of its own with a one-minute retention.
// Measured: the offsets were gone 60.7 s after the commit (retention 1 min, expiry check every 1 s): Kafka
// expires a member-less group's offsets by their commit time, not by when the group became empty.
// The gateway must therefore re-commit every partition of every destination group well within
// `offsets.retention.minutes` (default 7 days), even when nothing was delivered.
test("a member-less group's committed offsets expire after offsets.retention.minutes", {
  timeout: 300_000,
}, async (t) => {
  const broker = await startLocalKafka({
    properties: { "offsets.retention.minutes": "1", "offsets.retention.check.interval.ms": "1000" },
  });
  const kafka = createKafka({ brokers: broker.brokers, clientId: uniqueName("retention") });
  // after-hooks run in the order they are added: the fixture's clean-up first, then the broker stops.
  const f = await logFixture(t, 1, kafka).catch(async (err: unknown) => {
    await broker.stop();
    throw err;
  });
  t.after(() => broker.stop());
  const groupId = group(f);
  await f.log.commit(groupId, f.topic, [{ partition: 0, offset: 7 }]);
  const committedAt = Date.now();
  assert.deepEqual(await f.log.committed(groupId, f.topic), new Map([[0, 7]]));

  const deadline = committedAt + 180_000;
  let remaining = await f.log.committed(groupId, f.topic);
  while (remaining.size > 0 && Date.now() < deadline) {
    await sleep(1000);
    remaining = await f.log.committed(groupId, f.topic);
  }
  const elapsed = Date.now() - committedAt;
  assert.equal(remaining.size, 0, `offsets still there after ${elapsed} ms`);
  t.diagnostic(`member-less offsets expired ${elapsed} ms after the commit`);
  assert.ok(elapsed >= 55_000, `expired after only ${elapsed} ms`);
});
