import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { Webhook } from "standardwebhooks";
import { Agent } from "undici";
import { Cursor } from "../src/delivery/cursor.ts";
import { KeyedScheduler } from "../src/delivery/keyed-scheduler.ts";
import { DeliveryRecorder } from "../src/delivery/recorder.ts";
import {
  abortAttempts,
  parseRetryAfter,
  SNIPPET_BYTES,
  sendTarget,
  sendWebhook,
} from "../src/delivery/send.ts";
import { generateSecret, secretKey, signWebhook } from "../src/delivery/sign.ts";
import type { Message } from "../src/kafka/sink.ts";
import { createLogger } from "../src/log.ts";
import { freePort } from "./helpers.ts";
import { startReceiver } from "./receiver.ts";

test("a cursor's commit never passes an unfinished offset", () => {
  const c = new Cursor(0, 10);
  assert.equal(c.takeCommit(), undefined, "the start is what was committed already");
  for (const o of [10, 11, 12, 13]) c.track(o);
  assert.equal(c.next, 14);
  assert.equal(c.watermark, 10, "nothing finished: the watermark stays at the first handed-over offset");
  c.finish(11);
  c.finish(13);
  assert.equal(c.takeCommit(), undefined, "10 still unfinished: no new commit");
  c.finish(10);
  assert.equal(c.takeCommit(), 12, "10 and 11 done, 12 not: next to read is 12");
  c.finish(12);
  assert.equal(c.takeCommit(), 14, "all done: next to read is 14");
  assert.equal(c.unfinished, 0);
  c.commitFailed(14);
  assert.equal(c.takeCommit(), 14, "a failed commit is offered again");
});

test("offsets a cursor passes over cost nothing and move its watermark only when nothing is outstanding", () => {
  const c = new Cursor(3, 0);
  c.skipTo(100);
  assert.equal(c.watermark, 100, "filtered-out records are finished for this destination");
  c.track(100);
  c.skipTo(200);
  assert.equal(c.watermark, 100, "an outstanding record holds the watermark");
  assert.equal(c.next, 200);
  c.finish(100);
  assert.equal(c.watermark, 200);
  assert.equal(c.takeCommit(), 200);
  c.skipTo(150);
  assert.equal(c.next, 200, "skipTo never moves a cursor back");
});

