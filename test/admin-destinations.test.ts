import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { ADMIN_MAX_BODY_BYTES } from "../src/http/admin-shared.ts";
import { destinations } from "../src/store/schema.ts";
import { create, destinationArg, harness, json, problem, secretOfBytes } from "./admin-harness.ts";

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
    const d = await create(h, { url: "http://LocalHost:80?q=%C3%BC" });
    assert.equal(d.url, "http://localhost/?q=%C3%BC");
  });

  const invalid: [string, Record<string, unknown>, string][] = [
    ["missing url", { url: undefined }, "url"],
    ["ftp url", { url: "ftp://127.0.0.1/x" }, "url"],
    ["not a url", { url: "not a url" }, "url"],
    ["relative url", { url: "/hook" }, "url"],
    ["url over 2048", { url: `http://127.0.0.1/${"a".repeat(2040)}` }, "url"],
    ["url with a space", { url: "http://127.0.0.1/a b" }, "url"],
    ["url with non-ASCII", { url: "http://127.0.0.1/?q=ü" }, "url"],
    ["url with an upper-case scheme", { url: "HTTP://127.0.0.1/" }, "url"],
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
    ["backoffMaxMs 0", { backoffMaxMs: 0 }, "backoffMaxMs"],
    ["url with an IDN host", { url: "http://bücher.example/hook" }, "url"],
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
    const huge = JSON.stringify({ url: "http://127.0.0.1/", name: "x".repeat(ADMIN_MAX_BODY_BYTES) });
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
      [{ backoffMaxMs: 3_600_001 }, "backoffMaxMs"],
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
