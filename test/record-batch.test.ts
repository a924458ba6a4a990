import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { createRequire } from "node:module";
import { test } from "node:test";
import {
  crc32c,
  decodeProduceResponse,
  encodeProduceRequest,
  encodeRecordBatch,
} from "../src/kafka/record-batch.ts";
import type { Message } from "../src/kafka/sink.ts";

// kafkajs's own decoders and checksum are the reference: they read what Kafka stores.
const require = createRequire(import.meta.url);
const kafkajsCrc32c = require("kafkajs/src/protocol/recordBatch/crc32C") as (b: Buffer) => number;
const Decoder = require("kafkajs/src/protocol/decoder") as new (b: Buffer) => unknown;
const decodeRecordBatch = require("kafkajs/src/protocol/recordBatch/v0/decoder") as (d: unknown) => Promise<{
  firstOffset: string;
  firstTimestamp: string;
  maxTimestamp: string;
  producerId: string;
  producerEpoch: number;
  firstSequence: number;
  lastOffsetDelta: number;
  partitionLeaderEpoch: number;
  inTransaction: boolean;
  records: Array<{
    offset: string;
    timestamp: string;
    key: Buffer | null;
    value: Buffer | null;
    headers: Record<string, Buffer>;
  }>;
}>;

test("crc32c: the Castagnoli check values, and the same as kafkajs's on any length", () => {
  assert.equal(crc32c(Buffer.from("123456789")), 0xe3069283);
  assert.equal(crc32c(Buffer.alloc(0)), 0);
  // RFC 3720 B.4: 32 bytes of zeros, of ones, ascending.
  assert.equal(crc32c(Buffer.alloc(32, 0)), 0x8a9136aa);
  assert.equal(crc32c(Buffer.alloc(32, 0xff)), 0x62a8ab43);
  assert.equal(crc32c(Buffer.from(Array.from({ length: 32 }, (_, i) => i))), 0x46dd794e);
  for (let length = 0; length < 300; length += 7) {
    const bytes = randomBytes(length);
    assert.equal(crc32c(bytes), kafkajsCrc32c(bytes) >>> 0, `length ${length}`);
  }
  // A range of a buffer, as the record batch checks from its attributes on.
  const bytes = randomBytes(100);
  assert.equal(crc32c(bytes, 21, 100), kafkajsCrc32c(bytes.subarray(21)) >>> 0);
});

test("a record batch reads back with kafkajs's decoder: keys, values, headers, offsets, producer fields", async () => {
  const messages: Message[] = [
    {
      key: "user-ü€",
      value: JSON.stringify({ text: "héllo ✓", n: 1 }),
      headers: { "event-id": "0193b5e0-0000-7000-8000-000000000000", "content-type": "application/json" },
    },
    { key: null, value: "no key" },
    { key: "tombstone", value: null },
    { key: "bytes", value: Buffer.from([0, 1, 2, 255]), headers: { raw: Buffer.from([9, 8]) } },
    // A value whose length needs a 3-byte varint, and enough records for 2-byte offset deltas.
    { key: "big", value: "x".repeat(20_000) },
    ...Array.from({ length: 150 }, (_, i) => ({ key: `u${i}`, value: `v${i}`, headers: { i: String(i) } })),
  ];
  const batch = encodeRecordBatch(
    messages,
    { producerId: 123_456_789_012n, producerEpoch: 7 },
    41,
    1_700_000_000_123,
  );
  const decoded = await decodeRecordBatch(new Decoder(batch));
  assert.equal(decoded.producerId, "123456789012");
  assert.equal(decoded.producerEpoch, 7);
  assert.equal(decoded.firstSequence, 41);
  assert.equal(decoded.lastOffsetDelta, messages.length - 1);
  assert.equal(decoded.firstTimestamp, "1700000000123");
  assert.equal(decoded.maxTimestamp, "1700000000123");
  assert.equal(decoded.inTransaction, false);
  assert.equal(decoded.records.length, messages.length);
  const bytes = (v: string | Buffer | null) => (v === null ? null : Buffer.from(v));
  messages.forEach((m, i) => {
    const r = decoded.records[i];
    assert.ok(r);
    assert.equal(r.offset, String(i));
    assert.equal(r.timestamp, "1700000000123");
    assert.deepEqual(r.key, bytes(m.key), `key of record ${i}`);
    assert.deepEqual(r.value, bytes(m.value), `value of record ${i}`);
    const headers = Object.fromEntries(Object.entries(m.headers ?? {}).map(([k, v]) => [k, Buffer.from(v)]));
    assert.deepEqual(r.headers, headers, `headers of record ${i}`);
  });
  // The stored checksum covers everything from the attributes on (a flipped byte breaks it).
  assert.equal(batch.readUInt32BE(17), crc32c(batch, 21));
  assert.equal(batch.readInt32BE(8), batch.length - 12);
  assert.equal(batch[16], 2);
});

