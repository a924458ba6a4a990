import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Webhook } from "standardwebhooks";
import { KeyedScheduler } from "../src/delivery/keyed-scheduler.ts";
import { PartitionTracker } from "../src/delivery/partition-tracker.ts";
import { DeliveryRecorder } from "../src/delivery/recorder.ts";
import { parseRetryAfter } from "../src/delivery/send.ts";
import { generateSecret, secretKey, signWebhook } from "../src/delivery/sign.ts";
import { createLogger } from "../src/log.ts";
import { openStore } from "../src/store/db.ts";

test("the commit offset never passes an unfinished offset", () => {
  const t = new PartitionTracker();
  for (const o of [10, 11, 12, 13]) assert.equal(t.add(o), true);
  assert.equal(t.takeCommit(), 10, "nothing finished: commit stays at the first fetched offset");
  t.finish(11);
  t.finish(13);
  assert.equal(t.takeCommit(), undefined, "10 still unfinished: no new commit");
  t.finish(10);
  assert.equal(t.takeCommit(), 12, "10 and 11 done, 12 not: next to read is 12");
  t.finish(12);
  assert.equal(t.takeCommit(), 14, "all done: next to read is 14");
  assert.equal(t.unfinished, 0);
  assert.equal(t.add(12), false, "a re-fetched offset is not tracked twice");
  t.commitFailed(14);
  assert.equal(t.takeCommit(), 14, "a failed commit is offered again");
});

test("the tracker keeps up with a long stream finished out of order", () => {
  const t = new PartitionTracker();
  const n = 20_000;
  for (let o = 0; o < n; o++) t.add(o);
  for (let o = 1; o < n; o += 2) t.finish(o);
  assert.equal(t.takeCommit(), 0);
  for (let o = 0; o < n; o += 2) t.finish(o);
  assert.equal(t.takeCommit(), n);
  assert.equal(t.unfinished, 0);
});

test("one key runs in order, different keys in parallel, under the slot limit", async () => {
  const log: string[] = [];
  let running = 0;
  let peak = 0;
  const scheduler = new KeyedScheduler<{ key: string; n: number; ms: number }>(3, async (job) => {
    await scheduler.slot(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise((r) => setTimeout(r, job.ms));
      running--;
    });
    log.push(`${job.key}${job.n}`);
  });
  for (let n = 0; n < 5; n++) {
    for (const key of ["a", "b", "c", "d", "e"]) scheduler.push(key, { key, n, ms: key === "a" ? 5 : 1 });
  }
  assert.equal(scheduler.size, 25);
  await scheduler.idle();
  assert.equal(scheduler.size, 0);
  assert.ok(peak <= 3, `at most 3 attempts at once, saw ${peak}`);
  assert.ok(peak >= 2, "different keys ran in parallel");
  for (const key of ["a", "b", "c", "d", "e"]) {
    assert.deepEqual(
      log.filter((l) => l.startsWith(key)),
      [0, 1, 2, 3, 4].map((n) => `${key}${n}`),
    );
  }
});

test("a key is starving only when a slot is free and its next job waits behind the running one", async () => {
  const release: Array<() => void> = [];
  const scheduler = new KeyedScheduler<string>(2, async () => {
    await scheduler.slot(() => new Promise<void>((done) => release.push(done)));
  });
  scheduler.push("a", "a0");
  assert.equal(scheduler.isStarving("a"), false, "nothing queued behind a0");
  scheduler.push("a", "a1");
  assert.equal(scheduler.isStarving("a"), true, "a1 waits for a0 and a slot is free");
  scheduler.push("b", "b0");
  await sleep(0);
  assert.equal(scheduler.isStarving("a"), false, "both slots taken: something else uses the capacity");
  assert.equal(scheduler.isStarving("zzz"), false, "an unknown key");
  while (scheduler.size > 0) {
    release.shift()?.();
    await sleep(1);
  }
  await scheduler.idle();
});

test("the recorder writes an urgent row at the end of the turn and batches the others for its window", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "recorder-"));
  const store = openStore(join(dir, "gateway.db"));
  t.after(() => {
    store.sqlite.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const recorder = new DeliveryRecorder(store, createLogger("silent"), 60_000);
  const row = (eventId: string) =>
    [
      {
        eventId,
        destinationId: "d1",
        userId: "u1",
        attemptNumber: 1,
        startedAt: Date.now(),
        durationMs: 1,
        statusCode: 200,
        error: null,
        responseSnippet: null,
        outcome: "succeeded",
      },
      {
        destinationId: "d1",
        eventId,
        userId: "u1",
        status: "delivered",
        attempts: 1,
        lastError: null,
        event: null,
        at: Date.now(),
      },
    ] as const;
  const count = () => (store.sqlite.prepare("select count(*) as n from attempts").get() as { n: number }).n;

  let lazyDone = false;
  const lazy = recorder.record(...row("e1")).then(() => {
    lazyDone = true;
  });
  await sleep(50);
  assert.equal(lazyDone, false, "a normal row waits for the 60 s window");
  assert.equal(count(), 0);

  await recorder.record(...row("e2"), true);
  assert.equal(count(), 2, "the urgent write took the waiting row along");
  await lazy;
  assert.equal(lazyDone, true);

  const flushed = recorder.record(...row("e3"));
  recorder.flush();
  await flushed;
  assert.equal(count(), 3, "flush() writes at once");
});

test("signatures verify with the standardwebhooks package", () => {
  const secret = generateSecret();
  assert.match(secret, /^whsec_[A-Za-z0-9+/]+=*$/);
  const body = JSON.stringify({ id: "evt_1", userID: "u1", type: "event", payload: { ü: "ñ" } });
  const ts = Math.floor(Date.now() / 1000);
  const headers = {
    "webhook-id": "evt_1",
    "webhook-timestamp": String(ts),
    "webhook-signature": signWebhook(secretKey(secret), "evt_1", ts, body),
  };
  assert.deepEqual(new Webhook(secret).verify(body, headers), JSON.parse(body));
  assert.throws(() => new Webhook(generateSecret()).verify(body, headers), "another secret does not verify");
  assert.throws(() => new Webhook(secret).verify(`${body} `, headers), "a changed body does not verify");
});

test("Retry-After is read as seconds or as an HTTP date", () => {
  assert.equal(parseRetryAfter("3"), 3000);
  assert.equal(parseRetryAfter(undefined), null);
  assert.equal(parseRetryAfter("soon"), null);
  const now = Date.parse("2026-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Thu, 01 Jan 2026 00:00:05 GMT", now), 5000);
});
