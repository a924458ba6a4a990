/**
 * Console benchmark: `npm run bench:console [-- --seconds 15 --rate 1000 --consoles 10]`.
 *
 * (a) Bundle: every file the console loads, as the gateway serves it (bytes, and gzip -6 bytes for
 *     comparison; the gateway itself does not compress).
 * (b) First paint, in Debian's chromium on loopback (median of 5 fresh pages): first contentful paint of
 *     the sign-in page, and navigation → the overview's charts drawn for a signed-in tab.
 * (c) Cost of the live tail: a gateway process with one destination (a receiver child) takes `--rate`
 *     events/s (POST /api/events, batches of 20) for `--seconds`, with no console and with (alternated,
 *     twice each)
 *     `--consoles` open live tails (SSE streams read in this process: the same server-side work as
 *     browser tabs, without 10 renderers on the same cores). Reported: gateway CPU per 1,000 events
 *     (ingest + delivery + tail, until every event is delivered), the difference, items each console got,
 *     items dropped, and how long after its 202 an event's id reached a console (p50/p99).
 * (d) What the stats roll-ups add to the state view's apply: 200,000 attempt rows inserted in batches of
 *     500 (one transaction each, as the view applies a fetch), with and without rollUpAttempts, alternated.
 *
 * KAFKA_BROKERS points it at a running broker; unset, it starts the local runner's broker.
 */
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { gzipSync } from "node:zlib";
import { Pool } from "undici";
import { uuidv7 } from "../src/ingest/event-id.ts";
import { type AttemptRow, insertAttempts } from "../src/store/attempts.ts";
import { openStore } from "../src/store/db.ts";
import { rollUpAttempts } from "../src/store/stats.ts";
import { launchChromium } from "../test/console-browser.ts";
import {
  ADMIN_TOKEN,
  acceptOne,
  benchGateway,
  benchGatewayEnv,
  cpuSecondsOf,
  fmt,
  metricSum,
  now,
  percentile,
  registerDestination,
  scrape,
  startReceiver,
  stopReceiver,
} from "./harness.ts";
import { PAYLOAD } from "./payload.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "15" },
    rate: { type: "string", default: "1000" },
    consoles: { type: "string", default: "10" },
  },
});
const SECONDS = Number(values.seconds);
const RATE = Number(values.rate);
const CONSOLES = Number(values.consoles);
const BATCH = 20;
const ASSETS = [
  "/console",
  "/console/app.js",
  "/console/api.js",
  "/console/pages.js",
  "/console/style.css",
  "/console/preact.mjs",
  "/console/hooks.mjs",
  "/console/htm.mjs",
  "/console/uplot.mjs",
  "/console/uplot.css",
];

/** (d) µs per attempt row applied, with or without the roll-ups, on a fresh SQLite file. */
function applyCost(withRollups: boolean): number {
  const path = join(tmpdir(), `console-bench-rollup-${uuidv7()}.db`);
  const store = openStore(path);
  const n = 200_000;
  const batch = 500;
  const t0 = Date.now();
  const rows: AttemptRow[] = Array.from({ length: n }, (_, i) => ({
    eventId: uuidv7(t0 + Math.floor(i / 10)),
    destinationId: `dest_${i % 5}`,
    userId: `user-${i % 100}`,
    attemptNumber: 1,
    startedAt: t0 + Math.floor(i / 10),
    durationMs: 20,
    statusCode: 200,
    outcome: i % 50 ? "succeeded" : "failed",
  }));
  const start = performance.now();
  for (let i = 0; i < n; i += batch) {
    const part = rows.slice(i, i + batch);
    store.sqlite.transaction(() => {
      insertAttempts(store.db, part);
      if (withRollups) rollUpAttempts(store.db, part);
    })();
  }
  const us = ((performance.now() - start) * 1000) / n;
  store.close();
  for (const s of ["", "-wal", "-shm"]) rmSync(`${path}${s}`, { force: true });
  return us;
}
applyCost(false);
const applyRuns = [false, true, false, true].map((w) => ({ rollups: w, us: applyCost(w) }));

