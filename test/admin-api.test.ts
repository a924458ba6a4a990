import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { loadConfig } from "../src/config.ts";
import type { DeliveryControl } from "../src/delivery/control.ts";
import type { AdminState } from "../src/http/admin-shared.ts";
import { createApp } from "../src/http/app.ts";
import { GroupCommitProducer } from "../src/ingest/producer.ts";
import { ensureTopics } from "../src/ingest/topics.ts";
import { KafkaUnavailableError } from "../src/kafka/sink.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics } from "../src/metrics.ts";
import { SharedState, stateTopicSpecs, stateTopicsOf } from "../src/state/shared-state.ts";
import { openStore, type Store } from "../src/store/db.ts";
import type { Destination } from "../src/store/destinations.ts";
import { attempts, deliveries, destinations } from "../src/store/schema.ts";
import { ATTEMPT_FIELDS, createTestKafka, uniqueName } from "./helpers.ts";

const TOKEN = "test-admin-token-0123456789abcdef";

type Call = { method: keyof DeliveryControl; arg: unknown; eventIds?: string[] | undefined };

/**
 * Our own DeliveryControl, recording what the routes ask of delivery. Not a mock of Kafka or the
 * database: the supervisor is tested on its own against the real broker; here the routes are.
 */
class RecordingDelivery implements DeliveryControl {
  calls: Call[] = [];
  /** A method named here throws once with this error. */
  failures: Partial<Record<keyof DeliveryControl, Error>> = {};
  replayAllCount = 3;
  /** A method named here waits for this promise after recording its call. */
  gates: Partial<Record<keyof DeliveryControl, Promise<void>>> = {};

  async #maybeFail(method: keyof DeliveryControl): Promise<void> {
    await this.gates[method];
    const err = this.failures[method];
    if (err) {
      delete this.failures[method];
      throw err;
    }
  }
  async prepareDestination(destinationId: string) {
    this.calls.push({ method: "prepareDestination", arg: destinationId });
    await this.#maybeFail("prepareDestination");
  }
  async destinationAdded(destination: Destination) {
    this.calls.push({ method: "destinationAdded", arg: destination });
    await this.#maybeFail("destinationAdded");
  }
  async destinationChanged(destination: Destination) {
    this.calls.push({ method: "destinationChanged", arg: destination });
    await this.#maybeFail("destinationChanged");
  }
  /** A read, not a change: not recorded. */
  async lag(_destinationId: string) {
    return 7;
  }
  async destinationRemoved(destinationId: string) {
    this.calls.push({ method: "destinationRemoved", arg: destinationId });
    await this.#maybeFail("destinationRemoved");
  }
  async replay(destinationId: string, eventIds?: string[]) {
    this.calls.push({ method: "replay", arg: destinationId, eventIds });
    await this.#maybeFail("replay");
    return eventIds ? eventIds.length : this.replayAllCount;
  }
}

/** The destination a recorded call carried. */
function destinationArg(call: Call | undefined): Destination {
  assert.ok(call, "delivery was called");
  return call.arg as Destination;
}

interface Harness {
  app: OpenAPIHono;
  store: Store;
  delivery: RecordingDelivery;
  /** `refuse`: the admin writes fail as when Kafka cannot take them. */
  writes: { refuse: boolean };
  req(method: string, path: string, opts?: ReqOpts): Promise<Response>;
  /** Every row of every table the admin API may touch, to prove a refused request changed nothing. */
  snapshot(): string;
}