test("the cursor keeps up with a long stream finished out of order", () => {
  const c = new Cursor(0, 0);
  const n = 20_000;
  for (let o = 0; o < n; o++) c.track(o);
  for (let o = 1; o < n; o += 2) c.finish(o);
  assert.equal(c.takeCommit(), undefined, "0 is unfinished and 0 was the start");
  for (let o = 0; o < n; o += 2) c.finish(o);
  assert.equal(c.takeCommit(), n);
  assert.equal(c.unfinished, 0);
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

test("a lowered slot limit (a partition handed away) never strands a waiting job", async () => {
  // A destination's limit is its share of maxConcurrency: it drops when this engine loses partitions. The
  // jobs already waiting for a slot must still run once the running ones end.
  const release: Array<() => void> = [];
  let running = 0;
  let peak = 0;
  const scheduler = new KeyedScheduler<string>(8, async () => {
    await scheduler.slot(async () => {
      running++;
      peak = Math.max(peak, running);
      await new Promise<void>((done) => release.push(done));
      running--;
    });
  });
  for (let i = 0; i < 40; i++) scheduler.push(`user-${i}`, `job-${i}`);
  await sleep(0);
  assert.equal(running, 8, "8 slots taken, 32 jobs wait");
  scheduler.limit = 2;
  peak = running;
  let rounds = 0;
  while (scheduler.size > 0 && rounds++ < 200) {
    for (const done of release.splice(0)) done();
    await sleep(1);
    if (running > 0)
      assert.ok(running <= 2 || rounds <= 1, `at most 2 at once after the drop, saw ${running}`);
  }
  assert.equal(scheduler.size, 0, `every job ran (${scheduler.size} stranded)`);
  await scheduler.idle();
  scheduler.limit = 4;
  for (let i = 0; i < 12; i++) scheduler.push(`again-${i}`, `again-${i}`);
  await sleep(0);
  assert.equal(running, 4, "the raised limit is used in full");
  while (scheduler.size > 0) {
    for (const done of release.splice(0)) done();
    await sleep(1);
  }
  await scheduler.idle();
});

/** The attempt row and ledger update of one first-try delivery, as a worker hands them to the recorder. */
const recorderRow = (eventId: string) =>
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

test("the recorder publishes an urgent outcome at the end of the turn and batches the others for its window", async () => {
  // The publishing contract the gateway's producer implements; here it records what it is given and
  // refuses when told to, to show how the recorder batches (the real path: test/replicas*.test.ts).
  const published: Message[][] = [];
  let refuse = false;
  const sink = {
    async publish(topic: string, messages: Message[]) {
      assert.equal(topic, "outcomes");
      if (refuse) throw new Error("refused");
      published.push(messages);
    },
  };
  const recorder = new DeliveryRecorder(sink, "outcomes", createLogger("silent"), 60_000);
  const count = () => published.flat().length;

  let lazyDone = false;
  const lazy = recorder.record(...recorderRow("e1")).then(() => {
    lazyDone = true;
  });
  await sleep(50);
  assert.equal(lazyDone, false, "a normal outcome waits for the 60 s window");
  assert.equal(count(), 0);

  await recorder.record(...recorderRow("e2"), true);
  assert.equal(count(), 2, "the urgent publish took the waiting outcome along");
  assert.equal(published.length, 1, "in one publish");
  await lazy;
  assert.equal(lazyDone, true);
  const first = published[0]?.[0];
  assert.equal(first?.key, "d1/e1", "keyed by destination and event: one event's outcomes stay in order");
  const value = JSON.parse(String(first?.value));
  assert.equal(value.a.eventId, "e1");
  assert.equal(value.l.status, "delivered");

  const flushed = recorder.record(...recorderRow("e3"));
  recorder.flush();
  await flushed;
  assert.equal(count(), 3, "flush() publishes at once");

  // A publish Kafka refuses fails every outcome in it (each worker retries its own); the next is fresh.
  refuse = true;
  const a = recorder.record(...recorderRow("e4"));
  const b = recorder.record(...recorderRow("e5"));
  recorder.flush();
  await assert.rejects(a, /refused/);
  await assert.rejects(b, /refused/);
  refuse = false;
  const again = recorder.record(...recorderRow("e4"));
  await recorder.drain();
  await again;
  assert.equal(count(), 4);
  assert.equal(recorder.pendingRows, 0);
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

test("an attempt: signed headers and path, a 4 KiB snippet of a huge 2xx, Retry-After, 410", async (t) => {
  const receiver = await startReceiver((req, res) => {
    if (req.url.endsWith("big")) {
      res.writeHead(200, { "content-type": "text/plain" });
      res.end("x".repeat(1024 * 1024));
      return "handled";
    }
    if (req.url.endsWith("busy")) {
      res.writeHead(503, { "retry-after": "7" });
      res.end("busy");
      return "handled";
    }
    if (req.url.endsWith("gone")) res.statusCode = 410;
  });
  const agent = new Agent({ connections: 4 });
  t.after(async () => {
    await agent.close();
    await receiver.close();
  });
  const secret = generateSecret();
  const target = (path: string) =>
    sendTarget(
      { url: `${receiver.url}${path}`, headers: { authorization: "Bearer r" }, timeoutMs: 5000 },
      secretKey(secret),
      agent,
    );
  const body = JSON.stringify({
    id: "evt_1",
    userID: "u",
    type: "t",
    timestamp: "2026-01-01T00:00:00Z",
    payload: 1,
  });

  const ok = await sendWebhook(target("?q=1"), "evt_1", body);
  assert.equal(ok.verdict, "success");
  assert.equal(ok.responseSnippet, "ok");
  const seen = receiver.requests[0];
  assert.equal(seen?.url, "/hook?q=1", "path and query are kept");
  assert.equal(seen?.headers.authorization, "Bearer r");
  assert.equal(seen?.headers["content-type"], "application/json");
  new Webhook(secret).verify(body, seen?.headers as Record<string, string>);

  const big = await sendWebhook(target("/big"), "evt_1", body);
  assert.equal(big.verdict, "success");
  assert.equal(big.responseSnippet?.length, SNIPPET_BYTES, "only the first 4 KiB is kept");

  const busy = await sendWebhook(target("/busy"), "evt_1", body);
  assert.deepEqual(
    [busy.verdict, busy.statusCode, busy.retryAfterMs, busy.error],
    ["retry", 503, 7000, "HTTP 503"],
  );
  const gone = await sendWebhook(target("/gone"), "evt_1", body);
  assert.equal(gone.verdict, "gone");
});

test("an attempt is cut off by its timeout even while queued for a connection, and never sent late", async (t) => {
  let answer: (() => void) | undefined;
  const receiver = await startReceiver((_req, res) => {
    answer = () => res.end("late");
    return "handled";
  });
  const agent = new Agent({ connections: 1 });
  t.after(async () => {
    answer?.();
    await agent.close();
    await receiver.close();
  });
  const target = sendTarget(
    { url: receiver.url, headers: {}, timeoutMs: 300 },
    secretKey(generateSecret()),
    agent,
  );
  // The first attempt holds the one connection past the second's deadline (its own is later), so the second
  // is still queued when its deadline passes. (With equal deadlines the connection freed by the first one's
  // cut could carry the second a fraction of a millisecond before its own deadline: sent in time.)
  const holder = sendTarget(
    { url: receiver.url, headers: {}, timeoutMs: 900 },
    secretKey(generateSecret()),
    agent,
  );
  const started = performance.now();
  const [first, second] = await Promise.all([
    sendWebhook(holder, "evt_a", "{}"),
    sendWebhook(target, "evt_b", "{}"),
  ]);
  const took = performance.now() - started;
  assert.ok(took < 2000, `both ended at their deadline, not later (${Math.round(took)} ms)`);
  for (const [r, ms] of [
    [first, 900],
    [second, 300],
  ] as const) {
    assert.equal(r.verdict, "retry");
    assert.equal(r.statusCode, null);
    assert.equal(r.error, `timed out after ${ms} ms`);
  }
  assert.equal(holder.inFlight.size, 0, "finished attempts leave the in-flight set");
  assert.equal(target.inFlight.size, 0, "finished attempts leave the in-flight set");
  await sleep(300);
  assert.deepEqual(
    receiver.requests.map((r) => r.headers["webhook-id"]),
    ["evt_a"],
    "the queued attempt was dropped, not sent after its deadline",
  );
});

test("a stopping worker cuts off attempts in flight; a slow 2xx body is no success", async (t) => {
  const receiver = await startReceiver((req, res) => {
    if (req.url.endsWith("drip")) {
      res.writeHead(200);
      res.write("par");
      return "handled"; // the rest never comes
    }
    return "handled"; // never answers
  });
  const agent = new Agent({ connections: 4 });
  t.after(async () => {
    await agent.close();
    await receiver.close();
  });
  const key = secretKey(generateSecret());
  const hanging = sendTarget({ url: receiver.url, headers: {}, timeoutMs: 10_000 }, key, agent);
  const pending = sendWebhook(hanging, "evt_h", "{}");
  while (receiver.requests.length === 0) await sleep(10);
  assert.equal(hanging.inFlight.size, 1);
  abortAttempts(hanging.inFlight, "aborted: the worker is stopping");
  const cut = await pending;
  assert.deepEqual(
    [cut.verdict, cut.statusCode, cut.error],
    ["retry", null, "aborted: the worker is stopping"],
  );

  const drip = sendTarget({ url: `${receiver.url}/drip`, headers: {}, timeoutMs: 300 }, key, agent);
  const slow = await sendWebhook(drip, "evt_d", "{}");
  assert.equal(slow.verdict, "retry");
  assert.equal(slow.statusCode, 200, "the row keeps the status the receiver sent");
  assert.equal(slow.responseSnippet, "par");
  assert.equal(slow.error, "HTTP 200, then the body failed: timed out after 300 ms");
});

test("a refused connection is a retryable attempt with the socket error", async (t) => {
  const port = await freePort();
  const agent = new Agent({ connections: 1 });
  t.after(() => agent.close());
  const target = sendTarget(
    { url: `http://127.0.0.1:${port}/`, headers: {}, timeoutMs: 2000 },
    secretKey(generateSecret()),
    agent,
  );
  const r = await sendWebhook(target, "evt_x", "{}");
  assert.equal(r.verdict, "retry");
  assert.equal(r.statusCode, null);
  assert.match(r.error ?? "", /ECONNREFUSED/);
});

test("an interim 103 is not the answer: the final status counts, and a hang after it is a plain timeout", async (t) => {
  const receiver = await startReceiver((req, res) => {
    res.writeEarlyHints({ link: "</style.css>; rel=preload; as=style" });
    if (req.url.endsWith("hang")) return "handled"; // nothing after the 103
    res.statusCode = 204;
  });
  const agent = new Agent({ connections: 2 });
  t.after(async () => {
    await agent.close();
    await receiver.close();
  });
  const key = secretKey(generateSecret());
  const ok = await sendWebhook(
    sendTarget({ url: receiver.url, headers: {}, timeoutMs: 2000 }, key, agent),
    "evt_1",
    "{}",
  );
  assert.deepEqual([ok.verdict, ok.statusCode], ["success", 204]);
  const hang = await sendWebhook(
    sendTarget({ url: `${receiver.url}/hang`, headers: {}, timeoutMs: 300 }, key, agent),
    "evt_2",
    "{}",
  );
  assert.deepEqual([hang.verdict, hang.statusCode, hang.error], ["retry", null, "timed out after 300 ms"]);
});

test("a 2xx body up to 64 KiB is read to its end and the connection reused; a longer one costs the connection", async (t) => {
  const receiver = await startReceiver((req, res) => {
    const size = req.url.endsWith("small") ? 10 * 1024 : 1024 * 1024;
    res.writeHead(200, { "content-type": "text/plain", "content-length": String(size) });
    res.end("y".repeat(size));
    return "handled";
  });
  const agent = new Agent({ connections: 1 });
  t.after(async () => {
    await agent.close();
    await receiver.close();
  });
  const key = secretKey(generateSecret());
  const small = sendTarget({ url: `${receiver.url}/small`, headers: {}, timeoutMs: 5000 }, key, agent);
  for (const id of ["evt_1", "evt_2", "evt_3"]) {
    const r = await sendWebhook(small, id, "{}");
    assert.equal(r.verdict, "success");
    assert.equal(r.responseSnippet?.length, SNIPPET_BYTES, "only the first 4 KiB is stored");
  }
  assert.equal(receiver.connections, 1, "10 KiB answers: one keep-alive connection for three attempts");

  const big = sendTarget({ url: `${receiver.url}/big`, headers: {}, timeoutMs: 5000 }, key, agent);
  for (const id of ["evt_4", "evt_5"]) {
    const r = await sendWebhook(big, id, "{}");
    assert.equal(r.verdict, "success");
    assert.equal(r.responseSnippet?.length, SNIPPET_BYTES);
  }
  // The first big answer came on the kept connection and closed it; the second needed a new one (and closed it).
  assert.equal(receiver.connections, 2, "1 MiB answers: each cut off after the snippet, connection and all");
});
