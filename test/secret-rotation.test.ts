import assert from "node:assert/strict";
import { test } from "node:test";
import { Webhook } from "standardwebhooks";
import { startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };
const OTHER = `whsec_${Buffer.alloc(32, 9).toString("base64")}`;

function verifies(secret: string, req: { body: string; headers: Record<string, unknown> }): boolean {
  try {
    new Webhook(secret).verify(req.body, req.headers as Record<string, string>);
    return true;
  } catch {
    return false;
  }
}

test("secret rotation: two signatures during the grace period, each verifiable; then only the new one", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const rotate = (id: string, body?: unknown) =>
    fetch(`${gw.gateway.url}/api/destinations/${id}/secret/rotate`, {
      method: "POST",
      headers: body === undefined ? admin : { ...admin, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });

  const created = (await (await gw.post("/api/destinations", { url: receiver.url }, admin)).json()) as {
    id: string;
    secret: string;
    previousSecretExpiresAt: string | null;
  };
  assert.equal(created.previousSecretExpiresAt, null);
  const first = created.secret;

  // Refusals change nothing.
  assert.equal((await rotate("dest_nope")).status, 404);
  const badSecret = await rotate(created.id, { secret: "whsec_short" });
  assert.equal(badSecret.status, 400);
  assert.equal(((await badSecret.json()) as { errors: Array<{ field: string }> }).errors[0]?.field, "secret");
  const badTtl = await rotate(created.id, { previousSecretTtlHours: -1 });
  assert.equal(badTtl.status, 400);
  assert.equal(
    ((await badTtl.json()) as { errors: Array<{ field: string }> }).errors[0]?.field,
    "previousSecretTtlHours",
  );
  assert.equal((await rotate(created.id, { secret: first })).status, 400, "the current secret again");

  // No body: a generated secret, the old one signs for the default 24 h.
  const before = Date.now();
  const rotated = await rotate(created.id);
  assert.equal(rotated.status, 200);
  const r1 = (await rotated.json()) as { secret: string; previousSecretExpiresAt: string };
  assert.notEqual(r1.secret, first);
  assert.match(r1.secret, /^whsec_/);
  const expires = Date.parse(r1.previousSecretExpiresAt);
  assert.ok(expires >= before + 24 * 3_600_000 && expires <= Date.now() + 24 * 3_600_000);
  const shown = (await (
    await fetch(`${gw.gateway.url}/api/destinations/${created.id}`, { headers: admin })
  ).json()) as { secret: string; previousSecretExpiresAt: string };
  assert.equal(shown.secret, r1.secret);
  assert.equal(shown.previousSecretExpiresAt, r1.previousSecretExpiresAt);

  await gw.post("/api/singleEvent", { userID: "u1", payload: { n: 1 } });
  await waitFor(() => receiver.requests.length === 1, "the first delivery");
  const during = receiver.requests[0];
  assert.ok(during);
  const sigs = String(during.headers["webhook-signature"]).split(" ");
  assert.equal(sigs.length, 2, "v1,<new> v1,<old>");
  assert.ok(sigs.every((s) => s.startsWith("v1,")));
  assert.ok(verifies(r1.secret, during), "a receiver holding the new secret verifies it");
  assert.ok(verifies(first, during), "a receiver still holding the old secret verifies it");
  assert.ok(!verifies(OTHER, during), "an unrelated secret does not");

  // A given secret, old one dropped at once (ttl 0): one signature, the old secret no longer verifies.
  const r2 = (await (await rotate(created.id, { secret: OTHER, previousSecretTtlHours: 0 })).json()) as {
    secret: string;
    previousSecretExpiresAt: string | null;
  };
  assert.equal(r2.secret, OTHER);
  assert.equal(r2.previousSecretExpiresAt, null);
  await gw.post("/api/singleEvent", { userID: "u1", payload: { n: 2 } });
  await waitFor(() => receiver.requests.length === 2, "the second delivery");
  const after = receiver.requests[1];
  assert.ok(after);
  assert.equal(String(after.headers["webhook-signature"]).split(" ").length, 1);
  assert.ok(verifies(OTHER, after));
  assert.ok(!verifies(r1.secret, after));

  // A short grace period ends on its own: the next delivery after it carries one signature.
  const r3 = (await (await rotate(created.id, { previousSecretTtlHours: 0.0005 })).json()) as {
    secret: string;
    previousSecretExpiresAt: string;
  };
  await waitFor(() => Date.now() > Date.parse(r3.previousSecretExpiresAt), "the grace period's end", 10_000);
  await gw.post("/api/singleEvent", { userID: "u1", payload: { n: 3 } });
  await waitFor(() => receiver.requests.length === 3, "the third delivery");
  const expired = receiver.requests[2];
  assert.ok(expired);
  assert.equal(String(expired.headers["webhook-signature"]).split(" ").length, 1);
  assert.ok(verifies(r3.secret, expired));
  assert.ok(!verifies(OTHER, expired));
});
