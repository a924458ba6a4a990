import assert from "node:assert/strict";
import { test } from "node:test";
import { and, eq } from "drizzle-orm";
import { Webhook } from "standardwebhooks";
import { sharedGroupId } from "../src/delivery/control.ts";
import { generateSecret } from "../src/delivery/sign.ts";
import { getDestination, updateDestination } from "../src/store/destinations.ts";
import { attempts, deliveries } from "../src/store/schema.ts";
import { deliveryFixture, publishPerUser, sequencesByUser } from "./delivery-fixture.ts";
import { uniqueName } from "./helpers.ts";
import { startHoldingReceiver, startReceiver, waitFor } from "./receiver.ts";

function ledger(store: { db: import("../src/store/db.ts").Db }, destinationId: string, status: string) {
  return store.db
    .select()
    .from(deliveries)
    .where(and(eq(deliveries.destinationId, destinationId), eq(deliveries.status, status)))
    .all();
}

function attemptRows(store: { db: import("../src/store/db.ts").Db }, destinationId: string) {
  return store.db.select().from(attempts).where(eq(attempts.destinationId, destinationId)).all();
}

test("fan-out to three destinations keeps per-user order while one receiver fails at random", async (t) => {
  const f = await deliveryFixture(t);
  const healthy = await startReceiver();
  const flaky = await startReceiver((_req, res) => {
    if (Math.random() < 0.3) res.statusCode = 500;
  });
  const slow = await startReceiver();
  t.after(() => Promise.all([healthy.close(), flaky.close(), slow.close()]));
  // The slow receiver answers asynchronously, so it records its deliveries itself.
  slow.behaviour = (req, res) => {
    setTimeout(() => {
      slow.delivered.push(JSON.parse(req.body));
      res.end("ok");
    }, 3);
    return "handled";
  };

  const a = await f.addDestination(healthy.url);
  const b = await f.addDestination(flaky.url, { maxAttempts: 50 });
  const c = await f.addDestination(slow.url);
  const users = 20;
  const perUser = 15;
  const ids = await publishPerUser(f, users, perUser);
  const total = users * perUser;

  await waitFor(
    () =>
      healthy.delivered.length >= total && flaky.delivered.length >= total && slow.delivered.length >= total,
    "every event at all three destinations",
  );
  for (const receiver of [healthy, flaky, slow]) {
    assert.deepEqual(new Set(receiver.delivered.map((e) => e.id)), new Set(ids));
    assert.equal(receiver.delivered.length, total, "no duplicates without a crash");
    for (const [user, seqs] of sequencesByUser(receiver)) {
      assert.deepEqual(seqs, [...Array(perUser).keys()], `order of ${user}`);
    }
  }
  assert.ok(flaky.requests.length > total, "the flaky receiver made the worker retry");

  // Every request carries a Standard Webhooks signature that an independent library accepts.
  const verifier = new Webhook(a.secret);
  for (const r of healthy.requests) {
    const verified = verifier.verify(r.body, r.headers as Record<string, string>) as { id: string };
    assert.equal(verified.id, r.headers["webhook-id"]);
    assert.equal(r.headers["content-type"], "application/json");
    assert.match(String(r.headers["user-agent"]), /webhook-gateway/);
  }

  await waitFor(() => ledger(f.store, b.id, "delivered").length === total, "the ledger to settle");
  for (const [dest, receiver] of [
    [a, healthy],
    [b, flaky],
    [c, slow],
  ] as const) {
    assert.equal(ledger(f.store, dest.id, "delivered").length, total);
    const rows = attemptRows(f.store, dest.id);
    assert.equal(rows.length, receiver.requests.length, "one attempt row per request");
    assert.equal(rows.filter((r) => r.outcome === "succeeded").length, total);
  }
  const failed = attemptRows(f.store, b.id).filter((r) => r.outcome === "failed");
  assert.equal(failed.length, flaky.requests.length - total);
  assert.ok(
    failed.every((r) => r.statusCode === 500 && r.error === "HTTP 500" && r.responseSnippet === "ok"),
  );
});

