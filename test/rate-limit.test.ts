import assert from "node:assert/strict";
import { test } from "node:test";
import { sharedLimit, TokenBucket } from "../src/delivery/rate-limit.ts";
import { startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };

test("token bucket arithmetic: burst, refill at the rate, never above the burst", () => {
  const b = new TokenBucket(10, 3, 0);
  assert.deepEqual([b.tryTake(0), b.tryTake(0), b.tryTake(0)], [0, 0, 0], "the burst at once");
  assert.equal(b.tryTake(0), 100, "then one token every 100 ms");
  assert.equal(b.tryTake(50), 50);
  assert.equal(b.tryTake(100), 0);
  assert.equal(b.tryTake(100), 100);
  // A long idle saves up no more than the burst.
  assert.deepEqual([b.tryTake(60_000), b.tryTake(60_000), b.tryTake(60_000)], [0, 0, 0]);
  assert.ok(b.tryTake(60_000) > 0);
  // Over 10 s of steady demand: 10 per second plus the burst.
  const c = new TokenBucket(10, 3, 0);
  let taken = 0;
  for (let t = 0; t <= 10_000; t += 5) while (c.tryTake(t) === 0) taken++;
  assert.equal(taken, 3 + 100);
  // A slower rate keeps what was saved, capped at the new burst.
  c.configure(0.5, 1, 10_000);
  assert.equal(c.tryTake(10_000), 2000);
});

test("the limit is split between engines by their share of the partitions", () => {
  assert.deepEqual(sharedLimit(100, null, 1), { rate: 100, burst: 100 });
  assert.deepEqual(sharedLimit(100, 20, 0.5), { rate: 50, burst: 10 });
  assert.deepEqual(sharedLimit(0.5, null, 0.25), { rate: 0.125, burst: 1 });
});

test("waiters are served first come first served; an aborted waiter leaves the queue", async () => {
  const b = new TokenBucket(200, 1);
  await b.take();
  const order: number[] = [];
  const abort = new AbortController();
  const waits = [1, 2, 3].map((i) => b.take(i === 2 ? abort.signal : undefined).then(() => order.push(i)));
  assert.equal(b.waiting, 3);
  abort.abort();
  await assert.rejects(waits[1] as Promise<unknown>);
  assert.equal(b.waiting, 2);
  await Promise.all([waits[0], waits[2]]);
  assert.deepEqual(order, [1, 3]);
});

test("a rate-limited destination gets every event, each user's in order; the setting is validated", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const patch = (id: string, body: unknown) =>
    fetch(`${gw.gateway.url}/api/destinations/${id}`, {
      method: "PATCH",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify(body),
    });

  const bad = await gw.post("/api/destinations", { url: receiver.url, rateLimitPerSecond: 0 }, admin);
  assert.equal(bad.status, 400);
  assert.equal(
    ((await bad.json()) as { errors: Array<{ field: string }> }).errors[0]?.field,
    "rateLimitPerSecond",
  );
  const created = await gw.post(
    "/api/destinations",
    { url: receiver.url, rateLimitPerSecond: 40, rateLimitBurst: 2 },
    admin,
  );
  assert.equal(created.status, 201);
  const dest = (await created.json()) as { id: string; rateLimitPerSecond: number; rateLimitBurst: number };
  assert.equal(dest.rateLimitPerSecond, 40);
  assert.equal(dest.rateLimitBurst, 2);

  const sent = new Map<string, number[]>();
  for (let i = 0; i < 30; i++) {
    const user = `user-${i % 3}`;
    const res = await gw.post("/api/singleEvent", { userID: user, payload: { i } });
    assert.equal(res.status, 202);
    sent.set(user, [...(sent.get(user) ?? []), i]);
  }
  await waitFor(() => receiver.delivered.length === 30, "every event through the limiter");
  for (const [user, order] of sent) {
    assert.deepEqual(
      receiver.delivered.filter((e) => e.userID === user).map((e) => (e.payload as { i: number }).i),
      order,
      `${user}'s events in order`,
    );
  }

  const badBurst = await patch(dest.id, { rateLimitBurst: 0 });
  assert.equal(badBurst.status, 400);
  assert.equal(
    ((await badBurst.json()) as { errors: Array<{ field: string }> }).errors[0]?.field,
    "rateLimitBurst",
  );
  const changed = (await (await patch(dest.id, { rateLimitPerSecond: 5.5 })).json()) as {
    rateLimitPerSecond: number;
    rateLimitBurst: number;
  };
  assert.equal(changed.rateLimitPerSecond, 5.5);
  assert.equal(changed.rateLimitBurst, 2);
  const cleared = (await (
    await patch(dest.id, { rateLimitPerSecond: null, rateLimitBurst: null })
  ).json()) as {
    rateLimitPerSecond: number | null;
  };
  assert.equal(cleared.rateLimitPerSecond, null);
  await gw.post("/api/singleEvent", { userID: "user-0", payload: { i: 30 } });
  await waitFor(() => receiver.delivered.length === 31, "delivery with the limit removed");
});
