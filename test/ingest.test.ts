import assert from "node:assert/strict";
import { connect } from "node:net";
import { test } from "node:test";
import { Client } from "undici";
import { UUIDV7_PATTERN } from "../src/ingest/event-id.ts";
import { openStore } from "../src/store/db.ts";
import { type IngestGateway, javaMurmur2, javaPartition, startIngestGateway } from "./ingest-fixture.ts";

interface Accepted {
  id: string;
  userID: string;
  type: string;
  receivedAt: string;
}

async function accept(g: IngestGateway, body: unknown, headers?: Record<string, string>): Promise<Accepted> {
  const res = await g.post("/api/singleEvent", body, headers);
  const text = await res.text();
  assert.equal(res.status, 202, text);
  return JSON.parse(text) as Accepted;
}

async function withGateway(env: Record<string, string>, fn: (g: IngestGateway) => Promise<void>) {
  const g = await startIngestGateway(env);
  try {
    await g.gateway.kafkaReady;
    await fn(g);
  } finally {
    await g.stop();
  }
}

test("the test's murmur2 is Kafka's (vectors from Kafka's UtilsTest)", () => {
  const vectors: Array<[string, number]> = [
    ["21", -973932308],
    ["foobar", -790332482],
    ["a-little-bit-long-string", -985981536],
    ["a-little-bit-longer-string", -1486304829],
    ["lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8", -58897971],
    ["abc", 479470107],
  ];
  for (const [input, expected] of vectors) assert.equal(javaMurmur2(Buffer.from(input)), expected, input);
});

// Every producer setting writes the same records: the default (the gateway's own Produce requests, on the
// HTTP thread), the producer on a thread of its own, and kafkajs's producer.
const VARIANTS: Array<[string, Record<string, string>]> = [
  ["", {}],
  [" (producer thread)", { INGEST_PRODUCER_THREAD: "true" }],
  [" (kafkajs's producer)", { INGEST_SENDER: "kafkajs" }],
];

for (const [label, settings] of VARIANTS) {
  test(`every accepted event is in the topic exactly once, key = userID, with the documented value${label}`, async () => {
    await withGateway(settings, async (g) => {
      const payloads: unknown[] = [
        null,
        "text",
        42,
        true,
        [1, "two"],
        { nested: { deep: [{ x: 1 }] } },
        "ünï©ødé ✓",
      ];
      const singles = await Promise.all(
        Array.from({ length: 300 }, (_, i) =>
          accept(g, {
            userID: `user-${i % 37}`,
            payload: payloads[i % payloads.length],
            ...(i % 3 === 0 ? { type: "order.paid" } : {}),
          }).then((a) => ({ ...a, payload: payloads[i % payloads.length] })),
        ),
      );
      const batchEvents = Array.from({ length: 120 }, (_, i) => ({
        userID: `batch-${i % 11}`,
        payload: { i },
      }));
      const res = await g.post("/api/events", { events: batchEvents });
      assert.equal(res.status, 202);
      const batch = (await res.json()) as { ids: string[]; receivedAt: string };
      assert.equal(batch.ids.length, batchEvents.length);

      const expected = new Map<
        string,
        { userID: string; type: string; timestamp: string; payload: unknown }
      >();
      for (const a of singles) {
        assert.match(a.id, UUIDV7_PATTERN);
        expected.set(a.id, { userID: a.userID, type: a.type, timestamp: a.receivedAt, payload: a.payload });
      }
      batchEvents.forEach((e, i) => {
        const id = batch.ids[i] as string;
        assert.match(id, UUIDV7_PATTERN);
        expected.set(id, {
          userID: e.userID,
          type: "event",
          timestamp: batch.receivedAt,
          payload: e.payload,
        });
      });
      assert.equal(expected.size, 420, "every event got its own id");
      assert.ok(singles.filter((a) => a.type === "order.paid").length === 100);

      const records = await g.readTopic();
      assert.equal(records.length, expected.size, "the topic holds exactly the accepted events");
      const seen = new Set<string>();
      for (const r of records) {
        const value = JSON.parse(r.value) as Record<string, unknown>;
        const id = value.id as string;
        assert.ok(!seen.has(id), `event ${id} is in the topic twice`);
        seen.add(id);
        const want = expected.get(id);
        assert.ok(want, `record ${id} was never accepted`);
        assert.deepEqual(Object.keys(value), ["id", "userID", "type", "timestamp", "payload"]);
        assert.deepEqual(value, { id, ...want });
        assert.equal(r.key, want.userID);
        assert.equal(r.headers["event-id"], id);
        assert.equal(r.headers["content-type"], "application/json");
        assert.equal(r.partition, javaPartition(want.userID, g.partitions), "Java-compatible partition");
      }
    });
  });

  test(`per-user order: one partition per user, in the order of the 202s, with users interleaving${label}`, async () => {
    await withGateway(settings, async (g) => {
      const users = Array.from({ length: 25 }, (_, i) => `order-user-${i}`);
      const acceptedOrder = new Map<string, string[]>();
      // Each user sends sequentially (the next request after the previous 202); users run concurrently, so
      // their requests interleave in the same group-commit batches.
      await Promise.all(
        users.map(async (user) => {
          const ids: string[] = [];
          for (let seq = 0; seq < 24; seq++) {
            const a =
              seq % 6 === 5
                ? await g
                    .post("/api/events", {
                      events: [
                        { userID: user, payload: { seq } },
                        { userID: user, payload: { seq: seq + 0.5 } },
                      ],
                    })
                    .then(async (res) => {
                      assert.equal(res.status, 202);
                      return ((await res.json()) as { ids: string[] }).ids;
                    })
                : [(await accept(g, { userID: user, payload: { seq } })).id];
            ids.push(...a);
          }
          acceptedOrder.set(user, ids);
        }),
      );

      const records = await g.readTopic();
      const byUser = new Map<string, Array<{ partition: number; offset: number; id: string }>>();
      for (const r of records) {
        const value = JSON.parse(r.value) as { id: string; userID: string };
        const list = byUser.get(value.userID) ?? [];
        list.push({ partition: r.partition, offset: r.offset, id: value.id });
        byUser.set(value.userID, list);
      }
      for (const user of users) {
        const list = byUser.get(user) ?? [];
        const partitions = new Set(list.map((x) => x.partition));
        assert.equal(partitions.size, 1, `${user} spans partitions ${[...partitions]}`);
        assert.equal([...partitions][0], javaPartition(user, g.partitions));
        list.sort((a, b) => a.offset - b.offset);
        assert.deepEqual(
          list.map((x) => x.id),
          acceptedOrder.get(user),
          `${user}'s events are in the order they were accepted`,
        );
      }
    });
  });
}

