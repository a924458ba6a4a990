import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import pino from "pino";
import { loadConfig } from "../src/config.ts";
import { DeliveryThreads } from "../src/delivery/threads.ts";
import { openStore } from "../src/store/db.ts";
import { testBrokers, uniqueName } from "./helpers.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";
import { type Receiver, startReceiver, waitFor } from "./receiver.ts";

const TOKEN = "test-admin-token-0123456789";
const admin = { authorization: `Bearer ${TOKEN}` };

function threaded(gw: IngestGateway): DeliveryThreads {
  const threads = gw.gateway.threads;
  assert.ok(threads instanceof DeliveryThreads, "DELIVERY_THREADS=2 runs the engines on threads");
  return threads;
}

/** Each thread's partitions, once every thread reads some and together they read all `partitions`. */
async function settledPartitions(delivery: DeliveryThreads, partitions: number): Promise<number[][]> {
  let split: number[][] = [];
  await waitFor(
    async () => {
      split = (await Promise.all(delivery.engines().map((e) => e.status()))).map((s) => s.partitions);
      return split.every((p) => p.length > 0) && split.flat().length === partitions;
    },
    "the partitions split between the threads",
    30_000,
  );
  return split;
}

async function register(gw: IngestGateway, url: string): Promise<string> {
  const res = await gw.post("/api/destinations", { url, backoffBaseMs: 10, backoffMaxMs: 50 }, admin);
  assert.equal(res.status, 201);
  return ((await res.json()) as { id: string }).id;
}

async function postEvents(gw: IngestGateway, from: number, count: number): Promise<void> {
  for (let i = from; i < from + count; i++) {
    const res = await gw.post("/api/singleEvent", { userID: `user-${i % 5}`, payload: { seq: i } });
    assert.equal(res.status, 202);
  }
}

/** Event seqs a destination (`?d=<tag>`) received with a 2xx, per userID in arrival order. */
function seqsByUser(receiver: Receiver, tag: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of receiver.requests) {
    if (new URL(r.url, "http://x").searchParams.get("d") !== tag) continue;
    const event = JSON.parse(r.body) as { userID: string; payload: { seq: number } };
    out.set(event.userID, [...(out.get(event.userID) ?? []), event.payload.seq]);
  }
  return out;
}

function distinctSeqs(receiver: Receiver, tag: string): number {
  return new Set([...seqsByUser(receiver, tag).values()].flat()).size;
}

/** A sample of the Prometheus text, e.g. `deliveries_total{destination="…",outcome="delivered"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A gateway on two delivery threads and a receiver, both closed when the test ends. */
async function threadedGateway(t: TestContext, partitions: number) {
  const gw = await startIngestGateway({
    ALLOW_PRIVATE_DESTINATIONS: "true",
    TOPIC_PARTITIONS: String(partitions),
    DELIVERY_THREADS: "2",
    ADMIN_TOKEN: TOKEN,
  });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  return { gw, receiver, delivery: threaded(gw) };
}

test("delivery threads: the partitions split between the threads, per-user order kept, metrics merged on /metrics", async (t) => {
  const { gw, receiver, delivery } = await threadedGateway(t, 4);
  assert.equal(delivery.threadCount, 2);

  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await register(gw, `${receiver.url}?d=${i}`));
  const split = await settledPartitions(delivery, 4);
  assert.deepEqual(
    split.flat().sort(),
    [0, 1, 2, 3],
    `each partition read by exactly one thread, got ${JSON.stringify(split)}`,
  );
  for (const s of await Promise.all(delivery.engines().map((e) => e.status()))) {
    assert.equal(s.workers, 4, "every thread runs a worker for every destination (on its partitions)");
  }

  await postEvents(gw, 0, 40);
  await waitFor(() => receiver.requests.length >= 4 * 40, "40 events at each of 4 destinations");
  for (let d = 0; d < 4; d++) {
    const byUser = seqsByUser(receiver, String(d));
    for (const [user, seqs] of byUser) {
      assert.deepEqual(
        seqs,
        [...seqs].sort((a, b) => a - b),
        `destination ${d}, ${user}: in order`,
      );
    }
    assert.equal(distinctSeqs(receiver, String(d)), 40, `destination ${d} has every event`);
  }

  // The workers' counters live on the threads; /metrics sums them with the main thread's registry. A
  // worker counts a delivery once it has read the receiver's answer, a moment after the receiver saw it.
  let text = "";
  await waitFor(async () => {
    text = await (await fetch(`${gw.gateway.url}/metrics`)).text();
    return ids.every(
      (id) =>
        sample(text, `deliveries_total{destination="${id}",outcome="delivered"}`) === 40 &&
        sample(text, `delivery_lag_events{destination="${id}"}`) === 0,
    );
  }, "every delivery counted on /metrics");
  for (const id of ids) {
    assert.equal(sample(text, `deliveries_total{destination="${id}",outcome="delivered"}`), 40, id);
    assert.equal(sample(text, `delivery_lag_events{destination="${id}"}`), 0, `${id} has no lag`);
  }
  assert.equal(sample(text, 'ingest_events_total{outcome="accepted"}'), 40);
  const processLines = text.split("\n").filter((l) => l.startsWith("process_cpu_user_seconds_total "));
  assert.equal(processLines.length, 1, "process metrics come from the main thread only");
  for (const thread of ["0", "1"]) {
    const heap = sample(text, `delivery_thread_heap_used_bytes{thread="${thread}"}`);
    assert.ok(heap !== undefined && heap > 1_000_000, `thread ${thread} reports its own heap, got ${heap}`);
    const lag = sample(text, `delivery_thread_event_loop_lag_p99_seconds{thread="${thread}"}`);
    assert.ok(lag !== undefined && lag >= 0, `thread ${thread} reports its event-loop lag`);
  }

  // Disabled, then enabled again: every thread stops and starts its worker, and nothing is lost.
  const moved = ids[0] as string;
  const patch = (disabled: boolean) =>
    fetch(`${gw.gateway.url}/api/destinations/${moved}`, {
      method: "PATCH",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ disabled }),
    });
  assert.equal((await patch(true)).status, 200);
  for (const s of await Promise.all(delivery.engines().map((e) => e.status()))) assert.equal(s.workers, 3);
  await postEvents(gw, 40, 5);
  assert.equal((await patch(false)).status, 200);
  await postEvents(gw, 45, 5);
  await waitFor(
    () => distinctSeqs(receiver, "0") === 50,
    "the re-enabled destination gets what came meanwhile",
  );
});

