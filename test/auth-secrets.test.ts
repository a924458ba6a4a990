import assert from "node:assert/strict";
import { randomBytes } from "node:crypto";
import { type TestContext, test } from "node:test";
import Database from "better-sqlite3";
import { type ChildGateway, gatewayEnv, startGateway } from "./child-gateway.ts";
import { ATTEMPT_FIELDS } from "./helpers.ts";
import { startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

/**
 * `node src/main.ts` on fresh names with `env` on top. Nothing of this process's environment leaks in, so
 * ADMIN_TOKEN is unset unless given. Keeps every line it writes.
 */
function startChild(t: TestContext, env: Record<string, string>): Promise<ChildGateway> {
  const defaults = { TOPIC_PARTITIONS: "2", ADMIN_TOKEN: undefined, ALLOW_PRIVATE_DESTINATIONS: undefined };
  return startGateway(t, gatewayEnv({ ...defaults, ...env }), {
    keepLines: Number.POSITIVE_INFINITY,
    dropTopics: true,
  });
}

function occurrences(haystack: string, needle: string): number {
  return haystack.split(needle).length - 1;
}

async function expectProblem(res: Response, status: number): Promise<void> {
  const text = await res.text();
  assert.equal(res.status, status, text);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  assert.equal(JSON.parse(text).status, status);
}

test("ADMIN_TOKEN unset: a token is generated, printed once on stderr, and the admin API needs it", async (t) => {
  const gw = await startChild(t, { LOG_LEVEL: "info" });
  const match = /ADMIN_TOKEN was not set; generated one for this run: (\S+)/.exec(gw.stderr());
  assert.ok(match?.[1], `stderr names the generated token:\n${gw.stderr()}`);
  const token = match[1];
  assert.ok(token.length >= 32, "the generated token is long enough to be unguessable");

  const list = (authorization?: string) =>
    fetch(`${gw.url}/api/destinations`, { headers: authorization ? { authorization } : {} });
  await expectProblem(await list(), 401);
  await expectProblem(await list("Bearer wrong-token-0123456789"), 401);
  await expectProblem(await list(`Bearer ${token.slice(0, -1)}`), 401);
  await expectProblem(await list(`Basic ${Buffer.from(`admin:${token}`).toString("base64")}`), 401);
  const refused = await fetch(`${gw.url}/api/destinations`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ url: "https://receiver.example.com/hook" }),
  });
  await expectProblem(refused, 401);

  const ok = await list(`Bearer ${token}`);
  assert.equal(ok.status, 200);
  assert.deepEqual(await ok.json(), { destinations: [] }, "the refused POST registered nothing");
  assert.equal((await list(`bearer ${token}`)).status, 200, "the scheme is case-insensitive (RFC 9110)");

  await gw.stop();
  const all = gw.stdout() + gw.stderr();
  assert.ok(occurrences(gw.stdout(), "gateway listening") === 1, "the gateway logged at info on stdout");
  assert.equal(occurrences(all, token), 1, "the token appears exactly once in everything the process wrote");
  assert.equal(occurrences(gw.stdout(), token), 0, "…and that once is on stderr, not in the logs");
});

