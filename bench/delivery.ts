/**
 * Delivery benchmark: `npm run bench:delivery [-- --events 50000 --rate 1000 --duration 15 --destinations 10
 * --rate-10 200 --startup-destinations 100 --concurrency 64 --users 1000 --runs 1,2,3,4,4b,5 --cpu-prof --dump-latency f
 * --receiver net|node]`.
 *
 * Starts its own local Kafka broker, a fast receiver (a lean HTTP/1.1 server on node:net, or node:http with
 * `--receiver node`; answers 200 at once, records arrival time, event id and the event's `timestamp`) and
 * the gateway (`node src/main.ts`), each in a child process of its own: the receiver's CPU is not charged
 * to this driver and the gateway's RSS is its own (/proc/<pid>/status). One run, one table:
 *   (1) ceiling: raw undici POSTs (keep-alive Pool, the destination's default concurrency of 64, same body)
 *       straight to the receiver; (1b) the same through the gateway's sender (src/delivery/send.ts);
 *   (2) drain, 1 destination: register it, PATCH it disabled (its group stays pinned at the topic end), put
 *       N events in the topic with kafkajs sendBatch (the gateway's record format), PATCH it enabled and
 *       time until the receiver has all N;
 *   (3) drain, 10 destinations: the same with 10 destinations, N events each;
 *   (runs 3 and 4 each start with a freshly spawned gateway on the same database, so RSS is theirs alone)
 *   (4) latency: 1 destination, 1,000 events/s offered through POST /api/singleEvent (own paced loop),
 *       accept→receive = receiver's arrival time − the driver's time of the 202 (same machine clock),
 *       measured after the worker has joined and caught up with a warm-up at the same rate;
 *   (4b) the same with 10 destinations at an offered 200 events/s (2,000 deliveries/s);
 *   (4i, only with --runs 4i) the offered load of (4) with no destination: ingest's share of the CPU;
 *   (5) start-up: 100 destinations registered, the gateway restarted (SIGTERM, spawn); time from spawn
 *       until one event accepted after /readyz has reached all 100 receiver paths (every worker runs).
 * Gateway settings come from the environment as usual (BATCH_LINGER_MS=1 npm run bench:delivery …);
 * `--cpu-prof` writes the gateway's CPU profiles to $TMPDIR/bench-delivery-profiles/.
 * The receiver, the gateway process and the helpers live in bench/harness.ts (shared with bench/fanout.ts).
 */