test("ingest answers alike on its direct routes and through the app's router (a percent-encoded path)", async () => {
  await withGateway({}, async (g) => {
    // serveApp answers "/api/singleEvent" (any query) itself; only the app's router decodes "%45" to "E".
    const paths = ["/api/singleEvent", "/api/singleEvent?from=test", "/api/single%45vent"];
    const answers: Accepted[] = [];
    for (const [i, path] of paths.entries()) {
      const res = await g.post(path, { userID: `route-${i}`, type: "order.paid", payload: { i } });
      const text = await res.text();
      assert.equal(res.status, 202, `${path}: ${text}`);
      assert.equal(res.headers.get("content-type"), "application/json", path);
      const a = JSON.parse(text) as Accepted;
      assert.deepEqual(Object.keys(a), ["id", "userID", "type", "receivedAt"], path);
      assert.equal(a.userID, `route-${i}`);
      assert.equal(a.type, "order.paid");
      answers.push(a);
    }
    const replay = await g.post(
      "/api/single%45vent",
      { userID: "route-0", payload: 1 },
      {
        "idempotency-key": "routed-key",
      },
    );
    assert.equal(replay.status, 202);
    const again = await g.post(
      "/api/singleEvent",
      { userID: "route-0", payload: 1 },
      {
        "idempotency-key": "routed-key",
      },
    );
    assert.equal(again.headers.get("idempotent-replayed"), "true", "the key is shared by both ways in");
    assert.deepEqual(await again.json(), await replay.json());

    // A refusal through the router is the same problem, with the path the router saw as its instance.
    for (const path of ["/api/singleEvent", "/api/single%45vent"]) {
      const res = await g.post(path, { payload: 1 });
      assert.equal(res.status, 400);
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      const p = (await res.json()) as { instance: string; errors: Array<{ field: string }> };
      assert.equal(p.instance, "/api/singleEvent");
      assert.equal(p.errors[0]?.field, "userID");
    }
    const batch = await g.post("/api/%65vents", { events: [{ userID: "route-b", payload: 2 }] });
    assert.equal(batch.status, 202, await batch.clone().text());
    const { ids } = (await batch.json()) as { ids: string[] };

    const records = await g.readTopic();
    const inTopic = new Set(records.map((r) => (JSON.parse(r.value) as { id: string }).id));
    for (const id of [...answers.map((a) => a.id), ids[0] as string]) assert.ok(inTopic.has(id), id);
    assert.equal(records.length, paths.length + 2, "three singles, the keyed one once, one batch event");
  });
});

