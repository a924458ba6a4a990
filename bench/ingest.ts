/**
 * Ingest benchmark: `npm run bench:ingest [-- --duration 15 --connections 256 --rate 5000]`.
 *
 * Starts its own local Kafka broker, then measures in one run, each server in a child process of its own
 * (so RSS is that server's alone):
 *   (a) a bare Hono endpoint that parses JSON and answers 202 — the HTTP ceiling — at the highest rate and
 *       at the offered rate of (d); measured again, a fresh one, just before each variant's (c) and (d),
 *       and each verdict compares the gateway with those adjacent rows (the machine's speed drifts within
 *       minutes);
 *       the highest rate from bench/open-loop.ts's closed-loop generator, and again from autocannon (whose
 *       own core saturated before the bare endpoint's did, bench/README.md session 18);
 *   (b) each way to send (the gateway's BatchSender: its own Produce requests, kafkajs's producer and
 *       @platformatic/kafka's: idempotent, acks=-1) sending the same records straight to the broker — the
 *       Kafka ceilings;
 *   then for each of --variants (own, kafkajs = INGEST_SENDER; +thread = INGEST_PRODUCER_THREAD=true;
 *   default own,own+thread,own*2,kafkajs; *N = N processes sharing the port, HTTP_REUSE_PORT=true):
 *   (c) the gateway's POST /api/singleEvent at the highest rate at --connections (256), from the closed-loop
 *       generator and from autocannon, each beside the bare endpoint's under the same generator;
 *   (d) the gateway at an offered 5,000 events/s for p99, from an open-loop generator (bench/open-loop.ts:
 *       evenly spaced requests, latency from each one's due time); autocannon's overallRate sends each
 *       second's requests in one burst, which measures draining a burst instead;
 *   (e) batch ingest: POST /api/events with --batch (100) events per request at the highest rate
 *       --batch-connections (32) connections drive, beside (a') the bare Hono endpoint taking the same body.
 * Each gateway is driven for --warmup (3) seconds before it is measured; the first for --broker-warmup
 * (20) seconds, which also warms up the freshly started broker.
 * Gateway settings come from the environment as usual (BATCH_LINGER_MS=1 npm run bench:ingest …).
 * --server-cpus 0 pins the bare endpoint and the gateways (every thread) to those cores (taskset), and
 * this process (autocannon), the generators' process and the broker to the other cores, so the servers have
 * their cores to themselves: the CPU per event then varies far less from run to run than with everything
 * sharing cores. Each row's notes then say how busy those other cores were.
 */
