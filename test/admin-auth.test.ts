import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { adminRoutes, create, harness, json, problem, TOKEN } from "./admin-harness.ts";

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
    // Every status an admin route can answer: no token (401), a replica still reading the shared state
    // (503), a bad id or query (400), a body too big or not JSON (413, 415).
    assert.ok(op.responses["401"], `${method} ${path} documents 401`);
    assert.ok(op.responses["503"], `${method} ${path} documents 503`);
    if (path.includes("{id}") || op.parameters?.some((p: { in: string }) => p.in === "query")) {
      assert.ok(op.responses["400"], `${method} ${path} documents 400`);
    }
    if (op.requestBody) {
      for (const status of ["400", "413", "415"]) {
        assert.ok(op.responses[status], `${method} ${path} documents ${status}`);
      }
    }
  }
  // Every route the app serves is in the document.
  const served = h.app.routes
    .filter((r) => r.method !== "ALL")
    .map((r) => `${r.method.toLowerCase()} ${r.path.replace(/:([A-Za-z0-9_]+)/g, "{$1}")}`);
  for (const route of new Set(served)) {
    const [method, path] = route.split(" ") as [string, string];
    assert.ok(doc.paths[path]?.[method], `${route} is served but not documented`);
  }
  // Stateful links: a new destination's id leads to the routes behind it.
  const links = doc.paths["/api/destinations"].post.responses["201"].links;
  const operationIds = new Set(
    Object.values(doc.paths).flatMap((ops) =>
      Object.values(ops as Record<string, { operationId?: string }>).map((o) => o.operationId),
    ),
  );
  assert.equal(Object.keys(links).length, 6);
  for (const link of Object.values(links) as { operationId: string; parameters: unknown }[]) {
    assert.ok(operationIds.has(link.operationId), link.operationId);
    assert.deepEqual(link.parameters, { id: "$response.body#/id" });
  }
  const params = doc.paths["/api/destinations/{id}/attempts"].get.parameters.map(
    (p: { name: string }) => p.name,
  );
  assert.deepEqual(params.sort(), ["cursor", "id", "limit", "outcome", "since"]);
  assert.ok(
    doc.components.schemas.Destination && doc.components.schemas.Attempt && doc.components.schemas.Problem,
  );
});

test("the document's patterns are the rules the API applies: a secret or URL matching them is accepted, others refused", async (t) => {
  const h = await harness(t);
  const doc = await json(h.req("GET", "/openapi.json", { token: null }));
  const props = doc.components.schemas.CreateDestination.properties;
  const secretPattern = new RegExp(props.secret.pattern);
  const urlPattern = new RegExp(props.url.pattern);
  const headerName = new RegExp(props.headers.propertyNames.pattern);
  const cases: [Record<string, unknown>, boolean][] = [];
  for (const n of [23, 24, 32, 63, 64, 65]) {
    const b64 = Buffer.alloc(n, n).toString("base64");
    cases.push([{ secret: `whsec_${b64}` }, secretPattern.test(`whsec_${b64}`)]);
    cases.push([
      { secret: `whsec_${b64.replace(/=+$/, "")}` },
      secretPattern.test(`whsec_${b64.replace(/=+$/, "")}`),
    ]);
  }
  for (const url of [
    "http://127.0.0.1:9/a",
    "https://a.example/x?y=1#z",
    "http://[::1]/",
    "http://a.1/",
    "http://u@a.example/",
    "http://a.example/ b",
  ]) {
    cases.push([{ url }, urlPattern.test(url)]);
  }
  for (const name of ["x-token", "Authorization", "HOST", "Webhook-Id", "te", "tea"]) {
    cases.push([{ headers: { [name]: "1" } }, headerName.test(name)]);
  }
  assert.ok(cases.some(([, ok]) => ok) && cases.some(([, ok]) => !ok));
  for (const [patch, matches] of cases) {
    const res = await h.req("POST", "/api/destinations", {
      body: { url: "http://127.0.0.1:9/hook", ...patch },
    });
    await res.text();
    assert.equal(res.status, matches ? 201 : 400, JSON.stringify(patch));
  }
});
