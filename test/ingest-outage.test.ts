import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type LocalKafka, startLocalKafka } from "../src/kafka/runner.ts";
import { openStore } from "../src/store/db.ts";
import { freePort } from "./helpers.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";

async function expectUnavailable(res: Response): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, 503, text);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(res.headers.get("retry-after"), "1");
  assert.equal((JSON.parse(text) as { title: string }).title, "Kafka unavailable");
}

/** Group-commit batches the gateway has sent to Kafka so far (its `ingest_batch_size` histogram's count). */
async function batchesSent(g: IngestGateway): Promise<number> {
  const text = await (await fetch(`${g.gateway.url}/metrics`)).text();
  const line = text.split("\n").find((l) => l.startsWith("ingest_batch_size_count"));
  return Number(line?.split(" ")[1] ?? 0);
}

/** Posts until a 202 (each try may 503 while the producer reconnects); never a 2xx other than 202. */
async function postUntilAccepted(g: IngestGateway, body: unknown, timeoutMs = 90_000): Promise<number> {
  const deadline = Date.now() + timeoutMs;
  let refused = 0;
  for (;;) {
    const res = await g.post("/api/singleEvent", body);
    await res.body?.cancel();
    if (res.status === 202) return refused;
    assert.equal(res.status, 503);
    refused++;
    if (Date.now() > deadline) throw new Error(`ingest did not recover within ${timeoutMs} ms`);
    await sleep(200);
  }
}

// Every producer setting keeps the promise: the default (the gateway's own Produce requests, on the HTTP
// thread), the producer on a thread of its own, and kafkajs's producer.
const VARIANTS: Array<[string, Record<string, string>]> = [
  ["", {}],
  [" (producer thread)", { INGEST_PRODUCER_THREAD: "true" }],
  [" (kafkajs's producer)", { INGEST_SENDER: "kafkajs" }],
];

for (const [label, settings] of VARIANTS) {
  test(`Kafka down at start-up, killed or hung mid-run: 503 + Retry-After, then 202 again without a gateway restart${label}`, async () => {
    const port = await freePort();
    let kafka: LocalKafka | undefined;
    // The gateway starts while nothing listens on the broker port.
    const g = await startIngestGateway(
      {
        KAFKA_BROKERS: `127.0.0.1:${port}`,
        INGEST_ACK_TIMEOUT_MS: "4000",
        INGEST_RETRY_AFTER_S: "1",
        TOPIC_PARTITIONS: "3",
        ...settings,
      },
      { awaitState: false },
    );
    try {
      assert.equal((await fetch(`${g.gateway.url}/healthz`)).status, 200, "the process serves without Kafka");
      assert.equal((await fetch(`${g.gateway.url}/readyz`)).status, 503, "and reports not ready");
      await expectUnavailable(await g.post("/api/singleEvent", { userID: "u", payload: "early" }));
      await expectUnavailable(await g.post("/api/events", { events: [{ userID: "u", payload: 1 }] }));

      kafka = await startLocalKafka({ port });
      await g.gateway.kafkaReady;
      await g.gateway.state.ready;
      assert.equal((await fetch(`${g.gateway.url}/readyz`)).status, 200);
      const before = await g.post("/api/singleEvent", { userID: "u", payload: "before" });
      assert.equal(before.status, 202);
      const beforeId = ((await before.json()) as { id: string }).id;
      // The stats roll-up of that event goes out through the same producer within a second. Sent after the
      // kill, its failure (not the batch below) would tell the producer of the outage, and the batch would
      // be refused before its key is reserved: wait until it has gone out.
      const sent = await batchesSent(g);
      for (let waited = 0; (await batchesSent(g)) <= sent; waited += 50) {
        assert.ok(waited < 10_000, "the roll-up of the accepted event was not published");
        await sleep(50);
      }

      await kafka.killNode(1);
      // The producer learns of the outage from this batch: the key is reserved with its event ids, then the
      // produce fails. A later retry with the same key must send those same ids.
      const batch = {
        events: [
          { userID: "u", payload: "during-1" },
          { userID: "v", payload: "during-2" },
        ],
      };
      await expectUnavailable(await g.post("/api/events", batch, { "idempotency-key": "outage-key" }));
      await expectUnavailable(await g.post("/api/singleEvent", { userID: "u", payload: "during" }));
      const store = openStore(g.dbPath);
      let reserved: { ids: string[] };
      try {
        const row = store.sqlite
          .prepare("select status, response from idempotency_keys where key like '%outage-key'")
          .get() as { status: number; response: string };
        assert.equal(row.status, 0, "reserved, not completed");
        reserved = JSON.parse(row.response) as { ids: string[] };
      } finally {
        store.close();
      }

      await kafka.restartNode(1);
      const refusedWhileRecovering = await postUntilAccepted(g, { userID: "u", payload: "after" });
      assert.ok(refusedWhileRecovering >= 0);

      const retry = await g.post("/api/events", batch, { "idempotency-key": "outage-key" });
      assert.equal(retry.status, 202);
      assert.deepEqual(
        ((await retry.json()) as { ids: string[] }).ids,
        reserved.ids,
        "the retry re-sent the same ids",
      );

      // A hung broker (JVM stopped, connections open): no acknowledgement within INGEST_ACK_TIMEOUT_MS → 503.
      const pid = kafka.nodes[0]?.pid;
      assert.ok(pid);
      process.kill(pid, "SIGSTOP");
      try {
        await expectUnavailable(await g.post("/api/singleEvent", { userID: "u", payload: "hung" }));
      } finally {
        process.kill(pid, "SIGCONT");
      }
      await postUntilAccepted(g, { userID: "u", payload: "after-hang" });

      const records = await g.readTopic();
      const ids = records.map((r) => (JSON.parse(r.value) as { id: string }).id);
      assert.ok(ids.includes(beforeId), "the event accepted before the outage survived it");
      for (const id of reserved.ids) assert.ok(ids.includes(id), `retried event ${id} is in the topic`);
      const payloads = records.map((r) => (JSON.parse(r.value) as { payload: unknown }).payload);
      assert.ok(payloads.includes("after") && payloads.includes("after-hang"));
      assert.ok(!payloads.includes("early"), "nothing refused before Kafka was up was written");
    } finally {
      await g.stop();
      await kafka?.stop();
    }
  });
}
