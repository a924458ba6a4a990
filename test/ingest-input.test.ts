import assert from "node:assert/strict";
import { request } from "node:http";
import { after, before, test } from "node:test";
import pino from "pino";
import { openStore } from "../src/store/db.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";

interface Problem {
  type: string;
  title: string;
  status: number;
  detail: string;
  errors?: Array<{ field: string; message: string }>;
}

let g: IngestGateway;
const MAX_BODY = 4096;
/** What the gateway logged at warn and above: no refusal of a client's input is the gateway's error. */
const logged: Array<{ level: number; msg: string }> = [];

before(async () => {
  const logger = pino({ level: "warn" }, { write: (line: string) => void logged.push(JSON.parse(line)) });
  g = await startIngestGateway({ MAX_BODY_BYTES: String(MAX_BODY) }, { logger });
  await g.gateway.kafkaReady;
});

after(async () => {
  // Nothing any bad request sent reached Kafka or the key store.
  try {
    assert.equal(await g.countRecords(), 0, "no bad request wrote to the topic");
    const store = openStore(g.dbPath);
    try {
      const row = store.sqlite.prepare("select count(*) as n from idempotency_keys").get() as { n: number };
      assert.equal(row.n, 0, "no bad request reserved an idempotency key");
    } finally {
      store.close();
    }
  } finally {
    await g.stop();
  }
});

async function problemOf(res: Response, status: number): Promise<Problem> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const p = JSON.parse(text) as Problem;
  assert.equal(p.status, status);
  assert.ok(p.title && p.detail && p.type, "a problem has type, title, detail");
  return p;
}

async function fieldError(path: string, body: unknown, field: string, headers?: Record<string, string>) {
  const p = await problemOf(await g.post(path, body, headers), 400);
  assert.equal(p.errors?.[0]?.field, field, JSON.stringify(p));
  assert.ok(p.detail.startsWith(`${field}:`), p.detail);
  return p;
}

test("malformed JSON → 400", async () => {
  for (const body of ["{", '{"userID": "u", "payload": }', "not json", ""]) {
    const p = await problemOf(await g.post("/api/singleEvent", body), 400);
    assert.match(p.detail, /JSON/i);
  }
  await problemOf(await g.post("/api/events", '{"events": [ {"userID": "u", '), 400);
});

test("missing or wrong-typed userID → 400 naming userID", async () => {
  await fieldError("/api/singleEvent", { payload: 1 }, "userID");
  await fieldError("/api/singleEvent", { userID: 42, payload: 1 }, "userID");
  await fieldError("/api/singleEvent", { userID: null, payload: 1 }, "userID");
  await fieldError("/api/singleEvent", { userID: "", payload: 1 }, "userID");
});

test("over-long strings → 400 naming the field", async () => {
  await fieldError("/api/singleEvent", { userID: "u".repeat(257), payload: 1 }, "userID");
  await fieldError("/api/singleEvent", { userID: "u", type: "t".repeat(129), payload: 1 }, "type");
  // The limits themselves are accepted by validation (checked without producing: a bad payload field).
  await fieldError("/api/singleEvent", { userID: "u".repeat(256), type: "t".repeat(128) }, "payload");
});

test("invalid type → 400 naming type", async () => {
  await fieldError("/api/singleEvent", { userID: "u", type: "has space", payload: 1 }, "type");
  await fieldError("/api/singleEvent", { userID: "u", type: "ünicode", payload: 1 }, "type");
  await fieldError("/api/singleEvent", { userID: "u", type: 7, payload: 1 }, "type");
  await fieldError("/api/singleEvent", { userID: "u", type: "", payload: 1 }, "type");
});

test("missing payload, or a body that is not an object → 400", async () => {
  await fieldError("/api/singleEvent", { userID: "u" }, "payload");
  await problemOf(await g.post("/api/singleEvent", "[]"), 400);
  await problemOf(await g.post("/api/singleEvent", '"a string"'), 400);
});

test("a bad event inside a batch → 400 naming it, e.g. events.3.userID; nothing of the batch is written", async () => {
  const events = Array.from({ length: 6 }, (_, i) => ({ userID: `u${i}`, payload: i })) as Array<
    Record<string, unknown>
  >;
  events[3] = { payload: 3 };
  await fieldError("/api/events", { events }, "events.3.userID");
  events[3] = { userID: "u3", payload: 3, type: "bad type" };
  await fieldError("/api/events", { events }, "events.3.type");
  await fieldError("/api/events", { events: "nope" }, "events");
  await fieldError("/api/events", {}, "events");
});

