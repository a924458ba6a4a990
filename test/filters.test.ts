import assert from "node:assert/strict";
import { test } from "node:test";
import { Ajv2020 } from "ajv/dist/2020.js";
import { compileFilter, filterErrors, filterJsonSchema } from "../src/delivery/filter.ts";
import { startIngestGateway } from "./ingest-fixture.ts";
import { startReceiver, waitFor } from "./receiver.ts";

const admin = { authorization: "Bearer test-admin-token-0123456789" };

const event = (type: string, payload: unknown) => ({
  id: "e1",
  userID: "u1",
  type,
  timestamp: "2026-01-01T00:00:00.000Z",
  payload,
});

test("filter operators: equality, $in, $nin, $exists, comparisons, $and, $or", () => {
  const m = compileFilter({ "payload.amount": { $gte: 100 }, type: { $in: ["order.created"] } });
  assert.equal(m(event("order.created", { amount: 100 })), true);
  assert.equal(m(event("order.created", { amount: 99.5 })), false);
  assert.equal(m(event("order.paid", { amount: 500 })), false);
  assert.equal(m(event("order.created", { amount: "500" })), false, "a string is not a number");
  assert.equal(m(event("order.created", null)), false);

  assert.equal(compileFilter({ "payload.tier": "gold" })(event("x", { tier: "gold" })), true);
  assert.equal(compileFilter({ "payload.tier": "gold" })(event("x", { tier: "silver" })), false);
  assert.equal(compileFilter({ payload: { a: [1, 2] } })(event("x", { a: [1, 2] })), true, "deep equality");
  assert.equal(compileFilter({ payload: { a: [1, 2] } })(event("x", { a: [2, 1] })), false);
  assert.equal(compileFilter({ type: { $nin: ["a", "b"] } })(event("c", {})), true);
  assert.equal(compileFilter({ type: { $nin: ["a", "b"] } })(event("a", {})), false);
  assert.equal(compileFilter({ "payload.x": { $exists: true } })(event("t", { x: null })), true);
  assert.equal(compileFilter({ "payload.x": { $exists: true } })(event("t", {})), false);
  assert.equal(compileFilter({ "payload.x": { $exists: false } })(event("t", {})), true);
  assert.equal(compileFilter({ "payload.n": { $gt: 1, $lt: 3 } })(event("t", { n: 2 })), true);
  assert.equal(compileFilter({ "payload.n": { $gt: 1, $lt: 3 } })(event("t", { n: 3 })), false);
  assert.equal(compileFilter({ "payload.n": { $lte: 3, $ne: 2 } })(event("t", { n: 2 })), false);
  assert.equal(compileFilter({ "payload.n": { $eq: 2 } })(event("t", { n: 2 })), true);
  const or = compileFilter({ $or: [{ type: "a" }, { "payload.vip": true }] });
  assert.equal(or(event("a", {})), true);
  assert.equal(or(event("b", { vip: true })), true);
  assert.equal(or(event("b", { vip: false })), false);
  const and = compileFilter({ $and: [{ type: "a" }, { "payload.n": { $gt: 0 } }] });
  assert.equal(and(event("a", { n: 1 })), true);
  assert.equal(and(event("a", { n: 0 })), false);
  // A path never reaches into the prototype.
  assert.equal(compileFilter({ "payload.constructor": { $exists: true } })(event("t", {})), false);
});

test("filter validation names each bad part", () => {
  assert.deepEqual(filterErrors({ "payload.amount": { $gte: "100" } }), [
    { field: "filter.payload.amount.$gte", message: "must be a number" },
  ]);
  assert.deepEqual(filterErrors({ $or: [{ type: "a" }, { type: { $regex: "x" } }] }), [
    { field: "filter.$or[1].type.$regex", message: "unknown operator $regex" },
  ]);
  assert.equal(filterErrors({ $where: "1" })[0]?.field, "filter.$where");
  assert.equal(filterErrors({ $and: [] })[0]?.field, "filter.$and");
  assert.equal(filterErrors({ "bad path!": 1 })[0]?.field, "filter.bad path!");
  assert.equal(filterErrors({ type: { $in: "a" } })[0]?.field, "filter.type.$in");
  assert.equal(filterErrors({ "payload.x": { $exists: 1 } })[0]?.field, "filter.payload.x.$exists");
  assert.equal(filterErrors({ "payload.x": { $gt: 1, y: 2 } })[0]?.field, "filter.payload.x");
  assert.equal(filterErrors([1])[0]?.field, "filter");
  assert.deepEqual(filterErrors({ "payload.amount": { $gte: 100 }, type: { $in: ["order.created"] } }), []);
});