import { rmSync, writeFileSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import type { ChildGateway } from "../test/child-gateway.ts";
import {
  acceptOne,
  benchGateway,
  benchGatewayEnv,
  ceiling,
  cpuSecondsOf,
  fmt,
  heapUsedMb,
  inParallel,
  memoryOf,
  metricMax,
  metricSum,
  now,
  type PathStats,
  percentile,
  registerDestination as postDestination,
  preload as preloadTopic,
  type ReceiverClient,
  type Row,
  restartGateway,
  sampleRecord,
  scrape,
  startReceiver,
  stopReceiver,
  table,
} from "./harness.ts";
import { PAYLOAD } from "./payload.ts";

/**
 * Requests in flight per destination: the destination default (DESTINATION_DEFAULTS.maxConcurrency) unless
 * --concurrency says otherwise; the ceiling runs at the same width.
 */
let concurrency = 64;
/** --dump-latency <file>: "acceptedAt(s) latency(ms)" per event of the latency run, to find stalls. */
let dumpLatency: string | undefined;
/** Distinct userIDs of the events (--users): events of one userID are delivered one after another. */
let users = 1000;
/** Where `--cpu-prof` puts the gateway's profiles (one per gateway process; open them in Chrome DevTools). */
const PROFILE_DIR = join(tmpdir(), "bench-delivery-profiles");

/** Registers a destination at --concurrency; a 503 is retried (harness.ts). */
function registerDestination(gw: ChildGateway, url: string, name: string): Promise<string> {
  return postDestination(gw, { url, name, maxConcurrency: concurrency });
}

/** Puts `count` events straight into the events topic, in the record format the gateway's ingest writes. */
function preload(brokers: string[], count: number): Promise<number> {
  return preloadTopic(brokers, count, users);
}

function eventBody(i: number): string {
  return JSON.stringify({ userID: `user-${i % users}`, type: "order.created", payload: PAYLOAD });
}

// ---------------------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------------------

/**
 * (2)/(3) drain: `count` destinations are registered, then disabled (their groups stay pinned at the topic
 * end), N events are put in the topic, the destinations are enabled together and the receiver is polled
 * until every one has all N.
 */
async function drain(
  gw: ChildGateway,
  receiver: ReceiverClient,
  brokers: string[],
  label: string,
  count: number,
  events: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const paths = Array.from({ length: count }, (_, i) => `/${label}/${i}`);
  const ids = await inParallel(paths, 4, (p) => registerDestination(gw, `${receiver.url}${p}`, `bench ${p}`));
  await inParallel(ids, 4, (id) => gw.patch(`/api/destinations/${id}`, { disabled: true }));
  const loadSeconds = await preload(brokers, events);
  log(
    `  ${fmt(events)} events in the topic in ${loadSeconds.toFixed(1)} s; enabling ${count} destination(s)`,
  );
  const rssBefore = memoryOf(gw.pid).rssMb;
  let peakRss = rssBefore;
  // V8 heap in use (live objects plus garbage not yet collected), from the gateway's own /metrics once a
  // second: tells buffered events from a heap that merely grew.
  let peakHeap = 0;
  const heapSampler = setInterval(() => {
    void heapUsedMb(gw).then((mb) => {
      if (Number.isFinite(mb)) peakHeap = Math.max(peakHeap, mb);
    });
  }, 1000);
  const sampler = setInterval(() => {
    try {
      peakRss = Math.max(peakRss, memoryOf(gw.pid).rssMb);
    } catch {
      // the gateway died: the wait below reports it
    }
  }, 200);
  const enabledAt = now();
  const cpuBefore = cpuSecondsOf(gw.pid);
  try {
    await Promise.all(ids.map((id) => gw.patch(`/api/destinations/${id}`, { disabled: false })));
    const stats = await receiver.waitUntil(
      (s) => paths.every((p) => (s[p]?.distinct ?? 0) >= events),
      `${count} × ${events} deliveries`,
      120_000 + (events * count) / 0.5, // 500 deliveries/s would be far below any useful result
    );
    const rssMb = memoryOf(gw.pid).rssMb;
    const cpuUs = ((cpuSecondsOf(gw.pid) - cpuBefore) / (events * count)) * 1e6;
    const per = paths.map((p) => stats[p] as PathStats);
    const first = Math.min(...per.map((s) => s.first));
    const last = Math.max(...per.map((s) => s.last));
    const duplicates = per.reduce((sum, s) => sum + s.count - s.distinct, 0);
    const total = events * count;
    const steady = total / ((last - first) / 1000);
    const withJoin = total / ((last - enabledAt) / 1000);
    const rows: Row[] = [];
    if (count === 1) {
      rows.push({
        name: `(2) drain, 1 destination, ${fmt(events)} events`,
        rate: `${fmt(steady)} deliveries/s`,
        p50: undefined,
        p99: undefined,
        rssMb,
        note:
          `${fmt(withJoin)}/s counted from the enabling PATCH (incl. consumer group join, ` +
          `${((first - enabledAt) / 1000).toFixed(1)} s to the first delivery); gateway CPU ${fmt(cpuUs)} µs/delivery; ` +
          `peak RSS ${fmt(peakRss)} MiB, peak V8 heap used ${fmt(peakHeap)} MiB` +
          (duplicates ? `; ${duplicates} duplicates` : ""),
      });
    } else {
      const perRates = per.map((s) => events / ((s.last - s.first) / 1000)).sort((a, b) => a - b);
      rows.push({
        name: `(3) drain, ${count} destinations, ${fmt(events)} events each`,
        rate: `${fmt(steady)} deliveries/s total`,
        p50: undefined,
        p99: undefined,
        rssMb,
        note:
          `per destination min ${fmt(perRates[0] as number)} / median ${fmt(percentile(perRates, 50))} / max ` +
          `${fmt(perRates.at(-1) as number)} per s; ${fmt(withJoin)}/s total from the enabling PATCHes; ` +
          `gateway CPU ${fmt(cpuUs)} µs/delivery; ` +
          `peak RSS ${fmt(peakRss)} MiB, peak V8 heap used ${fmt(peakHeap)} MiB` +
          (duplicates ? `; ${duplicates} duplicates` : ""),
      });
    }
    return rows;
  } finally {
    clearInterval(sampler);
    clearInterval(heapSampler);
    // Gone before the next phase, so its worker takes no CPU there.
    await inParallel(ids, 4, (id) => gw.delete(`/api/destinations/${id}`));
  }
}

/**
 * (4) accept→receive latency: `rate` events/s offered through POST /api/singleEvent by a paced loop (the
 * number due so far is sent each millisecond tick, never waiting on answers), warm-up first.
 */
async function latency(
  gw: ChildGateway,
  receiver: ReceiverClient,
  label: string,
  destinations: number,
  rate: number,
  seconds: number,
  warmupSeconds: number,
  log: (s: string) => void,
): Promise<Row> {
  const paths = Array.from({ length: destinations }, (_, i) => `/lat/${destinations}-${i}`);
  const ids = await inParallel(paths, 4, (p) => registerDestination(gw, `${receiver.url}${p}`, `bench ${p}`));
  const pool = new Pool(gw.url, { connections: 64 });
  const accepted = new Map<string, number>(); // event id → time of its 202
  const ingestMs: number[] = [];
  let refused = 0;
  let warmAccepted = 0;
  let i = 0;
  const offer = async (ms: number, record: boolean) => {
    const inflight = new Set<Promise<void>>();
    const start = now();
    let sent = 0;
    while (now() - start < ms) {
      const due = Math.floor(((now() - start) / 1000) * rate);
      for (; sent < due; sent++) {
        const t0 = now();
        const p = pool
          .request({
            path: "/api/singleEvent",
            method: "POST",
            headers: { "content-type": "application/json" },
            body: eventBody(i++),
          })
          .then(async (res) => {
            const t202 = now();
            if (res.statusCode !== 202) {
              refused++;
              await res.body.dump();
              return;
            }
            const { id } = (await res.body.json()) as { id: string };
            if (record) {
              accepted.set(id, t202);
              ingestMs.push(t202 - t0);
            } else warmAccepted++;
          })
          .catch(() => {
            refused++;
          })
          .finally(() => inflight.delete(p));
        inflight.add(p);
      }
      await sleep(1);
    }
    await Promise.all(inflight);
    return (now() - start) / 1000;
  };
  const delivered = (n: number) => (s: Record<string, PathStats>) =>
    paths.every((p) => (s[p]?.distinct ?? 0) >= n);
  try {
    // Steady state only: the workers have joined their groups (a probe arrived everywhere) and have caught
    // up with the warm-up, so no start-up backlog is counted as latency.
    await acceptOne(gw, 30_000, "bench-latency-probe");
    await receiver.waitUntil(delivered(1), "the probe event at every latency destination", 60_000);
    await offer(warmupSeconds * 1000, false);
    await receiver.waitUntil(delivered(1 + warmAccepted), "the warm-up events", 120_000);
    const cpuBefore = cpuSecondsOf(gw.pid);
    // Where events wait: in the worker (buffered, fetched but not yet delivered) or in the event loop.
    let maxBuffered = 0;
    let maxLoopLagMs = 0;
    const sampler = setInterval(() => {
      void scrape(gw).then((text) => {
        const buffered = metricSum(text, "worker_buffered_events");
        // The main thread's and each delivery thread's loop: the worst of them.
        const lag =
          Math.max(
            metricSum(text, "nodejs_eventloop_lag_p99_seconds"),
            metricMax(text, "delivery_thread_event_loop_lag_p99_seconds") || 0,
          ) * 1000;
        if (Number.isFinite(buffered)) maxBuffered = Math.max(maxBuffered, buffered);
        if (Number.isFinite(lag)) maxLoopLagMs = Math.max(maxLoopLagMs, lag);
      });
    }, 1000);
    const elapsed = await offer(seconds * 1000, true).finally(() => clearInterval(sampler));
    log(`  ${fmt(accepted.size)} accepted in ${elapsed.toFixed(1)} s; waiting for the receiver`);
    const want = [...accepted.keys()];
    const arrivals = new Map<string, [number, number]>();
    const deadline = Date.now() + 120_000;
    const rssMb = memoryOf(gw.pid).rssMb;
    const lat: number[] = [];
    const series: Array<[accepted: number, latency: number]> = [];
    const latTs: number[] = [];
    for (const path of paths) {
      for (;;) {
        arrivals.clear();
        for (const [id, at, ts] of await receiver.arrivals(path)) arrivals.set(id, [at, ts]);
        if (want.every((id) => arrivals.has(id))) break;
        if (Date.now() > deadline) throw new Error(`${path}: not every accepted event arrived within 120 s`);
        await sleep(200);
      }
      for (const id of want) {
        const [at, ts] = arrivals.get(id) as [number, number];
        lat.push(at - (accepted.get(id) as number));
        series.push([accepted.get(id) as number, at - (accepted.get(id) as number)]);
        latTs.push(at - ts);
      }
    }
    if (dumpLatency) {
      series.sort((a, b) => a[0] - b[0]);
      writeFileSync(
        dumpLatency,
        series.map(([t, l]) => `${(t / 1000).toFixed(3)} ${l.toFixed(1)}`).join("\n"),
      );
    }
    // Ingest and delivery of every accepted event (and whatever of the warm-up was still in flight).
    const cpuUs = ((cpuSecondsOf(gw.pid) - cpuBefore) / accepted.size) * 1e6;
    lat.sort((a, b) => a - b);
    latTs.sort((a, b) => a - b);
    ingestMs.sort((a, b) => a - b);
    return {
      name:
        destinations === 0
          ? `${label} ingest only (no destination), ${fmt(rate)} events/s offered for ${seconds} s`
          : `${label} latency, ${destinations} destination${destinations > 1 ? "s" : ""}, ${fmt(rate)} events/s offered for ${seconds} s`,
      rate:
        destinations === 0
          ? `${fmt(accepted.size / elapsed)} events/s accepted`
          : `${fmt((accepted.size * destinations) / elapsed)} deliveries/s`,
      p50: percentile(lat, 50),
      p99: percentile(lat, 99),
      rssMb,
      note:
        `accept(202)→receive, max ${fmt(lat.at(-1) as number, 1)} ms; from the event's timestamp: ` +
        `p50 ${fmt(percentile(latTs, 50), 1)} / p99 ${fmt(percentile(latTs, 99), 1)} ms; ` +
        `ingest 202 p50 ${fmt(percentile(ingestMs, 50), 1)} / p99 ${fmt(percentile(ingestMs, 99), 1)} ms; ` +
        `gateway CPU ${fmt(cpuUs)} µs/event (ingest + ${destinations} deliver${destinations > 1 ? "ies" : "y"}); ` +
        `worker buffered ≤ ${fmt(maxBuffered)} events, event-loop lag p99 ≤ ${fmt(maxLoopLagMs, 1)} ms` +
        (refused ? `; ${refused} not accepted` : ""),
    };
  } finally {
    await pool.close();
    await inParallel(ids, 4, (id) => gw.delete(`/api/destinations/${id}`));
  }
}

/**
 * (5) start-up: `count` destinations registered, the gateway stopped (SIGTERM) and spawned again; time until
 * an event accepted after /readyz has reached every destination (so every worker runs and has joined).
 */
async function startup(
  gw: ChildGateway,
  receiver: ReceiverClient,
  count: number,
  log: (s: string) => void,
): Promise<Row> {
  const paths = Array.from({ length: count }, (_, i) => `/start/${i}`);
  const registerStart = now();
  await inParallel(paths, 8, (p) => registerDestination(gw, `${receiver.url}${p}`, `bench ${p}`));
  const registerSeconds = (now() - registerStart) / 1000;
  log(`  ${count} destinations registered in ${registerSeconds.toFixed(1)} s; restarting the gateway`);
  const stopStart = now();
  const graceful = (await gw.stop()) !== "SIGKILL";
  const stopSeconds = (now() - stopStart) / 1000;
  const spawnedAt = now();
  await gw.start({ ready: false });
  await gw.waitReady(120_000, 25);
  const readyAt = now();
  await acceptOne(gw, 120_000, "bench-startup");
  const acceptedAt = now();
  const stats = await receiver.waitUntil(
    (s) => paths.every((p) => (s[p]?.distinct ?? 0) >= 1),
    `the marker event at all ${count} destinations`,
    180_000,
  );
  const allAt = now();
  const lastArrival = Math.max(...paths.map((p) => (stats[p] as PathStats).first));
  const rssMb = memoryOf(gw.pid).rssMb;
  await sleep(5000);
  const settled = memoryOf(gw.pid);
  return {
    name: `(5) start-up with ${count} destinations`,
    rate: `${((lastArrival - spawnedAt) / 1000).toFixed(1)} s to all workers delivering`,
    p50: undefined,
    p99: undefined,
    rssMb,
    note:
      `spawn→/readyz ${((readyAt - spawnedAt) / 1000).toFixed(1)} s, →first 202 ` +
      `${((acceptedAt - spawnedAt) / 1000).toFixed(1)} s, →marker at all ${count} ` +
      `${((lastArrival - spawnedAt) / 1000).toFixed(1)} s (seen by the driver at ${((allAt - spawnedAt) / 1000).toFixed(1)} s); ` +
      `RSS 5 s later ${fmt(settled.rssMb)} MiB, peak ${fmt(settled.peakMb)} MiB; ` +
      `previous gateway stopped in ${stopSeconds.toFixed(1)} s${graceful ? "" : " (SIGKILLed)"}`,
  };
}

// ---------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      events: { type: "string", default: "50000" },
      destinations: { type: "string", default: "10" },
      rate: { type: "string", default: "1000" },
      /** Offered events/s of run 4b (each goes to every one of --destinations). */
      "rate-10": { type: "string", default: "200" },
      duration: { type: "string", default: "15" },
      warmup: { type: "string", default: "3" },
      "ceiling-seconds": { type: "string", default: "10" },
      "startup-destinations": { type: "string", default: "100" },
      concurrency: { type: "string", default: "64" },
      users: { type: "string", default: "1000" },
      "dump-latency": { type: "string" },
      "cpu-prof": { type: "boolean", default: false },
      /** A subset of the runs, e.g. --runs 1,2 while profiling (the table then has those rows only). */
      runs: { type: "string", default: "1,2,3,4,4b,5" },
      /** The receiver child's HTTP server: "net" (lean, node:net) or "node" (node:http), to compare the two. */
      receiver: { type: "string", default: "net" },
    },
  });
  const events = Number(values.events);
  const destinations = Number(values.destinations);
  const rate = Number(values.rate);
  const rate10 = Number(values["rate-10"]);
  const duration = Number(values.duration);
  const warmup = Number(values.warmup);
  const ceilingSeconds = Number(values["ceiling-seconds"]);
  const startupDestinations = Number(values["startup-destinations"]);
  concurrency = Number(values.concurrency);
  users = Number(values.users);
  dumpLatency = values["dump-latency"];
  const runs = new Set(values.runs.split(",").map((r) => r.trim()));
  const receiverKind = values.receiver;
  if (receiverKind !== "net" && receiverKind !== "node")
    throw new Error(`--receiver ${receiverKind}: "net" or "node"`);
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  const loadBefore = load();
  log(`load average before: ${loadBefore}`);

  const { startLocalKafka } = await import("../src/kafka/runner.ts");
  const kafka = await startLocalKafka({ log });
  const brokers = kafka.brokers;
  const dbPath = join(tmpdir(), `bench-delivery-${process.pid}.db`);
  const logPath = join(tmpdir(), `bench-delivery-${process.pid}.gateway.log`);
  let receiverRef: ReceiverClient | undefined;
  const gw = await benchGateway(
    benchGatewayEnv(brokers, dbPath),
    logPath,
    values["cpu-prof"] ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [],
  );
  const rows: Row[] = [];
  let failed = false;
  try {
    const receiver = await startReceiver(receiverKind);
    receiverRef = receiver;

    if (runs.has("1")) {
      log("(1) ceiling: raw undici POSTs to the receiver …");
      rows.push(await ceiling(receiver, concurrency, ceilingSeconds, false));
      rows.push(await ceiling(receiver, concurrency, ceilingSeconds, true));
    }

    log("starting the gateway …");
    const spawnedAt = now();
    await gw.start();
    await acceptOne(gw, 120_000);
    const idle = memoryOf(gw.pid);
    log(`  up in ${((now() - spawnedAt) / 1000).toFixed(1)} s, RSS ${fmt(idle.rssMb)} MiB`);

    if (runs.has("2")) {
      log("(2) drain, 1 destination …");
      rows.push(...(await drain(gw, receiver, brokers, "one", 1, events, log)));
    }
    if (runs.has("3")) {
      if (runs.has("2")) await restartGateway(gw);
      log(`(3) drain, ${destinations} destinations …`);
      rows.push(...(await drain(gw, receiver, brokers, "ten", destinations, events, log)));
    }
    if (runs.has("4")) {
      if (runs.has("2") || runs.has("3")) await restartGateway(gw);
      log("(4) latency, 1 destination …");
      rows.push(await latency(gw, receiver, "(4)", 1, rate, duration, warmup, log));
    }
    if (runs.has("4b")) {
      if (runs.has("2") || runs.has("3") || runs.has("4")) await restartGateway(gw);
      log(`(4b) latency, ${destinations} destinations …`);
      rows.push(await latency(gw, receiver, "(4b)", destinations, rate10, duration, warmup, log));
    }
    if (runs.has("4i")) {
      // Diagnostic, not in the default runs: the same offered load with no destination = ingest's share.
      await restartGateway(gw);
      log("(4i) ingest only, no destination …");
      rows.push(await latency(gw, receiver, "(4i)", 0, rate, duration, warmup, log));
    }
    if (runs.has("5")) {
      log(`(5) start-up with ${startupDestinations} destinations …`);
      rows.push(await startup(gw, receiver, startupDestinations, log));
    }

    const one = rows.find((r) => r.name.startsWith("(2)"));
    const ten = rows.find((r) => r.name.startsWith("(3)"));
    const lat = rows.find((r) => r.name.startsWith("(4)"));
    const num = (s: string | undefined) => Number((s ?? "").replace(/[^\d.]/g, ""));
    const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
    const targets = [
      one && `≥ 5,000 deliveries/s to 1 destination — ${verdict(num(one.rate.split(" ")[0]) >= 5000)}`,
      ten &&
        `≥ 1,000/s to each of ${destinations} — ${verdict(num(/min ([\d,]+)/.exec(ten.note)?.[1]) >= 1000)}`,
      lat && `p99 accept→receive ≤ 100 ms at ${fmt(rate)}/s — ${verdict((lat.p99 ?? Number.NaN) <= 100)}`,
    ].filter(Boolean);
    const out = [
      table(rows),
      "",
      `targets: ${targets.join("; ")}`,
      `gateway idle RSS after start-up: ${fmt(idle.rssMb)} MiB; events ${fmt(events)} (${JSON.stringify(PAYLOAD).length}-byte payloads, ${sampleRecord().length}-byte records, ` +
        `${users} userIDs); receiver ${receiverKind}; node ${process.version}; load average before: ${loadBefore}, after: ${load()}; ` +
        `${new Date().toISOString()}`,
    ];
    process.stdout.write(`${out.join("\n")}\n`);
  } catch (err) {
    failed = true;
    log(`benchmark failed: ${(err as Error).stack ?? String(err)}`);
    log(`gateway log tail (${logPath}):\n${gw.output()}`);
    if (rows.length) log(`rows so far:\n${table(rows)}`);
  } finally {
    await gw.stop();
    if (receiverRef) await stopReceiver(receiverRef);
    await kafka.stop();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
    if (!failed) rmSync(logPath, { force: true });
  }
  if (failed) process.exitCode = 1;
}

await main();
