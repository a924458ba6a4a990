import assert from "node:assert/strict";
import { describe, test } from "node:test";
import { allPages, create, harness, json, problem, seedAttempts, T0 } from "./admin-harness.ts";
import { ATTEMPT_FIELDS } from "./helpers.ts";

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