test("exhausted events go to the dead-letter topic and the ledger; replay delivers them after recovery", async (t) => {
  const f = await deliveryFixture(t);
  const receiver = await startReceiver((_req, res) => {
    res.statusCode = 500;
  });
  t.after(() => receiver.close());
  const dest = await f.addDestination(receiver.url, { maxAttempts: 3 });
  const ids = [
    await f.publish("u1", { n: 1 }),
    await f.publish("u2", { n: 2 }),
    await f.publish("u1", { n: 3 }),
  ];

  await waitFor(() => ledger(f.store, dest.id, "dead").length === 3, "three dead events");
  const rows = attemptRows(f.store, dest.id);
  assert.equal(rows.length, 9);
  assert.equal(rows.filter((r) => r.outcome === "failed").length, 6);
  assert.equal(rows.filter((r) => r.outcome === "dead").length, 3);
  assert.deepEqual(
    rows
      .filter((r) => r.eventId === ids[0])
      .map((r) => r.attemptNumber)
      .sort(),
    [1, 2, 3],
  );

  // The dead-letter topic holds each event with why it died.
  const consumer = f.kafka.consumer({ groupId: uniqueName("dlq-reader") });
  await consumer.connect();
  await consumer.subscribe({ topic: f.deadLetterTopic, fromBeginning: true });
  const parked: Array<{ id: string; headers: Record<string, string> }> = [];
  await consumer.run({
    eachMessage: async ({ message }) => {
      const headers = Object.fromEntries(
        Object.entries(message.headers ?? {}).map(([k, v]) => [k, String(v)]),
      );
      parked.push({ id: JSON.parse(String(message.value)).id, headers });
    },
  });
  await waitFor(() => parked.length >= 3, "three dead letters on the topic");
  await consumer.disconnect();
  assert.deepEqual(new Set(parked.map((p) => p.id)), new Set(ids));
  for (const p of parked) {
    assert.equal(p.headers["destination-id"], dest.id);
    assert.equal(p.headers.attempts, "3");
    assert.equal(p.headers["last-error"], "HTTP 500");
  }

  receiver.behaviour = () => {};
  assert.equal(await f.delivery.replay(dest.id, [ids[1] as string]), 1);
  await waitFor(() => receiver.delivered.length === 1, "the one replayed event");
  assert.equal(receiver.delivered[0]?.id, ids[1]);
  assert.equal(await f.delivery.replay(dest.id), 2);
  await waitFor(() => receiver.delivered.length === 3, "the rest replayed");
  await waitFor(() => ledger(f.store, dest.id, "delivered").length === 3, "the ledger marks them delivered");
  assert.equal(ledger(f.store, dest.id, "dead").length, 0);
  assert.equal(await f.delivery.replay(dest.id), 0, "nothing left to replay");
});

test("410 Gone dead-letters at once and disables the destination", async (t) => {
  const f = await deliveryFixture(t);
  const receiver = await startReceiver((_req, res) => {
    res.statusCode = 410;
  });
  t.after(() => receiver.close());
  const dest = await f.addDestination(receiver.url, { maxAttempts: 8 });
  await f.publish("u1", { n: 1 });
  await waitFor(
    () => getDestination(f.store.db, dest.id)?.disabled === true,
    "the destination to be disabled",
  );
  await waitFor(() => f.engine.worker(dest.id) === undefined, "its worker to stop");
  assert.equal(receiver.requests.length, 1, "no retry after 410");
  assert.equal(ledger(f.store, dest.id, "dead").length, 1);
  assert.match(String(getDestination(f.store.db, dest.id)?.disabledReason), /410/);
});

test("a destination receives only the event types it subscribes to", async (t) => {
  const f = await deliveryFixture(t);
  const all = await startReceiver();
  const some = await startReceiver();
  t.after(() => Promise.all([all.close(), some.close()]));
  await f.addDestination(all.url);
  const filtered = await f.addDestination(some.url, { eventTypes: ["order.created", "order.paid"] });
  const types = ["order.created", "user.signup", "order.paid", "order.refunded"];
  await publishPerUser(f, 4, 8, (seq) => types[seq % types.length] as string);
  await waitFor(() => all.delivered.length === 32, "every event at the catch-all destination");
  await waitFor(() => some.delivered.length === 16, "the subscribed half at the filtered destination");
  assert.ok(some.delivered.every((e) => e.type === "order.created" || e.type === "order.paid"));
  // Skipped events are finished, not stuck: the filtered worker's buffer drains.
  await waitFor(() => f.engine.worker(filtered.id)?.buffered === 0, "nothing left buffered");
});

