/**
 * Fault 3: hostile destinations beside one healthy destination, all on one gateway (a child process, so
 * the receivers in this process do not share its event loop). Each hostile receiver misbehaves in one way;
 * afterwards its attempt rows, ledger rows, dead-letter listing and dead-letter topic must say exactly what
 * it did, and the healthy destination must have received everything while the hostile ones were still busy.
 */
import assert from "node:assert/strict";
import type { ServerResponse } from "node:http";
import { loadavg } from "node:os";
import { test } from "node:test";
import Database from "better-sqlite3";
import { drizzle } from "drizzle-orm/better-sqlite3";
import { SNIPPET_BYTES } from "../../src/delivery/send.ts";
import * as schema from "../../src/store/schema.ts";
import { type EventToSend, type GatewayClient, gatewayEnv, startGateway } from "../child-gateway.ts";
import { createTestKafka, uniqueName } from "../helpers.ts";
import { type ReceivedRequest, type Receiver, startReceiver, waitFor } from "../receiver.ts";

const USERS = 30;
const PER_USER = 10;
const TICK_MS = 100;
const TIMEOUT_MS = 1000;
const HUGE_BYTES = 50 * 1024 * 1024;
const DRIP_BYTES = 25; // one byte per 200 ms: 5 s, far beyond the timeout
const PROBE = "hostile.probe";
/**
 * HOSTILE_CONTROL=1: the nine extra destinations behave (answer 200 at once) and the test stops after the
 * latency figures — what fan-out to ten destinations costs the healthy one on this machine, without hostility.
 */
const CONTROL = process.env.HOSTILE_CONTROL === "1";

/** One request a hostile receiver got, and what it did with it. */
interface Hit {
  eventId: string;
  at: number;
  /** The status it answered with; null when it sent none (hung, reset, or answered too late to count). */
  status: number | null;
  /** The gateway closed the connection before the receiver had finished its answer. */
  cutShort?: boolean;
  /** Response bytes handed to the socket before it closed (huge body, drip). */
  bytesWritten?: number;
}

/** The attempt row an attempt must have produced: status code, outcome and error text. */
interface ExpectedRow {
  statusCode: number | null;
  error: RegExp | null;
}

interface Hostile {
  name: string;
  /** Destination settings beside the shared ones. */
  settings: Record<string, unknown>;
  /** What it does with one request (records a Hit). */
  behave(req: ReceivedRequest, res: ServerResponse, hit: Hit): void;
  /** The attempt row each of its requests must have produced. */
  row(hit: Hit): ExpectedRow;
}

const timedOut = new RegExp(`^timed out after ${TIMEOUT_MS} ms$`);

