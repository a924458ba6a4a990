import assert from "node:assert/strict";
import { test } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import { startIngestGateway } from "./ingest-fixture.ts";
import { type Receiver, startReceiver, waitFor } from "./receiver.ts";

type Problem = { errors: Array<{ field: string; message: string }> };

/** Event numbers (payload.i) a receiver got for the destination tagged `?d=<tag>`, per user, in arrival order. */
function byUser(receiver: Receiver, tag: string): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const r of receiver.requests) {
    if (!r.url.endsWith(`d=${tag}`)) continue;
    const e = JSON.parse(r.body) as { userID: string; payload: { i: number } };
    out.set(e.userID, [...(out.get(e.userID) ?? []), e.payload.i]);
  }
  return out;
}

const count = (receiver: Receiver, tag: string) =>
  receiver.requests.filter((r) => r.url.endsWith(`d=${tag}`)).length;

test("startFrom backfills a new destination; replay re-delivers a window; other destinations are untouched", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "3" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());
  const api = gw.admin;
  const send = async (i: number) => {
    const res = await gw.post("/api/singleEvent", { userID: `user-${i % 2}`, payload: { i } });
    assert.equal(res.status, 202);
  };

  for (let i = 0; i < 6; i++) await send(i);
  await sleep(20);
  const mid = new Date().toISOString();
  await sleep(20);
  for (let i = 6; i < 10; i++) await send(i);

  // Refusals.
  const future = await api("POST", "/api/destinations", {
    url: receiver.url,
    startFrom: new Date(Date.now() + 3_600_000).toISOString(),
  });
  assert.equal(future.status, 400, "a backfill from the future");
  assert.equal(((await future.json()) as Problem).errors[0]?.field, "startFrom");
  assert.equal(
    (await api("POST", "/api/destinations", { url: receiver.url, startFrom: "latest" })).status,
    400,
  );

  // Backfills: from the log's start, from a time, and none.
  const earliest = (await (
    await api("POST", "/api/destinations", { url: `${receiver.url}?d=all`, startFrom: "earliest" })
  ).json()) as { id: string; replay: { cancelled: boolean } | null };
  assert.equal(earliest.replay?.cancelled, false);
  // A time before 1970 is the log's start (Kafka would read a negative timestamp as a special query).
  const ancient = await api("POST", "/api/destinations", {
    url: `${receiver.url}?d=ancient`,
    startFrom: "0797-12-27T10:43:24Z",
  });
  assert.equal(ancient.status, 201);
  const fromMid = (await (
    await api("POST", "/api/destinations", { url: `${receiver.url}?d=mid`, startFrom: mid })
  ).json()) as { id: string };
  const live = (await (await api("POST", "/api/destinations", { url: `${receiver.url}?d=live` })).json()) as {
    id: string;
    replay: unknown;
  };
  assert.equal(live.replay, null);
  await send(10);
  await send(11);
  await waitFor(
    () =>
      count(receiver, "all") === 12 &&
      count(receiver, "ancient") === 12 &&
      count(receiver, "mid") === 6 &&
      count(receiver, "live") === 2,
    "backfills and live events",
  );
  assert.deepEqual(byUser(receiver, "all").get("user-0"), [0, 2, 4, 6, 8, 10], "order per user kept");
  assert.deepEqual(byUser(receiver, "all").get("user-1"), [1, 3, 5, 7, 9, 11]);
  assert.deepEqual(byUser(receiver, "mid").get("user-0"), [6, 8, 10]);
  assert.deepEqual(byUser(receiver, "mid").get("user-1"), [7, 9, 11]);
  await waitFor(async () => {
    const s = (await (await api("GET", `/api/destinations/${earliest.id}/replay`)).json()) as { lag: number };
    return s.lag === 0;
  }, "the backfill's lag reaching 0");

  // Replay of a window on the destination that got everything live.
  const badWindow = await api("POST", `/api/destinations/${live.id}/replay`, { from: mid, to: mid });
  assert.equal(badWindow.status, 400, "an empty window");
  assert.equal(((await badWindow.json()) as Problem).errors[0]?.field, "to");
  const noFrom = await api("POST", `/api/destinations/${live.id}/replay`, {});
  assert.equal(noFrom.status, 400);
  assert.equal(((await noFrom.json()) as Problem).errors[0]?.field, "from");
  assert.equal((await api("POST", "/api/destinations/dest_nope/replay", { from: mid })).status, 404);

  const replayed = await api("POST", `/api/destinations/${fromMid.id}/replay`, {
    from: new Date(0).toISOString(),
    to: mid,
  });
  assert.equal(replayed.status, 202);
  const state = (await replayed.json()) as { replay: { from: string; to: string; cancelled: boolean } };
  assert.equal(state.replay.to, mid);
  // Events 0–5 (before `mid`) again; 6–11 were delivered and are not sent again.
  await waitFor(() => count(receiver, "mid") === 12, "the replayed window");
  assert.deepEqual(byUser(receiver, "mid").get("user-0"), [6, 8, 10, 0, 2, 4]);
  assert.deepEqual(byUser(receiver, "mid").get("user-1"), [7, 9, 11, 1, 3, 5]);
  await send(12);
  await waitFor(() => count(receiver, "mid") === 13 && count(receiver, "live") === 3, "live events after");
  assert.equal(count(receiver, "all"), 13, "the other destinations got nothing twice");
  assert.equal(count(receiver, "live"), 3);

  // Every new route is in the OpenAPI document, with the admin bearer scheme.
  const doc = (await (await fetch(`${gw.gateway.url}/openapi.json`)).json()) as {
    paths: Record<string, Record<string, { security?: unknown[] }>>;
  };
  for (const [path, method] of [
    ["/api/destinations/{id}/replay", "post"],
    ["/api/destinations/{id}/replay", "get"],
    ["/api/destinations/{id}/replay", "delete"],
    ["/api/destinations/{id}/recover", "post"],
    ["/api/destinations/{id}/secret/rotate", "post"],
    ["/api/operational-destinations", "post"],
    ["/api/operational-destinations/{id}", "patch"],
    ["/api/event-types", "post"],
  ] as const) {
    assert.deepEqual(doc.paths[path]?.[method]?.security, [{ adminToken: [] }], `${method} ${path}`);
  }
});