interface ReqOpts {
  token?: string | null;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

/**
 * A fresh SQLite file, fresh shared-state topics on the test broker and the real app; all removed when the
 * test ends. The view applies what the routes write to Kafka and tells `delivery` as it tells the gateway's
 * coordinator.
 */
async function harness(
  t: { after(fn: () => Promise<void> | void): void },
  env: Record<string, string> = {},
): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "admin-api-"));
  const store = openStore(join(dir, "gateway.db"));
  const config = loadConfig({
    ADMIN_TOKEN: TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
    LOG_LEVEL: "silent",
    CONSUMER_GROUP_PREFIX: uniqueName("admin"),
    ...env,
  });
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(kafka, { topics: stateTopicSpecs(config), partitions: 1 });
  const sink = new GroupCommitProducer(kafka, {
    maxRecords: 100,
    maxBytes: 1024 * 1024,
    lingerMs: 0,
    ackTimeoutMs: 10_000,
    logger: createLogger("silent"),
  });
  sink.start();
  await sink.whenReady();
  const delivery = new RecordingDelivery();
  const state = new SharedState({
    kafka,
    store,
    sink,
    topics: stateTopicsOf(config),
    logger: createLogger("silent"),
    maxWaitMs: 100,
  });
  const writes = { refuse: false };
  state.start({
    destinationPut: (row, previous) =>
      previous ? delivery.destinationChanged(row) : delivery.destinationAdded(row),
    destinationRemoved: (id) => delivery.destinationRemoved(id),
    replaying: async () => {},
  });
  await state.ready;
  t.after(async () => {
    await state.stop();
    await sink.close();
    await admin.deleteTopics({ topics: Object.values(stateTopicsOf(config)) }).catch(() => {});
    await admin.disconnect();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const adminState: AdminState = {
    isReady: () => state.isReady(),
    async putDestination(row) {
      if (writes.refuse) throw new KafkaUnavailableError("Kafka is not available");
      await state.putDestination(row);
    },
    async removeDestination(id) {
      if (writes.refuse) throw new KafkaUnavailableError("Kafka is not available");
      await state.removeDestination(id);
    },
  };
  const app = createApp({
    config,
    logger: createLogger("silent"),
    health: { kafkaReady: async () => true, storeReady: () => true, stateReady: () => state.isReady() },
    metrics: createMetrics(),
    store,
    delivery,
    state: adminState,
  });
  return {
    app,
    store,
    delivery,
    writes,
    req(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const token = opts.token === undefined ? TOKEN : opts.token;
      if (token !== null) headers.authorization ??= `Bearer ${token}`;
      let body: string | undefined = opts.raw;
      if (opts.body !== undefined && method !== "GET" && method !== "HEAD") body = JSON.stringify(opts.body);
      if (body !== undefined) headers["content-type"] ??= "application/json";
      return Promise.resolve(app.request(path, { method, headers, body }));
    },
    snapshot() {
      const { db } = store;
      return JSON.stringify([
        db.select().from(destinations).orderBy(destinations.id).all(),
        db.select().from(attempts).orderBy(attempts.id).all(),
        db.select().from(deliveries).orderBy(deliveries.destinationId, deliveries.eventId).all(),
      ]);
    },
  };
}

// biome-ignore lint/suspicious/noExplicitAny: the tests read arbitrary JSON answers
type Json = any;

async function json(res: Response | Promise<Response>): Promise<Json> {
  return (await res).json();
}

async function problem(
  res: Response,
  status: number,
): Promise<{ detail: string; errors?: { field: string }[] }> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const body = JSON.parse(text);
  assert.equal(body.status, status);
  assert.ok(body.type && body.title && body.detail, "a problem has type, title and detail");
  return body;
}

async function create(h: Harness, body: Record<string, unknown> = {}): Promise<Record<string, unknown>> {
  const res = await h.req("POST", "/api/destinations", { body: { url: "http://127.0.0.1:9/hook", ...body } });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return JSON.parse(text);
}

function secretOfBytes(n: number): string {
  return `whsec_${Buffer.alloc(n, 7).toString("base64")}`;
}

/** Every admin route, with a path that exists once a destination `id` does. */
function adminRoutes(id: string): [string, string][] {
  return [
    ["POST", "/api/destinations"],
    ["GET", "/api/destinations"],
    ["GET", `/api/destinations/${id}`],
    ["PATCH", `/api/destinations/${id}`],
    ["DELETE", `/api/destinations/${id}`],
    ["GET", "/api/events/evt-1/attempts"],
    ["GET", `/api/destinations/${id}/attempts`],
    ["GET", `/api/destinations/${id}/dead-letters`],
    ["POST", `/api/destinations/${id}/dead-letters/replay`],
  ];
}

describe("admin auth", () => {
  test("every admin route refuses a missing or wrong token with 401 and changes nothing", async (t) => {
    const h = await harness(t);
    const dest = await create(h);
    h.delivery.calls = [];
    const before = h.snapshot();
    const bad: (string | null)[] = [null, "wrong-token", `${TOKEN}x`, TOKEN.slice(0, -1), ""];
    for (const [method, path] of adminRoutes(String(dest.id))) {
      for (const token of bad) {
        const res = await h.req(method, path, { token, body: { url: "http://127.0.0.1:9/other" } });
        await problem(res, 401);
        assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer /, `${method} ${path}`);
      }
      for (const authorization of [`Basic ${TOKEN}`, TOKEN, `Bearer ${TOKEN} extra`]) {
        const res = await h.req(method, path, { headers: { authorization }, body: {} });
        await problem(res, 401);
      }
    }
    assert.equal(h.snapshot(), before);
    assert.deepEqual(h.delivery.calls, []);
  });

  test("the right token opens the routes (scheme is case-insensitive); health stays open", async (t) => {
    const h = await harness(t);
    assert.equal((await h.req("GET", "/api/destinations")).status, 200);
    const res = await h.req("GET", "/api/destinations", { headers: { authorization: `bearer ${TOKEN}` } });
    assert.equal(res.status, 200);
    assert.equal((await h.req("GET", "/healthz", { token: null })).status, 200);
    assert.equal((await h.req("GET", "/openapi.json", { token: null })).status, 200);
  });

  test("auth runs before validation: bad input without a token is a 401, not a 400", async (t) => {
    const h = await harness(t);
    await problem(await h.req("POST", "/api/destinations", { token: null, body: { nope: 1 } }), 401);
    await problem(await h.req("GET", "/api/destinations/x/attempts?limit=0", { token: null }), 401);
  });
});