import { type ChildProcess, execFileSync, fork } from "node:child_process";
import { readdirSync, readFileSync, rmSync } from "node:fs";
import { createRequire } from "node:module";
import { availableParallelism, loadavg, tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import {
  type ClosedLoopResult,
  closedLoop,
  type LoadResult,
  type OpenLoopResult,
  openLoop,
} from "./open-loop.ts";
import { PAYLOAD } from "./payload.ts";

// autocannon ships no types; only this call of it is used.
const autocannon = createRequire(import.meta.url)("autocannon") as (
  opts: Record<string, unknown>,
) => Promise<unknown>;

const CHILD_FLAG = "--bench-child";
const HERE = new URL(import.meta.url).pathname;

// ~200-byte event body; [<id>] is replaced by autocannon with a unique id per request (a new userID each).
const BODY = JSON.stringify({ userID: "user-[<id>]", type: "order.created", payload: PAYLOAD });

/** A POST /api/events body of `n` events: 100 users per request, the request's id in each userID. */
function batchBody(n: number): string {
  return JSON.stringify({
    events: Array.from({ length: n }, (_, i) => ({
      userID: `user-[<id>]-${i}`,
      type: "order.created",
      payload: PAYLOAD,
    })),
  });
}

interface Row {
  name: string;
  eventsPerSec: number;
  p50: number;
  p99: number;
  rssMb: number | undefined;
  /** CPU time (user + system, all threads) the server process spent per event: load-independent cost. */
  cpuUsPerEvent: number | undefined;
  note: string;
}

type ChildMessage =
  | { type: "ready"; url?: string }
  | { type: "open-loop-result"; result: OpenLoopResult }
  | { type: "closed-loop-result"; result: ClosedLoopResult }
  | { type: "rss"; rssMb: number; cpuUs: number; threads: Record<string, number> }
  | {
      type: "kafka-result";
      events: number;
      seconds: number;
      p50: number;
      p99: number;
      rssMb: number;
      cpuUs: number;
    };

// ---------------------------------------------------------------------------------------------------------
// Children
// ---------------------------------------------------------------------------------------------------------

/**
 * CPU time (µs) of this process's threads so far, summed by thread name (Linux /proc: "MainThread",
 * "producer", "V8Worker" for V8's GC and compiler helpers, …); empty where /proc is missing.
 */
function threadCpuUs(): Map<string, number> {
  const byName = new Map<string, number>();
  try {
    const ticksPerSecond = 100; // USER_HZ, 100 on every Linux architecture Node runs on
    for (const tid of readdirSync("/proc/self/task")) {
      const dir = `/proc/self/task/${tid}`;
      const name = readFileSync(`${dir}/comm`, "utf8").trim();
      // Fields after the parenthesised name: utime and stime are the 12th and 13th.
      const stat = readFileSync(`${dir}/stat`, "utf8");
      const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
      const ticks = Number(fields[11]) + Number(fields[12]);
      byName.set(name, (byName.get(name) ?? 0) + (ticks * 1e6) / ticksPerSecond);
    }
  } catch {
    // Not Linux, or a thread ended while being read: no split this time.
  }
  return byName;
}

/**
 * Peak RSS and CPU time since the last reset, RSS sampled every 100 ms (the parent resets before a run
 * and asks after it), and the CPU time split by thread.
 */
function trackRss() {
  let peak = process.memoryUsage().rss;
  let cpu = process.cpuUsage();
  let threads0 = threadCpuUs();
  setInterval(() => {
    peak = Math.max(peak, process.memoryUsage().rss);
  }, 100).unref();
  process.on("message", (m: { type: string }) => {
    if (m.type === "rss") {
      peak = Math.max(peak, process.memoryUsage().rss);
      const used = process.cpuUsage(cpu);
      const threads: Record<string, number> = {};
      for (const [name, us] of threadCpuUs()) threads[name] = us - (threads0.get(name) ?? 0);
      process.send?.({ type: "rss", rssMb: peak / 2 ** 20, cpuUs: used.user + used.system, threads });
    } else if (m.type === "rss-reset") {
      peak = process.memoryUsage().rss;
      cpu = process.cpuUsage();
      threads0 = threadCpuUs();
    }
  });
}

/** BENCH_CPUS (e.g. "0"): this process and every thread it starts later run on those cores only. */
function pinToCpus(): void {
  const cpus = process.env.BENCH_CPUS;
  if (cpus) pin(process.pid, cpus);
}

/** Moves every thread of `pid` (and those it starts later) to the cores in `cpus` (taskset's list). */
function pin(pid: number, cpus: string): void {
  execFileSync("taskset", ["-a", "-p", "-c", cpus, String(pid)], { stdio: "ignore" });
}

/** The cores of this machine not in `cpus` (a taskset list such as "0", "0,2" or "0-1"). */
function otherCpus(cpus: string): string {
  const taken = new Set<number>();
  for (const part of cpus.split(",")) {
    const [from, to = from] = part.split("-").map((n) => Number(n.trim()));
    if (!Number.isInteger(from) || !Number.isInteger(to)) throw new Error(`--server-cpus: bad list ${cpus}`);
    for (let c = from as number; c <= (to as number); c++) taken.add(c);
  }
  const rest = Array.from({ length: availableParallelism() }, (_, c) => c).filter((c) => !taken.has(c));
  if (rest.length === 0)
    throw new Error(`--server-cpus ${cpus} leaves no core for autocannon and the broker`);
  return rest.join(",");
}

/** Busy and total jiffies of each listed core, from /proc/stat (idle and iowait count as not busy). */
function coreTimes(cores: number[]): Array<{ busy: number; total: number }> {
  const lines = readFileSync("/proc/stat", "utf8").split("\n");
  return cores.map((core) => {
    const fields = (lines.find((l) => l.startsWith(`cpu${core} `)) ?? "")
      .trim()
      .split(/\s+/)
      .slice(1)
      .map(Number);
    const total = fields.reduce((a, b) => a + b, 0);
    return { busy: total - (fields[3] ?? 0) - (fields[4] ?? 0), total };
  });
}

/** The load generator's cores (all but the servers'), when --server-cpus pinned them; else none. */
let generatorCores: number[] = [];

async function childHono(): Promise<void> {
  pinToCpus();
  const { Hono } = await import("hono");
  const { serve } = await import("@hono/node-server");
  const app = new Hono();
  app.post("/api/singleEvent", async (c) => {
    const body = (await c.req.json()) as { userID: string; type?: string };
    return c.json(
      { id: "x", userID: body.userID, type: body.type ?? "event", receivedAt: new Date().toISOString() },
      202,
    );
  });
  app.post("/api/events", async (c) => {
    const body = (await c.req.json()) as { events: unknown[] };
    return c.json({ ids: body.events.map(() => "x"), receivedAt: new Date().toISOString() }, 202);
  });
  const server = serve({ fetch: app.fetch, port: 0, hostname: "127.0.0.1" }, (info) => {
    process.send?.({ type: "ready", url: `http://127.0.0.1:${info.port}` });
  });
  trackRss();
  process.on("message", (m: { type: string }) => {
    if (m.type === "stop") server.close(() => process.exit(0));
  });
}

async function childGateway(): Promise<void> {
  // The V8 settings main.ts starts the gateway with, before anything else of the gateway loads. Until
  // session 18 the bench left them out, and its gateways ran with allocation-site pretenuring on.
  await import("../src/v8-flags.ts");
  pinToCpus();
  const { loadConfig } = await import("../src/config.ts");
  const { startGateway } = await import("../src/gateway.ts");
  const { createLogger } = await import("../src/log.ts");
  const config = loadConfig();
  const gateway = await startGateway(config, createLogger(config.LOG_LEVEL));
  await gateway.kafkaReady;
  trackRss();
  process.send?.({ type: "ready", url: gateway.url });
  process.on("message", (m: { type: string }) => {
    if (m.type === "stop") void gateway.stop().then(() => process.exit(0));
  });
}

async function childKafka(): Promise<void> {
  const { createKafka } = await import("../src/kafka/client.ts");
  const { uuidv7 } = await import("../src/ingest/event-id.ts");
  const brokers = (process.env.KAFKA_BROKERS ?? "").split(",");
  const topic = process.env.BENCH_TOPIC ?? "bench-kafka";
  const seconds = Number(process.env.BENCH_SECONDS ?? 10);
  const batchSize = Number(process.env.BENCH_BATCH ?? 1000);
  const kafka = createKafka({ brokers, clientId: "bench-kafka-ceiling" });
  // The gateway's own BatchSender of each client: the same records, partitioner and acknowledgement check.
  const { kafkajsSender, platformaticSender } = await import("../src/ingest/batch-sender.ts");
  const { wireSender } = await import("../src/ingest/wire-sender.ts");
  const producer =
    process.env.BENCH_CLIENT === "platformatic"
      ? platformaticSender({ brokers, clientId: "bench-kafka-ceiling", requestTimeoutMs: 30_000 })
      : process.env.BENCH_CLIENT === "own"
        ? wireSender(kafka)
        : kafkajsSender(kafka);
  await producer.connect();
  trackRss();
  let n = 0;
  const makeBatch = () =>
    Array.from({ length: batchSize }, () => {
      const id = uuidv7();
      const userID = `user-${n++}`;
      const value = JSON.stringify({
        id,
        userID,
        type: "order.created",
        timestamp: new Date().toISOString(),
        payload: PAYLOAD,
      });
      return { key: userID, value, headers: { "event-id": id, "content-type": "application/json" } };
    });
  const latencies: number[] = [];
  const cpu0 = process.cpuUsage();
  const started = performance.now();
  let events = 0;
  // The gateway builds each record as its request arrives; building them here too keeps the comparison fair.
  while (performance.now() - started < seconds * 1000) {
    const messages = makeBatch();
    const t0 = performance.now();
    await producer.send(new Map([[topic, messages]]), 30_000);
    latencies.push(performance.now() - t0);
    events += messages.length;
  }
  const elapsed = (performance.now() - started) / 1000;
  const cpu = process.cpuUsage(cpu0);
  latencies.sort((a, b) => a - b);
  const pct = (p: number) =>
    latencies[Math.min(latencies.length - 1, Math.floor((p / 100) * latencies.length))] ?? 0;
  await producer.disconnect();
  process.send?.({
    type: "kafka-result",
    events,
    seconds: elapsed,
    p50: pct(50),
    p99: pct(99),
    rssMb: process.memoryUsage().rss / 2 ** 20,
    cpuUs: cpu.user + cpu.system,
  });
  process.exit(0);
}

// ---------------------------------------------------------------------------------------------------------
// Parent
// ---------------------------------------------------------------------------------------------------------

function spawnChild(kind: string, env: Record<string, string>): ChildProcess {
  return fork(HERE, [CHILD_FLAG, kind], {
    env: { ...process.env, ...env },
    execArgv:
      process.env.BENCH_CPU_PROF && kind === "gateway" ? ["--cpu-prof", "--cpu-prof-dir=bench/profiles"] : [],
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
}

function nextMessage<T extends ChildMessage["type"]>(
  child: ChildProcess,
  type: T,
): Promise<Extract<ChildMessage, { type: T }>> {
  return new Promise((done, fail) => {
    const onMessage = (m: ChildMessage) => {
      if (m.type !== type) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      done(m as Extract<ChildMessage, { type: T }>);
    };
    const onExit = (code: number | null) => fail(new Error(`bench child exited (${code}) before "${type}"`));
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

async function stopChild(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((done) => child.once("exit", done));
  child.send({ type: "stop" });
  const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
  await exited;
  clearTimeout(timer);
}

interface CannonResult {
  requests: { average: number; total: number };
  latency: { p50: number; p99: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  "2xx": number;
  duration: number;
}

interface CannonOptions {
  duration: number;
  connections: number;
  /** Evenly paced at this many requests a second (bench/open-loop.ts) instead of as fast as answered. */
  pacedRate?: number;
  /** POST /api/events with this many events per request instead of /api/singleEvent. */
  batch?: number;
  /**
   * As fast as answered from bench/open-loop.ts's closed-loop generator (single events only) instead of
   * autocannon: a third of autocannon's CPU per request, so the generator's core is not what saturates.
   */
  closedLoop?: boolean;
}

/** Seconds of a paced run sent before its measured part (the generator's own warm-up, see open-loop.ts). */
const PACED_WARMUP_S = 2;
let pacedRuns = 0;
/** The paced runs' generator: a process of its own, so this one's heap and timers do not stall it. */
let generator: ChildProcess | undefined;

interface OpenLoopRun {
  type: "open-loop";
  /** open: paced at `rate`; closed: `connections` each sending its next request when answered. */
  mode: "open" | "closed";
  url: string;
  rate: number;
  duration: number;
  warmup: number;
  connections: number;
  tag: string;
}

async function childOpenLoop(): Promise<void> {
  process.on("message", (m: OpenLoopRun | { type: "stop" }) => {
    if (m.type === "stop") process.exit(0);
    const url = new URL(m.url);
    const target = {
      host: url.hostname,
      port: Number(url.port),
      path: "/api/singleEvent",
      duration: m.duration,
      connections: m.connections,
      body: (n: number) => BODY.replace("[<id>]", `${m.tag}-${n}`),
    };
    if (m.mode === "closed") {
      void closedLoop(target).then((result) => process.send?.({ type: "closed-loop-result", result }));
    } else {
      void openLoop({ ...target, rate: m.rate, warmup: m.warmup }).then((result) =>
        process.send?.({ type: "open-loop-result", result }),
      );
    }
  });
  process.send?.({ type: "ready" });
}

async function generatorChild(): Promise<ChildProcess> {
  if (!generator) {
    generator = spawnChild("open-loop", {});
    await nextMessage(generator, "ready");
  }
  return generator;
}

/** One run of bench/open-loop.ts's generators (in their process), closed-loop or paced. */
async function generate(url: string, opts: CannonOptions): Promise<CannonResult & { note: string }> {
  const child = await generatorChild();
  const closed = opts.closedLoop === true;
  const run: OpenLoopRun = {
    type: "open-loop",
    mode: closed ? "closed" : "open",
    url,
    rate: opts.pacedRate ?? 0,
    duration: opts.duration,
    warmup: closed ? 0 : PACED_WARMUP_S,
    connections: opts.connections,
    tag: `${closed ? "cl" : "ol"}${process.pid}-${pacedRuns++}`,
  };
  child.send(run);
  let r: LoadResult;
  let note: string;
  if (closed) {
    r = (await nextMessage(child, "closed-loop-result")).result;
    note = `closed loop over ${opts.connections} connections (bench/open-loop.ts)`;
  } else {
    const o = (await nextMessage(child, "open-loop-result")).result;
    r = o;
    note =
      `open loop over ${o.connectionsUsed} connections, ${PACED_WARMUP_S} s warm-up outside the latencies; ` +
      `p99.9 ${o.latency.p999.toFixed(1)} ms, max ${o.latency.max.toFixed(1)} ms; ` +
      `at most ${o.peakPer100Ms} requests left in any 100 ms, up to ${o.maxSendLag.toFixed(1)} ms late`;
  }
  return {
    requests: { average: r["2xx"] / r.duration, total: r.sent },
    latency: { p50: r.latency.p50, p99: r.latency.p99 },
    non2xx: r.non2xx,
    errors: r.errors,
    timeouts: r.timeouts,
    "2xx": r["2xx"],
    duration: r.duration,
    note,
  };
}

async function cannon(url: string, opts: CannonOptions): Promise<CannonResult & { note?: string }> {
  if (opts.closedLoop || opts.pacedRate !== undefined) return generate(url, opts);
  const result = (await autocannon({
    url: `${url}${opts.batch ? "/api/events" : "/api/singleEvent"}`,
    method: "POST",
    headers: { "content-type": "application/json" },
    body: opts.batch ? batchBody(opts.batch) : BODY,
    idReplacement: true,
    connections: opts.connections,
    duration: opts.duration,
  })) as unknown as CannonResult;
  return { ...result, note: "autocannon" };
}

/**
 * One autocannon run against `url`, served by `server` (a process, or several sharing the port: their RSS,
 * CPU time and per-thread split are added up).
 */
async function measureServer(
  server: ChildProcess | ChildProcess[],
  url: string,
  name: string,
  opts: CannonOptions,
): Promise<{ row: Row; accepted: number }> {
  const perRequest = opts.batch ?? 1;
  const children = Array.isArray(server) ? server : [server];
  for (const child of children) child.send({ type: "rss-reset" });
  const before = coreTimes(generatorCores);
  const r = await cannon(url, opts);
  const after = coreTimes(generatorCores);
  // How busy the load generator's (and the broker's) cores were: near 100 % they, not the server, set the pace.
  const generatorBusy = generatorCores
    .map((core, k) => {
      const b = before[k] as { busy: number; total: number };
      const a = after[k] as { busy: number; total: number };
      return `core ${core} ${Math.round((100 * (a.busy - b.busy)) / Math.max(1, a.total - b.total))} %`;
    })
    .join(", ");
  let rssMb = 0;
  let cpuUs = 0;
  const threads: Record<string, number> = {};
  for (const child of children) {
    child.send({ type: "rss" });
    const m = await nextMessage(child, "rss");
    rssMb += m.rssMb;
    cpuUs += m.cpuUs;
    for (const [thread, us] of Object.entries(m.threads)) threads[thread] = (threads[thread] ?? 0) + us;
  }
  const refused = r.non2xx + r.errors + r.timeouts;
  const answered = r["2xx"] + r.non2xx;
  // Where the CPU went, µs per event by thread (threads under 1 µs/event left out).
  const split = Object.entries(threads)
    .map(([thread, us]) => [thread, answered > 0 ? us / (answered * perRequest) : 0] as const)
    .filter(([, us]) => us >= 1)
    .sort((a, b) => b[1] - a[1])
    .map(([thread, us]) => `${thread} ${us.toFixed(0)}`)
    .join(" / ");
  const notes = [
    r.note ?? "",
    perRequest > 1 ? `${perRequest} events a request, latency per request` : "",
    refused > 0 ? `${refused} non-2xx/errors` : "",
    split ? `CPU by thread: ${split}` : "",
    generatorBusy ? `generator's cores busy: ${generatorBusy}` : "",
  ].filter((n) => n !== "");
  return {
    row: {
      name,
      eventsPerSec: (r["2xx"] * perRequest) / r.duration,
      p50: r.latency.p50,
      p99: r.latency.p99,
      rssMb,
      cpuUsPerEvent: answered > 0 ? cpuUs / (answered * perRequest) : undefined,
      note: notes.join("; "),
    },
    accepted: r["2xx"] * perRequest,
  };
}

async function countTopic(brokers: string[], topic: string): Promise<number> {
  const { createKafka } = await import("../src/kafka/client.ts");
  const admin = createKafka({ brokers, clientId: "bench-count" }).admin();
  await admin.connect();
  try {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((s, o) => s + Number(o.high) - Number(o.low), 0);
  } finally {
    await admin.disconnect();
  }
}

function table(rows: Row[]): string {
  const fmt = (n: number, d = 1) =>
    n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d });
  const lines = [
    "| run | events/s | p50 ms | p99 ms | RSS MiB | CPU µs/event | notes |",
    "| --- | ---: | ---: | ---: | ---: | ---: | --- |",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${fmt(r.eventsPerSec, 0)} | ${fmt(r.p50)} | ${fmt(r.p99)} | ${r.rssMb === undefined ? "—" : fmt(r.rssMb, 0)} | ${r.cpuUsPerEvent === undefined ? "—" : fmt(r.cpuUsPerEvent, 0)} | ${r.note} |`,
    ),
  ];
  return lines.join("\n");
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: {
      duration: { type: "string", default: "15" },
      connections: { type: "string", default: "256" },
      rate: { type: "string", default: "5000" },
      warmup: { type: "string", default: "3" },
      "broker-warmup": { type: "string", default: "20" },
      batch: { type: "string", default: "100" },
      "batch-connections": { type: "string", default: "32" },
      variants: { type: "string", default: "own,own+thread,own*2,kafkajs" },
      "server-cpus": { type: "string" },
    },
  });
  const batch = Number(values.batch);
  const batchConnections = Number(values["batch-connections"]);
  const duration = Number(values.duration);
  const connections = Number(values.connections);
  const rate = Number(values.rate);
  const warmup = Number(values.warmup);
  const brokerWarmup = Number(values["broker-warmup"]);
  // Gateway settings to measure: own|kafkajs (INGEST_SENDER) [+thread] (INGEST_PRODUCER_THREAD=true)
  // [*N] (N gateway processes of one deployment sharing the port, HTTP_REUSE_PORT=true).
  // @platformatic/kafka is measured as a ceiling only, (b) (bench/README.md "Issue 16" says why).
  const variants = (values.variants ?? "").split(",").map((v) => {
    const match = /^(own|kafkajs)(\+thread)?(?:\*([1-9]))?$/.exec(v.trim());
    if (!match) throw new Error(`--variants: ${v} is not own|kafkajs[+thread][*N]`);
    return { client: match[1] ?? "own", thread: match[2] !== undefined, processes: Number(match[3] ?? 1) };
  });
  const serverCpus = values["server-cpus"];
  const pinned: Record<string, string> = serverCpus ? { BENCH_CPUS: serverCpus } : {};
  const log = (s: string) => process.stderr.write(`${s}\n`);
  const load = () =>
    loadavg()
      .map((l) => l.toFixed(2))
      .join(" ");

  log(`load average before: ${load()}`);
  const { freePort, startLocalKafka } = await import("../src/kafka/runner.ts");
  const kafka = await startLocalKafka({ log });
  const brokers = kafka.brokers;
  if (serverCpus) {
    // The servers get their cores to themselves: the load generator (this process) and the broker move off.
    const rest = otherCpus(serverCpus);
    pin(process.pid, rest);
    for (const node of kafka.nodes) if (node.pid !== undefined) pin(node.pid, rest);
    generatorCores = rest.split(",").map(Number);
    log(`servers on cores ${serverCpus}; the load generators and the broker on ${rest}`);
  }
  const rows: Row[] = [];
  const dbPath = join(tmpdir(), `bench-ingest-${process.pid}.db`);
  // Each gateway variant is compared with a bare endpoint of its own, measured just before it and stopped
  // before the gateway starts. One bare endpoint for the whole run got slower round by round under the
  // closed loop (33–36k events/s in the first rows, 24–28k later; bench/README.md, session 18), which
  // flattered the later rounds; a fresh one does not carry that.
  let hono: ChildProcess | undefined;
  const freshBare = async (): Promise<[ChildProcess, string]> => {
    if (hono && hono.exitCode === null) await stopChild(hono);
    const child = spawnChild("hono", pinned);
    hono = child;
    const url = (await nextMessage(child, "ready")).url as string;
    await cannon(url, { duration: warmup, connections });
    return [child, url];
  };
  try {
    log("(a) bare Hono endpoint …");
    const [firstBare, honoUrl] = await freshBare();
    const bare = (
      await measureServer(firstBare, honoUrl, "(a) bare Hono: parse JSON, answer 202", {
        duration,
        connections,
        closedLoop: true,
      })
    ).row;
    rows.push(bare);
    // The same offered rate as the gateway's (d) row: CPU per event is compared at equal load (at a
    // lower rate each event loop turn serves fewer requests, so every server pays more per event).
    const barePaced = (
      await measureServer(
        firstBare,
        honoUrl,
        `(a) bare Hono, offered ${rate.toLocaleString("en-US")} events/s`,
        {
          duration,
          connections: Math.min(connections, 100),
          pacedRate: rate,
        },
      )
    ).row;
    rows.push(barePaced);
    await cannon(honoUrl, { duration: warmup, connections: batchConnections, batch });
    const honoBatch = await measureServer(
      firstBare,
      honoUrl,
      `(a') bare Hono: parse a ${batch}-event body, answer 202`,
      {
        duration,
        connections: batchConnections,
        batch,
      },
    );
    await stopChild(firstBare);
    log("(b) each client straight to the broker …");
    const { createKafka } = await import("../src/kafka/client.ts");
    const admin = createKafka({ brokers, clientId: "bench-admin" }).admin();
    await admin.connect();
    await admin.createTopics({ topics: [{ topic: "bench-kafka", numPartitions: 12 }], waitForLeaders: true });
    await admin.disconnect();
    const sendBatch = process.env.BATCH_MAX_RECORDS ?? "1000";
    for (const client of ["own", "kafkajs", "platformatic"]) {
      const kc = spawnChild("kafka", {
        KAFKA_BROKERS: brokers.join(","),
        BENCH_TOPIC: "bench-kafka",
        BENCH_SECONDS: String(duration),
        BENCH_BATCH: sendBatch,
        BENCH_CLIENT: client,
      });
      const k = await nextMessage(kc, "kafka-result");
      rows.push({
        name: `(b) ${client === "own" ? "own Produce requests" : client} straight to the broker, ${sendBatch} records/batch, acks=-1, idempotent`,
        eventsPerSec: k.events / k.seconds,
        p50: k.p50,
        p99: k.p99,
        rssMb: k.rssMb,
        cpuUsPerEvent: k.cpuUs / k.events,
        note: "latency per batch; CPU includes building the records",
      });
      await new Promise((done) => kc.once("exit", done));
    }

    let accepted = 0;
    let inTopic = 0;
    const verdicts: string[] = [];
    for (const [i, variant] of variants.entries()) {
      const label =
        `${variant.client}, ${variant.thread ? "producer thread" : "on the HTTP thread"}` +
        (variant.processes > 1 ? `, ${variant.processes} processes on one port` : "");
      // The machine's speed drifts within minutes (bench/README.md, session 13): each verdict compares
      // the gateway with the bare endpoint measured just before it, at the same load — before the gateway
      // starts, so that the bare endpoint has core 0 to itself (a gateway just started and warmed up still
      // works in the background: session 18 saw the bare endpoint pay up to a third more per event beside it).
      log(`(a) a fresh bare endpoint, before ${label} …`);
      const [bareChild, bareUrl] = await freshBare();
      const bareBeside = (
        await measureServer(bareChild, bareUrl, `(a) bare Hono, max rate, just before ${label}`, {
          duration,
          connections,
          closedLoop: true,
        })
      ).row;
      rows.push(bareBeside);
      const bareAutocannon = (
        await measureServer(bareChild, bareUrl, `(a) bare Hono, max rate, autocannon, just before ${label}`, {
          duration,
          connections,
        })
      ).row;
      rows.push(bareAutocannon);
      const barePacedBeside = (
        await measureServer(
          bareChild,
          bareUrl,
          `(a) bare Hono, offered ${rate.toLocaleString("en-US")}/s, just before ${label}`,
          {
            duration,
            connections: Math.min(connections, 100),
            pacedRate: rate,
          },
        )
      ).row;
      rows.push(barePacedBeside);
      await stopChild(bareChild);
      log(`(c, d, e) the gateway, ${label} …`);
      const topic = `bench-events-${i}`;
      // Several processes: replicas of one deployment (same topics and groups, a database each) listening
      // on one port with SO_REUSEPORT; the kernel spreads autocannon's connections over them.
      const port = variant.processes > 1 ? await freePort() : 0;
      const gw: ChildProcess[] = [];
      const urls: string[] = [];
      for (let k = 0; k < variant.processes; k++) {
        gw.push(
          spawnChild("gateway", {
            ...pinned,
            KAFKA_BROKERS: brokers.join(","),
            PORT: String(port),
            HTTP_REUSE_PORT: String(variant.processes > 1),
            DB_PATH: `${dbPath}-${i}-${k}`,
            LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
            EVENTS_TOPIC: topic,
            DEAD_LETTER_TOPIC: `${topic}.dead-letter`,
            CONSUMER_GROUP_PREFIX: `bench-${i}`,
            INGEST_PRODUCER_THREAD: String(variant.thread),
            INGEST_SENDER: variant.client,
          }),
        );
        // One at a time: the first creates the topics the others then find.
        urls.push((await nextMessage(gw[k] as ChildProcess, "ready")).url as string);
      }
      const gwUrl = urls[0] as string;
      // The broker is a JVM started by this run: before the first gateway it has only seen (b)'s large
      // batches, and under the gateway's small ones it answered faster minute by minute (bench/README.md,
      // session 16). The first variant warms it up longer, so it does not pay for that alone.
      const warm = i === 0 ? Math.max(warmup, brokerWarmup) : warmup;
      accepted += (await cannon(gwUrl, { duration: warm, connections }))["2xx"];
      const max = await measureServer(
        gw,
        gwUrl,
        `(c) gateway, ${label}, max rate (${connections} connections)`,
        { duration, connections, closedLoop: true },
      );
      rows.push(max.row);
      accepted += max.accepted;
      // The same pair driven by autocannon, as every session before 18 measured it: its core saturates
      // before the bare endpoint's does, so this ratio is partly autocannon's and the broker's sharing a core.
      const maxAutocannon = await measureServer(
        gw,
        gwUrl,
        `(c) gateway, ${label}, max rate, autocannon (${connections} connections)`,
        { duration, connections },
      );
      rows.push(maxAutocannon.row);
      accepted += maxAutocannon.accepted;
      const paced = await measureServer(
        gw,
        gwUrl,
        `(d) gateway, ${label}, offered ${rate.toLocaleString("en-US")} events/s`,
        { duration, connections: Math.min(connections, 100), pacedRate: rate },
      );
      rows.push(paced.row);
      accepted += paced.accepted;
      const batched = await measureServer(
        gw,
        gwUrl,
        `(e) gateway, ${label}, POST /api/events, ${batch} events a request (${batchConnections} connections)`,
        { duration, connections: batchConnections, batch },
      );
      rows.push(batched.row);
      accepted += batched.accepted;
      await Promise.all(gw.map((child) => stopChild(child)));
      inTopic += await countTopic(brokers, topic);
      const ratio = max.row.eventsPerSec / (bareBeside.eventsPerSec || 1);
      const ratioAutocannon = maxAutocannon.row.eventsPerSec / (bareAutocannon.eventsPerSec || 1);
      const cpuRatio = (paced.row.cpuUsPerEvent ?? 0) / (barePacedBeside.cpuUsPerEvent ?? 1);
      const cpuRatioMax = (max.row.cpuUsPerEvent ?? 0) / (bareBeside.cpuUsPerEvent ?? 1);
      verdicts.push(
        `${label}: ${ratio.toFixed(2)}× the bare endpoint (≥ 0.7×: ${ratio >= 0.7 ? "met" : "NOT met"}; ` +
          `${ratioAutocannon.toFixed(2)}× driven by autocannon); ` +
          `p99 ${paced.row.p99.toFixed(1)} ms at ${rate.toLocaleString("en-US")}/s (≤ 25: ${paced.row.p99 <= 25 ? "met" : "NOT met"}); ` +
          `CPU ${cpuRatio.toFixed(2)}× the bare endpoint's, both offered ${rate.toLocaleString("en-US")}/s (≤ 1.3×: ${cpuRatio <= 1.3 ? "met" : "NOT met"}; ` +
          `${cpuRatioMax.toFixed(2)}× at max rate, (c) against (a)); ` +
          `batch ${Math.round(batched.row.eventsPerSec).toLocaleString("en-US")} events/s (≥ 50,000: ${batched.row.eventsPerSec >= 50_000 ? "met" : "NOT met"})`,
      );
    }
    rows.push(honoBatch.row);

    const out = [
      table(rows),
      "",
      `202s from the gateway: ${accepted.toLocaleString("en-US")}; records in the topic: ${inTopic.toLocaleString("en-US")}` +
        (inTopic >= accepted ? " (every 202 is in Kafka)" : " — MISSING RECORDS"),
      ...verdicts,
      `duration ${duration} s per run, ${connections} connections; load average after: ${load()}`,
    ];
    process.stdout.write(`${out.join("\n")}\n`);
  } finally {
    if (hono && hono.exitCode === null) await stopChild(hono);
    if (generator) await stopChild(generator);
    await kafka.stop();
    for (const [i, variant] of variants.entries()) {
      for (let k = 0; k < variant.processes; k++) {
        for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}-${i}-${k}${suffix}`, { force: true });
      }
    }
  }
}

const childKind = process.argv[2] === CHILD_FLAG ? process.argv[3] : undefined;
if (childKind === "hono") await childHono();
else if (childKind === "gateway") await childGateway();
else if (childKind === "kafka") await childKafka();
else if (childKind === "open-loop") await childOpenLoop();
else await main();