test("delivery threads: a thread that dies is replaced and deliveries go on", async (t) => {
  const { gw, receiver, delivery } = await threadedGateway(t, 2);

  await register(gw, `${receiver.url}?d=a`);
  await register(gw, `${receiver.url}?d=b`);
  await settledPartitions(delivery, 2);
  await postEvents(gw, 0, 10);
  await waitFor(() => distinctSeqs(receiver, "a") === 10 && distinctSeqs(receiver, "b") === 10, "first 10");

  const lost = delivery.thread(0);
  assert.ok(lost);
  await lost.terminate();
  await waitFor(() => delivery.thread(0) !== lost, "a new thread in its place", 10_000);

  // The killed thread's member never left the group: its partition moves once that session expires, and
  // the new owner resumes from the destinations' committed offsets.
  await postEvents(gw, 10, 10);
  await waitFor(
    () => distinctSeqs(receiver, "a") === 20 && distinctSeqs(receiver, "b") === 20,
    "every event at both destinations after the thread was replaced",
    60_000,
  );
  for (const tag of ["a", "b"]) {
    for (const [user, seqs] of seqsByUser(receiver, tag)) {
      const firsts = seqs.filter((s, i) => seqs.indexOf(s) === i);
      assert.deepEqual(
        firsts,
        [...firsts].sort((a, b) => a - b),
        `${tag}, ${user}: first deliveries in order`,
      );
    }
  }
});

test("delivery threads: a thread that keeps dying young is restarted less and less often; stop cancels a restart", async (t) => {
  const dir = mkdtempSync(join(tmpdir(), "threads-"));
  const config = loadConfig({
    KAFKA_BROKERS: testBrokers().join(","),
    DB_PATH: join(dir, "gateway.db"),
    EVENTS_TOPIC: uniqueName("threads-events"),
    DEAD_LETTER_TOPIC: uniqueName("threads-dlq"),
    CONSUMER_GROUP_PREFIX: uniqueName("threads"),
    LOG_LEVEL: "silent",
  });
  openStore(config.DB_PATH).close();
  const lines: Array<{ msg: string; restartInMs?: number }> = [];
  const logger = pino({ level: "error" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const delivery = new DeliveryThreads({
    threads: 1,
    config,
    brokers: config.KAFKA_BROKERS ?? [],
    logger,
    // No destination exists, so nothing is ever dead-lettered or gone here.
    main: {
      publish: async () => assert.fail("no dead letters expected"),
      gone: async () => assert.fail("no 410 expected"),
      outcomesCaughtUp: async () => {},
    },
  });
  t.after(async () => {
    await delivery.stop();
    rmSync(dir, { recursive: true, force: true });
  });

  const restarts = () => lines.filter((l) => l.msg === "delivery thread exited; restarting it");
  for (const expected of [250, 500, 1000]) {
    const before = delivery.thread(0);
    await before?.terminate();
    await waitFor(() => delivery.thread(0) !== before, "the replacement thread", 10_000);
    assert.equal(restarts().at(-1)?.restartInMs, expected);
  }

  // A restart still waiting when the gateway stops never happens.
  const last = delivery.thread(0);
  await last?.terminate();
  await waitFor(() => restarts().length === 4, "the fourth exit");
  assert.equal(restarts().at(-1)?.restartInMs, 2000);
  await delivery.stop();
  await new Promise((r) => setTimeout(r, 2500));
  assert.equal(delivery.thread(0), last, "no thread was started after stop()");
});
