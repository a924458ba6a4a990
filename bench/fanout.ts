/**
 * Fan-out benchmark (issue 11): `npm run bench:fanout [-- --runs a,b,c,d,e --destinations 1000 --duration 60
 * --rate 300 --rate-all 50 --events 50000 …]` (every flag: `--help`).
 *
 * Talks to the gateway only over HTTP (admin API, ingest API, /metrics, /readyz) and reads its CPU and RSS
 * from /proc, so it measures any delivery core behind the same API. It starts its own local Kafka broker,
 * the receiver child of bench/harness.ts (answers 200 at once and records, per path, each event's arrival and
 * `timestamp`; never answers under /hang/) and the gateway (`node src/main.ts`) with a fresh database in a
 * temporary folder for each group of runs, all on 127.0.0.1, and removes all of it at the end. One table:
 *   (0) ceilings: raw undici POSTs straight to the receiver (its capacity), and the gateway's bare ingest at
 *       --rate events/s with no destination (ingest's share of the CPU);
 *   (a) registration: --destinations N registered (each its own receiver path) through POST
 *       /api/destinations, --register-width at a time, until done or --register-deadline; then one event
 *       reaches every registered destination, then the idle gateway's CPU over --idle seconds and its RSS;
 *   (b) --fanout-destinations (300) destinations, each subscribed to one event type, 10 per type; --rate
 *       (300) events/s offered through POST /api/singleEvent, spread over the types and --users userIDs:
 *       deliveries made vs wanted, accept→receive (receiver arrival − the event's `timestamp`, same machine
 *       clock), gateway CPU per delivery, RSS;
 *   (c) --all-destinations (100) destinations subscribed to every type, --rate-all (50) events/s offered;
 *   (d) one destination draining a backlog: registered, disabled (PATCH), --events N put in the topic with
 *       kafkajs sendBatch (the gateway's record format), enabled, timed until all N arrived;
 *   (e) (b) and (c) again on the same destinations with one more destination, subscribed to everything,
 *       whose receiver path never answers (timeoutMs --hang-timeout): the others' p99 against (b)'s and (c)'s.
 * Every wait and loop has a bound: a run that does not finish is reported as such in the table
 * ("did not finish: k of N …", "backlog grows: x of y/s") and the benchmark goes on to the next run.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { type ChildGateway, removeDb } from "../test/child-gateway.ts";
import {
  acceptOne,
  benchGateway,
  benchGatewayEnv,
  ceiling,
  cpuSecondsOf,
  fmt,
  memoryOf,
  metricSum,
  now,
  type PathStats,
  percentile,
  preload,
  type ReceiverClient,
  registerDestination,
  scrape,
  startReceiver,
  stopReceiver,
} from "./harness.ts";
import { PAYLOAD } from "./payload.ts";

const USAGE = `npm run bench:fanout -- [flags]
  --runs a,b,c,d,e          runs to do (default all; e also does b and c, its baselines)
  --destinations N          (a) destinations to register (default 1000); caps (b) at 300 and (c) at 100
  --fanout-destinations N   (b)/(e) destinations, one event type per 10 of them (default min(300, N))
  --per-type N              (b) destinations per event type (default 10)
  --all-destinations N      (c)/(e) destinations subscribed to everything (default min(100, N))
  --duration S              measured seconds of (b), (c), (e) (default 60)
  --warmup S                offered load before each measurement, not counted (default 5)
  --rate R                  (b) offered events/s, also the bare-ingest ceiling's (default 300)
  --rate-all R              (c) offered events/s (default 50)
  --events N                (d) backlog size (default 50000)
  --users N                 distinct userIDs of the offered events (default 1000)
  --register-width N        (a) registrations in flight at once (default 8; 1 = sequential)
  --register-deadline S     (a) stop registering after S seconds, report k of N (default 120)
  --setup-deadline S        (b)-(e) registrations must finish within S seconds (default 900)
  --idle S                  (a) idle CPU window (default 30)
  --ceiling-seconds S       length of each ceiling run (default 10)
  --hang-timeout MS         (e) the hanging destination's timeoutMs (default 2000)`;

/** Requests in flight to the gateway's ingest at most; a paced loop that hits it counts "not offered". */
const MAX_INGEST_IN_FLIGHT = 2048;
/** Admin requests taking longer than this fail (a registration is normally a few seconds). */
const ADMIN_TIMEOUT_MS = 60_000;

interface Options {
  runs: Set<string>;
  destinations: number;
  fanoutDestinations: number;
  perType: number;
  allDestinations: number;
  duration: number;
  warmup: number;
  rate: number;
  rateAll: number;
  events: number;
  users: number;
  registerWidth: number;
  registerDeadline: number;
  setupDeadline: number;
  idle: number;
  ceilingSeconds: number;
  hangTimeout: number;
}

/** One line of the table. `p50`/`p99` are ms; what they measure is in the row's name or notes. */
interface FRow {
  name: string;
  result: string;
  p50?: number;
  p99?: number;
  rssMb?: number;
  target: string;
  note: string;
}