function hostiles(healthyUrl: string): Hostile[] {
  return [
    {
      name: "never answers",
      settings: { maxAttempts: 2, timeoutMs: TIMEOUT_MS },
      behave(_req, res, hit) {
        hit.status = null;
        res.on("close", () => {
          hit.cutShort = true;
        });
      },
      row: () => ({ statusCode: null, error: timedOut }),
    },
    {
      name: "answers after the timeout",
      settings: { maxAttempts: 2, timeoutMs: TIMEOUT_MS },
      behave(_req, res, hit) {
        hit.status = null; // the gateway has given up before the answer: it never sees the 200
        setTimeout(() => {
          if (res.destroyed) hit.cutShort = true;
          else res.end("too late");
        }, TIMEOUT_MS + 500);
      },
      row: () => ({ statusCode: null, error: timedOut }),
    },
    {
      name: "resets the connection",
      settings: { maxAttempts: 3 },
      behave(_req, res, hit) {
        hit.status = null;
        // RST, not FIN: the gateway sees ECONNRESET mid-request.
        res.socket?.resetAndDestroy();
      },
      row: () => ({ statusCode: null, error: /ECONNRESET|UND_ERR_SOCKET|other side closed|socket/i }),
    },
    {
      name: "500 at random",
      settings: { maxAttempts: 3 },
      behave(_req, res, hit) {
        hit.status = Math.random() < 0.5 ? 500 : 200;
        res.statusCode = hit.status;
        res.end(hit.status === 500 ? "boom" : "ok");
      },
      row: (hit) =>
        hit.status === 500 ? { statusCode: 500, error: /^HTTP 500$/ } : { statusCode: 200, error: null },
    },
    {
      name: "429 with Retry-After",
      // Above Retry-After, so the gateway waits the full second the receiver asked for.
      settings: { maxAttempts: 3, backoffMaxMs: 2000 },
      behave(_req, res, hit) {
        // The first request of an event is refused with Retry-After: 1, the next one accepted.
        hit.status = firstTime(hit.eventId) ? 429 : 200;
        if (hit.status === 429) res.setHeader("retry-after", "1");
        res.statusCode = hit.status;
        res.end(hit.status === 429 ? "slow down" : "ok");
      },
      row: (hit) =>
        hit.status === 429 ? { statusCode: 429, error: /^HTTP 429$/ } : { statusCode: 200, error: null },
    },
    {
      name: "410 Gone",
      settings: { maxAttempts: 3 },
      behave(_req, res, hit) {
        hit.status = 410;
        res.statusCode = 410;
        res.end("gone");
      },
      row: () => ({ statusCode: 410, error: /^410 Gone: the receiver asked us to stop$/ }),
    },
    {
      name: "302 to the healthy receiver",
      settings: { maxAttempts: 3 },
      behave(_req, res, hit) {
        hit.status = 302;
        res.statusCode = 302;
        res.setHeader("location", `${healthyUrl}?from=redirect`);
        res.end();
      },
      row: () => ({
        statusCode: 302,
        error: /^redirect 302 to http:\/\/127\.0\.0\.1:\d+\/hook\?from=redirect not followed$/,
      }),
    },
    {
      name: "50 MiB body",
      settings: { maxAttempts: 3 },
      behave(_req, res, hit) {
        hit.status = 200;
        hit.bytesWritten = 0;
        const chunk = Buffer.alloc(64 * 1024, "x");
        res.writeHead(200, { "content-type": "text/plain", "content-length": String(HUGE_BYTES) });
        res.on("close", () => {
          hit.cutShort = !res.writableFinished;
        });
        // Streamed with backpressure: written only as fast as the gateway reads.
        const pump = () => {
          while ((hit.bytesWritten as number) < HUGE_BYTES && !res.destroyed) {
            hit.bytesWritten = (hit.bytesWritten as number) + chunk.length;
            if (!res.write(chunk)) return void res.once("drain", pump);
          }
          if (!res.destroyed) res.end();
        };
        pump();
      },
      row: () => ({ statusCode: 200, error: null }),
    },
    {
      name: "slow drip",
      // 2.5× the others' timeout: the 200 must reach the gateway before the deadline even on a loaded CI
      // machine (the row then keeps status 200), and the 5 s drip still outlasts it by far.
      settings: { maxAttempts: 2, timeoutMs: TIMEOUT_MS * 2.5 },
      behave(_req, res, hit) {
        hit.status = null; // a 200 arrives, but its body does not finish within the timeout: no success
        hit.bytesWritten = 0;
        res.writeHead(200, { "content-type": "text/plain" });
        res.flushHeaders();
        const timer = setInterval(() => {
          if (res.destroyed) return;
          res.write(".");
          hit.bytesWritten = (hit.bytesWritten as number) + 1;
          if (hit.bytesWritten >= DRIP_BYTES) {
            clearInterval(timer);
            res.end();
          }
        }, 200);
        res.on("close", () => {
          clearInterval(timer);
          hit.cutShort = !res.writableFinished;
        });
      },
      row: () => ({
        statusCode: 200,
        error: new RegExp(`^HTTP 200, then the body failed: timed out after ${TIMEOUT_MS * 2.5} ms$`),
      }),
    },
  ];
}

const seenOnce = new Set<string>();
function firstTime(eventId: string): boolean {
  if (seenOnce.has(eventId)) return false;
  seenOnce.add(eventId);
  return true;
}

interface Running {
  hostile: Hostile;
  receiver: Receiver;
  hits: Hit[];
  id: string;
}

interface AttemptView {
  destinationId: string;
  attemptNumber: number;
  statusCode: number | null;
  error: string | null;
  responseSnippet: string | null;
  outcome: string;
  durationMs: number;
  startedAt: string;
}

function openLedger(dbPath: string) {
  const sqlite = new Database(dbPath, { readonly: true, fileMustExist: true });
  return { sqlite, db: drizzle(sqlite, { schema }) };
}