test("recover re-sends dead events since a time; a replay is cancellable", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  let failing = true;
  const receiver = await startReceiver((_req, res) => {
    if (failing) res.statusCode = 503;
  });
  t.after(() => receiver.close());
  const api = gw.admin;

  const dest = (await (
    await api("POST", "/api/destinations", { url: receiver.url, maxAttempts: 1 })
  ).json()) as { id: string };
  const t0 = new Date().toISOString();
  for (let i = 0; i < 3; i++) await gw.post("/api/singleEvent", { userID: "u1", payload: { i } });
  await waitFor(async () => {
    const res = await api("GET", `/api/destinations/${dest.id}/dead-letters`);
    return ((await res.json()) as { deadLetters: unknown[] }).deadLetters.length === 3;
  }, "three dead letters");

  const bad = await api("POST", `/api/destinations/${dest.id}/recover`, {
    since: new Date(Date.now() + 60_000).toISOString(),
  });
  assert.equal(bad.status, 400, "a recovery from the future");
  assert.equal(((await bad.json()) as Problem).errors[0]?.field, "since");
  const none = await api("POST", `/api/destinations/${dest.id}/recover`, { since: new Date().toISOString() });
  assert.deepEqual(await none.json(), { recovered: 0 }, "nothing died since now");
  failing = false;
  const recovered = await api("POST", `/api/destinations/${dest.id}/recover`, { since: t0 });
  assert.equal(recovered.status, 202);
  assert.deepEqual(await recovered.json(), { recovered: 3 });
  await waitFor(() => receiver.delivered.length === 3, "the recovered events");
  // Like dead-letter replay, recovery re-sends dead events without an order between them.
  assert.deepEqual(receiver.delivered.map((e) => (e.payload as { i: number }).i).sort(), [0, 1, 2]);

  // A replay against a receiver that fails again holds on its first event…
  failing = true;
  const patched = await api("PATCH", `/api/destinations/${dest.id}`, { maxAttempts: 50, backoffBaseMs: 50 });
  assert.equal(patched.status, 200);
  const before = receiver.requests.length;
  const started = await api("POST", `/api/destinations/${dest.id}/replay`, { from: t0 });
  assert.equal(started.status, 202);
  await waitFor(() => receiver.requests.length > before, "the replay's attempts");
  // …until it is cancelled: progress jumps to where the replay was asked for, nothing is left to do.
  const cancelled = await api("DELETE", `/api/destinations/${dest.id}/replay`);
  assert.equal(cancelled.status, 202);
  assert.equal(((await cancelled.json()) as { replay: { cancelled: boolean } }).replay.cancelled, true);
  assert.equal(
    (await api("DELETE", `/api/destinations/${dest.id}/replay`)).status,
    409,
    "nothing left to cancel",
  );
  await waitFor(async () => {
    const s = (await (await api("GET", `/api/destinations/${dest.id}/replay`)).json()) as { lag: number };
    return s.lag === 0;
  }, "lag 0 once the replay is cancelled");
});
