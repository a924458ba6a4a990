import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { type TestContext, test } from "node:test";
import pino from "pino";
import { loadConfig } from "../src/config.ts";
import { ThreadedDelivery } from "../src/delivery/threads.ts";
import { openStore } from "../src/store/db.ts";
import { testBrokers, uniqueName } from "./helpers.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";
import { type Receiver, startReceiver, waitFor } from "./receiver.ts";

const TOKEN = "test-admin-token-0123456789";
const admin = { authorization: `Bearer ${TOKEN}` };

function threaded(gw: IngestGateway): ThreadedDelivery {
  const delivery = gw.gateway.delivery;
  assert.ok(delivery instanceof ThreadedDelivery, "DELIVERY_THREADS=2 runs the workers on threads");
  return delivery;
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

test("delivery threads: destinations spread evenly, per-user order kept, metrics merged on /metrics", async (t) => {
  const { gw, receiver, delivery } = await threadedGateway(t, 4);
  assert.equal(delivery.threadCount, 2);

  const ids: string[] = [];
  for (let i = 0; i < 4; i++) ids.push(await register(gw, `${receiver.url}?d=${i}`));
  const placement = ids.map((id) => delivery.threadOf(id));
  assert.deepEqual(
    [...placement].sort(),
    [0, 0, 1, 1],
    `two destinations on each thread, got ${placement.join(",")}`,
  );

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

  // The workers' counters live on the threads; /metrics sums them with the main thread's registry.
  const text = await (await fetch(`${gw.gateway.url}/metrics`)).text();
  for (const id of ids) {
    assert.equal(sample(text, `deliveries_total{destination="${id}",outcome="delivered"}`), 40, id);
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

  // Disabled and enabled again, a destination goes to the least-loaded thread.
  const moved = ids[0] as string;
  const from = delivery.threadOf(moved);
  const patch = (disabled: boolean) =>
    fetch(`${gw.gateway.url}/api/destinations/${moved}`, {
      method: "PATCH",
      headers: { ...admin, "content-type": "application/json" },
      body: JSON.stringify({ disabled }),
    });
  assert.equal((await patch(true)).status, 200);
  assert.equal(delivery.threadOf(moved), undefined, "a disabled destination is on no thread");
  const other = ids.find((id) => id !== moved && delivery.threadOf(id) === from) as string;
  const del = await fetch(`${gw.gateway.url}/api/destinations/${other}`, {
    method: "DELETE",
    headers: admin,
  });
  assert.equal(del.status, 204);
  // Thread `from` now runs no destination, the other runs two: the enabled one goes to `from`.
  assert.equal((await patch(false)).status, 200);
  assert.equal(delivery.threadOf(moved), from);
  await postEvents(gw, 40, 5);
  await waitFor(() => distinctSeqs(receiver, "0") === 45, "the re-enabled destination's new events");
});

test("delivery threads: a thread that dies is replaced and its destinations keep delivering", async (t) => {
  const { gw, receiver, delivery } = await threadedGateway(t, 2);

  const ids = [await register(gw, `${receiver.url}?d=a`), await register(gw, `${receiver.url}?d=b`)];
  await postEvents(gw, 0, 10);
  await waitFor(() => distinctSeqs(receiver, "a") === 10 && distinctSeqs(receiver, "b") === 10, "first 10");

  const index = delivery.threadOf(ids[0] as string) as number;
  const lost = delivery.thread(index);
  assert.ok(lost);
  await lost.terminate();
  await waitFor(() => delivery.thread(index) !== lost, "a new thread in its place", 10_000);
  assert.equal(delivery.threadOf(ids[0] as string), index, "the destination stays on its thread index");

  // The killed thread's consumers never left their groups: the new ones get the partitions once those
  // sessions expire, then resume from the committed offsets.
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
  const store = openStore(config.DB_PATH);
  const lines: Array<{ msg: string; restartInMs?: number }> = [];
  const logger = pino({ level: "error" }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const delivery = new ThreadedDelivery({
    threads: 1,
    config,
    brokers: config.KAFKA_BROKERS ?? [],
    store,
    // No destination exists, so nothing is ever dead-lettered here.
    sink: { publish: async () => assert.fail("no dead letters expected") },
    logger,
  });
  t.after(async () => {
    await delivery.stop();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  await delivery.start();

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
