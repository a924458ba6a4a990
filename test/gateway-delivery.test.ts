import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { test } from "node:test";
import pino from "pino";
import { Webhook } from "standardwebhooks";
import { loadConfig } from "../src/config.ts";
import { startGateway } from "../src/gateway.ts";
import { startIngestGateway } from "./ingest-fixture.ts";
import { type Receiver, startReceiver, waitFor } from "./receiver.ts";

const TOKEN = "test-admin-token-0123456789";
const admin = { authorization: `Bearer ${TOKEN}` };

async function json(res: Response): Promise<Record<string, unknown>> {
  return (await res.json()) as Record<string, unknown>;
}

/** Event ids a receiver accepted (2xx) for the destination registered with `?d=<tag>`. */
function acceptedFor(receiver: Receiver, tag: string): string[] {
  return receiver.requests
    .filter((r) => new URL(r.url, "http://x").searchParams.get("d") === tag)
    .map((r) => JSON.parse(r.body).id);
}

test("an event accepted right after a destination's 201 is delivered to it; earlier ones are not", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "4" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());

  const early = (await json(await gw.post("/api/singleEvent", { userID: "early", payload: {} })))
    .id as string;
  const events: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await gw.post("/api/destinations", { url: `${receiver.url}?d=${i}` }, admin);
    assert.equal(res.status, 201);
    // No pause: the very next event must reach the destination that was just registered.
    const accepted = await gw.post("/api/singleEvent", { userID: `user-${i}`, payload: { i } });
    assert.equal(accepted.status, 202);
    events.push((await json(accepted)).id as string);
  }
  // Destination i gets exactly the events accepted after its 201: events i..2.
  await waitFor(() => receiver.requests.length >= 3 + 2 + 1, "every post-registration event");
  await new Promise((r) => setTimeout(r, 1000)); // would anything extra (the early event) still arrive?
  for (let i = 0; i < 3; i++) {
    assert.deepEqual(acceptedFor(receiver, String(i)).sort(), events.slice(i).sort(), `destination ${i}`);
  }
  assert.ok(
    !receiver.requests.some((r) => JSON.parse(r.body).id === early),
    "the pre-registration event stays away",
  );
});

test("through the HTTP API: signed delivery, attempts, dead letters and replay", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  let failing = true;
  const receiver = await startReceiver((_req, res) => {
    if (failing) res.statusCode = 503;
  });
  t.after(() => receiver.close());

  const created = await gw.post(
    "/api/destinations",
    {
      url: receiver.url,
      maxAttempts: 2,
      backoffBaseMs: 10,
      backoffMaxMs: 50,
      headers: { "x-tenant": "acme" },
    },
    admin,
  );
  assert.equal(created.status, 201);
  const dest = await json(created);
  const accepted = await json(
    await gw.post("/api/singleEvent", { userID: "u1", type: "order.created", payload: { total: 42 } }),
  );

  // Two failed attempts, then the event is dead.
  let deadLetters: Array<Record<string, unknown>> = [];
  await waitFor(() => receiver.requests.length >= 2, "both attempts");
  for (let i = 0; i < 100 && deadLetters.length === 0; i++) {
    const res = await fetch(`${gw.gateway.url}/api/destinations/${dest.id}/dead-letters`, { headers: admin });
    deadLetters = (await json(res)).deadLetters as Array<Record<string, unknown>>;
    if (deadLetters.length === 0) await new Promise((r) => setTimeout(r, 100));
  }
  assert.equal(deadLetters.length, 1);
  assert.equal(deadLetters[0]?.eventId, accepted.id);
  assert.equal(deadLetters[0]?.attempts, 2);
  assert.match(String(deadLetters[0]?.lastError), /503/);

  const attemptsRes = await fetch(`${gw.gateway.url}/api/events/${accepted.id}/attempts`, { headers: admin });
  const attempts = (await json(attemptsRes)).attempts as Array<Record<string, unknown>>;
  assert.deepEqual(
    attempts.map((a) => [a.attemptNumber, a.outcome, a.statusCode]),
    [
      [1, "failed", 503],
      [2, "dead", 503],
    ],
  );
  assert.equal(attempts[0]?.userID, "u1");

  failing = false;
  const replay = await fetch(`${gw.gateway.url}/api/destinations/${dest.id}/dead-letters/replay`, {
    method: "POST",
    headers: { ...admin, "content-type": "application/json" },
    body: "{}",
  });
  assert.equal(replay.status, 202);
  assert.deepEqual(await json(replay), { replayed: 1 });
  await waitFor(() => receiver.delivered.length === 1, "the replayed delivery");

  const [delivered] = receiver.requests.slice(-1);
  assert.ok(delivered);
  assert.equal(delivered.headers["x-tenant"], "acme");
  const body = new Webhook(dest.secret as string).verify(
    delivered.body,
    delivered.headers as Record<string, string>,
  );
  assert.deepEqual(body, {
    id: accepted.id,
    userID: "u1",
    type: "order.created",
    timestamp: accepted.receivedAt,
    payload: { total: 42 },
  });
  const left = await fetch(`${gw.gateway.url}/api/destinations/${dest.id}/dead-letters`, { headers: admin });
  assert.deepEqual((await json(left)).deadLetters, []);
});

test("a gateway restarted mid-stream delivers every accepted event to every destination", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "4" });
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  await gw.gateway.kafkaReady;
  for (const tag of ["a", "b"]) {
    const res = await gw.post(
      "/api/destinations",
      { url: `${receiver.url}?d=${tag}`, maxConcurrency: 4 },
      admin,
    );
    assert.equal(res.status, 201);
  }
  const env = {
    PORT: "0",
    KAFKA_BROKERS: gw.gateway.brokers.join(","),
    DB_PATH: gw.dbPath,
    EVENTS_TOPIC: gw.topic,
    DEAD_LETTER_TOPIC: gw.deadLetterTopic,
    TOPIC_PARTITIONS: "4",
    CONSUMER_GROUP_PREFIX: gw.groupPrefix,
    LOG_LEVEL: "silent",
    ADMIN_TOKEN: TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
  };
  const accepted: string[] = [];
  const send = async (url: string, from: number, to: number) => {
    for (let i = from; i < to; i++) {
      const res = await fetch(`${url}/api/singleEvent`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify({ userID: `user-${i % 7}`, payload: { i } }),
      });
      if (res.status === 202) accepted.push(((await res.json()) as { id: string }).id);
    }
  };
  await send(gw.gateway.url, 0, 150);
  await waitFor(() => receiver.requests.length > 0, "deliveries under way");
  await gw.gateway.stop();
  const second = await startGateway(loadConfig(env), pino({ level: "silent" }));
  t.after(async () => {
    await second.stop();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${gw.dbPath}${suffix}`, { force: true });
  });
  await second.kafkaReady;
  await send(second.url, 150, 300);
  assert.equal(accepted.length, 300);
  for (const tag of ["a", "b"]) {
    await waitFor(
      () => new Set(acceptedFor(receiver, tag)).size === 300,
      `every event at destination ${tag}`,
    );
    const got = acceptedFor(receiver, tag);
    t.diagnostic(
      `destination ${tag}: ${got.length} deliveries for 300 events, ${got.length - 300} duplicates`,
    );
    assert.deepEqual(new Set(got), new Set(accepted));
  }
});