test("the filter's JSON Schema (the OpenAPI document's) accepts exactly what the gateway accepts", () => {
  const valid = new Ajv2020({ strict: true }).compile(filterJsonSchema("#"));
  const cases: unknown[] = [
    {},
    { type: "a" },
    { "payload.amount": { $gte: 100 }, type: { $in: ["order.created"] } },
    { payload: { a: [1, 2] } },
    { "payload.x": {} },
    { "payload.x": null },
    { "payload.x": [{ $gt: 1 }] },
    { $or: [{ type: "a" }, { $and: [{ "payload.n": { $lt: 3, $ne: 1 } }] }] },
    { "payload.x": { $exists: false, $nin: [1, "a"] } },
    { "payload.amount": { $gte: "100" } },
    { $or: [{ type: "a" }, { type: { $regex: "x" } }] },
    { $where: "1" },
    { $and: [] },
    { $or: {} },
    { "bad path!": 1 },
    { "": 1 },
    { "a..b": 1 },
    { "÷": {} },
    { type: { $in: "a" } },
    { type: { $in: Array.from({ length: 1001 }, (_, i) => i) } },
    { "payload.x": { $exists: 1 } },
    { "payload.x": { $gt: 1, y: 2 } },
    [1],
    "type",
    null,
  ];
  for (const f of cases) {
    assert.equal(valid(f), filterErrors(f).length === 0, JSON.stringify(f).slice(0, 80));
  }
});

test("a destination's filter decides which events it receives; filtered-out ones count as finished", async (t) => {
  const gw = await startIngestGateway({ ALLOW_PRIVATE_DESTINATIONS: "true", TOPIC_PARTITIONS: "2" });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const receiver = await startReceiver();
  t.after(() => receiver.close());

  // Refused with the bad part named; nothing registered.
  const bad = await gw.post(
    "/api/destinations",
    { url: receiver.url, filter: { "payload.amount": { $gte: "a lot" } } },
    admin,
  );
  assert.equal(bad.status, 400);
  assert.match(bad.headers.get("content-type") ?? "", /problem\+json/);
  const problem = (await bad.json()) as { errors: Array<{ field: string; message: string }> };
  assert.deepEqual(problem.errors, [{ field: "filter.payload.amount.$gte", message: "must be a number" }]);
  const list = (await (await fetch(`${gw.gateway.url}/api/destinations`, { headers: admin })).json()) as {
    destinations: unknown[];
  };
  assert.equal(list.destinations.length, 0);

  const filter = { "payload.amount": { $gte: 100 }, type: { $in: ["order.created"] } };
  const created = await gw.post("/api/destinations", { url: `${receiver.url}?d=f`, filter }, admin);
  assert.equal(created.status, 201);
  const dest = (await created.json()) as { id: string; filter: unknown };
  assert.deepEqual(dest.filter, filter);
  const all = await gw.post("/api/destinations", { url: `${receiver.url}?d=all` }, admin);
  assert.equal(all.status, 201);

  const send = async (type: string, amount: number) => {
    const res = await gw.post("/api/singleEvent", { userID: `u-${amount}`, type, payload: { amount } });
    assert.equal(res.status, 202);
    return ((await res.json()) as { id: string }).id;
  };
  const wanted = [await send("order.created", 100), await send("order.created", 250)];
  await send("order.created", 99);
  await send("order.paid", 500);
  const to = (tag: string) =>
    receiver.requests.filter((r) => r.url.endsWith(`d=${tag}`)).map((r) => JSON.parse(r.body).id as string);
  await waitFor(() => to("all").length === 4 && to("f").length === 2, "the deliveries");
  assert.deepEqual(to("f").sort(), wanted.sort());

  // Filtered-out events are finished for the destination: nothing left to do (lag 0).
  await waitFor(async () => {
    const got = (await (
      await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, { headers: admin })
    ).json()) as { lag: number | null };
    return got.lag === 0;
  }, "lag 0 once filtered events are passed over");

  // PATCH: a bad filter is refused and changes nothing; null clears the filter.
  const badPatch = await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, {
    method: "PATCH",
    headers: { ...admin, "content-type": "application/json" },
    body: JSON.stringify({ filter: { $or: "x" } }),
  });
  assert.equal(badPatch.status, 400);
  assert.equal(
    ((await badPatch.json()) as { errors: Array<{ field: string }> }).errors[0]?.field,
    "filter.$or",
  );
  const shown = (await (
    await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, { headers: admin })
  ).json()) as { filter: unknown };
  assert.deepEqual(shown.filter, filter);
  const cleared = await fetch(`${gw.gateway.url}/api/destinations/${dest.id}`, {
    method: "PATCH",
    headers: { ...admin, "content-type": "application/json" },
    body: JSON.stringify({ filter: null }),
  });
  assert.equal(cleared.status, 200);
  assert.equal(((await cleared.json()) as { filter: unknown }).filter, null);
  const later = await send("order.paid", 1);
  await waitFor(() => to("f").includes(later), "an event the old filter refused, after it was cleared");
});