test("a PATCHed url, secret and headers take effect at the next event; the worker keeps its position", async (t) => {
  const f = await deliveryFixture(t);
  const before = await startReceiver();
  const after = await startReceiver();
  t.after(() => Promise.all([before.close(), after.close()]));
  const d = await f.addDestination(before.url, { headers: { "x-tenant": "a" } });
  await f.publish("u1", { n: 1 });
  await waitFor(() => before.delivered.length === 1, "the first event at the old url");

  const secret = generateSecret();
  const changed = updateDestination(f.store.db, d.id, {
    url: after.url,
    secret,
    headers: { "x-tenant": "b" },
  });
  assert.ok(changed);
  await f.delivery.destinationChanged(changed);
  const second = await f.publish("u1", { n: 2 });
  await waitFor(() => after.delivered.length === 1, "the next event at the new url");
  const request = after.requests[0];
  assert.equal(
    request?.headers["webhook-id"],
    second,
    "only the new event went there: no re-send of the first",
  );
  assert.equal(request?.headers["x-tenant"], "b");
  new Webhook(secret).verify(request?.body ?? "", request?.headers as Record<string, string>);
  assert.throws(() =>
    new Webhook(d.secret).verify(request?.body ?? "", request?.headers as Record<string, string>),
  );
  assert.equal(before.requests.length, 1, "nothing more went to the old url");
});

test("Retry-After from a 429 is waited out (clamped to backoffMaxMs) before the next attempt", async (t) => {
  const f = await deliveryFixture(t);
  let first = true;
  const receiver = await startReceiver((_req, res) => {
    if (first) {
      first = false;
      res.statusCode = 429;
      res.setHeader("retry-after", "1");
    }
  });
  t.after(() => receiver.close());
  await f.addDestination(receiver.url, { backoffBaseMs: 10, backoffMaxMs: 5000 });
  await f.publish("u1", { n: 1 });
  await waitFor(() => receiver.delivered.length === 1, "delivery after the 429");
  const [a, b] = receiver.requests;
  assert.ok(a && b);
  assert.ok(b.at - a.at >= 950, `second attempt waited for Retry-After (gap ${b.at - a.at} ms)`);
});

test("a destination that never answers does not hold back a healthy one", async (t) => {
  const f = await deliveryFixture(t);
  const hanging = await startReceiver(() => "handled"); // reads the request, never answers
  const healthy = await startReceiver();
  t.after(() => Promise.all([hanging.close(), healthy.close()]));
  const stuck = await f.addDestination(hanging.url, { timeoutMs: 30_000, maxConcurrency: 4 });
  await f.addDestination(healthy.url);
  const t0 = Date.now();
  await publishPerUser(f, 10, 20);
  t.diagnostic(`published in ${Date.now() - t0} ms`);
  await waitFor(() => healthy.delivered.length === 200, "every event at the healthy destination");
  t.diagnostic(`delivered in ${Date.now() - t0} ms`);
  // All of it happened while the hanging destination had not finished a single attempt.
  assert.equal(attemptRows(f.store, stuck.id).length, 0);
  assert.ok(
    hanging.requests.length >= 1 && hanging.requests.length <= 4,
    "the stuck one is capped by its own limit",
  );
});

test("a restarted worker resumes from its committed offsets and skips what the ledger has finished", async (t) => {
  const f = await deliveryFixture(t);
  const receiver = await startReceiver();
  receiver.behaviour = (req, res) => {
    setTimeout(() => {
      receiver.delivered.push(JSON.parse(req.body));
      res.end("ok");
    }, 2);
    return "handled";
  };
  t.after(() => receiver.close());
  await f.addDestination(receiver.url, { maxConcurrency: 4 });
  const publishing = publishPerUser(f, 8, 50);
  await waitFor(() => receiver.delivered.length >= 60, "some deliveries before the restart");
  await f.restartEngine();
  const ids = await publishing;
  await waitFor(
    () => new Set(receiver.delivered.map((e) => e.id)).size === ids.length,
    "every event after restart",
  );
  const duplicates = receiver.delivered.length - ids.length;
  t.diagnostic(`delivered ${receiver.delivered.length} for ${ids.length} events: ${duplicates} duplicates`);
  assert.equal(duplicates, 0, "a graceful restart redelivers nothing");
  for (const [user, seqs] of sequencesByUser(receiver)) {
    assert.deepEqual(seqs, [...Array(50).keys()], `order of ${user} across the restart`);
  }
});

