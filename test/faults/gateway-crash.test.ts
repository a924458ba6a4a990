/**
 * Fault 2: the gateway process is SIGKILLed while deliveries are in flight and retries are pending, then
 * restarted on the same SQLite file and topics. Every accepted event must reach every destination, per-user
 * order must hold, duplicates must stay within what was in flight, and the attempts table and the ledger
 * must agree with each other and with what the receivers saw.
 */
import assert from "node:assert/strict";
import { test } from "node:test";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import * as schema from "../../src/store/schema.ts";
import { type EventToSend, gatewayEnv, startGateway } from "../child-gateway.ts";
import { type Receiver, startReceiver, waitFor } from "../receiver.ts";

const USERS = 400;
const PHASE1_PER_USER = 10; // 4000 events before the crash
const PHASE2_PER_USER = 3; // 1200 after the restart
const SENDERS = 8;
const BATCH = 25;
const MAX_CONCURRENCY = 16;
const FLAKY_FAILURE_RATE = 0.4;
const PARTITIONS = 6;
/**
 * A 2xx is in the ledger within one recorder commit window (10 ms) plus event-loop delay; 2 s is far
 * beyond both even on a loaded machine. Nothing answered earlier than this before the crash may come again.
 */
const RECENT_MS = 2000;

/** What a receiver did with one request. `status` is decided on arrival; a 2xx counts as delivered then. */
interface Receipt {
  id: string;
  userID: string;
  seq: number;
  status: number;
  at: number;
  /** When the receiver answered; undefined if the gateway died first and the socket was gone. */
  answeredAt: number | undefined;
}

interface Tracked {
  receiver: Receiver;
  receipts: Receipt[];
  /** Requests received and not answered yet: the gateway is waiting on each of them. */
  open(): number;
}

async function trackingReceiver(status: () => number): Promise<Tracked> {
  const receipts: Receipt[] = [];
  let open = 0;
  const receiver = await startReceiver((req, res) => {
    const body = JSON.parse(req.body) as { id: string; userID: string; payload: { seq: number } };
    const receipt: Receipt = {
      id: body.id,
      userID: body.userID,
      seq: body.payload.seq,
      status: status(),
      at: req.at,
      answeredAt: undefined,
    };
    receipts.push(receipt);
    open++;
    // Slowish: answers after 2–8 ms, so deliveries are always in flight.
    setTimeout(
      () => {
        open--;
        if (res.destroyed) return;
        receipt.answeredAt = Date.now();
        res.statusCode = receipt.status;
        res.end(receipt.status < 300 ? "ok" : "try again");
      },
      2 + Math.random() * 6,
    );
    return "handled";
  });
  return { receiver, receipts, open: () => open };
}

function openLedger(dbPath: string) {
  const sqlite = new Database(dbPath, { readonly: true, fileMustExist: true });
  return { sqlite, db: drizzle(sqlite, { schema }) };
}

/** Events per sender, each sender owning its users, round-robin over them so batches mix users. */
function plan(sender: number, fromSeq: number, perUser: number, phase: number): EventToSend[] {
  const users = Array.from({ length: USERS }, (_, u) => u).filter((u) => u % SENDERS === sender);
  const out: EventToSend[] = [];
  for (let seq = fromSeq; seq < fromSeq + perUser; seq++) {
    for (const u of users) out.push({ userID: `user-${u}`, type: "crash.test", payload: { seq, phase } });
  }
  return out;
}

