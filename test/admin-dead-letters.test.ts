import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { deliveries } from "../src/store/schema.ts";
import { allPages, create, type Harness, harness, json, problem, T0 } from "./admin-harness.ts";

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
