import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { test } from "node:test";
import { Partitioners } from "kafkajs";
import { fastDefaultPartitioner, murmur2, partitionForKey } from "../src/kafka/murmur2.ts";

// Kafka's own test vectors (clients/src/test/java/org/apache/kafka/common/utils/UtilsTest.java).
test("murmur2 gives the Java client's hashes", () => {
  const cases: Array<[string, number]> = [
    ["21", -973932308],
    ["foobar", -790332482],
    ["a-little-bit-long-string", -985981536],
    ["a-little-bit-longer-string", -1486304829],
    ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
    ["abc", 479470107],
  ];
  for (const [key, hash] of cases) assert.equal(murmur2(Buffer.from(key)), hash, key);
});

test("partitionForKey and the fast partitioner pick what kafkajs's DefaultPartitioner picks", () => {
  const kafkajs = Partitioners.DefaultPartitioner();
  const fast = fastDefaultPartitioner();
  for (let i = 0; i < 20_000; i++) {
    // ASCII user ids, multi-byte UTF-8 and raw bytes of every length mod 4.
    const key = i % 3 === 0 ? `user-${i}` : i % 3 === 1 ? `üser-${i}-ß` : randomBytes(i % 41);
    const partitions = 1 + (i % 64);
    const partitionMetadata = Array.from({ length: partitions }, (_, partitionId) => ({
      partitionId,
      leader: 0,
      partitionErrorCode: 0,
      replicas: [0],
      isr: [0],
    }));
    const message = { key, value: null };
    const expected = kafkajs({ topic: "t", partitionMetadata, message });
    assert.equal(fast({ topic: "t", partitionMetadata, message }), expected, `key #${i}`);
    assert.equal(partitionForKey(key, partitions), expected, `key #${i}`);
  }
});

test("the fast partitioner keeps an explicit partition and spreads keyless records over led partitions", () => {
  const fast = fastDefaultPartitioner();
  const partitionMetadata = [0, 1, 2, 3].map((partitionId) => ({
    partitionId,
    leader: partitionId === 2 ? -1 : 0,
    partitionErrorCode: 0,
    replicas: [0],
    isr: [0],
  }));
  assert.equal(fast({ topic: "t", partitionMetadata, message: { key: "k", value: null, partition: 3 } }), 3);
  const seen = new Set<number>();
  for (let i = 0; i < 30; i++) seen.add(fast({ topic: "t", partitionMetadata, message: { value: null } }));
  assert.deepEqual([...seen].sort(), [0, 1, 3]);
});