interface Ctx {
  gw: ChildGateway;
  receiver: ReceiverClient;
  brokers: string[];
  dbPath: string;
  opts: Options;
  log: (s: string) => void;
}

const verdict = (ok: boolean) => (ok ? "met" : "NOT met");
const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

// ---------------------------------------------------------------------------------------------------------
// Gateway, registration, ingest
// ---------------------------------------------------------------------------------------------------------

/** Stops the gateway, deletes its database and starts it again: each group of runs starts empty. */
async function freshGateway(ctx: Ctx): Promise<void> {
  await ctx.gw.stop();
  removeDb(ctx.dbPath);
  const t0 = now();
  await ctx.gw.start();
  await acceptOne(ctx.gw, 120_000);
  ctx.log(`  fresh gateway up in ${seconds(now() - t0)}, RSS ${fmt(memoryOf(ctx.gw.pid).rssMb)} MiB`);
}

interface Registered {
  /** Registered destinations in the order of `bodies` (only those that got a 201). */
  done: Array<{ index: number; id: string }>;
  /** ms per successful POST, sorted. */
  ms: number[];
  elapsedMs: number;
  finished: boolean;
  errors: string[];
}

/**
 * POSTs every body, `width` at a time, until all are registered or `deadlineMs` has passed (requests in
 * flight then still finish, each within ADMIN_TIMEOUT_MS). Gives up after 10 failures.
 */
async function registerAll(
  ctx: Ctx,
  bodies: Array<Record<string, unknown>>,
  width: number,
  deadlineMs: number,
  progress: string,
): Promise<Registered> {
  const start = now();
  const done: Array<{ index: number; id: string }> = [];
  const ms: number[] = [];
  const errors: string[] = [];
  let next = 0;
  let lastReport = start;
  await Promise.all(
    Array.from({ length: Math.min(width, bodies.length) }, async () => {
      while (next < bodies.length && now() - start < deadlineMs && errors.length < 10) {
        const index = next++;
        const t0 = now();
        try {
          const id = await registerDestination(
            ctx.gw,
            bodies[index] as Record<string, unknown>,
            ADMIN_TIMEOUT_MS,
          );
          ms.push(now() - t0);
          done.push({ index, id });
        } catch (err) {
          errors.push((err as Error).message);
        }
        if (now() - lastReport > 10_000) {
          lastReport = now();
          ctx.log(`  ${progress}: ${done.length} of ${bodies.length} in ${seconds(now() - start)}`);
        }
      }
    }),
  );
  done.sort((a, b) => a.index - b.index);
  ms.sort((a, b) => a - b);
  return { done, ms, elapsedMs: now() - start, finished: done.length === bodies.length, errors };
}

/** Sum of a field of the receiver's stats over the paths under a prefix. */
function sumUnder(stats: Record<string, PathStats>, prefix: string, field: "count" | "distinct"): number {
  let n = 0;
  for (const [path, s] of Object.entries(stats)) if (path.startsWith(prefix)) n += s[field];
  return n;
}

/**
 * One event per type (userID "bench-probe-<type>"), then waits until each path has an event: every worker
 * runs and has joined its group. Returns how many paths got one, and when.
 */
async function probe(
  ctx: Ctx,
  paths: string[],
  types: string[],
  timeoutMs: number,
): Promise<{ reached: number; ms: number }> {
  const start = now();
  for (const type of types) {
    const res = await fetch(`${ctx.gw.url}/api/singleEvent`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userID: `bench-probe-${type}`, type, payload: PAYLOAD }),
      signal: AbortSignal.timeout(30_000),
    });
    await res.body?.cancel();
    if (res.status !== 202) throw new Error(`probe event of type ${type}: ${res.status}`);
  }
  for (;;) {
    const stats = await ctx.receiver.stats();
    const reached = paths.filter((p) => (stats[p]?.distinct ?? 0) >= 1).length;
    if (reached === paths.length || now() - start > timeoutMs) return { reached, ms: now() - start };
    await sleep(100);
  }
}

interface Offered {
  accepted: number;
  refused: number;
  /** Events due that the loop did not send: MAX_INGEST_IN_FLIGHT were waiting for an answer. */
  notOffered: number;
  elapsedMs: number;
  /** 202 round trips, ms, sorted. */
  ingestMs: number[];
}

/**
 * Offers `rate` events/s through POST /api/singleEvent for `ms`: each millisecond tick sends what is due so
 * far, never waiting on answers (at most MAX_INGEST_IN_FLIGHT outstanding). Event i has type
 * types[i % types.length] and one of `users` userIDs; `onAccepted` gets each 202's event id and type index.
 */