test("INGEST_API_KEYS set: ingest routes need Authorization: Bearer <key>; every listed key works", async (t) => {
  const keys = [
    `ingest-key-${randomBytes(8).toString("hex")}`,
    `ingest-key-${randomBytes(8).toString("hex")}`,
  ];
  const gw = await startIngestGateway({ INGEST_API_KEYS: ` ${keys[0]} ,${keys[1]}`, TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const event = { userID: "u-1", type: "t", payload: { n: 1 } };
  const single = (authorization?: string) =>
    gw.post("/api/singleEvent", event, authorization ? { authorization } : {});

  for (const authorization of [
    undefined,
    "Bearer wrong-key",
    `Bearer ${keys[0]}x`,
    `Basic ${keys[0]}`,
    keys[0] as string,
    `Bearer ${keys[0]},${keys[1]}`,
    "Bearer test-admin-token-0123456789",
  ]) {
    const res = await single(authorization);
    assert.match(res.headers.get("www-authenticate") ?? "", /^Bearer realm="ingest"/);
    await expectProblem(res, 401);
  }
  const batch = await gw.post(
    "/api/events",
    { events: [event, event] },
    { authorization: `Bearer ${keys[0]}` },
  );
  assert.equal(batch.status, 202, "the first key opens the batch route");
  assert.equal((await single(`Bearer ${keys[1]}`)).status, 202, "the second key works too");
  assert.equal((await single(`bearer ${keys[0]}`)).status, 202, "the scheme is case-insensitive (RFC 9110)");
  await expectProblem(await gw.post("/api/events", { events: [event] }), 401);
  assert.equal(await gw.countRecords(), 4, "only the authorised requests reached the topic");

  // An ingest key is not an admin token.
  const admin = await fetch(`${gw.gateway.url}/api/destinations`, {
    headers: { authorization: `Bearer ${keys[0]}` },
  });
  await expectProblem(admin, 401);
});

test("secrets never reach the logs, even at LOG_LEVEL=trace; attempts keep the response snippet, not the request headers", async (t) => {
  const adminToken = `admin-token-${randomBytes(12).toString("hex")}`;
  const ingestKey = `ingest-key-${randomBytes(12).toString("hex")}`;
  const secret = `whsec_${randomBytes(32).toString("base64")}`;
  const headerSecret = `supersecret-${randomBytes(12).toString("hex")}`;
  const apiKeySecret = `api-key-secret-${randomBytes(12).toString("hex")}`;
  const newSecret = `whsec_${randomBytes(32).toString("base64")}`;

  // Each event: first a 500 with a body, then a reset connection, then a 200.
  const seen = new Map<string, number>();
  const receiver = await startReceiver((req, res) => {
    const id = JSON.parse(req.body).id as string;
    const n = (seen.get(id) ?? 0) + 1;
    seen.set(id, n);
    if (n === 1) {
      res.statusCode = 500;
      res.end("try again later");
      return "handled";
    }
    if (n === 2) {
      res.socket?.destroy();
      return "handled";
    }
    res.statusCode = 200;
  });
  t.after(() => receiver.close());

  const gw = await startChild(t, {
    LOG_LEVEL: "trace",
    ADMIN_TOKEN: adminToken,
    INGEST_API_KEYS: ingestKey,
    ALLOW_PRIVATE_DESTINATIONS: "true",
  });
  const created = await gw.request("POST", "/api/destinations", {
    url: receiver.url,
    secret,
    headers: { authorization: `Bearer ${headerSecret}`, "x-api-key": apiKeySecret },
    backoffBaseMs: 10,
    backoffMaxMs: 50,
  });
  assert.equal(created.status, 201, await created.clone().text());
  const destination = (await created.json()) as { id: string };

  const ids: string[] = [];
  for (let i = 0; i < 3; i++) {
    const res = await fetch(`${gw.url}/api/singleEvent`, {
      method: "POST",
      headers: { authorization: `Bearer ${ingestKey}`, "content-type": "application/json" },
      body: JSON.stringify({ userID: `user-${i}`, type: "secret.test", payload: { i } }),
    });
    assert.equal(res.status, 202);
    ids.push(((await res.json()) as { id: string }).id);
  }
  await waitFor(() => receiver.delivered.length >= 3, "three deliveries after a 500 and a reset each");
  for (const r of receiver.requests) {
    assert.equal(r.headers.authorization, `Bearer ${headerSecret}`, "the receiver got the custom header");
    assert.equal(r.headers["x-api-key"], apiKeySecret);
  }
  // Rotate the secret and headers, and fail auth a few times with near-misses, to log what those log.
  const patched = await gw.request("PATCH", `/api/destinations/${destination.id}`, {
    secret: newSecret,
    headers: { authorization: `Bearer ${headerSecret}-2` },
  });
  assert.equal(patched.status, 200);
  await fetch(`${gw.url}/api/destinations`, { headers: { authorization: `Bearer ${adminToken}x` } });
  await fetch(`${gw.url}/api/singleEvent`, {
    method: "POST",
    headers: { authorization: `Bearer ${ingestKey}x` },
  });

  // Attempt rows are group-committed a few milliseconds after the delivery.
  let attempts: { attempts: Array<Record<string, unknown>> } = { attempts: [] };
  for (let i = 0; i < 100 && attempts.attempts.length < 9; i++) {
    if (i > 0) await new Promise((r) => setTimeout(r, 100));
    attempts = await gw.get<typeof attempts>(`/api/destinations/${destination.id}/attempts`);
  }
  assert.equal(attempts.attempts.length, 9, "three attempts per event");
  assert.equal(
    attempts.attempts.filter((a) => a.responseSnippet === "try again later").length,
    3,
    "each 500's body is kept as the snippet",
  );
  for (const a of attempts.attempts) {
    assert.deepEqual(Object.keys(a).sort(), ATTEMPT_FIELDS, "an attempt carries no request headers");
  }

  await gw.stop();
  const output = gw.stdout() + gw.stderr();
  if (process.env.SHOW_LOG) console.log(output);
  const lines = output.split("\n").filter(Boolean).length;
  assert.ok(lines >= 8, `the gateway logged (${lines} lines) — an empty log would prove nothing`);
  for (const line of [
    "destination registered",
    "delivery engine started",
    "destination changed",
    "stopped",
  ]) {
    assert.match(output, new RegExp(line), `the log has "${line}"`);
  }

  const secrets = {
    "the destination secret": secret,
    "the destination secret's key (base64)": secret.slice("whsec_".length),
    "the rotated secret": newSecret,
    "the custom authorization header value": headerSecret,
    "the custom x-api-key header value": apiKeySecret,
    "the admin token": adminToken,
    "the ingest API key": ingestKey,
  };
  for (const [what, value] of Object.entries(secrets)) {
    assert.equal(occurrences(output, value), 0, `${what} appears in the gateway's output`);
  }

  // Only the destinations table may hold them; attempts and the ledger must not.
  const db = new Database(gw.dbPath, { readonly: true, fileMustExist: true });
  try {
    for (const table of ["attempts", "deliveries", "idempotency_keys"]) {
      const dump = JSON.stringify(db.prepare(`select * from "${table}"`).all());
      for (const [what, value] of Object.entries(secrets)) {
        assert.equal(occurrences(dump, value), 0, `${what} is stored in ${table}`);
      }
    }
  } finally {
    db.close();
  }
});