describe("POST /api/destinations", () => {
  test("registers with defaults and a generated secret, preparing the group before storing", async (t) => {
    const h = await harness(t);
    const d = await create(h, { name: "orders" });
    assert.match(String(d.id), /^dest_[0-9a-f]{32}$/);
    assert.match(String(d.secret), /^whsec_/);
    assert.equal(Buffer.from(String(d.secret).slice(6), "base64").length, 32);
    assert.deepEqual(
      {
        name: d.name,
        url: d.url,
        eventTypes: d.eventTypes,
        headers: d.headers,
        maxAttempts: d.maxAttempts,
        timeoutMs: d.timeoutMs,
        backoffBaseMs: d.backoffBaseMs,
        backoffMaxMs: d.backoffMaxMs,
        maxConcurrency: d.maxConcurrency,
        disabled: d.disabled,
        disabledReason: d.disabledReason,
      },
      {
        name: "orders",
        url: "http://127.0.0.1:9/hook",
        eventTypes: [],
        headers: {},
        maxAttempts: 8,
        timeoutMs: 15000,
        backoffBaseMs: 1000,
        backoffMaxMs: 60000,
        maxConcurrency: 64,
        disabled: false,
        disabledReason: null,
      },
    );
    assert.equal(new Date(String(d.createdAt)).toISOString(), d.createdAt);
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["prepareDestination", "destinationAdded"],
    );
    assert.equal(h.delivery.calls[0]?.arg, d.id);
    assert.equal(destinationArg(h.delivery.calls[1]).id, d.id);

    const got = await h.req("GET", `/api/destinations/${d.id}`);
    assert.deepEqual(await got.json(), { ...d, lag: 7 }, "GET adds the lag delivery reports");
    const list = await json(h.req("GET", "/api/destinations"));
    assert.deepEqual(list, { destinations: [d] });
  });

  test("keeps every given setting", async (t) => {
    const h = await harness(t);
    const secret = secretOfBytes(24);
    const d = await create(h, {
      url: "https://127.0.0.1:8443/in?x=1",
      eventTypes: ["order.created", "user_deleted-v2"],
      headers: { Authorization: "Bearer r", "X-Tenant": "t1" },
      secret,
      maxAttempts: 50,
      timeoutMs: 100,
      backoffBaseMs: 10,
      backoffMaxMs: 10,
      maxConcurrency: 1000,
    });
    assert.equal(d.secret, secret);
    assert.deepEqual(d.eventTypes, ["order.created", "user_deleted-v2"]);
    assert.deepEqual(d.headers, { Authorization: "Bearer r", "X-Tenant": "t1" });
    assert.deepEqual(
      [d.maxAttempts, d.timeoutMs, d.backoffBaseMs, d.backoffMaxMs, d.maxConcurrency],
      [50, 100, 10, 10, 1000],
    );
    await create(h, { secret: secretOfBytes(64) });
  });

  test("stores the URL in normalised form, the string the SSRF guard checked", async (t) => {
    const h = await harness(t);
    const d = await create(h, { url: " HTTP://127.0.0.1:80/a b?q=ü " });
    assert.equal(d.url, "http://127.0.0.1/a%20b?q=%C3%BC");
  });

  const invalid: [string, Record<string, unknown>, string][] = [
    ["missing url", { url: undefined }, "url"],
    ["ftp url", { url: "ftp://127.0.0.1/x" }, "url"],
    ["not a url", { url: "not a url" }, "url"],
    ["relative url", { url: "/hook" }, "url"],
    ["url over 2048", { url: `http://127.0.0.1/${"a".repeat(2040)}` }, "url"],
    ["url over 2048 once normalised", { url: `http://127.0.0.1/${" ".repeat(1000)}x` }, "url"],
    ["url with credentials", { url: "http://user:pw@127.0.0.1/x" }, "url"],
    ["url not a string", { url: 42 }, "url"],
    ["empty name", { name: "" }, "name"],
    ["event type with a space", { eventTypes: ["order created"] }, "eventTypes.0"],
    ["event type over 128", { eventTypes: ["a".repeat(129)] }, "eventTypes.0"],
    ["event types not an array", { eventTypes: "order" }, "eventTypes"],
    ["header Host", { headers: { Host: "x" } }, "headers.Host"],
    ["header content-length", { headers: { "content-length": "1" } }, "headers.content-length"],
    ["header Content-Type", { headers: { "Content-Type": "text/plain" } }, "headers.Content-Type"],
    [
      "header transfer-encoding",
      { headers: { "transfer-encoding": "chunked" } },
      "headers.transfer-encoding",
    ],
    ["header connection", { headers: { Connection: "close" } }, "headers.Connection"],
    ["header user-agent", { headers: { "User-Agent": "me" } }, "headers.User-Agent"],
    ["header webhook-signature", { headers: { "Webhook-Signature": "v1,x" } }, "headers.Webhook-Signature"],
    ["header webhook-anything", { headers: { "webhook-custom": "1" } }, "headers.webhook-custom"],
    ["header name with space", { headers: { "bad name": "1" } }, "headers.bad name"],
    ["header value with CRLF", { headers: { "x-a": "1\r\nx-b: 2" } }, "headers.x-a"],
    ["header value not a string", { headers: { "x-a": 1 } }, "headers.x-a"],
    ["header twice in two cases", { headers: { "X-A": "1", "x-a": "2" } }, "headers.x-a"],
    ["secret without prefix", { secret: Buffer.alloc(32).toString("base64") }, "secret"],
    ["secret not base64", { secret: "whsec_!!!not-base64!!!aaaaaaaaaaaaaaaaaaaaaaaaaaa" }, "secret"],
    ["secret of 23 bytes", { secret: secretOfBytes(23) }, "secret"],
    ["secret of 65 bytes", { secret: secretOfBytes(65) }, "secret"],
    ["maxAttempts 0", { maxAttempts: 0 }, "maxAttempts"],
    ["maxAttempts 51", { maxAttempts: 51 }, "maxAttempts"],
    ["maxAttempts 1.5", { maxAttempts: 1.5 }, "maxAttempts"],
    ["maxAttempts as a string", { maxAttempts: "8" }, "maxAttempts"],
    ["timeoutMs 99", { timeoutMs: 99 }, "timeoutMs"],
    ["timeoutMs 30001", { timeoutMs: 30001 }, "timeoutMs"],
    ["maxConcurrency 0", { maxConcurrency: 0 }, "maxConcurrency"],
    ["maxConcurrency 1001", { maxConcurrency: 1001 }, "maxConcurrency"],
    ["backoffBaseMs 0", { backoffBaseMs: 0 }, "backoffBaseMs"],
    ["backoffMaxMs below backoffBaseMs", { backoffBaseMs: 5000, backoffMaxMs: 4999 }, "backoffMaxMs"],
    ["backoffBaseMs above the default max", { backoffBaseMs: 70_000 }, "backoffMaxMs"],
    ["unknown field", { colour: "blue" }, "colour"],
  ];
  for (const [name, patch, field] of invalid) {
    test(`400 on ${name}, naming ${field}; nothing stored, delivery not asked`, async (t) => {
      const h = await harness(t);
      const before = h.snapshot();
      const body = { url: "http://127.0.0.1:9/hook", ...patch };
      const p = await problem(await h.req("POST", "/api/destinations", { body }), 400);
      assert.ok(
        p.errors?.some((e) => e.field === field),
        `errors name ${field}: ${JSON.stringify(p.errors)}`,
      );
      if (field.startsWith("headers.")) assert.match(p.detail, new RegExp(field.slice(8), "i"));
      assert.equal(h.snapshot(), before);
      assert.deepEqual(h.delivery.calls, []);
    });
  }

  test("malformed, non-object, wrong-type, oversized and empty bodies are 4xx problems; nothing stored", async (t) => {
    const h = await harness(t);
    const before = h.snapshot();
    await problem(await h.req("POST", "/api/destinations", { raw: "{not json" }), 400);
    await problem(await h.req("POST", "/api/destinations", { raw: "[]" }), 400);
    await problem(await h.req("POST", "/api/destinations", { raw: '"http://127.0.0.1/"' }), 400);
    await problem(await h.req("POST", "/api/destinations", { raw: "null" }), 400);
    await problem(
      await h.req("POST", "/api/destinations", {
        raw: "url=http://127.0.0.1/",
        headers: { "content-type": "application/x-www-form-urlencoded" },
      }),
      415,
    );
    await problem(await h.req("POST", "/api/destinations"), 415);
    const huge = JSON.stringify({ url: "http://127.0.0.1/", name: "x".repeat(70_000) });
    await problem(await h.req("POST", "/api/destinations", { raw: huge }), 413);
    assert.equal(h.snapshot(), before);
    assert.deepEqual(h.delivery.calls, []);
  });

  test("the SSRF guard refuses private addresses with a 400 on url when they are not allowed", async (t) => {
    const h = await harness(t, { ALLOW_PRIVATE_DESTINATIONS: "false" });
    const before = h.snapshot();
    for (const url of [
      "http://127.0.0.1:9/hook",
      "http://10.1.2.3/hook",
      "http://169.254.169.254/latest/meta-data",
      "http://[::1]/hook",
      "http://[::ffff:127.0.0.1]/hook",
      "http://2130706433/hook",
      "http://localhost/hook",
    ]) {
      const p = await problem(await h.req("POST", "/api/destinations", { body: { url } }), 400);
      assert.deepEqual(
        p.errors?.map((e) => e.field),
        ["url"],
        url,
      );
    }
    assert.equal(h.snapshot(), before);
    assert.deepEqual(h.delivery.calls, []);
  });

  test("prepareDestination failing answers 503 with Retry-After and stores nothing", async (t) => {
    const h = await harness(t);
    h.delivery.failures.prepareDestination = new Error("kafka down");
    const before = h.snapshot();
    const res = await h.req("POST", "/api/destinations", { body: { url: "http://127.0.0.1:9/hook" } });
    await problem(res, 503);
    assert.ok(Number(res.headers.get("retry-after")) > 0);
    assert.equal(h.snapshot(), before);
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["prepareDestination"],
    );
  });

  test("Kafka refusing the destination answers 503 with Retry-After and stores nothing", async (t) => {
    const h = await harness(t);
    h.writes.refuse = true;
    const before = h.snapshot();
    const res = await h.req("POST", "/api/destinations", { body: { url: "http://127.0.0.1:9/hook" } });
    const p = await problem(res, 503);
    assert.match(p.detail ?? "", /nothing was registered/);
    assert.ok(Number(res.headers.get("retry-after")) > 0);
    assert.equal(h.snapshot(), before);
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["prepareDestination"],
      "no worker was started",
    );
  });
});

