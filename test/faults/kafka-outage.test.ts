/**
 * Fault 4 — Kafka unavailable at start-up and mid-run (one broker the test owns). The gateway must serve
 * without Kafka (alive, not ready, 503 + Retry-After for ingest and admin writes, nothing stored), and
 * recover by itself — ingest and the existing delivery workers — once the broker is back.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type LocalKafka, startLocalKafka } from "../../src/kafka/runner.ts";
import { ADMIN_TOKEN, adminHeaders, GatewayClient } from "../child-gateway.ts";
import { cleanUp, freePort, waitUntil } from "../helpers.ts";
import { type IngestGateway, startIngestGateway } from "../ingest-fixture.ts";
import { startReceiver } from "../receiver.ts";
import { acceptedEvents, analyseDeliveries, startLoad } from "./fault-helpers.ts";

/** A 503 problem document with Retry-After; returns the problem. */
async function expectProblem503(res: Response, retryAfter: string): Promise<Record<string, unknown>> {
  const text = await res.text();
  assert.equal(res.status, 503, text);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(res.headers.get("retry-after"), retryAfter);
  const problem = JSON.parse(text) as Record<string, unknown>;
  assert.equal(problem.status, 503);
  assert.equal(typeof problem.title, "string");
  assert.equal(typeof problem.detail, "string");
  return problem;
}

const GATEWAY_ENV = {
  ALLOW_PRIVATE_DESTINATIONS: "true",
  TOPIC_PARTITIONS: "3",
  INGEST_RETRY_AFTER_S: "1",
  INGEST_ACK_TIMEOUT_MS: "4000",
  ADMIN_TOKEN,
};

test("Kafka down at start-up: alive, not ready, 503s and nothing stored; recovers without a restart", async (t) => {
  const port = await freePort();
  let kafka: LocalKafka | undefined;
  // Nothing listens on the broker port yet.
  const g = await startIngestGateway(
    { ...GATEWAY_ENV, KAFKA_BROKERS: `127.0.0.1:${port}` },
    { awaitState: false },
  );
  const receiver = await startReceiver();
  t.after(() =>
    cleanUp(
      () => g.stop(),
      () => receiver.close(),
      () => kafka?.stop(),
    ),
  );
  const url = g.gateway.url;
  const api = new GatewayClient(url);

  assert.equal((await fetch(`${url}/healthz`)).status, 200, "the process is alive without Kafka");
  const ready = await fetch(`${url}/readyz`);
  assert.equal(ready.status, 503);
  assert.equal(((await ready.json()) as { checks: { kafka: string } }).checks.kafka, "down");

  const ingest = await expectProblem503(await g.post("/api/singleEvent", { userID: "u", payload: 0 }), "1");
  assert.equal(ingest.title, "Kafka unavailable");
  await expectProblem503(await g.post("/api/events", { events: [{ userID: "u", payload: 0 }] }), "1");

  const register = await g.post("/api/destinations", { url: receiver.url }, adminHeaders);
  await expectProblem503(register, "5");
  // Without Kafka this replica cannot know the shared configuration: 503, never a stale (empty) list.
  await expectProblem503(await api.request("GET", "/api/destinations"), "5");

  // The broker comes up on the port the gateway was given; the gateway is not restarted.
  const downFor = Date.now();
  kafka = await startLocalKafka({ port });
  const brokerUp = Date.now();
  await waitUntil(
    async () => (await fetch(`${url}/readyz`)).status === 200,
    "/readyz to turn 200 without a restart",
    90_000,
    250,
  );
  const readyAfter = Date.now() - brokerUp;

  const dest = await api.registerDestination({ url: receiver.url, backoffBaseMs: 100, backoffMaxMs: 1000 });
  assert.ok(runnerOf(g, dest.id), "the new destination's worker runs (or its thread, with delivery threads)");

  const accepted: Array<{ id: string; userID: string; seq: number }> = [];
  for (let seq = 1; seq <= 30; seq++) {
    const userID = `user-${seq % 3}`;
    const res = await g.post("/api/singleEvent", { userID, payload: { seq } });
    assert.equal(res.status, 202, await res.clone().text());
    accepted.push({ id: ((await res.json()) as { id: string }).id, userID, seq });
  }
  await waitUntil(() => receiver.delivered.length >= accepted.length, "every event at the destination");
  const report = analyseDeliveries(accepted, receiver.delivered);
  t.diagnostic(
    `broker started ${((brokerUp - downFor) / 1000).toFixed(1)} s after the gateway's first 503s; ` +
      `/readyz 200 ${(readyAfter / 1000).toFixed(1)} s after the broker was up; ` +
      `accepted ${accepted.length}, delivered ${report.delivered}, duplicates ${report.duplicates}, lost ${report.lost.length}`,
  );
  assert.deepEqual(report.lost, []);
  assert.deepEqual(report.orderViolations, []);
});

