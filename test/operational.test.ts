import assert from "node:assert/strict";
import { test } from "node:test";
import { Webhook } from "standardwebhooks";
import { startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };

interface Op {
  type: string;
  userID: string;
  payload: { destinationId: string; reason?: string; eventId?: string };
}

test("auto-disable after dead letters in a row, operational webhooks to operator endpoints, enable and recovery", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  let failing = true;
  const receiver = await startReceiver((_req, res) => {
    if (failing) res.statusCode = 503;
  });
  t.after(() => receiver.close());
  const operator = await startReceiver();
  t.after(() => operator.close());
  const api = gw.admin;

  const opRes = await api("POST", "/api/operational-destinations", { url: operator.url, name: "on-call" });
  assert.equal(opRes.status, 201);
  const op = (await opRes.json()) as { id: string; secret: string };
  const listed = (await (await api("GET", "/api/operational-destinations")).json()) as {
    destinations: Array<{ id: string }>;
  };
  assert.deepEqual(
    listed.destinations.map((d) => d.id),
    [op.id],
  );
  // Operator endpoints are not webhook destinations.
  assert.equal((await api("GET", `/api/destinations/${op.id}`)).status, 404);
  assert.deepEqual(
    ((await (await api("GET", "/api/destinations")).json()) as { destinations: [] }).destinations,
    [],
  );

  const bad = await api("POST", "/api/destinations", { url: receiver.url, autoDisableAfterDeadLetters: 0 });
  assert.equal(bad.status, 400);
  assert.equal(
    ((await bad.json()) as { errors: Array<{ field: string }> }).errors[0]?.field,
    "autoDisableAfterDeadLetters",
  );
  const created = await api("POST", "/api/destinations", {
    url: receiver.url,
    maxAttempts: 1,
    autoDisableAfterDeadLetters: 2,
  });
  assert.equal(created.status, 201);
  const dest = (await created.json()) as { id: string; autoDisableAfterHours: number };
  assert.equal(dest.autoDisableAfterHours, 120, "the default, like Svix");

  const ids: string[] = [];
  for (let i = 0; i < 2; i++) {
    const res = await gw.post("/api/singleEvent", { userID: "u1", type: "order.created", payload: { i } });
    ids.push(((await res.json()) as { id: string }).id);
  }
  const ops = () => operator.delivered as unknown as Op[];
  await waitFor(() => ops().some((e) => e.type === "destination.disabled"), "destination.disabled");
  const shown = (await (await api("GET", `/api/destinations/${dest.id}`)).json()) as {
    disabled: boolean;
    disabledReason: string;
  };
  assert.equal(shown.disabled, true);
  assert.match(shown.disabledReason, /auto-disabled: 2 dead letters in a row/);
  const dead = ops().filter((e) => e.type === "event.dead");
  assert.deepEqual(dead.map((e) => e.payload.eventId).sort(), [...ids].sort());
  const disabled = ops().find((e) => e.type === "destination.disabled");
  assert.equal(disabled?.payload.destinationId, dest.id);
  assert.match(String(disabled?.payload.reason), /2 dead letters/);
  // Signed like any webhook, with the operator endpoint's secret; user events never reach it.
  for (const req of operator.requests) {
    const body = new Webhook(op.secret).verify(req.body, req.headers as Record<string, string>) as Op;
    assert.equal(body.userID, "gateway.operational");
  }
  assert.ok(ops().every((e) => e.type !== "order.created"));

  // Enabled again through the admin API: destination.enabled, and the streak starts over — one more dead
  // letter (a third in a row overall) does not disable it; its next success: destination.recovered.
  const enabled = await api("PATCH", `/api/destinations/${dest.id}`, { disabled: false });
  assert.equal(enabled.status, 200);
  await waitFor(() => ops().some((e) => e.type === "destination.enabled"), "destination.enabled");
  await gw.post("/api/singleEvent", { userID: "u1", type: "order.created", payload: { i: 2 } });
  await waitFor(() => ops().filter((e) => e.type === "event.dead").length === 3, "a third dead letter");
  failing = false;
  await gw.post("/api/singleEvent", { userID: "u1", type: "order.created", payload: { i: 3 } });
  await waitFor(() => ops().some((e) => e.type === "destination.recovered"), "destination.recovered");
  assert.equal(ops().find((e) => e.type === "destination.recovered")?.payload.destinationId, dest.id);
  assert.equal(ops().filter((e) => e.type === "destination.disabled").length, 1);
});

test("auto-disable after failing without a success for autoDisableAfterHours", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver((_req, res) => {
    res.statusCode = 500;
  });
  t.after(() => receiver.close());
  // An operator endpoint that always fails: its own retries, and no operational event about itself.
  const operator = await startReceiver((_req, res) => {
    res.statusCode = 500;
  });
  t.after(() => operator.close());
  const opRes = await gw.post(
    "/api/operational-destinations",
    {
      url: operator.url,
      maxAttempts: 3,
      backoffBaseMs: 10,
      backoffMaxMs: 20,
      autoDisableAfterDeadLetters: 1,
    },
    admin,
  );
  assert.equal(opRes.status, 201);
  const op = (await opRes.json()) as { id: string };

  const created = await gw.post(
    "/api/destinations",
    {
      url: receiver.url,
      maxAttempts: 50,
      backoffBaseMs: 200,
      backoffMaxMs: 400,
      autoDisableAfterHours: 0.001,
    },
    admin,
  );
  const dest = (await created.json()) as { id: string };
  await gw.post("/api/singleEvent", { userID: "u1", payload: {} });
  await waitFor(async () => {
    const d = (await (
      await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, { headers: admin })
    ).json()) as { disabled: boolean };
    return d.disabled;
  }, "auto-disable after 3.6 s of failures");
  const d = (await (
    await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, { headers: admin })
  ).json()) as { disabledReason: string };
  assert.match(d.disabledReason, /autoDisableAfterHours 0\.001/);
  // The operator endpoint got destination.disabled (3 attempts, dead) and was not disabled itself.
  await waitFor(() => operator.requests.length >= 3, "the operational event's own retries");
  const types = operator.requests.map((r) => (JSON.parse(r.body) as { type: string }).type);
  assert.ok(
    types.every((t) => t === "destination.disabled"),
    types.join(),
  );
  const self = (await (
    await fetch(`${gw.gateway.url}/api/operational-destinations/${op.id}`, { headers: admin })
  ).json()) as { disabled: boolean };
  assert.equal(self.disabled, false);
});
