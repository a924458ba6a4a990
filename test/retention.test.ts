import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { test } from "node:test";
import pino from "pino";
import { insertAttempts } from "../src/store/attempts.ts";
import { openStore, type Store } from "../src/store/db.ts";
import { type DeliveryStatus, upsertLedger } from "../src/store/ledger.ts";
import { pruneOnce, startRetention } from "../src/store/retention.ts";
import { waitFor } from "./receiver.ts";

const DAY = 24 * 3600 * 1000;

function tempStore(t: import("node:test").TestContext): Store {
  const dir = mkdtempSync(join(tmpdir(), "retention-"));
  const store = openStore(join(dir, "gateway.db"));
  t.after(() => {
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  return store;
}

function attempt(eventId: string, startedAt: number) {
  return {
    eventId,
    destinationId: "d1",
    userId: "u1",
    attemptNumber: 1,
    startedAt,
    durationMs: 5,
    statusCode: 200,
    error: null,
    responseSnippet: null,
    outcome: "succeeded" as const,
  };
}

function ledgerRow(eventId: string, status: DeliveryStatus, at: number) {
  return {
    destinationId: "d1",
    eventId,
    userId: "u1",
    status,
    attempts: 1,
    lastError: null,
    event: null,
    at,
  };
}

/** 10 attempts 40 days old then 3 from now; ledger rows of every status, old and new, interleaved. */
function seed(store: Store, now: number) {
  const old = now - 40 * DAY;
  insertAttempts(store.db, [
    ...Array.from({ length: 10 }, (_, i) => attempt(`old-${i}`, old + i)),
    ...Array.from({ length: 3 }, (_, i) => attempt(`new-${i}`, now + i)),
  ]);
  upsertLedger(store.db, [
    ledgerRow("old-delivered-1", "delivered", old),
    ledgerRow("old-pending", "pending", old),
    ledgerRow("old-delivered-2", "delivered", old),
    ledgerRow("old-dead", "dead", old),
    ledgerRow("new-delivered", "delivered", now),
    ledgerRow("old-replaying", "replaying", old),
    ledgerRow("old-delivered-3", "delivered", old),
    ledgerRow("new-dead", "dead", now),
    ledgerRow("old-delivered-4", "delivered", old),
  ]);
}

const remaining = (store: Store) => ({
  attempts: store.sqlite.prepare("select event_id as id from attempts order by id").pluck().all(),
  ledger: store.sqlite.prepare("select event_id from deliveries order by rowid").pluck().all(),
});

test("pruning deletes old attempts and old finished ledger rows, chunk by chunk, and keeps unfinished ones", async (t) => {
  const store = tempStore(t);
  const now = Date.now();
  seed(store, now);
  const removed = await pruneOnce(store, now - 30 * DAY, { chunk: 3 });
  assert.deepEqual(removed, { attempts: 10, ledger: 5 });
  assert.deepEqual(remaining(store), {
    attempts: ["new-0", "new-1", "new-2"],
    ledger: ["old-pending", "new-delivered", "old-replaying", "new-dead"],
  });
  assert.deepEqual(
    await pruneOnce(store, now - 30 * DAY, { chunk: 3 }),
    { attempts: 0, ledger: 0 },
    "idempotent",
  );
});

test("an aborted pass stops between chunks", async (t) => {
  const store = tempStore(t);
  const now = Date.now();
  seed(store, now);
  const stop = new AbortController();
  stop.abort();
  assert.deepEqual(await pruneOnce(store, now - 30 * DAY, { chunk: 3, signal: stop.signal }), {
    attempts: 0,
    ledger: 0,
  });
});

test("the retention loop prunes at start-up and stops cleanly", async (t) => {
  const store = tempStore(t);
  seed(store, Date.now());
  const retention = startRetention(store, pino({ level: "silent" }), {
    retentionMs: 30 * DAY,
    everyMs: 60_000,
  });
  await waitFor(
    () => remaining(store).ledger.length === 4 && remaining(store).attempts.length === 3,
    "the first pass",
  );
  await retention.stop();
});
