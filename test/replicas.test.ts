/**
 * Replicas in one process each (fast; the fault suite runs them as processes on a 3-node cluster): gateways
 * with the same CONSUMER_GROUP_PREFIX and topics share destinations, idempotency keys and outcomes through
 * Kafka; each one's SQLite is a view a fresh database rebuilds.
 */
import assert from "node:assert/strict";
import { request } from "node:http";
import { test } from "node:test";
import { loadConfig } from "../src/config.ts";
import { ensureTopics } from "../src/ingest/topics.ts";
import { stateTopicSpecs } from "../src/state/shared-state.ts";
import { createTestKafka, freePort, uniqueName } from "./helpers.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };

/** Another replica of `first`'s deployment: same topics and prefix, a database of its own. */
function replicaOf(first: IngestGateway, env: Record<string, string> = {}): Promise<IngestGateway> {
  return startIngestGateway({
    ALLOW_PRIVATE_DESTINATIONS: "true",
    EVENTS_TOPIC: first.topic,
    DEAD_LETTER_TOPIC: first.deadLetterTopic,
    CONSUMER_GROUP_PREFIX: first.groupPrefix,
    TOPIC_PARTITIONS: String(first.partitions),
    ...env,
  });
}

async function get(g: IngestGateway, path: string): Promise<Response> {
  return fetch(`${g.gateway.url}${path}`, { headers: admin });
}

async function json<T>(res: Response | Promise<Response>): Promise<T> {
  const r = await res;
  const text = await r.text();
  assert.ok(r.ok, `${r.status}: ${text}`);
  return JSON.parse(text) as T;
}