const { startLocalKafka } = await import("../src/kafka/runner.ts");
let local: Awaited<ReturnType<typeof startLocalKafka>> | undefined;
let brokers = process.env.KAFKA_BROKERS?.split(",");
if (!brokers) {
  local = await startLocalKafka({});
  brokers = local.brokers;
}
const prefix = `console-bench-${Date.now().toString(36)}`;
const dbPath = join(tmpdir(), `${prefix}-${uuidv7()}.db`);
const logPath = join(tmpdir(), `${prefix}.log`);
const env = {
  ...benchGatewayEnv(brokers, dbPath),
  EVENTS_TOPIC: `${prefix}.events`,
  DEAD_LETTER_TOPIC: `${prefix}.events.dead-letter`,
  CONSUMER_GROUP_PREFIX: prefix,
  TOPIC_PARTITIONS: "6",
};
const gw = await benchGateway(env, logPath);
const receiver = await startReceiver("net");

interface Tail {
  items: number;
  dropped: number;
  /** Arrival time (ms) of accepted events' ids, for the first console only. */
  seen?: Map<string, number>;
}

function openTail(signal: AbortSignal, seen?: Map<string, number>): Tail {
  const tail: Tail = { items: 0, dropped: 0, seen };
  void (async () => {
    const res = await fetch(`${gw.url}/api/live`, {
      headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
      signal,
    });
    const decoder = new TextDecoder();
    let buffer = "";
    try {
      for await (const chunk of res.body as unknown as AsyncIterable<Uint8Array>) {
        buffer += decoder.decode(chunk, { stream: true });
        let cut = buffer.indexOf("\n\n");
        while (cut >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const data = block.split("\n").find((l) => l.startsWith("data: "));
          if (block.startsWith("event: items") && data) {
            const { items, dropped } = JSON.parse(data.slice(6)) as {
              items: Array<{ kind: string; eventId: string }>;
              dropped: number;
            };
            const at = now();
            tail.items += items.length;
            tail.dropped = dropped;
            if (seen) for (const i of items) if (i.kind === "accepted") seen.set(i.eventId, at);
          }
          cut = buffer.indexOf("\n\n");
        }
      }
    } catch {
      // aborted at the end of the run
    }
  })();
  return tail;
}

