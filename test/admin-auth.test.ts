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