/** Sends PER_USER events per user, one batch every TICK_MS (a steady ~100 events/s), all 202. */
async function paced(gw: GatewayClient, type: (seq: number) => string): Promise<Map<string, EventToSend>> {
  const accepted = new Map<string, EventToSend>();
  const perTick = 10;
  const ticks = (USERS * PER_USER) / perTick;
  for (let k = 0; k < ticks; k++) {
    const started = Date.now();
    const batch: EventToSend[] = [];
    for (let i = 0; i < perTick; i++) {
      const n = k * perTick + i;
      const seq = Math.floor(n / USERS);
      batch.push({ userID: `user-${n % USERS}`, type: type(seq), payload: { seq } });
    }
    const { ids } = await gw.ingestBatch(batch);
    for (const [i, id] of ids.entries()) accepted.set(id, batch[i] as EventToSend);
    await new Promise((r) => setTimeout(r, Math.max(0, TICK_MS - (Date.now() - started))));
  }
  return accepted;
}

/**
 * The gateway's event-loop delay since the previous call (prom-client resets its histogram on every
 * scrape), and the machine's 1-minute load: context for the latency figures on a shared 2-core box.
 */
async function loopDelay(gatewayUrl: string): Promise<string> {
  const text = await (await fetch(`${gatewayUrl}/metrics`)).text();
  const read = (name: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name} `));
    return line ? Math.round(Number(line.split(" ")[1]) * 1000) : Number.NaN;
  };
  return (
    `gateway event-loop delay p99 ${read("nodejs_eventloop_lag_p99_seconds")} ms, ` +
    `max ${read("nodejs_eventloop_lag_max_seconds")} ms; load average ${loadavg()[0]?.toFixed(2)}`
  );
}

/** Nearest-rank percentile of a list of numbers (sorted copy). */
function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}

function latencySummary(values: number[]): string {
  return `p50 ${percentile(values, 50)} ms, p99 ${percentile(values, 99)} ms, max ${Math.max(...values)} ms (n=${values.length})`;
}

test("hostile destinations: outcomes, attempt rows and dead letters match what each did; the healthy one keeps flowing", {
  timeout: 240_000,
}, async (t) => {
  const env = gatewayEnv({ TOPIC_PARTITIONS: "6" });
  const healthy = await startReceiver();
  const running: Running[] = [];
  t.after(() => Promise.all([healthy.close(), ...running.map((r) => r.receiver.close())]));
  const gw = await startGateway(t, env, { dropTopics: true });
  // Default timeout (15 s): its latency is what is measured, a retry would only blur it.
  const healthyId = (await gw.registerDestination({ url: healthy.url })).id;

  /** Accept→receive latency at the healthy receiver, from the event's gateway timestamp. */
  const healthyLatency = (ids: Set<string>) => {
    const out: number[] = [];
    for (const r of healthy.requests) {
      const body = JSON.parse(r.body) as { id: string; timestamp: string };
      if (ids.has(body.id)) out.push(r.at - Date.parse(body.timestamp));
    }
    return out;
  };
  const healthyHas = (ids: Set<string>) => {
    const got = new Set(healthy.delivered.map((e) => e.id));
    return [...ids].every((id) => got.has(id));
  };

  // ---- baseline: the healthy destination alone
  await loopDelay(gw.url);
  const baseline = new Set((await paced(gw, () => "normal")).keys());
  await waitFor(() => healthyHas(baseline), "the baseline at the healthy receiver");
  const baselineLoop = await loopDelay(gw.url);

  // ---- every hostile destination beside it, each subscribed to the probe events only
  for (const kind of hostiles(healthy.url)) {
    const hostile: Hostile = CONTROL
      ? {
          ...kind,
          behave(_req, res, hit) {
            hit.status = 200;
            res.end("ok");
          },
        }
      : kind;
    const hits: Hit[] = [];
    const receiver = await startReceiver((req, res) => {
      const hit: Hit = { eventId: (JSON.parse(req.body) as { id: string }).id, at: req.at, status: null };
      hits.push(hit);
      hostile.behave(req, res, hit);
      return "handled";
    });
    const id = (
      await gw.registerDestination({
        url: receiver.url,
        name: hostile.name,
        eventTypes: [PROBE],
        // Generous unless the kind is about timeouts: on a busy 2-core machine a starved process must not
        // turn a 500 or a reset into a timeout and muddle what each receiver did.
        timeoutMs: 10_000,
        backoffBaseMs: 50,
        backoffMaxMs: 200,
        maxConcurrency: 32,
        ...hostile.settings,
      })
    ).id;
    running.push({ hostile, receiver, hits, id });
  }
  const loaded = await paced(gw, (seq) => (seq % 3 === 0 ? PROBE : "normal"));
  const loadedIds = new Set(loaded.keys());
  const probes = [...loaded].filter(([, e]) => e.type === PROBE).map(([id]) => id);
  await waitFor(
    () => healthyHas(loadedIds),
    "every event at the healthy receiver with the hostile ones active",
  );
  const loadedLoop = await loopDelay(gw.url);

  // The instant the healthy receiver has everything: how far along is each hostile destination?
  const finishedAt = (dbPath: string) => {
    const { sqlite } = openLedger(dbPath);
    try {
      const rows = sqlite
        .prepare(
          "select destination_id as d, count(*) as n from deliveries where status in ('delivered','dead') group by destination_id",
        )
        .all() as Array<{ d: string; n: number }>;
      return new Map(rows.map((r) => [r.d, r.n]));
    } finally {
      sqlite.close();
    }
  };
  const snapshot = finishedAt(env.DB_PATH);
  t.diagnostic(
    `when the healthy receiver had all ${loadedIds.size} events, probes finished per hostile destination ` +
      `(of ${probes.length}): ${running.map((r) => `${r.hostile.name} ${snapshot.get(r.id) ?? 0}`).join(", ")}`,
  );
  if (CONTROL) {
    t.diagnostic(
      `control, healthy alone: accept→receive ${latencySummary(healthyLatency(baseline))}; ${baselineLoop}`,
    );
    t.diagnostic(
      `control, beside 9 well-behaved destinations: accept→receive ${latencySummary(healthyLatency(loadedIds))}; ` +
        loadedLoop,
    );
    return;
  }
  // Provable: a probe at a destination that never answers in time costs maxAttempts × timeoutMs (2 s), and
  // a user's probes go one after another; the last probes were accepted moments ago.
  for (const name of ["never answers", "answers after the timeout", "slow drip"]) {
    const r = running.find((x) => x.hostile.name === name) as Running;
    assert.ok(
      (snapshot.get(r.id) ?? 0) < probes.length,
      `${name} was still busy when the healthy one finished`,
    );
  }

  t.diagnostic(`healthy alone: accept→receive ${latencySummary(healthyLatency(baseline))}; ${baselineLoop}`);
  t.diagnostic(
    `healthy beside 9 hostile destinations: accept→receive ${latencySummary(healthyLatency(loadedIds))}; ` +
      loadedLoop,
  );
  // Gateway-side view of the same thing, on the gateway's clock: accept → the first attempt started.
  const healthyRowsDone = () => {
    const { sqlite } = openLedger(env.DB_PATH);
    try {
      return (
        sqlite
          .prepare("select count(*) as n from deliveries where destination_id = ? and status = 'delivered'")
          .get(healthyId) as { n: number }
      ).n;
    } finally {
      sqlite.close();
    }
  };
  await waitFor(() => healthyRowsDone() === baseline.size + loadedIds.size, "the healthy ledger");
  {
    const { sqlite, db } = openLedger(env.DB_PATH);
    const rows = db.select().from(schema.attempts).all();
    sqlite.close();
    const timestamps = new Map<string, number>();
    for (const r of healthy.requests) {
      const body = JSON.parse(r.body) as { id: string; timestamp: string };
      timestamps.set(body.id, Date.parse(body.timestamp));
    }
    const mine = rows.filter((a) => a.destinationId === healthyId);
    const dispatch = (ids: Set<string>) =>
      mine
        .filter((a) => a.attemptNumber === 1 && ids.has(a.eventId))
        .map((a) => a.startedAt - (timestamps.get(a.eventId) as number));
    t.diagnostic(`healthy alone: accept→first attempt start ${latencySummary(dispatch(baseline))}`);
    t.diagnostic(
      `healthy beside hostile ones: accept→first attempt start ${latencySummary(dispatch(loadedIds))}`,
    );
    const failed = mine.filter((a) => a.outcome !== "succeeded");
    t.diagnostic(
      `healthy: ${failed.length} failed attempts (${[...new Set(failed.map((a) => a.error))].join("; ")}), ` +
        `max attempt duration ${Math.max(...mine.map((a) => a.durationMs))} ms`,
    );
  }

  // ---- wait until every hostile destination has finished every probe (410: until it is disabled)
  const gone = running.find((r) => r.hostile.name === "410 Gone") as Running;
  await waitFor(
    () => {
      const done = finishedAt(env.DB_PATH);
      return running.every((r) => r === gone || (done.get(r.id) ?? 0) === probes.length);
    },
    "every hostile destination finished its probes",
    120_000,
  );
  const goneDest = await gw.get<{ disabled: boolean; disabledReason: string | null }>(
    `/api/destinations/${gone.id}`,
  );
  assert.equal(goneDest.disabled, true, "410 disables the destination");
  assert.match(String(goneDest.disabledReason), /410/);

  // ---- attempt rows (admin API) against what each receiver did
  const attemptsOf = new Map<string, AttemptView[]>();
  for (const eventId of probes) {
    const { attempts } = await gw.get<{ attempts: AttemptView[] }>(`/api/events/${eventId}/attempts`);
    attemptsOf.set(eventId, attempts);
  }
  const deadLettersOf = async (destinationId: string) => {
    const out: Array<{ eventId: string; attempts: number; lastError: string | null }> = [];
    let cursor: string | null = null;
    do {
      const page: {
        deadLetters: Array<{ eventId: string; attempts: number; lastError: string | null }>;
        nextCursor: string | null;
      } = await gw.get(
        `/api/destinations/${destinationId}/dead-letters?limit=50${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`,
      );
      out.push(...page.deadLetters);
      cursor = page.nextCursor;
    } while (cursor);
    return out;
  };

  const expectedDead = new Map<string, Map<string, number>>(); // destination → event → attempts
  for (const r of running) {
    const hitsOf = new Map<string, Hit[]>();
    for (const h of r.hits) hitsOf.set(h.eventId, [...(hitsOf.get(h.eventId) ?? []), h]);
    const dead = new Map<string, number>();
    let delivered = 0;
    const maxAttempts = r.hostile.settings.maxAttempts as number;
    for (const eventId of probes) {
      const hits = hitsOf.get(eventId) ?? [];
      const rows = (attemptsOf.get(eventId) ?? []).filter((a) => a.destinationId === r.id);
      const what = `${r.hostile.name}, event ${eventId}`;
      if (r === gone && hits.length === 0) {
        assert.equal(rows.length, 0, `${what}: never attempted (the destination was disabled first)`);
        continue;
      }
      assert.equal(rows.length, hits.length, `${what}: one attempt row per request the receiver got`);
      const last = hits[hits.length - 1] as Hit;
      const succeeded = last.status !== null && last.status >= 200 && last.status < 300;
      if (!succeeded) {
        // Ran out of attempts, or 410 on the first.
        assert.equal(hits.length, r === gone ? 1 : maxAttempts, `${what}: attempts before giving up`);
        dead.set(eventId, hits.length);
      } else delivered++;
      hits.forEach((hit, i) => {
        const row = rows[i] as AttemptView;
        const want = r.hostile.row(hit);
        assert.equal(row.attemptNumber, i + 1, `${what}: attempt number`);
        assert.equal(row.statusCode, want.statusCode, `${what}: status of attempt ${i + 1}`);
        if (want.error) assert.match(String(row.error), want.error, `${what}: error of attempt ${i + 1}`);
        else assert.equal(row.error, null, `${what}: no error on attempt ${i + 1}`);
        const final = i === hits.length - 1;
        assert.equal(row.outcome, !final ? "failed" : succeeded ? "succeeded" : "dead", `${what}: outcome`);
        if (row.responseSnippet !== null) assert.ok(Buffer.byteLength(row.responseSnippet) <= SNIPPET_BYTES);
      });
    }
    expectedDead.set(r.id, dead);

    const listed = await deadLettersOf(r.id);
    assert.deepEqual(
      new Map(listed.map((d) => [d.eventId, d.attempts])),
      dead,
      `${r.hostile.name}: the dead-letter listing is exactly the events it refused to the end`,
    );
    const durations = r.hits.length
      ? [...attemptsOf.values()]
          .flat()
          .filter((a) => a.destinationId === r.id)
          .map((a) => a.durationMs)
      : [];
    t.diagnostic(
      `${r.hostile.name}: requests ${r.hits.length}, delivered ${delivered}, dead ${dead.size}, ` +
        `attempt duration max ${durations.length ? Math.max(...durations) : "-"} ms`,
    );
  }

  // Specific promises per kind.
  const byName = (name: string) => running.find((r) => r.hostile.name === name) as Running;
  assert.ok(
    gone.hits.length >= 1 && gone.hits.length < probes.length,
    "410: stopped after the first answers",
  );
  assert.ok(
    !healthy.requests.some((r) => r.url.includes("from=redirect")),
    "the redirect was not followed to the healthy receiver",
  );
  const huge = byName("50 MiB body");
  const maxWritten = Math.max(...huge.hits.map((h) => h.bytesWritten ?? 0));
  const snippets = [...attemptsOf.values()].flat().filter((a) => a.destinationId === huge.id);
  t.diagnostic(
    `50 MiB body: at most ${(maxWritten / 1024 / 1024).toFixed(2)} MiB written before the gateway closed the ` +
      `connection; stored snippets ${Math.max(...snippets.map((s) => Buffer.byteLength(s.responseSnippet ?? "")))} bytes`,
  );
  assert.ok(
    huge.hits.every((h) => h.cutShort),
    "50 MiB body: the gateway hung up before the end",
  );
  assert.ok(maxWritten < HUGE_BYTES / 4, "50 MiB body: read far less than the body");
  assert.ok(snippets.every((s) => Buffer.byteLength(s.responseSnippet ?? "") === SNIPPET_BYTES));
  const drip = byName("slow drip");
  assert.ok(
    drip.hits.every((h) => h.cutShort && (h.bytesWritten ?? 0) < DRIP_BYTES),
    "drip: cut off by the timeout",
  );
  const retry = byName("429 with Retry-After");
  const gaps: number[] = [];
  for (const eventId of probes) {
    const [first, second] = retry.hits.filter((h) => h.eventId === eventId);
    if (first && second) gaps.push(second.at - first.at);
  }
  t.diagnostic(`429 Retry-After: 1 → next attempt after ${Math.min(...gaps)}–${Math.max(...gaps)} ms`);
  // A lower bound the gateway enforces by sleeping, not a timing measurement.
  assert.ok(Math.min(...gaps) >= 990, "Retry-After honoured");

  // ---- the dead-letter topic carries the same dead letters
  const dlq = await readDeadLetterTopic(env.DEAD_LETTER_TOPIC);
  for (const r of running) {
    const dead = expectedDead.get(r.id) as Map<string, number>;
    const mine = dlq.filter((m) => m.destinationId === r.id);
    assert.deepEqual(
      new Map(mine.map((m) => [m.eventId, m.attempts])),
      dead,
      `${r.hostile.name}: dead-letter topic`,
    );
    assert.equal(mine.length, dead.size, `${r.hostile.name}: one dead-letter record per dead event`);
  }
  assert.equal(dlq.filter((m) => m.destinationId === healthyId).length, 0);

  // ---- the ledger, read-only after a graceful stop
  assert.equal(await gw.stop(), 0, gw.output());
  const { sqlite, db } = openLedger(env.DB_PATH);
  t.after(() => sqlite.close());
  const ledger = db.select().from(schema.deliveries).all();
  for (const r of running) {
    const rows = ledger.filter((l) => l.destinationId === r.id);
    const dead = expectedDead.get(r.id) as Map<string, number>;
    assert.deepEqual(
      new Map(rows.filter((l) => l.status === "dead").map((l) => [l.eventId, l.attempts])),
      dead,
      `${r.hostile.name}: ledger dead rows`,
    );
    assert.ok(
      rows.every((l) => l.status === "dead" || l.status === "delivered"),
      `${r.hostile.name}: nothing left pending`,
    );
  }
  const healthyRows = ledger.filter((l) => l.destinationId === healthyId);
  assert.equal(healthyRows.length, baseline.size + loadedIds.size);
  assert.ok(healthyRows.every((l) => l.status === "delivered" && l.attempts === 1));
});

interface DeadLetterRecord {
  eventId: string;
  destinationId: string;
  attempts: number;
}

/** Every record of the dead-letter topic, with the headers the worker puts on it. */
async function readDeadLetterTopic(topic: string): Promise<DeadLetterRecord[]> {
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  const offsets = await admin.fetchTopicOffsets(topic);
  await admin.disconnect();
  const expected = offsets.reduce((n, o) => n + Number(o.high) - Number(o.low), 0);
  const out: DeadLetterRecord[] = [];
  if (expected === 0) return out;
  const consumer = kafka.consumer({ groupId: uniqueName("dlq-reader") });
  await consumer.connect();
  await consumer.subscribe({ topic, fromBeginning: true });
  try {
    await new Promise<void>((done, fail) => {
      const timer = setTimeout(
        () => fail(new Error(`read ${out.length} of ${expected} dead letters`)),
        30_000,
      );
      void consumer.run({
        eachMessage: async ({ message }) => {
          const h = message.headers ?? {};
          out.push({
            eventId: String(h["event-id"]),
            destinationId: String(h["destination-id"]),
            attempts: Number(String(h.attempts)),
          });
          if (out.length >= expected) {
            clearTimeout(timer);
            done();
          }
        },
      });
    });
  } finally {
    await consumer.disconnect();
  }
  return out;
}