describe("GET/PATCH/DELETE /api/destinations/:id", () => {
  test("unknown ids are 404 problems and change nothing", async (t) => {
    const h = await harness(t);
    await create(h);
    h.delivery.calls = [];
    const before = h.snapshot();
    const id = "dest_00000000000000000000000000000000";
    await problem(await h.req("GET", `/api/destinations/${id}`), 404);
    await problem(await h.req("PATCH", `/api/destinations/${id}`, { body: { maxAttempts: 3 } }), 404);
    await problem(await h.req("DELETE", `/api/destinations/${id}`), 404);
    await problem(await h.req("GET", `/api/destinations/${id}/attempts`), 404);
    await problem(await h.req("GET", `/api/destinations/${id}/dead-letters`), 404);
    await problem(await h.req("POST", `/api/destinations/${id}/dead-letters/replay`), 404);
    await problem(await h.req("GET", "/api/destinations/%2e%2e/attempts"), 404);
    assert.equal(h.snapshot(), before);
    assert.deepEqual(h.delivery.calls, []);
  });

  test("PATCH changes only the given fields and tells delivery", async (t) => {
    const h = await harness(t);
    const d = await create(h, { name: "a", headers: { "x-a": "1" } });
    h.delivery.calls = [];
    const res = await h.req("PATCH", `/api/destinations/${d.id}`, {
      body: { maxAttempts: 3, eventTypes: ["a.b"], headers: {}, name: null, url: "http://127.0.0.1:10/new" },
    });
    assert.equal(res.status, 200);
    const p = await json(res);
    assert.deepEqual(
      { ...p, updatedAt: undefined },
      {
        ...d,
        maxAttempts: 3,
        eventTypes: ["a.b"],
        headers: {},
        name: null,
        url: "http://127.0.0.1:10/new",
        updatedAt: undefined,
      },
    );
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["destinationChanged"],
    );
    assert.equal(destinationArg(h.delivery.calls[0]).maxAttempts, 3);
    assert.deepEqual(await json(h.req("GET", `/api/destinations/${d.id}`)), { ...p, lag: 7 });

    const secret = secretOfBytes(40);
    const rotated = await json(h.req("PATCH", `/api/destinations/${d.id}`, { body: { secret } }));
    assert.equal(rotated.secret, secret);
  });

  test("PATCH disabled sets and clears the reason", async (t) => {
    const h = await harness(t);
    const d = await create(h);
    const off = await json(h.req("PATCH", `/api/destinations/${d.id}`, { body: { disabled: true } }));
    assert.equal(off.disabled, true);
    assert.equal(off.disabledReason, "disabled through the admin API");
    const on = await json(h.req("PATCH", `/api/destinations/${d.id}`, { body: { disabled: false } }));
    assert.equal(on.disabled, false);
    assert.equal(on.disabledReason, null);
    assert.equal(destinationArg(h.delivery.calls.at(-1)).disabled, false);
  });

  test("PATCH refuses bad input with 400 and changes nothing", async (t) => {
    const h = await harness(t, { ALLOW_PRIVATE_DESTINATIONS: "false" });
    // Seed a row directly: with private addresses refused, the API would not register a loopback one.
    const now = Date.now();
    h.store.db
      .insert(destinations)
      .values({
        id: "dest_seeded",
        url: "https://192.0.2.10/hook",
        secret: secretOfBytes(32),
        maxAttempts: 8,
        timeoutMs: 15000,
        backoffBaseMs: 2000,
        backoffMaxMs: 5000,
        maxConcurrency: 16,
        createdAt: now,
        updatedAt: now,
      })
      .run();
    const before = h.snapshot();
    const cases: [unknown, string][] = [
      [{ url: "http://127.0.0.1/x" }, "url"],
      [{ url: "gopher://x" }, "url"],
      [{ backoffMaxMs: 1999 }, "backoffMaxMs"],
      [{ backoffBaseMs: 5001 }, "backoffMaxMs"],
      [{ headers: { Host: "evil" } }, "headers.Host"],
      [{ disabled: "yes" }, "disabled"],
      [{ id: "dest_other" }, "id"],
      [{ createdAt: 0 }, "createdAt"],
      [{ timeoutMs: 30_001 }, "timeoutMs"],
      [{ secret: "whsec_short" }, "secret"],
    ];
    for (const [body, field] of cases) {
      const p = await problem(await h.req("PATCH", "/api/destinations/dest_seeded", { body }), 400);
      assert.ok(
        p.errors?.some((e) => e.field === field),
        `${JSON.stringify(body)} names ${field}`,
      );
    }
    await problem(await h.req("PATCH", "/api/destinations/dest_seeded", { raw: "{" }), 400);
    await problem(
      await h.req("PATCH", "/api/destinations/dest_seeded", {
        raw: "x",
        headers: { "content-type": "text/plain" },
      }),
      415,
    );
    assert.equal(h.snapshot(), before);
    assert.deepEqual(h.delivery.calls, []);
  });

  test("DELETE goes through Kafka, then stops delivery; a write Kafka refuses keeps the destination", async (t) => {
    const h = await harness(t);
    const d = await create(h);
    h.delivery.calls = [];
    h.writes.refuse = true;
    const before = h.snapshot();
    await problem(await h.req("DELETE", `/api/destinations/${d.id}`), 503);
    assert.equal(h.snapshot(), before);
    assert.equal(h.delivery.calls.length, 0);

    h.writes.refuse = false;
    const res = await h.req("DELETE", `/api/destinations/${d.id}`);
    assert.equal(res.status, 204);
    assert.equal(await res.text(), "");
    assert.deepEqual(
      h.delivery.calls.map((c) => [c.method, c.arg]),
      [["destinationRemoved", d.id]],
    );
    await problem(await h.req("GET", `/api/destinations/${d.id}`), 404);
    assert.deepEqual(await json(h.req("GET", "/api/destinations")), { destinations: [] });
  });

  test("changes to one destination run one at a time: a PATCH during a DELETE finds it gone", async (t) => {
    const h = await harness(t);
    const d = await create(h);
    h.delivery.calls = [];
    let release = () => {};
    h.delivery.gates.destinationRemoved = new Promise<void>((r) => {
      release = r;
    });
    const deleting = h.req("DELETE", `/api/destinations/${d.id}`);
    const patching = h.req("PATCH", `/api/destinations/${d.id}`, { body: { maxAttempts: 2 } });
    const replaying = h.req("POST", `/api/destinations/${d.id}/dead-letters/replay`);
    // Let both requests run as far as they can while the DELETE is stopping the worker (the view applies
    // the tombstone and is held in the delivery call).
    for (let i = 0; i < 500 && h.delivery.calls.length === 0; i++)
      await new Promise((r) => setTimeout(r, 10));
    await new Promise((r) => setTimeout(r, 50));
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["destinationRemoved"],
    );
    release();
    assert.equal((await deleting).status, 204);
    await problem(await patching, 404);
    await problem(await replaying, 404);
    assert.deepEqual(
      h.delivery.calls.map((c) => c.method),
      ["destinationRemoved"],
      "no worker restarted, nothing replayed for a deleted destination",
    );
  });

  test("an unsupported method on an admin path is a 405 problem", async (t) => {
    const h = await harness(t);
    const res = await h.req("PUT", "/api/destinations/dest_x", { body: {} });
    await problem(res, 405);
    assert.match(res.headers.get("allow") ?? "", /PATCH/);
  });
});

