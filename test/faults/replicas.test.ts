/**
 * Replicas: three gateway processes on one 3-node KRaft cluster share one configuration, one delivery group
 * and one record of outcomes, all held in Kafka. A destination registered on replica 1 is read on 2 and 3;
 * 200 users' events go round-robin to all three; each replica delivers its share of the partitions. One
 * replica is SIGKILLed mid-load, then a broker. Every 202 must reach both destinations in per-user order;
 * duplicates only within the in-flight window. A fourth replica with an empty database then rebuilds its
 * view from Kafka and answers for destinations and attempts it never saw happen.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { type ChildGateway, gatewayEnv, startGateway, startGateways, withFreshDb } from "../child-gateway.ts";
import { waitUntil } from "../helpers.ts";
import { startReceiver } from "../receiver.ts";
import { acceptedEvents, analyseDeliveries, clusterForFile, startLoad } from "./fault-helpers.ts";

const CLIENTS = 40;
const USERS_PER_CLIENT = 5; // 200 users
const RATE_PER_CLIENT = 10;

const file = clusterForFile();

async function metric(g: ChildGateway, name: string): Promise<number> {
  const text = await (await fetch(`${g.url}/metrics`)).text();
  let sum = 0;
  for (const line of text.split("\n")) {
    if (line.startsWith(`${name}{`) || line.startsWith(`${name} `)) sum += Number(line.split(" ").pop());
  }
  return sum;
}

test("three replicas on a 3-node cluster: shared destinations, shared delivery, replica and broker loss, an empty replica rebuilds", async (t) => {
  assert.ok(file.cluster);
  const brokers = file.cluster.brokers;
  const base = gatewayEnv({
    KAFKA_BROKERS: brokers.join(","),
    TOPIC_PARTITIONS: "6",
    TOPIC_REPLICATION_FACTOR: "3",
    INGEST_RETRY_AFTER_S: "1",
    DELIVERY_COMMIT_MS: "1000",
  });
  const replicas = await startGateways(t, 3, base, { readyTimeoutMs: 120_000 });
  const [r1, r2, r3] = replicas as [ChildGateway, ChildGateway, ChildGateway];

  // --- Registered on replica 1, read on 2 and 3.
  const a = await startReceiver();
  const b = await startReceiver();
  file.receivers.push(a, b);
  const destA = await r1.registerDestination({ url: a.url, maxAttempts: 50, backoffMaxMs: 1000 });
  const destB = await r1.registerDestination({ url: b.url, maxAttempts: 50, backoffMaxMs: 1000 });
  const registered = Date.now();
  for (const g of [r2, r3]) {
    await waitUntil(
      async () => (await g.request("GET", `/api/destinations/${destB.id}`)).status === 200,
      "the destination to be known on every replica",
      30_000,
    );
  }
  t.diagnostic(`registered on replica 1, readable on replicas 2 and 3 after ${Date.now() - registered} ms`);
  const listed = await r3.get<{ destinations: Array<{ id: string }> }>("/api/destinations");
  assert.deepEqual(listed.destinations.map((d) => d.id).sort(), [destA.id, destB.id].sort());

  // --- Load round-robin over the three replicas.
  const urls = replicas.map((g) => g.url);
  file.load = startLoad({
    url: r1.url,
    urls,
    clients: CLIENTS,
    usersPerClient: USERS_PER_CLIENT,
    ratePerClient: RATE_PER_CLIENT,
  });
  await sleep(8000);
  const shares = await Promise.all(replicas.map((g) => metric(g, "deliveries_total")));
  t.diagnostic(`deliveries per replica before any loss: ${shares.join(", ")}`);
  for (const [i, n] of shares.entries()) assert.ok(n > 0, `replica ${i + 1} delivers a share (${n})`);

  // --- SIGKILL replica 3 mid-load; its partitions move to 1 and 2 within the session timeout.
  urls.splice(2, 1);
  const killedAt = Date.now();
  await r3.kill("SIGKILL");
  await sleep(15_000);
  // --- Then a broker.
  await file.cluster.killNode(3);
  await sleep(8000);
  await file.cluster.restartNode(3);
  await sleep(4000);
  await file.load.stop();
  const accepted = acceptedEvents(file.load.outcomes);
  t.diagnostic(
    `accepted ${accepted.length}; load ran ${Math.round((Date.now() - killedAt) / 1000)} s past the replica kill`,
  );
  assert.ok(accepted.length > 1000, `enough load went through (${accepted.length})`);
  const other = file.load.outcomes.filter((o) => o.status !== 202 && o.status !== 503 && o.status !== 0);
  assert.deepEqual(other.slice(0, 5), [], "every answer is a 202, a 503 or (the killed replica) no answer");

  // --- Every accepted event reaches both destinations, in per-user order.
  for (const [name, r] of [
    ["a", a],
    ["b", b],
  ] as const) {
    await waitUntil(
      () => analyseDeliveries(accepted, r.delivered).lost.length === 0,
      `destination ${name} to receive every accepted event`,
      180_000,
    );
    const report = analyseDeliveries(accepted, r.delivered);
    t.diagnostic(
      `destination ${name}: ${report.delivered}/${report.expected} delivered, ${report.duplicates} duplicates`,
    );
    assert.deepEqual(report.lost, []);
    assert.deepEqual(report.orderViolations.slice(0, 5), []);
    // Duplicates only from the in-flight window of the killed replica (a 2xx whose outcome it never
    // recorded) — a small fraction, never the bulk of its partitions' history.
    assert.ok(
      report.duplicates < accepted.length / 10,
      `duplicates ${report.duplicates} stay within the window`,
    );
  }

  // --- A fourth replica with an empty database rebuilds, then answers for what others did.
  const started = Date.now();
  const r4 = await startGateway(t, withFreshDb(base), { readyTimeoutMs: 120_000 });
  t.diagnostic(`an empty replica was ready after ${Date.now() - started} ms`);
  const fourth = await r4.get<{ destinations: Array<{ id: string }> }>("/api/destinations");
  assert.deepEqual(fourth.destinations.map((d) => d.id).sort(), [destA.id, destB.id].sort());
  const sample = accepted[0];
  assert.ok(sample);
  const attempts = await r4.get<{ attempts: Array<{ destinationId: string; outcome: string }> }>(
    `/api/events/${sample.id}/attempts`,
  );
  const succeeded = attempts.attempts.filter((x) => x.outcome === "succeeded").map((x) => x.destinationId);
  assert.deepEqual(
    [...new Set(succeeded)].sort(),
    [destA.id, destB.id].sort(),
    "attempts made by other replicas",
  );
});