test("a produce request carries each partition's batch as is; its answer decodes in v3–v7", () => {
  const a = encodeRecordBatch([{ key: "k", value: "v" }], { producerId: 1n, producerEpoch: 0 }, 0, 1);
  const b = encodeRecordBatch([{ key: "k2", value: "v2" }], { producerId: 1n, producerEpoch: 0 }, 5, 1);
  const body = encodeProduceRequest(-1, 3000, [
    {
      topic: "tópic",
      partitions: [
        { partition: 2, batch: a },
        { partition: 9, batch: b },
      ],
    },
  ]);
  assert.equal(body.readInt16BE(0), -1); // no transactional id
  assert.equal(body.readInt16BE(2), -1); // acks=all
  assert.equal(body.readInt32BE(4), 3000);
  assert.equal(body.readInt32BE(8), 1); // one topic
  const nameLength = body.readInt16BE(12);
  assert.equal(body.toString("utf8", 14, 14 + nameLength), "tópic");
  const partitionsAt = 14 + nameLength;
  assert.equal(body.readInt32BE(partitionsAt), 2);
  assert.equal(body.readInt32BE(partitionsAt + 4), 2);
  assert.equal(body.readInt32BE(partitionsAt + 8), a.length);
  const bAt = partitionsAt + 12 + a.length;
  assert.deepEqual(body.subarray(partitionsAt + 12, bAt), a);
  assert.equal(body.readInt32BE(bAt), 9);
  assert.equal(body.readInt32BE(bAt + 4), b.length);
  assert.deepEqual(body.subarray(bAt + 8), b);

  for (const version of [3, 5, 7]) {
    const partitionSize = version >= 5 ? 30 : 22;
    const answer = Buffer.alloc(4 + 2 + 5 + 4 + 2 * partitionSize + 4);
    let w = answer.writeInt32BE(1, 0);
    w = answer.writeInt16BE(5, w);
    w += answer.write("top.c", w);
    w = answer.writeInt32BE(2, w);
    for (const [partition, code, offset] of [
      [2, 0, 41n],
      [9, 6, -1n],
    ] as const) {
      w = answer.writeInt32BE(partition, w);
      w = answer.writeInt16BE(code, w);
      w = answer.writeBigInt64BE(offset, w);
      w = answer.writeBigInt64BE(-1n, w);
      if (version >= 5) w = answer.writeBigInt64BE(0n, w);
    }
    answer.writeInt32BE(17, w);
    assert.deepEqual(decodeProduceResponse(answer, version), {
      partitions: [
        { topic: "top.c", partition: 2, errorCode: 0, baseOffset: 41n },
        { topic: "top.c", partition: 9, errorCode: 6, baseOffset: -1n },
      ],
      throttleTimeMs: 17,
    });
    assert.throws(() => decodeProduceResponse(answer.subarray(0, answer.length - 6), version), RangeError);
  }
  assert.throws(() => decodeProduceResponse(Buffer.alloc(8), 8), /v8 is not supported/);
});