test("SIGKILL during delivery: nothing accepted is lost, duplicates bounded, attempts and ledger agree", {
  timeout: 240_000,
}, async (t) => {
  const env = gatewayEnv({ TOPIC_PARTITIONS: String(PARTITIONS) });
  const healthy = await trackingReceiver(() => 200);
  const flaky = await trackingReceiver(() => (Math.random() < FLAKY_FAILURE_RATE ? 500 : 200));
  t.after(() => Promise.all([healthy.receiver.close(), flaky.receiver.close()]));

  const gateway = await startGateway(t, env, { dropTopics: true });
  const settings = { backoffBaseMs: 50, backoffMaxMs: 500, maxAttempts: 20, maxConcurrency: MAX_CONCURRENCY };
  const destinations = {
    healthy: (await gateway.registerDestination({ url: healthy.receiver.url, ...settings })).id,
    flaky: (await gateway.registerDestination({ url: flaky.receiver.url, ...settings })).id,
  };
  const tracked = { healthy, flaky };

  /** Accepted events: id → user and its per-user sequence number (the order the user sent them in). */
  const accepted = new Map<string, { userID: string; seq: number }>();
  const ingest = async (fromSeq: number, perUser: number, phase: number) => {
    let refused = 0;
    await Promise.all(
      Array.from({ length: SENDERS }, async (_, s) => {
        const events = plan(s, fromSeq, perUser, phase);
        // One batch after another per sender: a user's events are accepted in sequence order.
        for (let i = 0; i < events.length; i += BATCH) {
          const batch = events.slice(i, i + BATCH);
          const answer = await gateway.ingestBatch(batch);
          refused += answer.refused;
          answer.ids.forEach((id, k) => {
            const e = batch[k] as EventToSend;
            accepted.set(id, { userID: e.userID, seq: (e.payload as { seq: number }).seq });
          });
        }
      }),
    );
    return refused;
  };

  // Phase 1, then kill once deliveries are in flight at both receivers and the flaky one has retries pending.
  await ingest(0, PHASE1_PER_USER, 1);
  const phase1 = accepted.size;
  const pendingRetries = () => {
    const ok = new Set(flaky.receipts.filter((r) => r.status < 300).map((r) => r.id));
    return new Set(flaky.receipts.filter((r) => r.status >= 300 && !ok.has(r.id)).map((r) => r.id)).size;
  };
  const distinctDelivered = (r: Tracked) =>
    new Set(r.receipts.filter((x) => x.status < 300).map((x) => x.id)).size;
  await waitFor(
    () =>
      distinctDelivered(healthy) >= phase1 * 0.3 &&
      healthy.open() > 0 &&
      flaky.open() > 0 &&
      pendingRetries() > 0,
    "deliveries in flight and retries pending",
    60_000,
  );
  const snapshot = {
    healthyDelivered: distinctDelivered(healthy),
    flakyDelivered: distinctDelivered(flaky),
    healthyOpen: healthy.open(),
    flakyOpen: flaky.open(),
    flakyPendingRetries: pendingRetries(),
  };
  const killedAt = Date.now();
  assert.equal(await gateway.kill(), "SIGKILL");
  t.diagnostic(
    `killed after ${phase1} accepted: delivered healthy ${snapshot.healthyDelivered}, flaky ${snapshot.flakyDelivered}; ` +
      `requests open at kill: healthy ${snapshot.healthyOpen}, flaky ${snapshot.flakyOpen}; ` +
      `flaky events with a failed attempt and no success yet: ${snapshot.flakyPendingRetries}`,
  );
  // The limit the gateway enforces: never more requests outstanding at a destination than maxConcurrency.
  assert.ok(snapshot.healthyOpen <= MAX_CONCURRENCY && snapshot.flakyOpen <= MAX_CONCURRENCY);

  // Anything a receiver got before this instant came from the killed process (it is gone by now).
  const restartedAt = Date.now();
  await gateway.start();
  const refusedAfterRestart = await ingest(PHASE1_PER_USER, PHASE2_PER_USER, 2);
  const total = accepted.size;
  assert.equal(total, USERS * (PHASE1_PER_USER + PHASE2_PER_USER));

  // Done when both receivers have every accepted event and the ledger says so (a redelivery of an event the
  // receiver already had may still be on its way; stopping before it finished would leave it pending).
  const ledgerDone = () => {
    const { sqlite } = openLedger(env.DB_PATH);
    try {
      const row = sqlite.prepare("select count(*) as n from deliveries where status = 'delivered'").get() as {
        n: number;
      };
      return row.n;
    } finally {
      sqlite.close();
    }
  };
  let lastLedgerCheck = 0;
  let ledgerCount = 0;
  await waitFor(
    () => {
      if (distinctDelivered(healthy) < total || distinctDelivered(flaky) < total) return false;
      if (Date.now() - lastLedgerCheck > 250) {
        lastLedgerCheck = Date.now();
        ledgerCount = ledgerDone();
      }
      return ledgerCount >= 2 * total;
    },
    "every accepted event delivered to both destinations and in the ledger",
    180_000,
  );
  const caughtUpMs = Date.now() - restartedAt;
  const firstAfterRestart = (r: Tracked) =>
    Math.min(...r.receipts.filter((x) => x.at >= restartedAt).map((x) => x.at)) - restartedAt;
  t.diagnostic(
    `restart → first delivery: healthy ${firstAfterRestart(healthy)} ms, flaky ${firstAfterRestart(flaky)} ms ` +
      `(the killed consumers hold their partitions until the 30 s session timeout ends); all delivered ` +
      `${caughtUpMs} ms after the restart; ` +
      `ingest 503s right after the restart (retried): ${refusedAfterRestart}`,
  );
  assert.equal(await gateway.stop(), 0, gateway.output());

  // ---- what the receivers saw
  // The sane cap: what a destination can have in flight across its partitions.
  const lostAttemptBound = MAX_CONCURRENCY * PARTITIONS;
  for (const [name, r] of Object.entries(tracked)) {
    const delivered = r.receipts.filter((x) => x.status < 300);
    const firsts = new Map<string, Receipt>();
    for (const x of delivered) if (!firsts.has(x.id)) firsts.set(x.id, x);
    const lost = [...accepted.keys()].filter((id) => !firsts.has(id));
    const unexpected = [...firsts.keys()].filter((id) => !accepted.has(id));
    const duplicates = delivered.filter((x) => firsts.get(x.id) !== x);
    const openAtKill = duplicates.filter((x) => {
      const first = firsts.get(x.id) as Receipt;
      return first.at < restartedAt && (first.answeredAt === undefined || first.answeredAt >= killedAt);
    }).length;
    const answeredBefore = duplicates.flatMap((x) => {
      const first = firsts.get(x.id) as Receipt;
      return first.answeredAt !== undefined && first.answeredAt < killedAt
        ? [killedAt - first.answeredAt]
        : [];
    });
    const afterRestart = duplicates.filter((x) => (firsts.get(x.id) as Receipt).at >= restartedAt).length;
    t.diagnostic(
      `${name}: accepted ${total}, requests ${r.receipts.length}, delivered ${delivered.length} ` +
        `(${firsts.size} distinct), duplicates ${duplicates.length} ` +
        `(first copy still open at the kill: ${openAtKill}; answered 2xx before the kill but not yet in the ledger: ` +
        `${answeredBefore.length}, at most ${answeredBefore.length ? Math.max(...answeredBefore) : 0} ms before it; ` +
        `after the restart: ${afterRestart}), lost ${lost.length}, unexpected ${unexpected.length}`,
    );
    assert.equal(lost.length, 0, `${name}: accepted events never delivered`);
    assert.equal(unexpected.length, 0, `${name}: deliveries of events that were never accepted`);
    // A duplicate needs a 2xx the ledger never recorded: the request was open when the process died (at most
    // maxConcurrency of them), or its 2xx had arrived but the recorder's group commit (every 10 ms) had not
    // run yet — what finished in the last commit window. The restarted process skips everything the ledger
    // marks finished, so it adds none, and nothing finished well before the crash is sent again.
    assert.equal(afterRestart, 0, `${name}: duplicates delivered by the restarted gateway alone`);
    assert.ok(
      answeredBefore.every((age) => age <= RECENT_MS),
      `${name}: a duplicate of a delivery answered more than ${RECENT_MS} ms before the crash`,
    );
    assert.ok(duplicates.length <= lostAttemptBound, `${name}: ${duplicates.length} duplicates`);
    // Per-user order of first deliveries: exactly the user's accepted sequence, in order.
    const expected = new Map<string, number[]>();
    for (const e of accepted.values()) expected.set(e.userID, [...(expected.get(e.userID) ?? []), e.seq]);
    const got = new Map<string, number[]>();
    for (const x of firsts.values()) got.set(x.userID, [...(got.get(x.userID) ?? []), x.seq]);
    let disordered = 0;
    for (const [user, seqs] of expected) {
      const want = [...seqs].sort((a, b) => a - b);
      if (JSON.stringify(got.get(user)) !== JSON.stringify(want)) disordered++;
    }
    t.diagnostic(`${name}: users whose first deliveries are out of order: ${disordered} of ${expected.size}`);
    assert.equal(disordered, 0);
  }

  // ---- the database, read-only, after the gateway stopped
  const { sqlite, db } = openLedger(env.DB_PATH);
  t.after(() => sqlite.close());
  const ledger = db.select().from(schema.deliveries).all();
  const attemptRows = db.select().from(schema.attempts).orderBy(schema.attempts.id).all();
  const key = (destinationId: string, eventId: string) => `${destinationId}/${eventId}`;
  const attemptsByPair = new Map<string, typeof attemptRows>();
  for (const a of attemptRows) {
    const k = key(a.destinationId, a.eventId);
    attemptsByPair.set(k, [...(attemptsByPair.get(k) ?? []), a]);
  }
  const ledgerByPair = new Map(ledger.map((l) => [key(l.destinationId, l.eventId), l]));

  for (const [name, destinationId] of Object.entries(destinations)) {
    const r = tracked[name as keyof typeof tracked];
    const rows = ledger.filter((l) => l.destinationId === destinationId);
    assert.equal(rows.length, total, `${name}: one ledger row per accepted event`);
    assert.ok(
      rows.every((l) => l.status === "delivered" && accepted.has(l.eventId)),
      `${name}: every row delivered`,
    );

    const receiptsByEvent = new Map<string, Receipt[]>();
    for (const x of r.receipts) receiptsByEvent.set(x.id, [...(receiptsByEvent.get(x.id) ?? []), x]);
    let straddling = 0;
    let unrecordedAttempts = 0;
    let attemptsTotal = 0;
    for (const eventId of accepted.keys()) {
      const pair = key(destinationId, eventId);
      const l = ledgerByPair.get(pair);
      const as = attemptsByPair.get(pair) ?? [];
      attemptsTotal += as.length;
      // The recorder writes an attempt row and its ledger update in one transaction, so they cannot
      // disagree, crash or not: attempts numbered 1..n without gaps or repeats, n-1 failures then one
      // success, and the ledger's attempt count is n.
      assert.ok(l, `${name}: ledger row of ${eventId}`);
      assert.deepEqual(
        as.map((a) => a.attemptNumber),
        as.map((_, i) => i + 1),
        `${name} ${eventId}: attempt numbers`,
      );
      assert.deepEqual(
        as.map((a) => a.outcome),
        [...as.slice(1).map(() => "failed"), "succeeded"],
        `${name} ${eventId}: outcomes`,
      );
      assert.equal(l.attempts, as.length, `${name} ${eventId}: ledger attempts = attempt rows`);

      // Against the receiver: every request it answered is an attempt row with its status, except the one
      // request per event that the crash cut off before its result was written (events that straddle it).
      const seen = receiptsByEvent.get(eventId) ?? [];
      const before = seen.filter((x) => x.at < restartedAt);
      const afterwards = seen.filter((x) => x.at >= restartedAt);
      let expectedCodes = seen.map((x) => x.status);
      if (before.length > 0 && afterwards.length > 0) {
        straddling++;
        if (seen.length === as.length + 1) {
          unrecordedAttempts++;
          expectedCodes = [...before.slice(0, -1), ...afterwards].map((x) => x.status);
        }
      }
      assert.deepEqual(
        as.map((a) => a.statusCode),
        expectedCodes,
        `${name} ${eventId}: attempt rows match the receiver's answers`,
      );
    }
    const succeeded = attemptRows.filter(
      (a) => a.destinationId === destinationId && a.outcome === "succeeded",
    );
    assert.equal(succeeded.length, total, `${name}: exactly one succeeded attempt per event`);
    t.diagnostic(
      `${name}: attempt rows ${attemptsTotal} for ${r.receipts.length} requests; events straddling the crash ` +
        `${straddling}, of which ${unrecordedAttempts} had their last pre-crash attempt unrecorded`,
    );
    assert.ok(unrecordedAttempts <= lostAttemptBound);
  }
  assert.equal(
    attemptRows.filter((a) => a.outcome === "dead").length +
      ledger.filter((l) => l.status !== "delivered").length,
    0,
    "nothing dead or pending",
  );
});
