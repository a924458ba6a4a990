/**
 * Delivery at scale: one shared reader per partition, per-destination cursors that detach and attach
 * again, member-less progress groups that are registered in one commit and kept alive.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { eq } from "drizzle-orm";
import { groupIdFor } from "../src/delivery/control.ts";
import { startLocalKafka } from "../src/kafka/runner.ts";
import { loadOffsets } from "../src/store/offsets.ts";
import { deliveries } from "../src/store/schema.ts";
import { deliveryFixture, publishPerUser, sequencesByUser } from "./delivery-fixture.ts";
import { startHoldingReceiver, startReceiver, waitFor } from "./receiver.ts";

test("registration pins the destination's own group at the topic's end in Kafka, visible to standard tooling", async (t) => {
  const f = await deliveryFixture(t, 4);
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const before = await publishPerUser(f, 4, 5);
  const dest = await f.addDestination(receiver.url);

  const admin = f.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  const [committed] = await admin.fetchOffsets({
    groupId: groupIdFor(f.groupPrefix, dest.id),
    topics: [f.topic],
  });
  const ends = await admin.fetchTopicOffsets(f.topic);
  const byPartition = (rows: Array<{ partition: number; offset: string }>) =>
    Object.fromEntries(rows.map((r) => [r.partition, Number(r.offset)]));
  assert.deepEqual(
    byPartition(committed?.partitions ?? []),
    byPartition(ends.map((e) => ({ partition: e.partition, offset: e.high }))),
    "the group's committed offsets are the topic's end at registration",
  );
  assert.deepEqual(
    Object.fromEntries(loadOffsets(f.store.db, f.topic, dest.id)),
    byPartition(ends.map((e) => ({ partition: e.partition, offset: e.high }))),
    "and mirrored in SQLite",
  );

  const after = await publishPerUser(f, 4, 5);
  await waitFor(() => receiver.delivered.length >= after.length, "the events accepted after registration");
  await sleep(300);
  assert.deepEqual(new Set(receiver.delivered.map((e) => e.id)), new Set(after), "none from before it");
  assert.equal(before.length, 20);
  const lag = await f.delivery.lag(dest.id);
  assert.equal(lag, 0, "nothing left for it");
});

test("a destination that falls behind under load detaches, catches up on its own reader and rejoins: nothing lost, no duplicates, order kept, the others not held back", async (t) => {
  // A small buffer so the held destination overflows it quickly and detaches from the shared reader.
  const f = await deliveryFixture(t, 2, { buffer: { events: 30, bytes: 1024 * 1024 } });
  const fast = await startReceiver();
  const slow = await startHoldingReceiver();
  t.after(() => fast.close());
  t.after(() => slow.close());
  await f.addDestination(fast.url);
  const lagging = await f.addDestination(slow.url, { maxConcurrency: 4 });

  // Load keeps coming while the slow receiver holds every answer.
  const users = 10;
  const perUser = 40;
  const first = await publishPerUser(f, users, perUser / 2);
  await waitFor(() => fast.delivered.length >= first.length, "the fast destination has the first half");
  const worker = f.engine.worker(lagging.id);
  assert.ok(worker);
  await waitFor(
    () => [...worker.cursors.values()].some((c) => !c.attached),
    "the slow destination detached from the shared reader",
  );
  const secondHalf = Array.from({ length: users }, (_, u) => u);
  const second: string[] = [];
  await Promise.all(
    secondHalf.map(async (u) => {
      for (let seq = perUser / 2; seq < perUser; seq++) {
        second.push(await f.publish(`user-${u}`, { seq, pad: "x".repeat(100) }));
      }
    }),
  );
  const all = [...first, ...second];
  // Isolation: every event reached the fast destination while the slow one still held its first answers.
  await waitFor(() => fast.delivered.length >= all.length, "every event at the fast destination");
  assert.equal(slow.released, false);
  assert.ok(worker.buffered <= 30 + 200, `the slow destination's buffer stayed bounded (${worker.buffered})`);

  slow.release();
  await waitFor(
    () => new Set(slow.delivered.map((e) => e.id)).size >= all.length,
    "every event at the slow one",
  );
  await waitFor(() => [...worker.cursors.values()].every((c) => c.attached), "its cursors attached again");

  // After rejoining, new events flow to it through the shared reader.
  const third = await publishPerUser(f, users, 5);
  await waitFor(
    () => new Set(slow.delivered.map((e) => e.id)).size >= all.length + third.length,
    "events after the rejoin",
  );
  for (const receiver of [fast, slow]) {
    assert.equal(receiver.delivered.length, all.length + third.length, "no duplicates");
    for (const [user, seqs] of sequencesByUser(receiver)) {
      assert.deepEqual(
        seqs,
        [...[...Array(perUser).keys()], ...[...Array(5).keys()]],
        `order of ${user} across detach and rejoin`,
      );
    }
  }
  // Progress moves once the last outcomes are acknowledged by Kafka, just after the receiver's 2xx.
  await waitFor(async () => (await f.delivery.lag(lagging.id)) === 0, "its lag to reach 0", 10_000);
});

test("progress never silently resets: keepalive keeps idle offsets in Kafka; lost ones are recovered from the gateway's own record, never from the beginning", async (t) => {
  // A broker of its own that expires a member-less group's offsets one minute after its last commit.
  const kafka = await startLocalKafka({
    properties: { "offsets.retention.minutes": "1", "offsets.retention.check.interval.ms": "1000" },
  });
  let kept: Awaited<ReturnType<typeof deliveryFixture>>;
  let lost: typeof kept;
  try {
    kept = await deliveryFixture(t, 2, { brokers: kafka.brokers, keepaliveEveryMs: 10_000 });
    lost = await deliveryFixture(t, 2, { brokers: kafka.brokers });
  } finally {
    // Registered after the fixtures' own clean-up, so the broker outlives it.
    t.after(() => kafka.stop());
  }
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const keptDest = await kept.addDestination(`${receiver.url}?d=kept`);
  const lostDest = await lost.addDestination(`${receiver.url}?d=lost`);
  const keptIds = await publishPerUser(kept, 4, 5);
  const lostIds = await publishPerUser(lost, 4, 5);
  const count = (tag: string) => receiver.requests.filter((r) => r.url.endsWith(`d=${tag}`)).length;
  await waitFor(() => count("kept") >= keptIds.length && count("lost") >= lostIds.length, "first deliveries");

  const admin = kept.kafka.admin();
  await admin.connect();
  t.after(() => admin.disconnect());
  const committedIn = async (groupId: string, topic: string) => {
    const [row] = await admin.fetchOffsets({ groupId, topics: [topic] });
    return (row?.partitions ?? []).filter((p) => Number(p.offset) >= 0).length;
  };
  // Both go idle. Without keepalive the second group's offsets expire; with it the first one's stay.
  await waitFor(
    async () => (await committedIn(groupIdFor(lost.groupPrefix, lostDest.id), lost.topic)) === 0,
    "Kafka expiring the idle group's offsets",
    150_000,
  );
  assert.equal(
    await committedIn(groupIdFor(kept.groupPrefix, keptDest.id), kept.topic),
    2,
    "keepalive kept both partitions' offsets of the idle destination",
  );

  // The ledger no longer knows the events either (as after RETENTION_DAYS): only the offsets stop a flood.
  lost.store.db.delete(deliveries).where(eq(deliveries.destinationId, lostDest.id)).run();
  await lost.restartEngine();
  const more = await publishPerUser(lost, 4, 2);
  await waitFor(() => count("lost") >= lostIds.length + more.length, "new events after the restart");
  await sleep(500);
  assert.equal(count("lost"), lostIds.length + more.length, "no old event was sent again");
  await waitFor(
    async () => (await committedIn(groupIdFor(lost.groupPrefix, lostDest.id), lost.topic)) === 2,
    "the recovered progress committed to Kafka again",
    15_000,
  );
});
