/**
 * kafkajs 2.2.4's request queue, as the gateway runs it (src/kafka/kafkajs-internals.ts
 * stopRequestQueueSpin, applied when src/kafka/client.ts loads): it re-checks its queue only while a
 * request waits or a throttle runs, instead of spinning a 1 ms timer loop on every connection.
 */
import assert from "node:assert/strict";
import { createRequire } from "node:module";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import "../src/kafka/client.ts";
import { createTestKafka } from "./helpers.ts";

const require = createRequire(import.meta.url);

interface Queue {
  pending: unknown[];
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  push(request: {
    entry: { correlationId: number; apiKey: number; apiName: string; apiVersion: number };
    expectResponse: boolean;
    sendRequest: () => void;
  }): void;
  fulfillRequest(response: { correlationId: number; payload: Buffer; size: number }): void;
  maybeThrottle(ms: number): void;
  checkPendingRequests(): void;
  destroy(): void;
}

type QueueClass = { new (opts: Record<string, unknown>): Queue; prototype: Queue };

const RequestQueue = require("kafkajs/src/network/requestQueue/index.js") as QueueClass;
const silent = { debug() {}, info() {}, warn() {}, error() {} };

/** Counts calls of checkPendingRequests on every queue while `during` runs. */
async function countChecks(during: () => Promise<void>): Promise<number> {
  const original = RequestQueue.prototype.checkPendingRequests;
  let calls = 0;
  RequestQueue.prototype.checkPendingRequests = function (this: Queue) {
    calls++;
    original.call(this);
  };
  try {
    await during();
  } finally {
    RequestQueue.prototype.checkPendingRequests = original;
  }
  return calls;
}

function newQueue(maxInFlightRequests: number): Queue {
  return new RequestQueue({
    maxInFlightRequests,
    requestTimeout: 30_000,
    enforceRequestTimeout: false,
    clientId: "test",
    broker: "127.0.0.1:1",
    logger: silent,
    isConnected: () => true,
  });
}

/** A request the queue sends by calling `sent.push(id)`; answered with fulfillRequest. */
function request(id: number, sent: number[]) {
  return {
    entry: { correlationId: id, apiKey: 3, apiName: "Metadata", apiVersion: 6, resolve() {}, reject() {} },
    expectResponse: true,
    sendRequest: () => sent.push(id),
  };
}

test("a request queue with nothing queued arms no timer, and still sends what it had to queue", async (t) => {
  const queue = newQueue(1);
  t.after(() => queue.destroy());
  const sent: number[] = [];
  queue.push(request(1, sent));
  queue.push(request(2, sent)); // over maxInFlightRequests: queued, and a re-check armed
  assert.deepEqual(sent, [1]);
  assert.equal(queue.pending.length, 1);
  assert.notEqual(queue.throttleCheckTimeoutId, null, "a queued request is re-checked on a timer");

  queue.fulfillRequest({ correlationId: 1, payload: Buffer.alloc(0), size: 0 });
  assert.deepEqual(sent, [1, 2], "an answer sends the next queued request");
  await sleep(20); // the armed re-check runs once and finds nothing queued
  queue.fulfillRequest({ correlationId: 2, payload: Buffer.alloc(0), size: 0 });
  assert.equal(queue.pending.length, 0);
  assert.equal(queue.throttleCheckTimeoutId, null, "nothing queued: no timer");
  const idle = await countChecks(() => sleep(100));
  assert.equal(idle, 0, `an idle queue checked itself ${idle} times in 100 ms`);

  // A throttle still holds back what is pushed during it, and releases it when it ends.
  queue.maybeThrottle(40);
  queue.push(request(3, sent));
  assert.deepEqual(sent, [1, 2], "throttled: queued");
  const started = Date.now();
  while (sent.length < 3 && Date.now() - started < 2000) await sleep(5);
  assert.deepEqual(sent, [1, 2, 3], "sent once the throttle ended");
  assert.ok(Date.now() - started >= 30, "not before the throttle ended");
});

test("connected kafkajs clients do not spin: an idle connection checks its queue no more than a few times", async (t) => {
  const admin = createTestKafka().admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  // Requests answered on the connection: before the fix each answer left a 1 ms timer loop behind.
  await admin.listTopics();
  await admin.fetchTopicMetadata({ topics: [] });
  const checks = await countChecks(() => sleep(300));
  // kafkajs 2.2.4 unpatched: about one check per millisecond per connection (≈ 300 here).
  assert.ok(checks <= 5, `an idle admin client checked its request queues ${checks} times in 300 ms`);
});