/** What runs a destination's deliveries: its worker in the main thread's engine, or delivery thread 0. */
function runnerOf(g: IngestGateway, destinationId: string): object | undefined {
  const { engine, threads } = g.gateway;
  return threads ? threads.thread(0) : engine?.worker(destinationId);
}

// Once with the workers on the main thread (the very same DeliveryWorker object must survive), once on
// two delivery threads (the same thread must survive: no thread was lost and restarted).
for (const threads of ["0", "2"]) {
  test(`Kafka killed mid-run (DELIVERY_THREADS=${threads}): ingest 503s (never 2xx), then ingest and the same workers resume after restart`, async (t) => {
    const kafka = await startLocalKafka();
    const g = await startIngestGateway({
      ...GATEWAY_ENV,
      DELIVERY_THREADS: threads,
      KAFKA_BROKERS: kafka.brokers.join(","),
    });
    const receiver = await startReceiver();
    const load = { current: undefined as ReturnType<typeof startLoad> | undefined };
    t.after(() =>
      cleanUp(
        () => load.current?.stop(),
        () => g.stop(),
        () => receiver.close(),
        () => kafka.stop(),
      ),
    );
    await g.gateway.kafkaReady;
    const url = g.gateway.url;
    const dest = await new GatewayClient(url).registerDestination({
      url: receiver.url,
      backoffBaseMs: 100,
      backoffMaxMs: 1000,
    });
    const worker = runnerOf(g, dest.id);
    assert.ok(worker);

    // 10 clients × 5 users, 20 requests/s each.
    const running = startLoad({ url, clients: 10, usersPerClient: 5, ratePerClient: 20 });
    load.current = running;
    await waitUntil(() => receiver.delivered.length >= 200, "deliveries flowing before the outage");

    await kafka.killNode(1);
    const killedAt = Date.now();
    await waitUntil(
      () => running.outcomes.filter((o) => o.sentAt > killedAt).length >= 100,
      "ingest answers while the broker is down",
    );
    const readyWhileDown = await fetch(`${url}/readyz`);
    assert.equal(readyWhileDown.status, 503, "not ready while the broker is down");
    // Down long enough for the consumer's retries to run out (kafkajs crashes and restarts it).
    await sleep(8000);
    const deliveredBeforeRestart = receiver.delivered.length;
    const restartAt = Date.now();
    await kafka.restartNode(1);
    const restartedAt = Date.now();
    await waitUntil(
      () => running.outcomes.some((o) => o.status === 202 && o.sentAt > restartedAt),
      "ingest to accept again without a gateway restart",
      90_000,
    );
    const firstAcceptedAfter = Math.min(
      ...running.outcomes.filter((o) => o.status === 202 && o.sentAt > restartedAt).map((o) => o.answeredAt),
    );
    await sleep(3000);
    await running.stop();
    await waitUntil(async () => (await fetch(`${url}/readyz`)).status === 200, "/readyz 200 again");

    const outcomes = running.outcomes;
    const duringOutage = outcomes.filter((o) => o.sentAt > killedAt && o.answeredAt < restartAt);
    assert.ok(duringOutage.length > 0);
    assert.deepEqual(
      [...new Set(duringOutage.map((o) => o.status))],
      [503],
      "every request sent and answered while the broker was down got a 503",
    );
    const others = outcomes.filter((o) => !(o.status === 202 && o.id) && o.status !== 503);
    assert.deepEqual(
      others.slice(0, 5).map((o) => `${o.status} ${o.error ?? o.title ?? ""}`),
      [],
      "every answer is a 202 with an id or a 503",
    );

    const accepted = acceptedEvents(outcomes);
    await waitUntil(
      () => analyseDeliveries(accepted, receiver.delivered).lost.length === 0,
      "every accepted event delivered by the same worker",
      120_000,
      250,
    );
    assert.equal(runnerOf(g, dest.id), worker, "the worker (or thread) that ran before the outage");
    const report = analyseDeliveries(accepted, receiver.delivered);
    const counts = running.counts();
    t.diagnostic(
      `${counts.sent} requests: accepted ${counts.accepted}, refused ${counts.refused} (${duringOutage.length} ` +
        `while the broker was down), other ${counts.other}; first 202 ${((firstAcceptedAfter - restartedAt) / 1000).toFixed(1)} s ` +
        `after the broker was back (its restart took ${((restartedAt - restartAt) / 1000).toFixed(1)} s); ` +
        `delivered ${report.delivered} (${deliveredBeforeRestart} before the restart), duplicates ${report.duplicates}, ` +
        `lost ${report.lost.length}, refused-but-written ${report.unannounced}`,
    );
    assert.deepEqual(report.lost, []);
    assert.deepEqual(report.orderViolations.slice(0, 5), []);
  });
}