const T0 = Date.parse("2025-01-01T00:00:00Z");

/** 120 attempts at one destination (outcomes cycling, one a minute) and 5 at another. */
function seedAttempts(h: Harness, destA: string, destB: string): void {
  const outcomes = ["failed", "failed", "succeeded", "dead"] as const;
  const rows = [];
  for (let i = 0; i < 120; i++) {
    rows.push({
      eventId: `evt-${Math.floor(i / 4)}`,
      destinationId: destA,
      userId: `user-${i % 7}`,
      attemptNumber: (i % 4) + 1,
      startedAt: T0 + i * 60_000,
      durationMs: 5 + i,
      statusCode: outcomes[i % 4] === "succeeded" ? 200 : 500,
      error: outcomes[i % 4] === "succeeded" ? null : "HTTP 500",
      responseSnippet: "ok",
      outcome: outcomes[i % 4] as string,
    });
  }
  for (let i = 0; i < 5; i++) {
    rows.push({
      eventId: "evt-0",
      destinationId: destB,
      userId: "user-0",
      attemptNumber: i + 1,
      startedAt: T0 + i,
      durationMs: 1,
      statusCode: null,
      error: "timeout",
      responseSnippet: null,
      outcome: "failed",
    });
  }
  h.store.db.insert(attempts).values(rows).run();
}

