import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import { openStore } from "../src/store/db.ts";
import { listDeadLetters } from "../src/store/dead-letter-queries.ts";
import {
  type DeliveryStatus,
  ledgerRowsFor,
  markForReplay,
  replayingRows,
  upsertLedger,
} from "../src/store/ledger.ts";

test("the ledger's dead-letter and replay queries use its partial indexes; delivered rows enter neither", (t) => {
  const dir = mkdtempSync(join(tmpdir(), "store-"));
  const store = openStore(join(dir, "gateway.db"));
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const row = (eventId: string, status: DeliveryStatus, at: number) => ({
    destinationId: "d1",
    eventId,
    userId: "u1",
    status,
    attempts: 3,
    lastError: status === "delivered" ? null : "HTTP 500",
    event: status === "delivered" ? null : `{"id":"${eventId}"}`,
    at,
  });
  upsertLedger(store.db, [
    ...Array.from({ length: 50 }, (_, i) => row(`ok-${i}`, "delivered", 1000 + i)),
    row("dead-2", "dead", 2002),
    row("dead-1", "dead", 2001),
    row("dead-3", "dead", 2002),
    row("retrying", "pending", 3000),
  ]);

  // Capture the SQL each query function sends, then ask SQLite how it would run it.
  const sent: string[] = [];
  const prepare = store.sqlite.prepare.bind(store.sqlite);
  store.sqlite.prepare = ((source: string) => {
    sent.push(source);
    return prepare(source);
  }) as typeof store.sqlite.prepare;
  const plan = (run: () => void) => {
    sent.length = 0;
    run();
    const statement = sent.at(-1) as string;
    const params = statement.split("?").length - 1;
    return prepare(`explain query plan ${statement}`)
      .all(...Array.from({ length: params }, () => null))
      .map((r) => (r as { detail: string }).detail)
      .join("; ");
  };

  const page1 = listDeadLetters(store.db, { destinationId: "d1", limit: 2 });
  assert.deepEqual(
    page1.deadLetters.map((d) => [d.eventId, d.deadAt]),
    [
      ["dead-1", 2001],
      ["dead-2", 2002],
    ],
    "oldest death first, event id breaks ties",
  );
  const page2 = listDeadLetters(store.db, { destinationId: "d1", limit: 2, after: page1.nextAfter });
  assert.deepEqual(
    page2.deadLetters.map((d) => d.eventId),
    ["dead-3"],
  );
  assert.equal(page2.nextAfter, undefined);
  assert.match(
    plan(() =>
      listDeadLetters(store.db, { destinationId: "d1", limit: 2, after: { deadAt: 1, eventId: "" } }),
    ),
    /USING (COVERING )?INDEX deliveries_dead_idx/,
  );
  assert.doesNotMatch(
    plan(() => listDeadLetters(store.db, { destinationId: "d1", limit: 2 })),
    /TEMP B-TREE/,
    "the index gives the page order: no sort",
  );

  assert.equal(markForReplay(store.db, "d1", ["dead-1"], 4000).length, 1);
  assert.match(
    plan(() => markForReplay(store.db, "d1", ["dead-1"], 4000)),
    /sqlite_autoindex_deliveries_1 \(destination_id=\? AND event_id=\?\)/,
    "listed events: primary-key lookups",
  );
  assert.match(
    plan(() => markForReplay(store.db, "no-such-destination", undefined, 4000)),
    /USING (COVERING )?INDEX deliveries_dead_idx/,
    "all of a destination's dead letters: the partial index",
  );
  assert.deepEqual(
    replayingRows(store.db, "d1").map((r) => r.eventId),
    ["dead-1"],
  );
  assert.match(
    plan(() => replayingRows(store.db, "d1")),
    /USING (COVERING )?INDEX deliveries_replaying_idx/,
  );

  const count = (index: string, status: string) =>
    (
      prepare(
        `select count(*) as n from deliveries indexed by ${index} where status = '${status}'`,
      ).get() as { n: number }
    ).n;
  assert.equal(
    count("deliveries_dead_idx", "dead"),
    2,
    "dead rows: dead-2 and dead-3 (dead-1 is replaying now)",
  );
  assert.equal(count("deliveries_replaying_idx", "replaying"), 1);

  const looked = ledgerRowsFor(store.db, "d1", ["ok-3", "retrying", "missing"]);
  assert.deepEqual(
    [...looked.values()].map((r) => [r.eventId, r.status, r.attempts, r.updatedAt, r.deadAt]),
    [
      ["ok-3", "delivered", 3, 1003, null],
      ["retrying", "pending", 3, 3000, null],
    ],
  );
});
