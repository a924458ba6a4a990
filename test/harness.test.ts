import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";
import { test } from "node:test";
import { startLocalKafka } from "../src/kafka/runner.ts";
import { createTestKafka, uniqueName } from "./helpers.ts";

function javaPids(): Set<number> {
  try {
    const out = execFileSync("pgrep", ["-f", "kafka.Kafka"], { encoding: "utf8" });
    return new Set(out.split("\n").filter(Boolean).map(Number));
  } catch {
    return new Set();
  }
}

test("the shared test broker takes and returns records", async () => {
  const kafka = createTestKafka();
  const topic = uniqueName("harness");
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 2 }], waitForLeaders: true });
  const producer = kafka.producer({ idempotent: true });
  await producer.connect();
  await producer.send({
    topic,
    acks: -1,
    messages: [
      { key: "u1", value: "one" },
      { key: "u1", value: "two" },
    ],
  });

  const consumer = kafka.consumer({ groupId: uniqueName("harness-group") });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  const seen: string[] = [];
  await new Promise<void>((done) => {
    void consumer.run({
      eachMessage: async ({ message }) => {
        seen.push(String(message.value));
        if (seen.length === 2) done();
      },
    });
  });
  await consumer.disconnect();
  await producer.disconnect();
  await admin.deleteTopics({ topics: [topic] });
  await admin.disconnect();
  assert.deepEqual(seen, ["one", "two"]);
});

test("a runner-started broker stops without leaving its JVM behind", async () => {
  const before = javaPids();
  const local = await startLocalKafka();
  const pid = local.nodes[0]?.pid;
  assert.ok(pid, "the node reports its JVM pid");
  assert.ok(javaPids().has(pid), "the JVM runs while the broker is up");
  assert.ok(!before.has(pid));
  await local.stop();
  assert.ok(!javaPids().has(pid), "stop() leaves no JVM behind");
  assert.equal(local.nodes[0]?.running, false);
});