async function allPages(
  h: Harness,
  base: string,
): Promise<{ pages: number[]; items: Record<string, unknown>[] }> {
  const pages: number[] = [];
  const items: Record<string, unknown>[] = [];
  let cursor: string | null = null;
  do {
    const sep = base.includes("?") ? "&" : "?";
    const url: string = cursor ? `${base}${sep}cursor=${encodeURIComponent(cursor)}` : base;
    const res = await h.req("GET", url);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const body = JSON.parse(text);
    const list = body.attempts ?? body.deadLetters;
    pages.push(list.length);
    items.push(...list);
    cursor = body.nextCursor;
    assert.ok(pages.length <= 1000, "pagination ends");
  } while (cursor !== null);
  return { pages, items };
}

describe("attempts", () => {
  test("a destination's attempts page newest first with an opaque cursor until nextCursor is null", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    const b = await create(h);
    seedAttempts(h, String(a.id), String(b.id));

    const first = await json(h.req("GET", `/api/destinations/${a.id}/attempts`));
    assert.equal(first.attempts.length, 50, "default page size");
    assert.equal(typeof first.nextCursor, "string");

    const { pages, items } = await allPages(h, `/api/destinations/${a.id}/attempts?limit=50`);
    assert.deepEqual(pages, [50, 50, 20]);
    const starts = items.map((x) => Date.parse(String(x.startedAt)));
    assert.deepEqual(
      starts,
      Array.from({ length: 120 }, (_, i) => T0 + (119 - i) * 60_000),
      "newest first, none repeated or skipped",
    );
    assert.ok(items.every((x) => x.destinationId === a.id));
    assert.deepEqual(Object.keys(items[0] ?? {}).sort(), ATTEMPT_FIELDS);
    const one = await allPages(h, `/api/destinations/${a.id}/attempts?limit=500`);
    assert.deepEqual(one.pages, [120]);
    const tiny = await allPages(h, `/api/destinations/${a.id}/attempts?limit=1`);
    assert.equal(tiny.pages.length, 120);
  });

  test("outcome and since filter, also across pages", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    const b = await create(h);
    seedAttempts(h, String(a.id), String(b.id));

    const dead = await allPages(h, `/api/destinations/${a.id}/attempts?outcome=dead&limit=7`);
    assert.equal(dead.items.length, 30);
    assert.ok(dead.items.every((x) => x.outcome === "dead"));

    const since = new Date(T0 + 100 * 60_000).toISOString();
    const recent = await allPages(h, `/api/destinations/${a.id}/attempts?since=${since}&limit=6`);
    assert.equal(recent.items.length, 20);
    assert.ok(recent.items.every((x) => Date.parse(String(x.startedAt)) >= T0 + 100 * 60_000));

    const both = await allPages(
      h,
      `/api/destinations/${a.id}/attempts?since=${since}&outcome=succeeded&limit=2`,
    );
    assert.equal(both.items.length, 5);
    assert.ok(both.items.every((x) => x.outcome === "succeeded" && x.statusCode === 200));

    const offset = await json(
      h.req("GET", `/api/destinations/${a.id}/attempts?since=2025-01-01T01:40:00%2B00:00`),
    );
    assert.equal(offset.attempts.length, 20, "a +00:00 offset is an instant too");
  });

  test("bad attempts queries are 400 problems naming the parameter", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    const base = `/api/destinations/${a.id}/attempts`;
    const cases: [string, string][] = [
      ["limit=0", "limit"],
      ["limit=501", "limit"],
      ["limit=abc", "limit"],
      ["limit=2.5", "limit"],
      ["outcome=maybe", "outcome"],
      ["since=yesterday", "since"],
      ["since=2025-01-01", "since"],
      ["cursor=not-a-cursor", "cursor"],
      [`cursor=${Buffer.from('{"b":-1}').toString("base64url")}`, "cursor"],
      ["offset=10", "offset"],
    ];
    for (const [query, field] of cases) {
      const p = await problem(await h.req("GET", `${base}?${query}`), 400);
      const fields = p.errors?.map((e) => e.field) ?? [];
      assert.ok(fields.includes(field), `${query}: ${JSON.stringify(p.errors)}`);
    }
  });

  test("an event's attempts across destinations, oldest first; none is an empty list", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    const b = await create(h);
    seedAttempts(h, String(a.id), String(b.id));
    const body = await json(h.req("GET", "/api/events/evt-0/attempts"));
    assert.equal(body.attempts.length, 9);
    assert.deepEqual(
      [...new Set(body.attempts.map((x: { destinationId: string }) => x.destinationId))],
      [a.id, b.id],
    );
    assert.deepEqual(
      body.attempts.slice(0, 4).map((x: { attemptNumber: number }) => x.attemptNumber),
      [1, 2, 3, 4],
    );
    assert.deepEqual(await json(h.req("GET", "/api/events/nope/attempts")), { attempts: [] });
  });
});