test("an Idempotency-Key repeat returns the original answer and writes nothing new", async () => {
  await withGateway({}, async (g) => {
    const body = { userID: "idem-user", payload: { amount: 10 } };
    const first = await g.post("/api/singleEvent", body, { "idempotency-key": "key-1" });
    assert.equal(first.status, 202);
    const firstBody = await first.json();
    assert.equal(first.headers.get("idempotent-replayed"), null);

    const again = await g.post("/api/singleEvent", body, { "idempotency-key": "key-1" });
    assert.equal(again.status, 202);
    assert.equal(again.headers.get("idempotent-replayed"), "true");
    assert.deepEqual(await again.json(), firstBody);

    // Concurrent repeats: one is produced, the others answer from the store or 409 while it is in flight.
    const concurrent = await Promise.all(
      Array.from({ length: 5 }, () => g.post("/api/singleEvent", body, { "idempotency-key": "key-2" })),
    );
    for (const res of concurrent) assert.ok([202, 409].includes(res.status), String(res.status));
    const settled = await g.post("/api/singleEvent", body, { "idempotency-key": "key-2" });
    assert.equal(settled.status, 202);

    const batch = {
      events: [
        { userID: "a", payload: 1 },
        { userID: "b", payload: 2 },
      ],
    };
    const b1 = await g.post("/api/events", batch, { "idempotency-key": "batch-key" });
    const b2 = await g.post("/api/events", batch, { "idempotency-key": "batch-key" });
    assert.equal(b1.status, 202);
    assert.equal(b2.status, 202);
    assert.deepEqual(await b2.json(), await b1.json());

    // Same key, different body: refused, nothing written.
    const other = await g.post(
      "/api/singleEvent",
      { ...body, payload: { amount: 11 } },
      { "idempotency-key": "key-1" },
    );
    assert.equal(other.status, 422);
    assert.equal(other.headers.get("content-type"), "application/problem+json");
    const problem = (await other.json()) as { errors: Array<{ field: string }> };
    assert.equal(problem.errors[0]?.field, "Idempotency-Key");

    // A key is scoped to its route: the same key on the batch route is a new request.
    const scoped = await g.post("/api/events", { events: [body] }, { "idempotency-key": "key-1" });
    assert.equal(scoped.status, 202);

    const records = await g.readTopic();
    const ids = records.map((r) => (JSON.parse(r.value) as { id: string }).id);
    assert.equal(records.length, 1 + 1 + 2 + 1, `records: ${ids.join(", ")}`);
    assert.equal(new Set(ids).size, ids.length);
    assert.ok(ids.includes((firstBody as { id: string }).id));

    // The key store lives in SQLite: completed keys are there with the answer they replay.
    const store = openStore(g.dbPath);
    try {
      const rows = store.sqlite.prepare("select key, status from idempotency_keys order by key").all();
      assert.equal(rows.length, 4);
      for (const row of rows as Array<{ status: number }>) assert.equal(row.status, 202);
    } finally {
      store.close();
    }
  });
});

test("ingest API keys: a bearer key is required when INGEST_API_KEYS is set", async () => {
  await withGateway({ INGEST_API_KEYS: "key-one-abcdef, key-two-ghijkl" }, async (g) => {
    const body = { userID: "u", payload: 1 };
    const none = await g.post("/api/singleEvent", body);
    assert.equal(none.status, 401);
    assert.equal(none.headers.get("content-type"), "application/problem+json");
    assert.match(none.headers.get("www-authenticate") ?? "", /^Bearer/);
    const wrong = await g.post("/api/events", { events: [body] }, { authorization: "Bearer key-one-abcdeX" });
    assert.equal(wrong.status, 401);
    const notBearer = await g.post("/api/singleEvent", body, { authorization: "key-one-abcdef" });
    assert.equal(notBearer.status, 401);
    assert.equal(
      (await g.post("/api/singleEvent", body, { authorization: "Bearer key-two-ghijkl" })).status,
      202,
    );
    assert.equal(
      (await g.post("/api/events", { events: [body] }, { authorization: "Bearer key-one-abcdef" })).status,
      202,
    );
    // Two clients may pick the same Idempotency-Key without seeing each other's answers.
    const k1 = await g.post("/api/singleEvent", body, {
      authorization: "Bearer key-one-abcdef",
      "idempotency-key": "same",
    });
    const k2 = await g.post("/api/singleEvent", body, {
      authorization: "Bearer key-two-ghijkl",
      "idempotency-key": "same",
    });
    assert.equal(k1.status, 202);
    assert.equal(k2.status, 202);
    assert.notEqual(((await k1.json()) as Accepted).id, ((await k2.json()) as Accepted).id);
    assert.equal(await g.countRecords(), 4, "refused requests wrote nothing");
    const doc = (await (await fetch(`${g.gateway.url}/openapi.json`)).json()) as {
      components: { securitySchemes: Record<string, unknown> };
    };
    assert.ok(doc.components.securitySchemes.IngestApiKey);
  });
});