test("more than 1000 events, or none, in a batch → 400", async () => {
  const many = { events: Array.from({ length: 1001 }, (_, i) => ({ userID: `${i}`, payload: 0 })) };
  // This body is over the 4 KiB limit of this gateway; a second one with the default limit checks the count.
  const big = await startIngestGateway({});
  try {
    await big.gateway.kafkaReady;
    const p = await problemOf(await big.post("/api/events", many), 400);
    assert.equal(p.errors?.[0]?.field, "events");
    assert.match(p.detail, /1000/);
    assert.equal(await big.countRecords(), 0);
  } finally {
    await big.stop();
  }
  await fieldError("/api/events", { events: [] }, "events");
});

test("body over the limit → 413, answered without reading the whole body", async () => {
  const url = new URL(g.gateway.url);
  // Announce 10 MiB, send 1 KiB and wait: the 413 must come while the rest was never sent.
  const status = await new Promise<number>((done, fail) => {
    const req = request(
      {
        host: url.hostname,
        port: url.port,
        method: "POST",
        path: "/api/singleEvent",
        headers: { "content-type": "application/json", "content-length": String(10 * 1024 * 1024) },
      },
      (res) => {
        res.resume();
        done(res.statusCode ?? 0);
        req.destroy();
      },
    );
    req.on("error", fail);
    req.write(`{"userID":"u","payload":"${"x".repeat(1024)}`);
  });
  assert.equal(status, 413);

  // The same with an honest Content-Length just over the limit, and with a chunked body (no length).
  const over = JSON.stringify({ userID: "u", payload: "x".repeat(MAX_BODY) });
  const p = await problemOf(await g.post("/api/singleEvent", over), 413);
  assert.match(p.detail, new RegExp(String(MAX_BODY)));
  const chunked = await fetch(`${g.gateway.url}/api/events`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: new ReadableStream({
      start(controller) {
        controller.enqueue(new TextEncoder().encode(`{"events":[{"userID":"u","payload":"`));
        for (let i = 0; i < 8; i++) controller.enqueue(new TextEncoder().encode("y".repeat(1024)));
        controller.enqueue(new TextEncoder().encode(`"}]}`));
        controller.close();
      },
    }),
    duplex: "half",
  } as RequestInit);
  await problemOf(chunked, 413);
});

test("a client that goes away before its body is complete: nothing is accepted, the next request is served", async () => {
  const url = new URL(g.gateway.url);
  for (const headers of [
    { "content-type": "application/json", "content-length": "200" },
    { "content-type": "application/json", "transfer-encoding": "chunked" },
  ]) {
    await new Promise<void>((done, fail) => {
      const req = request({
        host: url.hostname,
        port: url.port,
        method: "POST",
        path: "/api/singleEvent",
        headers,
      });
      req.on("error", () => done());
      req.on("response", (res) => fail(new Error(`answered ${res.statusCode} to half a body`)));
      req.write(`{"userID":"gone","payload":`, () => setTimeout(() => req.destroy(), 50));
      req.on("close", () => done());
    });
  }
  // Still serving; the after() hook checks that nothing reached the topic.
  await problemOf(await g.post("/api/singleEvent", { payload: 1 }), 400);
  assert.deepEqual(
    logged.filter((l) => l.level >= 50).map((l) => l.msg),
    [],
    "a client going away is not the gateway's error",
  );
});

test("wrong or missing content type → 415", async () => {
  const body = JSON.stringify({ userID: "u", payload: 1 });
  for (const contentType of ["text/plain", "application/x-www-form-urlencoded", "application/xml"]) {
    const res = await fetch(`${g.gateway.url}/api/singleEvent`, {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    });
    await problemOf(res, 415);
  }
  const blob = await fetch(`${g.gateway.url}/api/events`, {
    method: "POST",
    body: new Uint8Array([1, 2, 3]),
  });
  await problemOf(blob, 415);
});

test("an invalid Idempotency-Key header → 400 naming it", async () => {
  await fieldError("/api/singleEvent", { userID: "u", payload: 1 }, "idempotency-key", {
    "idempotency-key": "k".repeat(256),
  });
});

test("unknown route → 404 problem; wrong method → 405 problem with Allow", async () => {
  await problemOf(await g.post("/api/singleEvents", { userID: "u", payload: 1 }), 404);
  await problemOf(await fetch(`${g.gateway.url}/api/nope`), 404);
  for (const [method, path] of [
    ["GET", "/api/singleEvent"],
    ["PUT", "/api/singleEvent"],
    ["DELETE", "/api/events"],
    ["GET", "/api/events"],
  ] as const) {
    const res = await fetch(`${g.gateway.url}${path}`, { method });
    await problemOf(res, 405);
    assert.equal(res.headers.get("allow"), "POST");
  }
});