describe("dead letters", () => {
  function seedLedger(h: Harness, destinationId: string, other: string): void {
    const rows = [];
    for (let i = 0; i < 25; i++) {
      rows.push({
        destinationId,
        eventId: `evt-${String(i).padStart(3, "0")}`,
        userId: `user-${i % 3}`,
        status: i < 12 ? "dead" : i < 20 ? "delivered" : "replaying",
        attempts: 8,
        lastError: i < 12 ? "HTTP 500" : null,
        event: "{}",
        updatedAt: T0 + i,
        // Two deaths share an instant, so paging must break the tie on the event id.
        deadAt: i < 12 ? T0 + Math.floor(i / 2) * 1000 : null,
      });
    }
    rows.push({
      destinationId: other,
      eventId: "evt-x",
      userId: "u",
      status: "dead",
      attempts: 1,
      updatedAt: T0,
      deadAt: T0,
    });
    h.store.db.insert(deliveries).values(rows).run();
  }

  test("lists only this destination's dead events, oldest first, paged", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    const b = await create(h);
    seedLedger(h, String(a.id), String(b.id));
    const all = await json(h.req("GET", `/api/destinations/${a.id}/dead-letters`));
    assert.equal(all.nextCursor, null);
    assert.equal(all.deadLetters.length, 12);
    assert.deepEqual(all.deadLetters[0], {
      eventId: "evt-000",
      userID: "user-0",
      attempts: 8,
      lastError: "HTTP 500",
      deadAt: new Date(T0).toISOString(),
    });
    const paged = await allPages(h, `/api/destinations/${a.id}/dead-letters?limit=5`);
    assert.deepEqual(paged.pages, [5, 5, 2]);
    assert.deepEqual(paged.items, all.deadLetters);
    await problem(await h.req("GET", `/api/destinations/${a.id}/dead-letters?limit=0`), 400);
    await problem(await h.req("GET", `/api/destinations/${a.id}/dead-letters?cursor=zz`), 400);
  });

  test("replay all, replay some, and refusals", async (t) => {
    const h = await harness(t);
    const a = await create(h);
    h.delivery.calls = [];
    const path = `/api/destinations/${a.id}/dead-letters/replay`;

    const all = await h.req("POST", path);
    assert.equal(all.status, 202);
    assert.deepEqual(await all.json(), { replayed: 3 });
    const allJson = await h.req("POST", path, { body: {} });
    assert.deepEqual(await allJson.json(), { replayed: 3 });
    const some = await h.req("POST", path, { body: { eventIds: ["evt-1", "evt-2"] } });
    assert.equal(some.status, 202);
    assert.deepEqual(await some.json(), { replayed: 2 });
    assert.deepEqual(
      h.delivery.calls.map((c) => [c.method, c.arg, c.eventIds]),
      [
        ["replay", a.id, undefined],
        ["replay", a.id, undefined],
        ["replay", a.id, ["evt-1", "evt-2"]],
      ],
    );

    h.delivery.calls = [];
    const before = h.snapshot();
    for (const body of [{ eventIds: [] }, { eventIds: "evt-1" }, { eventIds: [""] }, { all: true }]) {
      await problem(await h.req("POST", path, { body }), 400);
    }
    await problem(
      await h.req("POST", path, { body: { eventIds: Array.from({ length: 1001 }, (_, i) => `e${i}`) } }),
      400,
    );
    await problem(await h.req("POST", path, { raw: "{" }), 400);
    await problem(await h.req("POST", path, { raw: "x", headers: { "content-type": "text/plain" } }), 415);
    assert.deepEqual(h.delivery.calls, []);
    assert.equal(h.snapshot(), before);

    h.delivery.failures.replay = new Error("kafka down");
    const failed = await h.req("POST", path);
    await problem(failed, 503);
    assert.ok(failed.headers.get("retry-after"));
  });
});