async function send(g: IngestGateway, method: string, path: string, body?: unknown): Promise<Response> {
  return fetch(`${g.gateway.url}${path}`, {
    method,
    headers: { ...admin, "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

test("replicas share destinations, idempotency keys and attempts; a writer reads its own write at once", async (t) => {
  const g1 = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "4" });
  t.after(() => g1.stop());
  const g2 = await replicaOf(g1);
  t.after(() => g2.stop());
  const receiver = await startReceiver();
  t.after(() => receiver.close());

  // Registered on replica 1: readable there at once (the 201 waited for the local view), on 2 shortly.
  const created = await json<{ id: string }>(send(g1, "POST", "/api/destinations", { url: receiver.url }));
  assert.equal((await get(g1, `/api/destinations/${created.id}`)).status, 200);
  await waitFor(
    async () => (await get(g2, `/api/destinations/${created.id}`)).status === 200,
    "replica 2 sees it",
  );

  // Changed on replica 2: replica 2 answers with the change at once, replica 1 follows.
  const patched = await json<{ name: string }>(
    send(g2, "PATCH", `/api/destinations/${created.id}`, { name: "n2" }),
  );
  assert.equal(patched.name, "n2");
  assert.equal((await json<{ name: string }>(get(g2, `/api/destinations/${created.id}`))).name, "n2");
  await waitFor(
    async () => (await json<{ name: string }>(get(g1, `/api/destinations/${created.id}`))).name === "n2",
    "replica 1 sees the change",
  );

  // An Idempotency-Key answered on replica 1 gets the same answer on replica 2 once its view has the key.
  const key = { "idempotency-key": uniqueName("key") };
  const first = await g1.post("/api/singleEvent", { userID: "u1", payload: { n: 1 } }, key);
  assert.equal(first.status, 202);
  const { id } = (await first.json()) as { id: string };
  await g2.gateway.state.view.caughtUp([g2.gateway.state.topics.idempotency]);
  const repeat = await g2.post("/api/singleEvent", { userID: "u1", payload: { n: 1 } }, key);
  assert.equal(repeat.status, 202);
  assert.equal(repeat.headers.get("idempotent-replayed"), "true");
  assert.equal(((await repeat.json()) as { id: string }).id, id, "the first event's id, not a second event");
  const reused = await g2.post("/api/singleEvent", { userID: "u1", payload: { n: 2 } }, key);
  assert.equal(reused.status, 422, "the same key with another body is refused on the other replica too");

  // Delivered once, by whichever replica reads the user's partition; both replicas list the attempt.
  await waitFor(() => receiver.delivered.some((e) => e.id === id), "the event is delivered");
  for (const g of [g1, g2]) {
    await waitFor(async () => {
      const { attempts } = await json<{ attempts: Array<{ outcome: string }> }>(
        get(g, `/api/events/${id}/attempts`),
      );
      return attempts.some((a) => a.outcome === "succeeded");
    }, "every replica lists the attempt");
  }
  assert.equal(receiver.delivered.filter((e) => e.id === id).length, 1, "one delivery for two replicas");

  // A third replica with an empty database: ready only after rebuilding, then it knows everything.
  const g3 = await replicaOf(g1);
  t.after(() => g3.stop());
  assert.equal(g3.gateway.state.isReady(), true);
  const listed = await json<{ destinations: Array<{ id: string; name: string }> }>(
    get(g3, "/api/destinations"),
  );
  assert.deepEqual(
    listed.destinations.map((d) => [d.id, d.name]),
    [[created.id, "n2"]],
  );
  const { attempts } = await json<{ attempts: Array<{ outcome: string }> }>(
    get(g3, `/api/events/${id}/attempts`),
  );
  assert.ok(
    attempts.some((a) => a.outcome === "succeeded"),
    "the rebuilt view holds attempts made elsewhere",
  );
  const again = await g3.post("/api/singleEvent", { userID: "u1", payload: { n: 1 } }, key);
  assert.equal(((await again.json()) as { id: string }).id, id, "and the idempotency keys");

  // Deleted on replica 3: gone everywhere.
  assert.equal((await send(g3, "DELETE", `/api/destinations/${created.id}`)).status, 204);
  assert.equal((await get(g3, `/api/destinations/${created.id}`)).status, 404);
  for (const g of [g1, g2]) {
    await waitFor(
      async () => (await get(g, `/api/destinations/${created.id}`)).status === 404,
      "deleted everywhere",
    );
  }
});

/** POST /api/singleEvent on a connection of its own (no keep-alive): the kernel picks the listener anew. */
function postOnNewConnection(port: number, userID: string): Promise<number> {
  return new Promise((done, fail) => {
    const body = JSON.stringify({ userID, payload: { n: 1 } });
    const req = request(
      {
        host: "127.0.0.1",
        port,
        method: "POST",
        path: "/api/singleEvent",
        agent: false,
        headers: { "content-type": "application/json", "content-length": Buffer.byteLength(body) },
      },
      (res) => {
        res.resume();
        res.on("end", () => done(res.statusCode ?? 0));
      },
    );
    req.on("error", fail);
    req.end(body);
  });
}

async function acceptedBy(g: IngestGateway): Promise<number> {
  const metric = await g.gateway.metrics.ingestEvents.get();
  return metric.values.find((v) => v.labels.outcome === "accepted")?.value ?? 0;
}

test("replicas on one host share a port with HTTP_REUSE_PORT; one stops and the other keeps taking events", async (t) => {
  const port = await freePort();
  const shared = { HTTP_REUSE_PORT: "true", PORT: String(port) };
  const g1 = await startIngestGateway({ ...shared, TOPIC_PARTITIONS: "4" });
  t.after(() => g1.stop());
  const g2 = await replicaOf(g1, shared);
  t.after(() => g2.stop());
  assert.equal(g1.gateway.port, port);
  assert.equal(g2.gateway.port, port);

  // Without the setting the port is refused to a third gateway: the two really hold it together.
  await assert.rejects(replicaOf(g1, { PORT: String(port) }), /EADDRINUSE/);

  // Each request on a new connection: the kernel spreads them over both listeners.
  const statuses = await Promise.all(
    Array.from({ length: 60 }, (_, i) => postOnNewConnection(port, `user-${i % 7}`)),
  );
  assert.deepEqual(new Set(statuses), new Set([202]));
  const [a1, a2] = [await acceptedBy(g1), await acceptedBy(g2)];
  assert.equal(a1 + a2, 60);
  assert.ok(a1 > 0 && a2 > 0, `both replicas took events (${a1} and ${a2})`);

  // One replica stops (a rolling restart on one host): the other takes every new connection.
  await g1.gateway.stop();
  const after = await Promise.all(
    Array.from({ length: 20 }, (_, i) => postOnNewConnection(port, `late-${i}`)),
  );
  assert.deepEqual(new Set(after), new Set([202]));
  assert.equal(await acceptedBy(g2), a2 + 20);
  assert.equal(await g2.countRecords(), 80);
});

test("dead letters replayed on one replica are sent by the replica that reads their partition", async (t) => {
  const g1 = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "4" });
  t.after(() => g1.stop());
  const g2 = await replicaOf(g1);
  t.after(() => g2.stop());
  let failing = true;
  const receiver = await startReceiver((_req, res) => {
    if (failing) {
      res.statusCode = 500;
      res.end("no");
      return "handled";
    }
    return undefined;
  });
  t.after(() => receiver.close());
  const d = await json<{ id: string }>(
    send(g1, "POST", "/api/destinations", { url: receiver.url, maxAttempts: 1 }),
  );
  await waitFor(async () => (await get(g2, `/api/destinations/${d.id}`)).status === 200, "replica 2 sees it");
  const ids: string[] = [];
  for (let u = 0; u < 8; u++) {
    const res = await (u % 2 ? g2 : g1).post("/api/singleEvent", { userID: `user-${u}`, payload: { u } });
    ids.push(((await res.json()) as { id: string }).id);
  }
  // Each replica reads some partitions; every dead letter shows on both.
  for (const g of [g1, g2]) {
    await waitFor(async () => {
      const page = await json<{ deadLetters: unknown[] }>(get(g, `/api/destinations/${d.id}/dead-letters`));
      return page.deadLetters.length === ids.length;
    }, "every event dead-lettered, listed on both replicas");
  }
  failing = false;
  const replay = await json<{ replayed: number }>(
    send(g2, "POST", `/api/destinations/${d.id}/dead-letters/replay`, {}),
  );
  assert.equal(replay.replayed, ids.length);
  await waitFor(
    () => new Set(receiver.delivered.map((e) => e.id)).size === ids.length,
    "every replayed event sent",
  );
  assert.deepEqual(receiver.delivered.map((e) => e.id).sort(), [...ids].sort(), "each once");
  for (const g of [g1, g2]) {
    await waitFor(async () => {
      const page = await json<{ deadLetters: unknown[] }>(get(g, `/api/destinations/${d.id}/dead-letters`));
      return page.deadLetters.length === 0;
    }, "no dead letters left on either replica");
  }
});

test("state topics created by hand with the wrong cleanup policy are refused with a message naming it", async () => {
  const config = loadConfig({ CONSUMER_GROUP_PREFIX: uniqueName("wrong"), LOG_LEVEL: "silent" });
  const kafka = createTestKafka();
  const kafkaAdmin = kafka.admin();
  await kafkaAdmin.connect();
  try {
    await kafkaAdmin.createTopics({
      topics: [
        {
          topic: config.CONFIG_TOPIC,
          numPartitions: 1,
          configEntries: [{ name: "cleanup.policy", value: "delete" }],
        },
      ],
      waitForLeaders: true,
    });
    await assert.rejects(
      ensureTopics(kafka, { topics: stateTopicSpecs(config), partitions: 1 }),
      new RegExp(
        `${config.CONFIG_TOPIC.replaceAll(".", "\\.")}: cleanup\\.policy is "delete", needs "compact"`,
      ),
    );
  } finally {
    await kafkaAdmin
      .deleteTopics({ topics: [config.CONFIG_TOPIC, config.OUTCOMES_TOPIC, config.IDEMPOTENCY_TOPIC] })
      .catch(() => {});
    await kafkaAdmin.disconnect();
  }
});
