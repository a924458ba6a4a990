/**
 * The console's API against real gateway processes, a real broker and real receivers: the live tail (SSE
 * read with fetch and the Bearer header), GET /api/stats from roll-ups that every replica holds alike,
 * destination health, an event's body read back from the events topic, bad input, and the bus's promise
 * to build nothing while no console listens.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import { Registry } from "prom-client";
import { LIVE_QUEUE_MAX, liveRoutes } from "../src/http/live.ts";
import type { EventInput } from "../src/ingest/events.ts";
import { LiveBus, type LiveItem } from "../src/live/bus.ts";
import {
  ADMIN_TOKEN,
  type ChildGateway,
  type GatewayClient,
  gatewayEnv,
  HttpError,
  startGateway,
  startGateways,
  withFreshDb,
} from "./child-gateway.ts";
import { startReceiver, waitFor } from "./receiver.ts";

interface Stats {
  accepted: Array<{ type: string; count: number }>;
  deliveries: Array<{ destinationId: string; outcome: string; count: number }>;
  latency: Array<{ count: number; p50Ms: number | null; p99Ms: number | null }>;
  topUsers: Array<{ userID: string; count: number }>;
}

/** Reads GET /api/live as a stream until `signal` aborts; every item goes to `items`. */
async function tail(url: string, query: string, items: LiveItem[], signal: AbortSignal): Promise<Response> {
  const res = await fetch(`${url}/api/live${query}`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
    signal,
  });
  if (!res.ok || !res.body) return res;
  void (async () => {
    let buffer = "";
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += Buffer.from(chunk).toString("utf8");
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block
            .split("\n")
            .filter((l) => l.startsWith("data:"))
            .map((l) => l.slice(5).trim())
            .join("");
          if (block.includes("event: items"))
            items.push(...(JSON.parse(data) as { items: LiveItem[] }).items);
          cut = buffer.indexOf("\n\n");
        }
      }
    } catch {
      // aborted
    }
  })();
  return res;
}

const sum = (rows: Array<{ count: number }>) => rows.reduce((a, r) => a + r.count, 0);

async function problem(
  g: GatewayClient,
  path: string,
  token?: string,
): Promise<{ status: number; body: { errors?: Array<{ field: string }> } }> {
  const res = await fetch(`${g.url}${path}`, {
    headers: token === undefined ? {} : { authorization: `Bearer ${token}` },
  });
  return { status: res.status, body: (await res.json()) as { errors?: Array<{ field: string }> } };
}