/** Paced POST /api/events at RATE events/s for SECONDS; returns each batch's answer time by event id. */
async function load(): Promise<{ accepted: number; answered: Map<string, number> }> {
  const pool = new Pool(gw.url, { connections: 16 });
  const answered = new Map<string, number>();
  let accepted = 0;
  const interval = (1000 * BATCH) / RATE;
  const t0 = now();
  const batches = Math.round((SECONDS * RATE) / BATCH);
  const inFlight: Promise<void>[] = [];
  for (let b = 0; b < batches; b++) {
    const due = t0 + b * interval;
    const wait = due - now();
    if (wait > 0) await sleep(wait);
    const body = JSON.stringify({
      events: Array.from({ length: BATCH }, (_, i) => ({
        userID: `user-${(b * BATCH + i) % 200}`,
        type: `bench.type${i % 4}`,
        payload: PAYLOAD,
      })),
    });
    inFlight.push(
      (async () => {
        const res = await pool.request({
          path: "/api/events",
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        const text = await res.body.text();
        if (res.statusCode !== 202) return;
        const at = now();
        const { ids } = JSON.parse(text) as { ids: string[] };
        accepted += ids.length;
        for (const id of ids) answered.set(id, at);
      })(),
    );
  }
  await Promise.all(inFlight);
  await pool.close();
  return { accepted, answered };
}

async function delivered(): Promise<number> {
  const v = metricSum(await scrape(gw), "deliveries_total");
  return Number.isFinite(v) ? v : 0;
}

async function costRun(consoles: number) {
  const stop = new AbortController();
  const seen = new Map<string, number>();
  const tails = Array.from({ length: consoles }, (_, i) => openTail(stop.signal, i === 0 ? seen : undefined));
  await sleep(500);
  const before = await delivered();
  const cpu0 = cpuSecondsOf(gw.pid);
  const { accepted, answered } = await load();
  const deadline = Date.now() + 120_000;
  while ((await delivered()) - before < accepted && Date.now() < deadline) await sleep(100);
  const cpu = cpuSecondsOf(gw.pid) - cpu0;
  await sleep(500);
  stop.abort();
  const delays = [...answered]
    .filter(([id]) => seen.has(id))
    .map(([id, at]) => (seen.get(id) as number) - at)
    .sort((a, b) => a - b);
  return {
    consoles,
    accepted,
    cpuMsPer1000: (cpu * 1000 * 1000) / accepted,
    itemsPerConsole: consoles ? tails.reduce((a, t) => a + t.items, 0) / consoles : 0,
    dropped: tails.reduce((a, t) => a + t.dropped, 0),
    p50: percentile(delays, 50),
    p99: percentile(delays, 99),
    seen: delays.length,
  };
}

try {
  await gw.start();
  await acceptOne(gw, 120_000);
  await registerDestination(gw, { url: receiver.url, maxConcurrency: 64 });

  // (a) Bundle
  let raw = 0;
  let gz = 0;
  const sizes: string[] = [];
  for (const path of ASSETS) {
    const bytes = Buffer.from(await (await fetch(`${gw.url}${path}`)).arrayBuffer());
    raw += bytes.length;
    gz += gzipSync(bytes).length;
    sizes.push(`${path.replace("/console/", "")} ${fmt(bytes.length / 1024, 1)}`);
  }

  // (b) First paint
  const browser = await launchChromium();
  const fcp: number[] = [];
  const overview: number[] = [];
  try {
    for (let i = 0; i < 5; i++) {
      const page = await browser.newPage();
      await page.goto(`${gw.url}/console`);
      await page.locator("#token").waitFor();
      fcp.push(
        await page.evaluate(
          `new Promise((done) => new PerformanceObserver((list) => {
             const e = list.getEntriesByName("first-contentful-paint")[0];
             if (e) done(e.startTime);
           }).observe({ type: "paint", buffered: true }))`,
        ),
      );
      await page.evaluate(`sessionStorage.setItem("gateway-admin-token", ${JSON.stringify(ADMIN_TOKEN)})`);
      await page.reload();
      await page.locator(".chart canvas").first().waitFor();
      overview.push(await page.evaluate("performance.now()"));
      await page.close();
    }
  } finally {
    await browser.close();
  }
  fcp.sort((a, b) => a - b);
  overview.sort((a, b) => a - b);

  // (c) Live tail cost
  // A warm-up run first (JIT, SQLite pages, Kafka connections: the first run always cost more), not reported;
  // then alternated, twice each: the machine's other load drifts over minutes.
  await costRun(0);
  const runs: Awaited<ReturnType<typeof costRun>>[] = [];
  for (const n of [0, CONSOLES, 0, CONSOLES]) runs.push(await costRun(n));
  const mean = (n: number) => {
    const of = runs.filter((r) => r.consoles === n);
    return of.reduce((a, r) => a + r.cpuMsPer1000, 0) / of.length;
  };
  const without = { cpuMsPer1000: mean(0) };
  const withTails = { cpuMsPer1000: mean(CONSOLES) };

  console.log(`\n### Console bundle (${ASSETS.length} files)\n`);
  console.log(
    `${fmt(raw / 1024, 1)} KiB as served, ${fmt(gz / 1024, 1)} KiB gzipped; KiB per file: ${sizes.join(", ")}`,
  );
  console.log("\n### First paint (chromium, loopback, median of 5)\n");
  console.log(`sign-in page first contentful paint: ${fmt(percentile(fcp, 50), 0)} ms`);
  console.log(`signed in: navigation → overview charts drawn: ${fmt(percentile(overview, 50), 0)} ms`);
  console.log(`\n### Live tail cost (${RATE} events/s for ${SECONDS} s, 1 destination)\n`);
  console.log(
    "| consoles | events | gateway CPU ms / 1,000 events | items per console | dropped | 202 → id in tail p50 / p99 ms |",
  );
  console.log("| ---: | ---: | ---: | ---: | ---: | ---: |");
  for (const r of runs) {
    console.log(
      `| ${r.consoles} | ${fmt(r.accepted)} | ${fmt(r.cpuMsPer1000, 1)} | ${fmt(r.itemsPerConsole)} | ${r.dropped} | ${
        r.seen ? `${fmt(r.p50, 1)} / ${fmt(r.p99, 1)}` : "—"
      } |`,
    );
  }
  console.log(
    `\nthe tail's cost (mean of the two runs each): ${fmt(withTails.cpuMsPer1000 - without.cpuMsPer1000, 1)} ms CPU per 1,000 events for ${CONSOLES} consoles (${fmt(((withTails.cpuMsPer1000 - without.cpuMsPer1000) / without.cpuMsPer1000) * 100, 0)} %)`,
  );
  console.log("\n### Roll-ups in the state view (200,000 attempt rows, batches of 500)\n");
  for (const r of applyRuns) {
    console.log(`${r.rollups ? "insert + roll-ups" : "insert only     "}: ${fmt(r.us, 2)} µs per attempt`);
  }
} finally {
  await gw.stop().catch(() => {});
  await stopReceiver(receiver);
  for (const s of ["", "-wal", "-shm"]) rmSync(`${dbPath}${s}`, { force: true });
  await local?.stop();
}
