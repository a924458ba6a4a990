import assert from "node:assert/strict";
import { test } from "node:test";
import { waitUntil } from "./helpers.ts";
import { startIngestGateway } from "./ingest-fixture.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };

const orderSchema = {
  type: "object",
  required: ["orderId", "amount"],
  properties: {
    orderId: { type: "string" },
    amount: { type: "number", minimum: 0 },
    placedAt: { type: "string", format: "date-time" },
  },
  additionalProperties: false,
};

type Problem = { errors: Array<{ field: string; message: string }> };

test("event types: catalog through the admin API, payloads validated at ingest on every replica", async (t) => {
  const gw = await startIngestGateway({ TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const req = (method: string, path: string, body?: unknown) =>
    fetch(`${gw.gateway.url}${path}`, {
      method,
      headers: body === undefined ? admin : { ...admin, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  assert.equal((await fetch(`${gw.gateway.url}/api/event-types`)).status, 401, "admin token needed");

  // Refusals name the bad part and change nothing.
  const badSchema = await req("POST", "/api/event-types", {
    name: "order.created",
    schema: { type: "objekt" },
  });
  assert.equal(badSchema.status, 400, "an object Ajv refuses");
  assert.equal(((await badSchema.json()) as Problem).errors[0]?.field, "schema");
  const unknownKeyword = await req("POST", "/api/event-types", {
    name: "order.created",
    schema: { maxLenght: 3 },
  });
  assert.equal(unknownKeyword.status, 400);
  assert.match(((await unknownKeyword.json()) as Problem).errors[0]?.message ?? "", /maxLenght/);
  const badName = await req("POST", "/api/event-types", { name: "no spaces", schema: true });
  assert.equal(badName.status, 400);
  assert.equal(((await badName.json()) as Problem).errors[0]?.field, "name");
  const numberSchema = await req("POST", "/api/event-types", { name: "order.created", schema: 0 });
  assert.equal(numberSchema.status, 400);
  assert.equal(((await numberSchema.json()) as Problem).errors[0]?.field, "schema");
  const noSchema = await req("POST", "/api/event-types", { name: "order.created" });
  assert.equal(noSchema.status, 400);
  assert.equal(((await noSchema.json()) as Problem).errors[0]?.field, "schema");
  assert.deepEqual(await (await req("GET", "/api/event-types")).json(), { eventTypes: [] });

  const created = await req("POST", "/api/event-types", {
    name: "order.created",
    description: "An order was placed",
    schema: orderSchema,
  });
  assert.equal(created.status, 201);
  const row = (await created.json()) as { name: string; schema: unknown; description: string };
  assert.deepEqual(row.schema, orderSchema);
  assert.equal((await req("POST", "/api/event-types", { name: "order.created", schema: true })).status, 409);
  const listed = (await (await req("GET", "/api/event-types")).json()) as {
    eventTypes: Array<{ name: string }>;
  };
  assert.deepEqual(
    listed.eventTypes.map((e) => e.name),
    ["order.created"],
  );
  assert.equal((await req("GET", "/api/event-types/order.created")).status, 200);
  assert.equal((await req("GET", "/api/event-types/nope")).status, 404);

  // The OpenAPI document shows the catalog as webhooks.
  const doc = (await (await fetch(`${gw.gateway.url}/openapi.json`)).json()) as {
    webhooks: Record<
      string,
      { post: { requestBody: { content: Record<string, { schema: { properties: { payload: unknown } } }> } } }
    >;
    paths: Record<string, unknown>;
  };
  assert.deepEqual(
    doc.webhooks["order.created"]?.post.requestBody.content["application/json"]?.schema.properties.payload,
    orderSchema,
  );
  assert.ok(doc.paths["/api/event-types"] && doc.paths["/api/event-types/{name}"]);

  // Ingest: a valid payload is accepted, an invalid one is a 400 listing the schema errors.
  const ok = await gw.post("/api/singleEvent", {
    userID: "u1",
    type: "order.created",
    payload: { orderId: "o1", amount: 10, placedAt: "2026-01-01T00:00:00Z" },
  });
  assert.equal(ok.status, 202);
  const before = await gw.countRecords();
  const bad = await gw.post("/api/singleEvent", {
    userID: "u1",
    type: "order.created",
    payload: { orderId: 7, amount: -1, placedAt: "yesterday", extra: true },
  });
  assert.equal(bad.status, 400);
  const problem = (await bad.json()) as Problem;
  assert.deepEqual(problem.errors.map((e) => e.field).sort(), [
    "payload",
    "payload.amount",
    "payload.orderId",
    "payload.placedAt",
  ]);
  assert.ok(problem.errors.some((e) => e.message.includes('"extra"')));
  const batch = await gw.post("/api/events", {
    events: [
      { userID: "u1", type: "order.created", payload: { orderId: "o2", amount: 1 } },
      { userID: "u1", type: "order.created", payload: { orderId: "o3" } },
    ],
  });
  assert.equal(batch.status, 400);
  assert.deepEqual(((await batch.json()) as Problem).errors, [
    { field: "events.1.payload", message: "must have required property 'amount'" },
  ]);
  // Unknown types pass by default.
  assert.equal((await gw.post("/api/singleEvent", { userID: "u1", type: "other", payload: 1 })).status, 202);
  assert.equal(await gw.countRecords(), before + 1, "refused events were not written");

  // A replica of the same deployment, refusing unknown types, validates alike from the config topic.
  const replica = await startIngestGateway({
    TOPIC_PARTITIONS: "2",
    EVENTS_TOPIC: gw.topic,
    DEAD_LETTER_TOPIC: gw.deadLetterTopic,
    CONSUMER_GROUP_PREFIX: gw.groupPrefix,
    UNKNOWN_EVENT_TYPES: "reject",
  });
  t.after(() => replica.stop());
  await replica.gateway.kafkaReady;
  const onReplica = await replica.post("/api/singleEvent", {
    userID: "u2",
    type: "order.created",
    payload: { orderId: "o4" },
  });
  assert.equal(onReplica.status, 400);
  assert.equal(((await onReplica.json()) as Problem).errors[0]?.field, "payload");
  const unknown = await replica.post("/api/singleEvent", { userID: "u2", type: "other", payload: 1 });
  assert.equal(unknown.status, 400);
  assert.equal(((await unknown.json()) as Problem).errors[0]?.field, "type");

  // PATCH the schema on the first gateway: the replica follows.
  const patched = await req("PATCH", "/api/event-types/order.created", { schema: { type: "object" } });
  assert.equal(patched.status, 200);
  assert.equal((await req("PATCH", "/api/event-types/order.created", { schema: { type: 5 } })).status, 400);
  const notASchema = await req("PATCH", "/api/event-types/order.created", { schema: 5 });
  assert.equal(notASchema.status, 400, "neither an object nor a boolean");
  await waitUntil(
    async () =>
      (await replica.post("/api/singleEvent", { userID: "u2", type: "order.created", payload: { any: 1 } }))
        .status === 202,
    "the replica applying the changed schema",
    20_000,
  );
  // DELETE: the type is unknown again (allowed on the first gateway, refused on the replica).
  assert.equal((await req("DELETE", "/api/event-types/order.created")).status, 204);
  assert.equal((await req("DELETE", "/api/event-types/order.created")).status, 404);
  assert.equal(
    (await gw.post("/api/singleEvent", { userID: "u1", type: "order.created", payload: "x" })).status,
    202,
  );
  await waitUntil(
    async () =>
      (await replica.post("/api/singleEvent", { userID: "u2", type: "order.created", payload: {} }))
        .status === 400,
    "the replica dropping the deleted type",
    20_000,
  );
});