test("live tail, stats roll-ups on every replica, destination health, event bodies", async (t) => {
  const ok = await startReceiver();
  const failing = await startReceiver((_req, res) => {
    res.statusCode = 500;
  });
  t.after(async () => {
    await ok.close();
    await failing.close();
  });
  const env = gatewayEnv();
  const [g1, g2] = await startGateways(t, 2, env);
  assert.ok(g1 && g2);
  const good = await g1.registerDestination({ url: ok.url, name: "good" });
  const bad = await g1.registerDestination({ url: failing.url, name: "bad", maxAttempts: 1 });

  // Two consoles on g1: everything, and only u-2's events.
  const stop = new AbortController();
  t.after(() => stop.abort());
  const all: LiveItem[] = [];
  const onlyU2: LiveItem[] = [];
  assert.equal((await tail(g1.url, "", all, stop.signal)).status, 200);
  assert.equal((await tail(g1.url, "?userID=u-2", onlyU2, stop.signal)).status, 200);
  // A console on the other replica: it sees every replica's deliveries, and only the events it accepted.
  const onG2: LiveItem[] = [];
  assert.equal((await tail(g2.url, "", onG2, stop.signal)).status, 200);

  const events = [
    { userID: "u-1", type: "a", payload: 1 },
    { userID: "u-1", type: "a", payload: 2 },
    { userID: "u-1", type: "a", payload: 3 },
    { userID: "u-2", type: "b", payload: 4 },
    { userID: "u-2", type: "b", payload: 5 },
    { userID: "u-3", type: "a", payload: 6 },
  ];
  const { ids } = await g1.ingestBatch(events);

  // The tail: each event accepted, and its attempt at both destinations.
  await waitFor(
    () =>
      ids.every(
        (id) =>
          all.some((i) => i.kind === "accepted" && i.eventId === id) &&
          all.some((i) => i.kind === "delivery" && i.eventId === id && i.destinationId === good.id) &&
          all.some((i) => i.kind === "delivery" && i.eventId === id && i.destinationId === bad.id),
      ),
    "every accepted event and its two attempts in the live tail",
  );
  const accepted = all.find((i) => i.kind === "accepted" && i.eventId === ids[3]);
  assert.deepEqual(accepted && { userID: accepted.userID, type: accepted.type }, {
    userID: "u-2",
    type: "b",
  });
  const dead = all.find((i) => i.kind === "delivery" && i.eventId === ids[0] && i.destinationId === bad.id);
  assert.equal(dead?.kind === "delivery" && dead.outcome, "dead");
  await waitFor(
    () => onG2.filter((i) => i.kind === "delivery").length >= 12,
    "all 12 attempts in the other replica's tail",
  );
  assert.equal(onG2.filter((i) => i.kind === "accepted").length, 0, "g2 accepted nothing");
  await waitFor(() => onlyU2.length >= 6, "u-2's two events and four attempts in the filtered tail");
  assert.ok(
    onlyU2.every((i) => i.userID === "u-2"),
    "the filtered tail holds u-2's items only",
  );

  // The same figures on both replicas: g2 accepted nothing and delivered whatever its partitions held.
  for (const g of [g1, g2]) {
    let stats: Stats | undefined;
    await waitFor(async () => {
      stats = await g.get<Stats>("/api/stats?bucket=60");
      return sum(stats.accepted) === 6 && sum(stats.deliveries) === 12;
    }, `the roll-ups of ${g.url}`);
    const s = stats as Stats;
    const byType = Object.fromEntries(
      ["a", "b"].map((type) => [type, sum(s.accepted.filter((a) => a.type === type))]),
    );
    assert.deepEqual(byType, { a: 4, b: 2 });
    const of = (dest: string, outcome: string) =>
      sum(s.deliveries.filter((d) => d.destinationId === dest && d.outcome === outcome));
    assert.equal(of(good.id, "succeeded"), 6);
    assert.equal(of(bad.id, "dead"), 6);
    assert.equal(sum(s.latency), 6, "latency of the 6 successful attempts");
    assert.ok(s.latency.every((l) => l.p50Ms !== null && (l.p99Ms as number) >= (l.p50Ms as number)));
    assert.deepEqual(s.topUsers.slice(0, 3), [
      { userID: "u-1", count: 3 },
      { userID: "u-2", count: 2 },
      { userID: "u-3", count: 1 },
    ]);
  }

  // A replica started later on an empty database rebuilds the same roll-ups from Kafka.
  const g3 = await startGateway(t, withFreshDb(env));
  const strip = (x: Stats) => ({
    accepted: x.accepted,
    deliveries: x.deliveries,
    latency: x.latency,
    topUsers: x.topUsers,
  });
  const reference = strip(await g1.get<Stats>("/api/stats?bucket=60"));
  assert.deepEqual(strip(await g3.get<Stats>("/api/stats?bucket=60")), reference);

  // Health: success over the last hour, lag, last error, on the replica that did not deliver everything.
  const health = await g2.get<{
    destinations: Array<{
      id: string;
      lag: number | null;
      lastHour: { successRate: number | null };
      lastError: { statusCode: number | null } | null;
    }>;
  }>("/api/destination-health");
  const h = Object.fromEntries(health.destinations.map((d) => [d.id, d]));
  assert.equal(h[good.id]?.lastHour.successRate, 1);
  assert.equal(h[good.id]?.lastError, null);
  assert.equal(h[bad.id]?.lastHour.successRate, 0);
  assert.equal(h[bad.id]?.lastError?.statusCode, 500);
  await waitFor(async () => {
    const again = await g2.get<{ destinations: Array<{ lag: number | null }> }>("/api/destination-health");
    return again.destinations.every((d) => d.lag === 0);
  }, "lag 0 everywhere once all is finished");

  // The event's body from the events topic, on either replica; an id never accepted is a 404.
  const body = await g2.get<{ id: string; userID: string; type: string; payload: unknown }>(
    `/api/events/${ids[4]}`,
  );
  assert.deepEqual(
    { ...body, timestamp: undefined },
    {
      id: ids[4],
      userID: "u-2",
      type: "b",
      payload: 5,
      timestamp: undefined,
    },
  );
  const missing = "01900000-0000-7000-8000-000000000000";
  await assert.rejects(
    g1.get(`/api/events/${missing}`),
    (err) => err instanceof HttpError && err.status === 404,
  );

  // Bad input names the field; no token or a wrong one is 401.
  const badBucket = await problem(g1, "/api/stats?bucket=15", ADMIN_TOKEN);
  assert.equal(badBucket.status, 400);
  assert.equal(badBucket.body.errors?.[0]?.field, "bucket");
  const backwards = await problem(
    g1,
    "/api/stats?from=2025-01-02T00:00:00Z&to=2025-01-01T00:00:00Z",
    ADMIN_TOKEN,
  );
  assert.equal(backwards.status, 400);
  assert.equal(backwards.body.errors?.[0]?.field, "from");
  const tooMany = await problem(g1, "/api/stats?from=2020-01-01T00:00:00Z&bucket=10", ADMIN_TOKEN);
  assert.equal(tooMany.status, 400);
  assert.equal((await problem(g1, "/api/live")).status, 401);
  assert.equal((await problem(g1, "/api/stats", "wrong")).status, 401);
  assert.equal((await problem(g1, `/api/events/${ids[0]}`)).status, 401);

  // Every console route is in the OpenAPI document.
  const doc = await g1.get<{ paths: Record<string, unknown> }>("/openapi.json");
  for (const path of ["/api/stats", "/api/live", "/api/destination-health", "/api/events/{id}", "/console"]) {
    assert.ok(doc.paths[path], `${path} in /openapi.json`);
  }
  // The console's page and its libraries, served by the gateway itself.
  for (const path of ["/console", "/console/app.js", "/console/preact.mjs", "/console/uplot.mjs"]) {
    const res = await fetch(`${g1.url}${path}`);
    assert.equal(res.status, 200, path);
    await res.arrayBuffer();
  }
  for (const missing of ["nope.js", "constructor", "__proto__", "..%2Fconsole.ts"]) {
    assert.equal((await fetch(`${g1.url}/console/${missing}`)).status, 404, missing);
  }

  // Open tails do not hold a graceful stop: the gateway ends their streams and exits 0.
  assert.equal(await (g2 as ChildGateway).stop(), 0);
});