test("a full worker detaches from the shared reader, catches up on its own and attaches again, order kept", async (t) => {
  const buffer = { events: 40, bytes: 1024 * 1024, fetchBytes: 16 * 1024, fetchBytesPerPartition: 16 * 1024 };
  const f = await deliveryFixture(t, 1, { buffer });
  const receiver = await startHoldingReceiver();
  t.after(() => receiver.close());
  const dest = await f.addDestination(receiver.url, { maxConcurrency: 4 });
  const ids = await publishPerUser(f, 10, 30);
  // The receiver holds the first 4 requests: nothing finishes. Unbounded, the worker would fetch all 300
  // within a fetch or two (maxWaitTimeInMs 500); bounded, it stops at the limit plus at most one fetch.
  await waitFor(() => receiver.held.length === 4, "the first attempts");
  await new Promise((r) => setTimeout(r, 1500));
  const worker = f.engine.worker(dest.id);
  assert.ok(worker);
  const buffered = worker.buffered;
  t.diagnostic(`buffered while the receiver held every answer: ${buffered} of ${ids.length}`);
  assert.ok(
    [...worker.cursors.values()].some((c) => !c.attached),
    "the full worker's cursor detached from the shared reader",
  );
  assert.ok(buffered > buffer.events, `filled up to the bound (${buffered})`);
  assert.ok(buffered <= buffer.events + 80, `bounded by the limit plus one 16 KiB fetch, got ${buffered}`);

  receiver.release();
  await waitFor(() => receiver.delivered.length >= ids.length, "every event once the receiver answers");
  await waitFor(() => [...worker.cursors.values()].every((c) => c.attached), "the cursor attached again");
  assert.deepEqual(new Set(receiver.delivered.map((e) => e.id)), new Set(ids));
  for (const [user, seqs] of sequencesByUser(receiver)) {
    assert.deepEqual(seqs, [...Array(30).keys()], `order of ${user}`);
  }
});

test("a destination behind on its slots keeps every waiting event when its share of the partitions drops", async (t) => {
  // A destination's slots are its share of maxConcurrency: another engine taking half the partitions halves
  // them. Attempts already waiting for a slot must still run (they were once dropped for good: their
  // users' events never arrived, and the destination's progress stopped there).
  const f = await deliveryFixture(t, 2);
  const receiver = await startHoldingReceiver();
  t.after(() => receiver.close());
  const dest = await f.addDestination(receiver.url, { maxConcurrency: 16 });
  const first = await publishPerUser(f, 64, 1);
  await waitFor(() => receiver.held.length === 16, "16 attempts in flight, the other 48 waiting for a slot");
  const second = await f.startEngine();
  await waitFor(
    () => f.engine.partitions.length === 1 && second.partitions.length === 1,
    "the other engine to take one partition",
    30_000,
  );
  // 16 attempts end while this engine's share is 8 slots: 8 slots go away, no waiter with them.
  receiver.release();
  await second.stop();
  await waitFor(() => f.engine.partitions.length === 2, "this engine to read both partitions again", 30_000);
  // Each user's next events queue behind its first: a user whose first attempt lost its slot gets none.
  const later: string[] = [];
  await Promise.all(
    Array.from({ length: 64 }, async (_, u) => {
      for (let seq = 1; seq <= 3; seq++) later.push(await f.publish(`user-${u}`, { seq }));
    }),
  );
  const all = [...first, ...later];
  const arrived = () => new Set(receiver.delivered.map((e) => e.id));
  await waitFor(
    () => all.every((id) => arrived().has(id)),
    "every event, the ones that waited for a slot included",
    30_000,
  ).catch((err: Error) => {
    const got = arrived();
    throw new Error(`${err.message}: ${all.filter((id) => !got.has(id)).length} of ${all.length} missing`);
  });
  // The handed-over partition's events may come twice (its new owner resumed from the last commit); the
  // first copies keep each user's order.
  for (const [user, seqs] of sequencesByUser(receiver)) {
    const firsts = seqs.filter((seq, i) => seqs.indexOf(seq) === i);
    assert.deepEqual(firsts, [0, 1, 2, 3], `order of ${user}`);
  }
  const worker = f.engine.worker(dest.id);
  assert.ok(worker);
  await waitFor(() => worker.buffered === 0, "nothing left queued or in flight", 10_000);
});

