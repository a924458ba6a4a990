import assert from "node:assert/strict";
import { existsSync } from "node:fs";
import { test } from "node:test";
import {
  ChildGateway,
  gatewayEnv,
  HttpError,
  startGateway,
  startGateways,
  withFreshDb,
} from "./child-gateway.ts";
import { waitUntil } from "./helpers.ts";

interface DestinationList {
  destinations: Array<{ id: string; name: string | null }>;
}

const names = async (gw: ChildGateway) =>
  (await gw.get<DestinationList>("/api/destinations")).destinations.map((d) => d.name);

test("gateways on one base env: the same brokers, topics and group prefix; a database and port each", async (t) => {
  const base = gatewayEnv({ TOPIC_PARTITIONS: "2" });
  const [a, b] = (await startGateways(t, 2, base, { dropTopics: true })) as [ChildGateway, ChildGateway];
  assert.notEqual(a.url, b.url);
  assert.notEqual(a.dbPath, b.dbPath);
  for (const name of ["EVENTS_TOPIC", "DEAD_LETTER_TOPIC", "CONSUMER_GROUP_PREFIX", "KAFKA_BROKERS"]) {
    assert.equal(a.env[name], base[name], name);
    assert.equal(b.env[name], base[name], name);
  }
  assert.ok(
    a.logs().some((l) => l.msg === "gateway listening"),
    a.output(),
  );
  await a.registerDestination({ url: "http://127.0.0.1:9/hook", name: "a's" });
  assert.deepEqual(await names(a), ["a's"]);
  // Replicas of one deployment: b's own database is a view of the same shared state.
  await waitUntil(async () => (await names(b)).includes("a's"), "b to see a's destination", 10_000);
  assert.notEqual(a.dbPath, b.dbPath);
});

test("restart, stop, start, kill, start again on the same database; another gateway on an empty database", async (t) => {
  const env = gatewayEnv({ TOPIC_PARTITIONS: "2" });
  const gw = await startGateway(t, env, { dropTopics: true });
  const created = await gw.registerDestination({ url: "http://127.0.0.1:9/hook", name: "first" });
  await gw.patch(`/api/destinations/${created.id}`, { name: "renamed" });

  // Graceful first: after a SIGKILL the dead process's group members linger until their session times out.
  await gw.restart();
  assert.equal(await gw.stop(), 0, gw.output());
  assert.match(gw.stdout(), /"msg":"stopped"/, "a graceful stop logs it");
  await gw.start();
  const pid = gw.pid;
  assert.equal(await gw.kill(), "SIGKILL");
  assert.equal(gw.running, false);
  assert.throws(() => gw.pid, /not running/);
  await gw.start();
  assert.notEqual(gw.pid, pid);
  assert.deepEqual(await names(gw), ["renamed"], "started again on the same database");
  await assert.rejects(
    gw.get("/api/destinations/nope"),
    (err) => err instanceof HttpError && err.status === 404,
  );

  // An empty database on the same deployment rebuilds its view from Kafka before it is ready.
  const empty = await startGateway(t, withFreshDb(env));
  assert.deepEqual(await names(empty), ["renamed"]);
  const other = await startGateway(t, gatewayEnv({ TOPIC_PARTITIONS: "2" }), { dropTopics: true });
  assert.deepEqual(await names(other), [], "another deployment shares nothing");
  assert.equal(await other.delete(`/api/destinations/${created.id}`).catch((e: HttpError) => e.status), 404);
});

test("the after hook kills the gateway and removes its database; a quiet PORT=0 gateway is refused", async (t) => {
  let gw: ChildGateway | undefined;
  await t.test("a test that leaves its gateway running", async (st) => {
    gw = await startGateway(st, gatewayEnv({ TOPIC_PARTITIONS: "1" }));
    assert.ok(existsSync(gw.dbPath));
  });
  assert.ok(gw);
  assert.equal(gw.running, false);
  assert.equal(await gw.exited, "SIGKILL");
  assert.equal(existsSync(gw.dbPath), false);

  const quiet = new ChildGateway(gatewayEnv({ LOG_LEVEL: "warn" }));
  await assert.rejects(quiet.start(), /PORT=0 needs LOG_LEVEL info/);
  assert.equal(quiet.running, false);
});