/** `ingest_batches_total` by trigger, read over `client` (one connection: the test counts the gateway's). */
async function batchTriggers(client: Client): Promise<Record<string, number>> {
  const res = await client.request({ method: "GET", path: "/metrics" });
  const text = await res.body.text();
  const counts: Record<string, number> = {};
  for (const m of text.matchAll(/^ingest_batches_total\{trigger="(\w+)"\} (\d+)$/gm)) {
    counts[m[1] as string] = Number(m[2]);
  }
  return counts;
}

/** Posts one event (or a batch of two) over `client` and returns how each trigger's count moved. */
async function postCountingTriggers(client: Client, path: "/api/singleEvent" | "/api/events") {
  const before = await batchTriggers(client);
  const event = { userID: "early-user", payload: { n: 1 } };
  const res = await client.request({
    method: "POST",
    path,
    headers: { "content-type": "application/json" },
    body: JSON.stringify(path === "/api/events" ? { events: [event, event] } : event),
  });
  const text = await res.body.text();
  assert.equal(res.statusCode, 202, text);
  const after = await batchTriggers(client);
  const moved: Record<string, number> = {};
  for (const [trigger, n] of Object.entries(after)) {
    if (n !== (before[trigger] ?? 0)) moved[trigger] = n - (before[trigger] ?? 0);
  }
  return moved;
}

for (const [label, env] of [
  ["", {}],
  [" (producer thread)", { INGEST_PRODUCER_THREAD: "true" }],
] as const) {
  test(`a batch leaves before its linger once every open connection waits on it${label}`, async () => {
    // A linger no test would sit through unnoticed: every batch below says what sent it.
    await withGateway({ BATCH_LINGER_MS: "1000", ...env }, async (g) => {
      const client = new Client(g.gateway.url, { pipelining: 1 });
      try {
        for (const path of ["/api/singleEvent", "/api/events", "/api/singleEvent"] as const) {
          assert.deepEqual(await postCountingTriggers(client, path), { all_waiting: 1 }, path);
        }
        // Another client's connection is open (idle): it could still add to the batch, so the linger runs.
        const idle = connect(Number(new URL(g.gateway.url).port), "127.0.0.1");
        await new Promise<void>((done, fail) => idle.once("connect", done).once("error", fail));
        try {
          assert.deepEqual(await postCountingTriggers(client, "/api/singleEvent"), { linger: 1 });
        } finally {
          idle.destroy();
        }
        assert.equal(await g.countRecords(), 5);
      } finally {
        await client.close();
      }
    });
  });
}

test("BATCH_SEND_EARLY=false: a batch waits out its linger even when its only client waits on it", async () => {
  await withGateway({ BATCH_LINGER_MS: "200", BATCH_SEND_EARLY: "false" }, async (g) => {
    const client = new Client(g.gateway.url, { pipelining: 1 });
    try {
      assert.deepEqual(await postCountingTriggers(client, "/api/singleEvent"), { linger: 1 });
    } finally {
      await client.close();
    }
  });
});

test("/openapi.json documents both ingest routes from their zod schemas", async () => {
  await withGateway({}, async (g) => {
    const res = await fetch(`${g.gateway.url}/openapi.json`);
    assert.equal(res.status, 200);
    const doc = (await res.json()) as {
      paths: Record<string, Record<string, { requestBody: unknown; responses: Record<string, unknown> }>>;
      components: { schemas: Record<string, { properties?: Record<string, unknown>; required?: string[] }> };
    };
    const single = doc.paths["/api/singleEvent"]?.post;
    const batch = doc.paths["/api/events"]?.post;
    assert.ok(single && batch, "both routes are in the document");
    for (const op of [single, batch]) {
      for (const status of ["202", "400", "413", "415", "503"]) assert.ok(op.responses[status], status);
      assert.ok(op.requestBody);
    }
    const input = doc.components.schemas.EventInput;
    assert.ok(input?.properties?.userID && input.properties.type && input.properties.payload);
    assert.deepEqual(input.required?.sort(), ["payload", "userID"]);
    assert.ok(doc.components.schemas.EventBatch);
    assert.ok(doc.components.schemas.AcceptedEvent);
  });
});