test("with no destination the shared reader sleeps; it wakes at the topic's end, and a backfill catches up on its own", async (t) => {
  const f = await deliveryFixture(t, 2);
  const group = sharedGroupId(f.groupPrefix, f.topic);
  const sharedCommitted = async () => {
    let sum = 0;
    for (const offset of (await f.log.committed(group, f.topic)).values()) sum += offset;
    return sum;
  };
  await waitFor(() => f.engine.idle, "the reader to pause with no destination");
  const before = await sharedCommitted();
  const slept = await publishPerUser(f, 5, 10);
  // Awake, the reader would have read all 50 and its group committed them (every 250 ms here).
  await new Promise((r) => setTimeout(r, 1500));
  await f.engine.commit();
  assert.equal(await sharedCommitted(), before, "the shared reader read nothing while no destination ran");
  assert.ok(f.engine.idle);

  const fresh = await startReceiver();
  const backfill = await startReceiver();
  t.after(() => Promise.all([fresh.close(), backfill.close()]));
  const a = await f.addDestination(fresh.url);
  const b = await f.addDestination(backfill.url, {}, 0);
  await waitFor(() => !f.engine.idle, "the reader to wake");
  const after: string[] = [];
  for (let seq = 10; seq < 20; seq++) {
    for (let u = 0; u < 5; u++) after.push(await f.publish(`user-${u}`, { seq }));
  }
  await waitFor(() => backfill.delivered.length >= 100, "the backfill to get every event");
  await waitFor(() => fresh.delivered.length >= 50, "the new destination to get what came after it");
  await new Promise((r) => setTimeout(r, 300));
  assert.deepEqual(new Set(fresh.delivered.map((e) => e.id)), new Set(after), "only what came after it");
  assert.equal(fresh.delivered.length, 50);
  assert.deepEqual(new Set(backfill.delivered.map((e) => e.id)), new Set([...slept, ...after]));
  assert.equal(backfill.delivered.length, 100, "each event once");
  for (const [user, seqs] of sequencesByUser(backfill)) {
    assert.deepEqual(seqs, [...Array(20).keys()], `order of ${user} in the backfill`);
  }
  for (const [user, seqs] of sequencesByUser(fresh)) {
    assert.deepEqual(
      seqs,
      [...Array(10).keys()].map((i) => i + 10),
      `order of ${user}`,
    );
  }

  await f.state.removeDestination(a.id);
  await f.state.removeDestination(b.id);
  await waitFor(() => f.engine.idle, "the reader to pause again once no destination is left");
});

test("a fetch minBytes holds a trickle at the broker until the wait ends, then delivers it together", async (t) => {
  const f = await deliveryFixture(t, 4, { fetch: { minBytes: 1024 * 1024, maxWaitMs: 1000 } });
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  await f.addDestination(receiver.url);
  const ids: string[] = [];
  for (let i = 0; i < 20; i++) {
    ids.push(await f.publish(`user-${i}`, { seq: i }));
    await new Promise((r) => setTimeout(r, 100));
  }
  await waitFor(() => receiver.delivered.length >= ids.length, "the 20 trickled events");
  // Published 100 ms apart: answered at once (minBytes 1) they arrive in ~20 groups; held until the
  // 1 s wait ends they arrive in 2–4.
  const arrivals = receiver.requests.map((r) => r.at).sort((a, b) => a - b);
  const groups = 1 + arrivals.slice(1).filter((at, i) => at - (arrivals[i] as number) > 25).length;
  t.diagnostic(`arrival groups: ${groups}`);
  assert.ok(groups <= 8, `events arrived in ${groups} groups`);
  assert.deepEqual(new Set(receiver.delivered.map((e) => e.id)), new Set(ids));
});