async function offer(
  pool: Pool,
  rate: number,
  ms: number,
  types: string[],
  users: number,
  firstIndex: number,
  onAccepted: (id: string, typeIndex: number) => void,
): Promise<Offered> {
  const inflight = new Set<Promise<void>>();
  const ingestMs: number[] = [];
  const start = now();
  let sent = 0;
  let accepted = 0;
  let refused = 0;
  let notOffered = 0;
  while (now() - start < ms) {
    const due = Math.floor(((now() - start) / 1000) * rate);
    for (; sent < due; sent++) {
      if (inflight.size >= MAX_INGEST_IN_FLIGHT) {
        notOffered++;
        continue;
      }
      const i = firstIndex + sent;
      const typeIndex = i % types.length;
      const body = JSON.stringify({
        userID: `user-${(i * 7919) % users}`,
        type: types[typeIndex],
        payload: PAYLOAD,
      });
      const t0 = now();
      const p = pool
        .request({
          path: "/api/singleEvent",
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        })
        .then(async (res) => {
          if (res.statusCode !== 202) {
            refused++;
            await res.body.dump();
            return;
          }
          const { id } = (await res.body.json()) as { id: string };
          ingestMs.push(now() - t0);
          accepted++;
          onAccepted(id, typeIndex);
        })
        .catch(() => {
          refused++;
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
    }
    await sleep(1);
  }
  const elapsedMs = now() - start;
  await Promise.all(inflight); // each bounded by the pool's headers/body timeouts
  ingestMs.sort((a, b) => a - b);
  return { accepted, refused, notOffered, elapsedMs, ingestMs };
}

function ingestPool(gw: ChildGateway): Pool {
  return new Pool(gw.url, { connections: 64, headersTimeout: 30_000, bodyTimeout: 30_000 });
}

// ---------------------------------------------------------------------------------------------------------
// Runs
// ---------------------------------------------------------------------------------------------------------

/** (0) bare ingest: the fresh gateway, no destination, --rate events/s for --ceiling-seconds. */
async function bareIngest(ctx: Ctx): Promise<{ row: FRow; cpuUsPerEvent: number }> {
  const { rate, ceilingSeconds, users } = ctx.opts;
  const pool = ingestPool(ctx.gw);
  try {
    await offer(pool, rate, 2000, ["bench.warm"], users, 0, () => {});
    const cpu0 = cpuSecondsOf(ctx.gw.pid);
    const o = await offer(pool, rate, ceilingSeconds * 1000, ["bench.bare"], users, 0, () => {});
    const cpuUs = ((cpuSecondsOf(ctx.gw.pid) - cpu0) / o.accepted) * 1e6;
    return {
      cpuUsPerEvent: cpuUs,
      row: {
        name: `(0) ceiling: the gateway's bare ingest, no destination, ${fmt(rate)} events/s offered`,
        result: `${fmt(o.accepted / (o.elapsedMs / 1000))} events/s accepted`,
        p50: percentile(o.ingestMs, 50),
        p99: percentile(o.ingestMs, 99),
        rssMb: memoryOf(ctx.gw.pid).rssMb,
        target: "",
        note:
          `latency = POST → 202; gateway CPU ${fmt(cpuUs)} µs/event (ingest alone)` +
          (o.refused || o.notOffered ? `; ${fmt(o.refused)} refused, ${fmt(o.notOffered)} not offered` : ""),
      },
    };
  } finally {
    await pool.close();
  }
}

/** (a) register N destinations, then the idle gateway's CPU and RSS. */
async function registration(ctx: Ctx): Promise<FRow[]> {
  const { destinations: n, registerWidth, registerDeadline, idle } = ctx.opts;
  const paths = Array.from({ length: n }, (_, i) => `/reg/${i}`);
  const bodies = paths.map((p) => ({ url: `${ctx.receiver.url}${p}`, name: `bench ${p}` }));
  const r = await registerAll(ctx, bodies, registerWidth, registerDeadline * 1000, "(a) registered");
  const k = r.done.length;
  ctx.log(`  ${k} of ${n} registered in ${seconds(r.elapsedMs)}${r.errors.length ? `; ${r.errors[0]}` : ""}`);
  const okTime = r.finished && r.elapsedMs <= 60_000;
  const regRow: FRow = {
    name: `(a) register ${fmt(n)} destinations, ${registerWidth} POSTs at a time`,
    result: r.finished
      ? `${fmt(n)} in ${seconds(r.elapsedMs)}`
      : `did not finish: ${fmt(k)} of ${fmt(n)} in ${seconds(r.elapsedMs)}`,
    p50: percentile(r.ms, 50),
    p99: percentile(r.ms, 99),
    rssMb: memoryOf(ctx.gw.pid).rssMb,
    target: `≤ 60 s total — ${verdict(okTime)}`,
    note:
      `p50/p99 = one POST /api/destinations; ${fmt((k / r.elapsedMs) * 1000, 1)} registrations/s` +
      (r.errors.length ? `; ${r.errors.length} failed, first: ${r.errors[0]?.slice(0, 160)}` : ""),
  };
  // Ceiling of an admin round trip: a read of one destination (routing, auth, SQLite, JSON).
  const first = r.done[0];
  if (first) {
    const gets: number[] = [];
    for (let i = 0; i < 50; i++) {
      const t0 = now();
      await ctx.gw.get(`/api/destinations/${first.id}`, { timeoutMs: ADMIN_TIMEOUT_MS });
      gets.push(now() - t0);
    }
    gets.sort((a, b) => a - b);
    regRow.note += `; ceiling: GET /api/destinations/:id p50 ${fmt(percentile(gets, 50), 1)} / p99 ${fmt(percentile(gets, 99), 1)} ms`;
  }
  const registeredPaths = r.done.map((d) => paths[d.index] as string);
  // Every worker runs and has joined (the idle window should not include start-ups).
  const reach = await probe(ctx, registeredPaths, ["bench.probe"], 120_000);
  ctx.log(`  probe reached ${reach.reached} of ${k} in ${seconds(reach.ms)}; idle for ${idle} s`);
  await sleep(2000);
  const cpu0 = cpuSecondsOf(ctx.gw.pid);
  const t0 = now();
  await sleep(idle * 1000);
  const cpuPct = ((cpuSecondsOf(ctx.gw.pid) - cpu0) / ((now() - t0) / 1000)) * 100;
  const mem = memoryOf(ctx.gw.pid);
  const idleRow: FRow = {
    name: `(a) idle gateway with ${fmt(k)} destinations, ${idle} s, nothing sent`,
    result: `${fmt(cpuPct, 1)} % of a core`,
    rssMb: mem.rssMb,
    target: `CPU ≤ 5 % — ${verdict(cpuPct <= 5)}; RSS ≤ 1 GiB — ${verdict(mem.rssMb <= 1024)}`,
    note:
      `peak RSS ${fmt(mem.peakMb)} MiB; before the window one event reached ${fmt(reach.reached)} of ` +
      `${fmt(k)} destinations in ${seconds(reach.ms)}` +
      (k < n ? ` (only ${fmt(k)} of ${fmt(n)} were registered)` : ""),
  };
  ctx.receiver.forget("/reg/");
  return [regRow, idleRow];
}

/** A fan-out set-up: destinations on paths under /fan/<label>/, and how many get each event type. */
interface FanoutSetup {
  label: string;
  prefix: string;
  paths: string[];
  types: string[];
  /** subscribers[t] = destinations that get an event of types[t]. */
  subscribers: number[];
  /** Set when the set-up did not finish (the runs on it are reported, not measured). */
  failed?: string;
}

async function setUpFanout(ctx: Ctx, label: string, count: number, perType: number): Promise<FanoutSetup> {
  const prefix = `/fan/${label}/`;
  const paths = Array.from({ length: count }, (_, i) => `${prefix}${i}`);
  const typeCount = perType > 0 ? Math.max(1, Math.ceil(count / perType)) : 30;
  const types = Array.from({ length: typeCount }, (_, t) => `bench.t${t}`);
  const subscribers = types.map(() => 0);
  const bodies = paths.map((p, i) => {
    const body: Record<string, unknown> = { url: `${ctx.receiver.url}${p}`, name: `bench ${p}` };
    if (perType > 0) {
      body.eventTypes = [types[i % typeCount]];
      subscribers[i % typeCount] = (subscribers[i % typeCount] ?? 0) + 1;
    }
    return body;
  });
  if (perType === 0) subscribers.fill(count);
  const setup: FanoutSetup = { label, prefix, paths, types, subscribers };
  const r = await registerAll(
    ctx,
    bodies,
    ctx.opts.registerWidth,
    ctx.opts.setupDeadline * 1000,
    "registered",
  );
  ctx.log(`  ${r.done.length} of ${count} destinations registered in ${seconds(r.elapsedMs)}`);
  if (!r.finished) {
    setup.failed = `set-up did not finish: ${fmt(r.done.length)} of ${fmt(count)} registered in ${seconds(r.elapsedMs)}${r.errors[0] ? ` (${r.errors[0].slice(0, 160)})` : ""}`;
    return setup;
  }
  const reach = await probe(ctx, paths, types, 120_000);
  ctx.log(`  probe reached ${reach.reached} of ${count} in ${seconds(reach.ms)}`);
  if (reach.reached < count)
    setup.failed = `set-up did not finish: a probe event reached ${fmt(reach.reached)} of ${fmt(count)} destinations in ${seconds(reach.ms)}`;
  return setup;
}

interface FanoutResult {
  row: FRow;
  /** ≥ 98 % of the wanted deliveries/s arrived within the window. */
  keptUp: boolean;
  p99: number;
  /** Gateway CPU µs per delivery over the window. */
  cpuUs: number;
  finished: boolean;
}

/**
 * Warm-up, then `rate` events/s offered for --duration: deliveries made in the window (receiver arrivals
 * under the prefix) against those wanted, accept→receive of the window's events once they have all arrived
 * (or the drain bound has passed), gateway CPU over the window per delivery made in it, RSS.
 */
async function measureFanout(
  ctx: Ctx,
  setup: FanoutSetup,
  name: string,
  rate: number,
  ingestCpuUs: number | undefined,
): Promise<FanoutResult> {
  const { duration, warmup, users } = ctx.opts;
  const { prefix, types, subscribers } = setup;
  const wantedOf = (ids: Map<string, number>) => {
    let n = 0;
    for (const t of ids.values()) n += subscribers[t] ?? 0;
    return n;
  };
  const pool = ingestPool(ctx.gw);
  try {
    // Warm-up, and a bounded wait for it to arrive, so no start-up backlog is counted.
    const warmIds = new Map<string, number>();
    await offer(pool, rate, warmup * 1000, types, users, 0, (id, t) => warmIds.set(id, t));
    const warmWanted = wantedOf(warmIds);
    const warmStart = now();
    let warmMade = 0;
    while (now() - warmStart < 30_000) {
      warmMade = (await ctx.receiver.summary(prefix, [...warmIds.keys()])).made;
      if (warmMade >= warmWanted) break;
      await sleep(250);
    }
    const warmNote =
      warmMade < warmWanted ? `; warm-up not drained: ${fmt(warmMade)} of ${fmt(warmWanted)} after 30 s` : "";

    const ids = new Map<string, number>(); // event id → type index
    const count0 = sumUnder(await ctx.receiver.stats(), prefix, "count");
    const cpu0 = cpuSecondsOf(ctx.gw.pid);
    const recvCpu0 = cpuSecondsOf(ctx.receiver.child.pid as number);
    let peakRss = 0;
    let maxBuffered = 0;
    const sampler = setInterval(() => {
      try {
        peakRss = Math.max(peakRss, memoryOf(ctx.gw.pid).rssMb);
      } catch {
        // the gateway died: what follows reports it
      }
      void scrape(ctx.gw).then((text) => {
        const buffered = metricSum(text, "worker_buffered_events");
        if (Number.isFinite(buffered)) maxBuffered = Math.max(maxBuffered, buffered);
      });
    }, 2000);
    let o: Offered;
    let windowDeliveries: number;
    let cpuSeconds: number;
    let recvCpuSeconds: number;
    try {
      o = await offer(pool, rate, duration * 1000, types, users, 1_000_000, (id, t) => ids.set(id, t));
      cpuSeconds = cpuSecondsOf(ctx.gw.pid) - cpu0;
      recvCpuSeconds = cpuSecondsOf(ctx.receiver.child.pid as number) - recvCpu0;
      windowDeliveries = sumUnder(await ctx.receiver.stats(), prefix, "count") - count0;
    } finally {
      clearInterval(sampler);
    }
    const wanted = wantedOf(ids);
    const windowS = o.elapsedMs / 1000;
    const idList = [...ids.keys()];
    // Drain: until every wanted delivery arrived, at most max(30 s, --duration), or 15 s without progress.
    const drainStart = now();
    let summary = await ctx.receiver.summary(prefix, idList);
    let lastProgress = now();
    let lastMade = summary.made;
    while (summary.made < wanted && now() - drainStart < Math.max(30, duration) * 1000) {
      if (now() - lastProgress > 15_000) break;
      await sleep(1000);
      summary = await ctx.receiver.summary(prefix, idList);
      if (summary.made > lastMade) {
        lastMade = summary.made;
        lastProgress = now();
      }
    }
    const drainMs = now() - drainStart;
    const rssMb = memoryOf(ctx.gw.pid).rssMb;
    const wantedRate = wanted / windowS;
    const madeRate = windowDeliveries / windowS;
    const all = summary.made >= wanted;
    const cpuUs = (cpuSeconds / windowDeliveries) * 1e6;
    const deliveryOnlyUs =
      ingestCpuUs === undefined
        ? undefined
        : ((cpuSeconds - (ingestCpuUs * o.accepted) / 1e6) / windowDeliveries) * 1e6;
    // Kept up: at least 98 % of the wanted rate arrived within the window (the rest is the tail in flight).
    const keptUp = madeRate >= wantedRate * 0.98;
    const rates = `${fmt(madeRate)} of ${fmt(wantedRate)} deliveries/s`;
    const result = all
      ? keptUp
        ? `${rates}; all ${fmt(wanted)} made`
        : `fell behind: ${rates} in the window; all ${fmt(wanted)} made ${seconds(drainMs)} after it`
      : keptUp
        ? `did not finish: ${fmt(summary.made)} of ${fmt(wanted)} made (${rates})`
        : `backlog grows: ${rates}; ${fmt(summary.made)} of ${fmt(wanted)} made ${seconds(drainMs)} after the window`;
    const note =
      `${fmt(o.accepted)} events accepted in ${windowS.toFixed(1)} s, ${fmt(wanted)} deliveries wanted; ` +
      `latency = receiver arrival − the event's timestamp (max ${fmt(summary.max, 1)} ms), drained ${seconds(drainMs)} after the window; ` +
      `gateway CPU ${fmt(cpuUs)} µs/delivery over the window (${fmt((cpuSeconds / windowS) * 100)} % of a core)` +
      (deliveryOnlyUs === undefined
        ? ""
        : `, ${fmt(deliveryOnlyUs)} µs net of (0) (the gateway's CPU per event at the same rate with no destination)`) +
      `; receiver CPU ${fmt((recvCpuSeconds / windowDeliveries) * 1e6)} µs/request; ` +
      `ingest 202 p99 ${fmt(percentile(o.ingestMs, 99), 1)} ms; peak RSS ${fmt(peakRss)} MiB; ` +
      `worker buffered ≤ ${fmt(maxBuffered)} events` +
      (summary.duplicates ? `; ${fmt(summary.duplicates)} duplicate requests` : "") +
      (o.refused || o.notOffered ? `; ${fmt(o.refused)} refused, ${fmt(o.notOffered)} not offered` : "") +
      warmNote;
    return {
      finished: all,
      keptUp,
      cpuUs,
      p99: summary.p99,
      row: {
        name,
        result,
        p50: summary.p50,
        p99: summary.p99,
        rssMb,
        target: "",
        note,
      },
    };
  } finally {
    await pool.close();
  }
}

/** (b)/(c) and their (e): one fresh gateway, the set-up, the measurement, then the hanging destination. */
async function fanoutGroup(
  ctx: Ctx,
  run: "b" | "c",
  withHang: boolean,
  ingestCpuUs: number | undefined,
): Promise<FRow[]> {
  const o = ctx.opts;
  const count = run === "b" ? o.fanoutDestinations : o.allDestinations;
  const perType = run === "b" ? o.perType : 0;
  const rate = run === "b" ? o.rate : o.rateAll;
  await freshGateway(ctx);
  ctx.log(`(${run}) registering ${count} destinations …`);
  const setup = await setUpFanout(ctx, run, count, perType);
  const what =
    run === "b"
      ? `${fmt(count)} destinations, ${setup.types.length} types (${perType} per type), ${fmt(rate)} events/s offered`
      : `${fmt(count)} destinations subscribed to everything, ${fmt(rate)} events/s offered`;
  const wantedRate = run === "b" ? rate * (count / setup.types.length) : rate * count;
  const rows: FRow[] = [];
  const failedRow = (name: string): FRow => ({
    name,
    result: setup.failed as string,
    target: "not measured",
    note: "",
  });
  const baseName = `(${run}) ${what}, ${o.duration} s`;
  if (setup.failed) {
    rows.push(failedRow(baseName));
    if (withHang) rows.push(failedRow(`(e) = ${baseName} + 1 hanging destination`));
    return rows;
  }
  ctx.log(`(${run}) ${fmt(wantedRate)} deliveries/s wanted, ${o.duration} s after ${o.warmup} s warm-up …`);
  const base = await measureFanout(ctx, setup, baseName, rate, ingestCpuUs);
  base.row.target =
    `${run === "b" ? "every delivery made" : "keeps up"} — ${verdict(base.finished && (run === "b" || base.keptUp))}; ` +
    `p99 ≤ 500 ms — ${verdict(base.finished && base.p99 <= 500)}` +
    (run === "b" ? `; ≤ 150 µs CPU/delivery — ${verdict(base.cpuUs <= 150)}` : "");
  rows.push(base.row);
  if (withHang) {
    ctx.log(`(e) the same + 1 destination whose path never answers (timeoutMs ${o.hangTimeout}) …`);
    const hangPath = `/hang/${run}`;
    await registerDestination(
      ctx.gw,
      { url: `${ctx.receiver.url}${hangPath}`, name: `bench ${hangPath}`, timeoutMs: o.hangTimeout },
      ADMIN_TIMEOUT_MS,
    );
    const hung = await measureFanout(ctx, setup, `(e) = (${run}) + 1 hanging destination`, rate, ingestCpuUs);
    const hangStats = (await ctx.receiver.stats())[hangPath];
    const ratio = hung.p99 / base.p99;
    hung.row.target =
      `p99 ≤ 2 × (${run})'s — ${verdict(hung.finished && ratio <= 2)} (${fmt(ratio, 2)}×)` +
      (hung.finished ? "" : "; not all made");
    hung.row.note =
      `the hanging path got ${fmt(hangStats?.count ?? 0)} requests (${fmt(hangStats?.distinct ?? 0)} events) and answered none; ` +
      hung.row.note;
    rows.push(hung.row);
  }
  ctx.receiver.forget("/fan/");
  ctx.receiver.forget("/hang/");
  return rows;
}

/** (d) one destination drains --events from the topic. */
async function backlog(ctx: Ctx): Promise<FRow> {
  const { events, users } = ctx.opts;
  await freshGateway(ctx);
  const path = "/drain/0";
  const name = `(d) drain, 1 destination, ${fmt(events)} events`;
  const id = await registerDestination(
    ctx.gw,
    { url: `${ctx.receiver.url}${path}`, name: "bench drain" },
    ADMIN_TIMEOUT_MS,
  );
  await ctx.gw.patch(`/api/destinations/${id}`, { disabled: true }, { timeoutMs: ADMIN_TIMEOUT_MS });
  const loadSeconds = await preload(ctx.brokers, events, users);
  ctx.log(`  ${fmt(events)} events in the topic in ${loadSeconds.toFixed(1)} s; enabling the destination`);
  let peakRss = memoryOf(ctx.gw.pid).rssMb;
  const sampler = setInterval(() => {
    try {
      peakRss = Math.max(peakRss, memoryOf(ctx.gw.pid).rssMb);
    } catch {
      // the gateway died: the wait below reports it
    }
  }, 500);
  try {
    const cpu0 = cpuSecondsOf(ctx.gw.pid);
    const enabledAt = now();
    await ctx.gw.patch(`/api/destinations/${id}`, { disabled: false }, { timeoutMs: ADMIN_TIMEOUT_MS });
    // Bounded: 1,000 deliveries/s would be far below anything useful.
    const limitMs = 30_000 + events;
    let s: PathStats | undefined;
    for (;;) {
      s = (await ctx.receiver.stats())[path];
      if ((s?.distinct ?? 0) >= events || now() - enabledAt > limitMs) break;
      await sleep(100);
    }
    const got = s?.distinct ?? 0;
    const cpuUs = ((cpuSecondsOf(ctx.gw.pid) - cpu0) / Math.max(1, s?.count ?? 0)) * 1e6;
    const rssMb = memoryOf(ctx.gw.pid).rssMb;
    if (!s || got < events)
      return {
        name,
        result: `did not finish: ${fmt(got)} of ${fmt(events)} in ${seconds(now() - enabledAt)}`,
        rssMb,
        target: "≈ 6k/s before the rewrite — not measured",
        note: `gateway CPU ${fmt(cpuUs)} µs/delivery; peak RSS ${fmt(peakRss)} MiB`,
      };
    const steady = events / ((s.last - s.first) / 1000);
    const withJoin = events / ((s.last - enabledAt) / 1000);
    return {
      name,
      result: `${fmt(steady)} deliveries/s`,
      rssMb,
      target: "≈ 6k/s before the rewrite (none set)",
      note:
        `${fmt(withJoin)}/s counted from the enabling PATCH (${seconds(s.first - enabledAt)} to the first delivery); ` +
        `gateway CPU ${fmt(cpuUs)} µs/delivery; peak RSS ${fmt(peakRss)} MiB` +
        (s.count > s.distinct ? `; ${fmt(s.count - s.distinct)} duplicates` : ""),
    };
  } finally {
    clearInterval(sampler);
    ctx.receiver.forget("/drain/");
  }
}

function table(rows: FRow[]): string {
  const ms = (n: number | undefined) => (n === undefined || !Number.isFinite(n) ? "—" : fmt(n, 1));
  return [
    "| run | result | p50 ms | p99 ms | gateway RSS MiB | target | notes |",
    "| --- | --- | ---: | ---: | ---: | --- | --- |",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.result} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.rssMb === undefined ? "—" : fmt(r.rssMb)} | ${r.target || "—"} | ${r.note} |`,
    ),
  ].join("\n");
}

// ---------------------------------------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------------------------------------

function options(): Options {
  const { values } = parseArgs({
    options: {
      help: { type: "boolean", default: false },
      runs: { type: "string", default: "a,b,c,d,e" },
      destinations: { type: "string", default: "1000" },
      "fanout-destinations": { type: "string" },
      "per-type": { type: "string", default: "10" },
      "all-destinations": { type: "string" },
      duration: { type: "string", default: "60" },
      warmup: { type: "string", default: "5" },
      rate: { type: "string", default: "300" },
      "rate-all": { type: "string", default: "50" },
      events: { type: "string", default: "50000" },
      users: { type: "string", default: "1000" },
      "register-width": { type: "string", default: "8" },
      "register-deadline": { type: "string", default: "120" },
      "setup-deadline": { type: "string", default: "900" },
      idle: { type: "string", default: "30" },
      "ceiling-seconds": { type: "string", default: "10" },
      "hang-timeout": { type: "string", default: "2000" },
    },
  });
  if (values.help) {
    process.stdout.write(`${USAGE}\n`);
    process.exit(0);
  }
  const num = (name: string, v: string | undefined, min: number): number => {
    const n = Number(v);
    if (!Number.isFinite(n) || n < min) throw new Error(`--${name} ${v}: a number ≥ ${min}`);
    return n;
  };
  const destinations = num("destinations", values.destinations, 1);
  const runs = new Set(values.runs.split(",").map((r) => r.trim()));
  for (const r of runs)
    if (!["a", "b", "c", "d", "e"].includes(r)) throw new Error(`--runs: unknown run ${r}`);
  return {
    runs,
    destinations,
    fanoutDestinations: num(
      "fanout-destinations",
      values["fanout-destinations"] ?? String(Math.min(300, destinations)),
      1,
    ),
    perType: num("per-type", values["per-type"], 1),
    allDestinations: num(
      "all-destinations",
      values["all-destinations"] ?? String(Math.min(100, destinations)),
      1,
    ),
    duration: num("duration", values.duration, 1),
    warmup: num("warmup", values.warmup, 0),
    rate: num("rate", values.rate, 1),
    rateAll: num("rate-all", values["rate-all"], 1),
    events: num("events", values.events, 1),
    users: num("users", values.users, 1),
    registerWidth: num("register-width", values["register-width"], 1),
    registerDeadline: num("register-deadline", values["register-deadline"], 1),
    setupDeadline: num("setup-deadline", values["setup-deadline"], 1),
    idle: num("idle", values.idle, 1),
    ceilingSeconds: num("ceiling-seconds", values["ceiling-seconds"], 1),
    hangTimeout: num("hang-timeout", values["hang-timeout"], 100),
  };
}

async function main(): Promise<void> {
  const opts = options();
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");
  const loadBefore = load();
  const started = now();
  log(`load average before: ${loadBefore}`);
  const dir = mkdtempSync(join(tmpdir(), "bench-fanout-"));
  const dbPath = join(dir, "gateway.db");
  const { startLocalKafka } = await import("../src/kafka/runner.ts");
  let kafka: Awaited<ReturnType<typeof startLocalKafka>> | undefined;
  let receiver: ReceiverClient | undefined;
  let gw: ChildGateway | undefined;
  let cleaned: Promise<void> | undefined;
  const cleanUp = () => {
    cleaned ??= (async () => {
      const t0 = now();
      const graceful =
        gw &&
        (await gw.stop().then(
          (exit) => exit !== "SIGKILL",
          () => false,
        ));
      if (receiver) await stopReceiver(receiver).catch(() => {});
      await kafka?.stop().catch(() => {});
      rmSync(dir, { recursive: true, force: true });
      log(`cleaned up in ${seconds(now() - t0)}${graceful === false ? " (the gateway was SIGKILLed)" : ""}`);
    })();
    return cleaned;
  };
  const onSignal = (signal: NodeJS.Signals) => {
    log(`${signal}: stopping`);
    void cleanUp().then(() => process.exit(130));
  };
  process.once("SIGINT", onSignal);
  process.once("SIGTERM", onSignal);

  const rows: FRow[] = [];
  let failed = false;
  try {
    kafka = await startLocalKafka({ log });
    const brokers = kafka.brokers;
    receiver = await startReceiver("net");
    gw = await benchGateway(benchGatewayEnv(brokers, dbPath), join(dir, "gateway.log"));
    const ctx: Ctx = { gw, receiver, brokers, dbPath, opts, log };
    const { runs } = opts;

    log(`(0) ceiling: raw undici POSTs to the receiver, ${opts.ceilingSeconds} s …`);
    const raw = await ceiling(receiver, 64, opts.ceilingSeconds, false);
    rows.push({
      name: raw.name.replace(/^\(1\) /, "(0) "),
      result: raw.rate,
      p50: raw.p50,
      p99: raw.p99,
      target: "",
      note: raw.note,
    });
    receiver.forget("/");

    // A run that throws (the gateway died, an admin call failed) is a row of its own; the next run starts
    // with a fresh gateway.
    const attempt = async (name: string, run: () => Promise<FRow[]>) => {
      try {
        rows.push(...(await run()));
      } catch (err) {
        log(`${name} failed: ${(err as Error).stack ?? String(err)}\ngateway log tail:\n${ctx.gw.output()}`);
        rows.push({
          name,
          result: `failed: ${(err as Error).message.slice(0, 200)}`,
          target: "not measured",
          note: "",
        });
      }
    };
    let ingestCpuUs: number | undefined;
    if (runs.has("b") || runs.has("e"))
      await attempt("(0) bare ingest", async () => {
        await freshGateway(ctx);
        log(`(0) bare ingest at ${opts.rate} events/s …`);
        const bare = await bareIngest(ctx);
        ingestCpuUs = bare.cpuUsPerEvent;
        return [bare.row];
      });
    if (runs.has("a"))
      await attempt(`(a) register ${opts.destinations} destinations`, async () => {
        await freshGateway(ctx);
        log(`(a) registering ${opts.destinations} destinations …`);
        return registration(ctx);
      });
    if (runs.has("b") || runs.has("e"))
      await attempt("(b)", () => fanoutGroup(ctx, "b", runs.has("e"), ingestCpuUs));
    if (runs.has("c") || runs.has("e"))
      await attempt("(c)", () => fanoutGroup(ctx, "c", runs.has("e"), undefined));
    if (runs.has("d"))
      await attempt("(d) drain", async () => {
        log(`(d) drain, 1 destination, ${opts.events} events …`);
        return [await backlog(ctx)];
      });
    process.stdout.write(
      `${[
        table(rows),
        "",
        `${JSON.stringify(PAYLOAD).length}-byte payloads, ${opts.users} userIDs; receiver node:net; node ${process.version}; ` +
          `load average before: ${loadBefore}, after: ${load()}; ${seconds(now() - started)} in all; ${new Date().toISOString()}`,
      ].join("\n")}\n`,
    );
  } catch (err) {
    failed = true;
    log(`benchmark failed: ${(err as Error).stack ?? String(err)}`);
    if (gw) log(`gateway log tail:\n${gw.output()}`);
    if (rows.length) log(`rows so far:\n${table(rows)}`);
  } finally {
    await cleanUp();
  }
  if (failed) process.exitCode = 1;
}

await main();