test("the live bus builds nothing while no console listens, and drops nothing it is not asked to", () => {
  const bus = new LiveBus();
  // Any read of these events would throw: with no listener, accepting them must not look at them.
  const untouchable = new Proxy([] as EventInput[], {
    get() {
      throw new Error("read while nobody listens");
    },
  });
  bus.accepted(untouchable, [], Date.now());
  bus.attempts(untouchable as never);

  const got: LiveItem[][] = [];
  const unsubscribe = bus.subscribe((items) => got.push(items));
  bus.accepted([{ userID: "u", type: "t", payload: null }], ["e-1"], 1);
  bus.attempts([
    {
      eventId: "e-1",
      destinationId: "d",
      userId: "u",
      attemptNumber: 1,
      startedAt: 10,
      durationMs: 5,
      outcome: "succeeded",
      statusCode: 200,
    },
  ]);
  assert.equal(got.length, 2);
  assert.deepEqual(got[1]?.[0], {
    kind: "delivery",
    at: 15,
    eventId: "e-1",
    userID: "u",
    destinationId: "d",
    type: "t",
    attemptNumber: 1,
    outcome: "succeeded",
    statusCode: 200,
    durationMs: 5,
  });
  unsubscribe();
  assert.equal(bus.listeners, 0);
  bus.accepted(untouchable, [], Date.now());
});

test("a console that does not read loses items (counted), and ingest never waits for it", async () => {
  const live = new LiveBus();
  const registry = new Registry();
  const app = liveRoutes({ live, registry });
  const res = await app.request("/api/live");
  assert.equal(res.status, 200);
  assert.equal(res.headers.get("content-type"), "text/event-stream");
  await waitFor(() => live.listeners === 1, "the stream's subscription");
  // Nobody reads the body: the route's queue fills and the rest is dropped, synchronously, in the call.
  const events = Array.from({ length: LIVE_QUEUE_MAX + 1000 }, (_, i) => ({
    userID: `u-${i}`,
    type: "t",
    payload: null,
  }));
  live.accepted(
    events,
    events.map((_, i) => `e-${i}`),
    Date.now(),
  );
  const counted = async () =>
    (await registry.getSingleMetric("console_live_dropped_total")?.get())?.values[0]?.value ?? 0;
  const dropped = await counted();
  assert.ok(dropped >= 1000, `dropped ${dropped}`);
  // Reading now: what was queued arrives, and the client is told how much it missed.
  const reader = (res.body as ReadableStream<Uint8Array>).getReader();
  const decoder = new TextDecoder();
  let text = "";
  let received = 0;
  let reported = -1;
  while (received + dropped < events.length) {
    const { value, done } = await reader.read();
    if (done) break;
    text += decoder.decode(value, { stream: true });
    let cut = text.indexOf("\n\n");
    while (cut >= 0) {
      const block = text.slice(0, cut);
      text = text.slice(cut + 2);
      const data = block.split("\n").find((l) => l.startsWith("data: "));
      if (block.startsWith("event: items") && data) {
        const parsed = JSON.parse(data.slice(6)) as { items: unknown[]; dropped: number };
        received += parsed.items.length;
        reported = parsed.dropped;
      }
      cut = text.indexOf("\n\n");
    }
  }
  assert.equal(received + dropped, events.length, "every item either sent or counted as dropped");
  assert.equal(reported, dropped);
  await reader.cancel();
  await waitFor(() => live.listeners === 0, "the subscription gone once the client left");
});