test("the OpenAPI document lists every admin route with the bearer scheme", async (t) => {
  const h = await harness(t);
  const doc = await json(h.req("GET", "/openapi.json", { token: null }));
  assert.deepEqual(doc.components.securitySchemes.adminToken, {
    type: "http",
    scheme: "bearer",
    description: doc.components.securitySchemes.adminToken.description,
  });
  const expected: [string, string][] = [
    ["post", "/api/destinations"],
    ["get", "/api/destinations"],
    ["get", "/api/destinations/{id}"],
    ["patch", "/api/destinations/{id}"],
    ["delete", "/api/destinations/{id}"],
    ["get", "/api/events/{id}/attempts"],
    ["get", "/api/destinations/{id}/attempts"],
    ["get", "/api/destinations/{id}/dead-letters"],
    ["post", "/api/destinations/{id}/dead-letters/replay"],
  ];
  for (const [method, path] of expected) {
    const op = doc.paths[path]?.[method];
    assert.ok(op, `${method} ${path} documented`);
    assert.deepEqual(op.security, [{ adminToken: [] }], `${method} ${path} needs the token`);
    assert.ok(op.responses["401"], `${method} ${path} documents 401`);
  }
  const params = doc.paths["/api/destinations/{id}/attempts"].get.parameters.map(
    (p: { name: string }) => p.name,
  );
  assert.deepEqual(params.sort(), ["cursor", "id", "limit", "outcome", "since"]);
  assert.ok(
    doc.components.schemas.Destination && doc.components.schemas.Attempt && doc.components.schemas.Problem,
  );
});
