/**
 * What the delivery benchmarks share (bench/delivery.ts, bench/fanout.ts): the receiver child (a lean HTTP/1.1
 * server on node:net, or node:http, that answers 200 at once and records arrivals per path), the gateway as a
 * child process (benchGateway: test/child-gateway.ts's ChildGateway), /proc CPU and RSS readers, /metrics
 * scraping, destination registration, preloading the events topic, the raw-undici ceiling and the table.
 *
 * The receiver runs this file as a child: `startReceiver()` forks it with CHILD_FLAG.
 */
import { type ChildProcess, fork } from "node:child_process";
import { readFileSync } from "node:fs";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { setTimeout as sleep } from "node:timers/promises";
import { Agent, Pool } from "undici";
import { type SendTarget, sendTarget, sendWebhook } from "../src/delivery/send.ts";
import { generateSecret, secretKey } from "../src/delivery/sign.ts";
import { ChildGateway, type GatewayClient, type GatewayEnv } from "../test/child-gateway.ts";
import { freePort } from "../test/helpers.ts";
import { PAYLOAD } from "./payload.ts";

const CHILD_FLAG = "--bench-child";
const HERE = new URL(import.meta.url).pathname;
export const ADMIN_TOKEN = "bench-admin-token-0123456789";
export const TOPIC = "events";

/** The environment every bench gateway gets (the caller's own environment passes through beneath it). */
export function benchGatewayEnv(brokers: string[], dbPath: string): GatewayEnv {
  return {
    KAFKA_BROKERS: brokers.join(","),
    DB_PATH: dbPath,
    ADMIN_TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
    LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
    EVENTS_TOPIC: TOPIC,
    DEAD_LETTER_TOPIC: `${TOPIC}.dead-letter`,
  };
}

/**
 * A bench gateway as a child process (test/child-gateway.ts), not started yet: `env` on a free port, the
 * caller's own environment beneath it, its output also in `logFile`. `execArgv`: node's own flags, e.g.
 * `--cpu-prof`.
 */
export async function benchGateway(
  env: GatewayEnv,
  logFile: string,
  execArgv: string[] = [],
): Promise<ChildGateway> {
  const port = String(await freePort());
  return new ChildGateway(
    { ...env, HOST: "127.0.0.1", PORT: port },
    { inheritEnv: true, logFile, execArgv, readyTimeoutMs: 120_000 },
  );
}
/** Wall-clock milliseconds with sub-millisecond resolution; every process on this machine shares the clock. */
export const now = () => performance.timeOrigin + performance.now();

export interface PathStats {
  count: number;
  distinct: number;
  first: number;
  last: number;
}

type ReceiverMessage =
  | { type: "ready"; url: string }
  | { type: "stats"; stats: Record<string, PathStats> }
  | { type: "arrivals"; arrivals: Array<[id: string, at: number, timestamp: number]> }
  | { type: "summary"; summary: ArrivalSummary };

/**
 * What arrived of a set of events at the paths under a prefix (the "summary" message): `made` = distinct
 * (path, event) pairs among those events; latency = arrival − the event's `timestamp` (the gateway's
 * receivedAt), ms, over those pairs; `duplicates` = requests beyond the first per (path, event), every event.
 */
export interface ArrivalSummary {
  made: number;
  p50: number;
  p99: number;
  max: number;
  duplicates: number;
}

/**
 * Paths whose arrivals (event id → arrival and `timestamp`) are kept: /lat/ (bench/delivery.ts's latency
 * runs) and /fan/ (bench/fanout.ts).
 */
const KEEPS_ARRIVALS = /^\/(?:lat|fan)\//;
/** Paths the receiver never answers: the request is read and recorded, the connection stays open. */
const HANGS = /^\/hang\//;

// ---------------------------------------------------------------------------------------------------------
// Receiver child
// ---------------------------------------------------------------------------------------------------------

/** What the receiver keeps per path; `arrivals` only under /lat/ and /fan/. */
interface PathRecord extends PathStats {
  ids: Set<string>;
  arrivals?: Map<string, [at: number, timestamp: number]>;
}

/**
 * Records one request whose body is in: count, distinct event ids (webhook-id), first and last arrival, and
 * under /lat/ and /fan/ the event's arrival and `timestamp`. `body` is called only there, once per event id.
 */
type Recorder = (at: number, path: string, id: string | undefined, body: () => string) => void;

/**
 * Answers 200 with an empty body as soon as a request's body is in (never under /hang/) and records it
 * (Recorder); the stats, arrivals, summary, forget and stop messages read or clear it. `kind` "net" (default): the lean node:net server below; "node":
 * node:http, the previous receiver, kept for comparison (`--receiver node`).
 */
async function childReceiver(kind: string): Promise<void> {
  const stats = new Map<string, PathRecord>();
  const record: Recorder = (at, path, id, body) => {
    let s = stats.get(path);
    if (!s) {
      s = { count: 0, distinct: 0, first: at, last: at, ids: new Set() };
      if (KEEPS_ARRIVALS.test(path)) s.arrivals = new Map();
      stats.set(path, s);
    }
    s.count++;
    s.last = at;
    if (id === undefined) return; // (1)'s raw POSTs carry no event id
    if (!s.ids.has(id)) {
      s.ids.add(id);
      s.distinct++;
    }
    if (s.arrivals && !s.arrivals.has(id)) {
      const event = JSON.parse(body()) as { timestamp?: string };
      s.arrivals.set(id, [at, event.timestamp ? Date.parse(event.timestamp) : Number.NaN]);
    }
  };
  const { server, closeAll } = kind === "node" ? await nodeHttpReceiver(record) : netReceiver(record);
  server.listen(0, "127.0.0.1", () => {
    const address = server.address();
    const port = typeof address === "object" && address ? address.port : 0;
    process.send?.({ type: "ready", url: `http://127.0.0.1:${port}` });
  });
  process.on("message", (m: { type: string; path?: string; prefix?: string; ids?: string[] }) => {
    if (m.type === "stats") {
      const out: Record<string, PathStats> = {};
      for (const [path, { count, distinct, first, last }] of stats)
        out[path] = { count, distinct, first, last };
      process.send?.({ type: "stats", stats: out });
    } else if (m.type === "arrivals") {
      const a = stats.get(m.path ?? "")?.arrivals ?? new Map();
      process.send?.({ type: "arrivals", arrivals: [...a].map(([id, [at, ts]]) => [id, at, ts]) });
    } else if (m.type === "summary") {
      process.send?.({ type: "summary", summary: summarize(stats, m.prefix ?? "/", m.ids ?? []) });
    } else if (m.type === "forget") {
      for (const path of stats.keys()) if (path.startsWith(m.prefix ?? "/")) stats.delete(path);
    } else if (m.type === "stop") {
      closeAll();
      server.close(() => process.exit(0));
    }
  });
}

function summarize(stats: Map<string, PathRecord>, prefix: string, ids: string[]): ArrivalSummary {
  const wanted = new Set(ids);
  const latencies: number[] = [];
  let duplicates = 0;
  for (const [path, s] of stats) {
    if (!path.startsWith(prefix)) continue;
    duplicates += s.count - s.distinct;
    if (!s.arrivals) continue;
    for (const [id, [at, ts]] of s.arrivals) if (wanted.has(id)) latencies.push(at - ts);
  }
  latencies.sort((a, b) => a - b);
  return {
    made: latencies.length,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    max: latencies.at(-1) ?? Number.NaN,
    duplicates,
  };
}

interface ReceiverServer {
  server: NetServer;
  /** Drops every open connection, idle or not. */
  closeAll: () => void;
}

/** `--receiver node`: node:http (29–35 µs of CPU per request in session 3's (1)/(1b)). */
async function nodeHttpReceiver(record: Recorder): Promise<ReceiverServer> {
  const { createServer } = await import("node:http");
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on("data", (c: Buffer) => chunks.push(c));
    req.on("end", () => {
      const at = now();
      if (!HANGS.test(req.url ?? "/")) {
        res.writeHead(200, { "content-length": "0" });
        res.end();
      }
      const id = req.headers["webhook-id"];
      record(at, req.url ?? "/", typeof id === "string" ? id : undefined, () =>
        Buffer.concat(chunks).toString("utf8"),
      );
    });
  });
  server.keepAliveTimeout = 65_000;
  return { server, closeAll: () => server.closeAllConnections() };
}

// keep-alive: as node:http says it, so clients keep idle connections past their 4 s default.
const OK = "HTTP/1.1 200 OK\r\ncontent-length: 0\r\nkeep-alive: timeout=65\r\n\r\n";
const CONTINUE = "HTTP/1.1 100 Continue\r\n\r\n";
const BAD_REQUEST = "HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n";
const HEAD_END = Buffer.from("\r\n\r\n");
/** Longer heads are refused (node:http's default limit). */
const MAX_HEAD_BYTES = 16 * 1024;
/** method SP request-target SP HTTP-version (RFC 9112 §3); the minor version is captured. */
const REQUEST_LINE = /^[!#$%&'*+.^_`|~\dA-Za-z-]+ (\S+) HTTP\/1\.([01])$/;
/** field-name ":" OWS field-value OWS (§5); no space before the colon, no obs-fold, no bare CR or LF. */
const FIELD_LINE = /^([!#$%&'*+.^_`|~\dA-Za-z-]+):[ \t]*(.*?)[ \t]*$/;
/** In a head that is not complete yet: an LF without its CR, or a CR followed by anything but LF. */
const BARE_CR_OR_LF = /(?:^|[^\r])\n|\r(?!\n|$)/;

/** What the receiver needs of a request head. */
interface RequestHead {
  path: string;
  id: string | undefined;
  length: number;
  /** HTTP/1.0 or `connection: close`: the connection ends after the answer. */
  close: boolean;
  /** `expect: 100-continue`: the client may wait for a 100 before it sends the body. */
  expectContinue: boolean;
}

/**
 * The head (request line and fields, latin1, without the blank line) as a RequestHead, or undefined for
 * anything this receiver does not take: malformed lines, a missing host (HTTP/1.1), a bad or repeated
 * content-length, any transfer-encoding (a chunked body would be miscounted, so it is refused).
 */
function parseHead(text: string): RequestHead | undefined {
  const lines = text.split("\r\n");
  const start = REQUEST_LINE.exec(lines[0] as string);
  if (!start) return undefined;
  const http10 = start[2] === "0";
  const head: RequestHead = {
    path: start[1] as string,
    id: undefined,
    length: 0,
    close: http10,
    expectContinue: false,
  };
  let length: string | undefined;
  let host = false;
  for (let i = 1; i < lines.length; i++) {
    const field = FIELD_LINE.exec(lines[i] as string);
    if (!field) return undefined;
    const value = field[2] as string;
    switch ((field[1] as string).toLowerCase()) {
      case "content-length":
        if (length !== undefined || !/^\d{1,15}$/.test(value)) return undefined;
        length = value;
        break;
      case "transfer-encoding":
        return undefined;
      case "host":
        host = true;
        break;
      case "webhook-id": // repeated: joined as node:http joins it
        head.id = head.id === undefined ? value : `${head.id}, ${value}`;
        break;
      case "connection":
        if (/(?:^|,)[ \t]*close[ \t]*(?:,|$)/i.test(value)) head.close = true;
        break;
      case "expect":
        if (value.toLowerCase() === "100-continue") head.expectContinue = true;
        break;
    }
  }
  if (!host && !http10) return undefined;
  head.length = length === undefined ? 0 : Number(length);
  return head;
}

/**
 * The default receiver: HTTP/1.1 on node:net, for what the bench's clients send — keep-alive, pipelined
 * requests in one chunk and requests split across chunks, content-length bodies (none means 0). Anything
 * else (transfer-encoding, a malformed head, …) gets 400 and the connection is closed. The answers to the
 * requests completed by one incoming chunk go out in one write. Bodies are kept as slices of the chunks
 * and only joined when the Recorder asks (an event's first arrival under /lat/).
 */
function netReceiver(record: Recorder): ReceiverServer {
  const sockets = new Set<Socket>();
  const server = createNetServer({ noDelay: true }, (socket) => {
    sockets.add(socket);
    socket.on("close", () => sockets.delete(socket));
    socket.on("error", () => {}); // a client reset: "close" follows
    /** The start of a head whose end has not arrived yet. */
    let partialHead: Buffer | undefined;
    /** A request whose head is in and whose body is not complete yet. */
    let pending: { head: RequestHead; parts: Buffer[]; missing: number } | undefined;
    let ended = false;
    /** A request under /hang/ is in: it gets no answer, and nothing after it on this connection either. */
    let hung = false;
    /** Records the request; false when it is not to be answered (under /hang/). */
    const complete = (head: RequestHead, parts: Buffer | Buffer[]): boolean => {
      record(now(), head.path, head.id, () =>
        (Array.isArray(parts) ? Buffer.concat(parts) : parts).toString(),
      );
      if (HANGS.test(head.path)) hung = true;
      return !hung;
    };
    socket.on("data", (chunk: Buffer) => {
      // After a 400 or a connection: close, whatever else comes is not read; after a hang, not answered.
      if (ended || hung) return;
      let out = "";
      let buf = chunk;
      let pos = 0;
      if (pending) {
        pos = Math.min(pending.missing, buf.length);
        pending.parts.push(buf.subarray(0, pos));
        pending.missing -= pos;
        if (pending.missing === 0) {
          if (complete(pending.head, pending.parts)) {
            out += OK;
            ended = pending.head.close;
          }
          pending = undefined;
        }
      } else if (partialHead) {
        buf = Buffer.concat([partialHead, chunk]);
        partialHead = undefined;
      }
      while (!ended && !hung && pos < buf.length) {
        while (buf[pos] === 13 && buf[pos + 1] === 10) pos += 2; // empty lines before a request line
        if (pos === buf.length) break;
        const end = buf.indexOf(HEAD_END, pos);
        if (end < 0) {
          if (buf.length - pos > MAX_HEAD_BYTES || BARE_CR_OR_LF.test(buf.toString("latin1", pos))) {
            out += BAD_REQUEST;
            ended = true;
          } else partialHead = buf.subarray(pos);
          break;
        }
        const head = end - pos <= MAX_HEAD_BYTES ? parseHead(buf.toString("latin1", pos, end)) : undefined;
        if (!head) {
          out += BAD_REQUEST;
          ended = true;
          break;
        }
        const bodyStart = end + HEAD_END.length;
        const bodyEnd = bodyStart + head.length;
        if (bodyEnd > buf.length) {
          if (head.expectContinue) out += CONTINUE;
          pending = { head, parts: [buf.subarray(bodyStart)], missing: bodyEnd - buf.length };
          break;
        }
        if (!complete(head, buf.subarray(bodyStart, bodyEnd))) break;
        out += OK;
        ended = head.close;
        pos = bodyEnd;
      }
      if (out) socket.write(out, "latin1");
      if (ended) socket.end();
    });
  });
  return {
    server,
    closeAll: () => {
      for (const socket of sockets) socket.destroy();
    },
  };
}

// ---------------------------------------------------------------------------------------------------------
// Driver helpers
// ---------------------------------------------------------------------------------------------------------

export function nextMessage<T extends ReceiverMessage["type"]>(
  child: ChildProcess,
  type: T,
): Promise<Extract<ReceiverMessage, { type: T }>> {
  return new Promise((done, fail) => {
    const onMessage = (m: ReceiverMessage) => {
      if (m.type !== type) return;
      child.off("message", onMessage);
      child.off("exit", onExit);
      done(m as Extract<ReceiverMessage, { type: T }>);
    };
    const onExit = (code: number | null) => fail(new Error(`receiver exited (${code}) before "${type}"`));
    child.on("message", onMessage);
    child.once("exit", onExit);
  });
}

export class ReceiverClient {
  readonly url: string;
  readonly child: ChildProcess;
  constructor(child: ChildProcess, url: string) {
    this.child = child;
    this.url = url;
  }
  async stats(): Promise<Record<string, PathStats>> {
    const reply = nextMessage(this.child, "stats");
    this.child.send({ type: "stats" });
    return (await reply).stats;
  }
  async arrivals(path: string): Promise<Array<[string, number, number]>> {
    const reply = nextMessage(this.child, "arrivals");
    this.child.send({ type: "arrivals", path });
    return (await reply).arrivals;
  }
  /** What arrived of these events (ids) at the paths under `prefix` (/lat/ or /fan/ for latencies). */
  async summary(prefix: string, ids: string[]): Promise<ArrivalSummary> {
    const reply = nextMessage(this.child, "summary");
    this.child.send({ type: "summary", prefix, ids });
    return (await reply).summary;
  }
  /** Drops what the receiver holds for the paths under `prefix` (between runs, to bound its memory). */
  forget(prefix: string): void {
    this.child.send({ type: "forget", prefix });
  }
  /** Polls until `done(stats)` holds; fails after `timeoutMs` with what was seen. */
  async waitUntil(
    done: (s: Record<string, PathStats>) => boolean,
    what: string,
    timeoutMs: number,
  ): Promise<Record<string, PathStats>> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const s = await this.stats();
      if (done(s)) return s;
      if (Date.now() > deadline) {
        const seen = Object.entries(s)
          .map(([p, v]) => `${p}=${v.distinct}`)
          .join(" ");
        throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; receiver saw: ${seen}`);
      }
      await sleep(50);
    }
  }
}

/** Resident and peak resident set size of a process, MiB, from /proc. */
export function memoryOf(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { rssMb: kb("VmRSS") / 1024, peakMb: kb("VmHWM") / 1024 };
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 1/100 s). */
export function cpuSecondsOf(pid: number): number {
  // The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Every sample of a metric, over all its series. */
function metricValues(text: string, name: string): number[] {
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))].map((m) => Number(m[1]));
}

/** The sum of a metric's series in the gateway's /metrics text (NaN when absent). */
export function metricSum(text: string, name: string): number {
  const values = metricValues(text, name);
  return values.length ? values.reduce((a, b) => a + b, 0) : Number.NaN;
}

export async function scrape(gw: GatewayClient): Promise<string> {
  try {
    return await (await fetch(`${gw.url}/metrics`)).text();
  } catch {
    return "";
  }
}

/** The largest sample of a metric over its series (NaN when it has none). */
export function metricMax(text: string, name: string): number {
  const values = metricValues(text, name);
  return values.length ? Math.max(...values) : Number.NaN;
}

/** V8 heap in use: the main thread's plus every delivery thread's (each thread has a heap of its own). */
export async function heapUsedMb(gw: GatewayClient): Promise<number> {
  const text = await scrape(gw);
  const threads = metricSum(text, "delivery_thread_heap_used_bytes");
  return (
    (metricSum(text, "nodejs_heap_size_used_bytes") + (Number.isFinite(threads) ? threads : 0)) / 2 ** 20
  );
}

export function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** Until one event is accepted (202): the topics exist and the producer is connected. Returns its id. */
export async function acceptOne(
  gw: GatewayClient,
  timeoutMs: number,
  userID = "bench-probe",
): Promise<string> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await fetch(`${gw.url}/api/singleEvent`, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ userID, type: "bench.probe", payload: PAYLOAD }),
    }).catch(() => undefined);
    if (res?.status === 202) return ((await res.json()) as { id: string }).id;
    await res?.body?.cancel();
    if (Date.now() > deadline) throw new Error(`no event accepted within ${timeoutMs} ms`);
    await sleep(50);
  }
}

/**
 * Starts the gateway (again, on the same database when it ran before) and waits until it accepts an event: a
 * fresh process, so a run's RSS is not what an earlier run left behind. Returns whether the previous process
 * stopped gracefully (not SIGKILLed after 30 s).
 */
export async function restartGateway(gw: ChildGateway, userID?: string): Promise<boolean> {
  const graceful = (await gw.stop()) !== "SIGKILL";
  await gw.start();
  await acceptOne(gw, 120_000, userID);
  return graceful;
}

/**
 * POST /api/destinations; a 503 (Kafka could not pin the group yet, e.g. just after topic creation) is
 * retried for 5 s. `timeoutMs` bounds each request. Returns the destination's id.
 */
export async function registerDestination(
  gw: GatewayClient,
  body: Record<string, unknown>,
  timeoutMs?: number,
): Promise<string> {
  return (await gw.registerDestination(body, { timeoutMs, retryForMs: 5000 })).id;
}

/** The receiver child (`kind` "net" or "node"); its "ready" message carries its URL. */
export async function startReceiver(kind = "net"): Promise<ReceiverClient> {
  const child = fork(HERE, [CHILD_FLAG, "receiver", kind], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  return new ReceiverClient(child, (await nextMessage(child, "ready")).url);
}

/** Asks the receiver child to stop; SIGKILL after 5 s. */
export async function stopReceiver(receiver: ReceiverClient): Promise<void> {
  const child = receiver.child;
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.send({ type: "stop" });
  await Promise.race([new Promise((done) => child.once("exit", done)), sleep(5000)]);
  if (child.exitCode === null) child.kill("SIGKILL");
}

/** Runs `fn` over `items` with at most `width` at a time. */
export async function inParallel<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) {
        const i = next++;
        out[i] = await fn(items[i] as T);
      }
    }),
  );
  return out;
}

/** Puts `count` events straight into the events topic, in the record format the gateway's ingest writes. */
export async function preload(brokers: string[], count: number, users: number): Promise<number> {
  const { CompressionTypes, Partitioners } = await import("kafkajs");
  const { createKafka } = await import("../src/kafka/client.ts");
  const { uuidv7 } = await import("../src/ingest/event-id.ts");
  const producer = createKafka({ brokers, clientId: "bench-preload" }).producer({
    createPartitioner: Partitioners.DefaultPartitioner,
  });
  await producer.connect();
  const started = now();
  try {
    const batch = 2000;
    for (let sent = 0; sent < count; sent += batch) {
      const timestamp = new Date().toISOString();
      const messages = Array.from({ length: Math.min(batch, count - sent) }, (_, i) => {
        const id = uuidv7();
        const userID = `user-${(sent + i) % users}`;
        const value = JSON.stringify({ id, userID, type: "order.created", timestamp, payload: PAYLOAD });
        return { key: userID, value, headers: { "event-id": id, "content-type": "application/json" } };
      });
      await producer.sendBatch({
        acks: -1,
        compression: CompressionTypes.None,
        topicMessages: [{ topic: TOPIC, messages }],
      });
    }
  } finally {
    await producer.disconnect();
  }
  return (now() - started) / 1000;
}

/** A record value as ingest writes it (what the receiver gets as the body). */
export function sampleRecord(): string {
  const id = "01941f29-7c4a-7b6e-9d3c-2a1f0e9b8c7d";
  return JSON.stringify({
    id,
    userID: "user-42",
    type: "order.created",
    timestamp: new Date().toISOString(),
    payload: PAYLOAD,
  });
}

export interface Row {
  name: string;
  rate: string;
  p50: number | undefined;
  p99: number | undefined;
  rssMb: number | undefined;
  note: string;
}

export const fmt = (n: number, d = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d })
    : "—";

/**
 * (1) raw undici POSTs of the same body to the receiver, `width` in flight on a keep-alive Pool; (1b) the
 * same through the gateway's own sender (an Agent as each worker has, Standard Webhooks signature, snippet,
 * deadline timer): the client CPU per request of the two, side by side.
 */
export async function ceiling(
  receiver: ReceiverClient,
  width: number,
  seconds: number,
  gatewaySender: boolean,
): Promise<Row> {
  const body = sampleRecord();
  const pool = new Pool(receiver.url, { connections: width });
  const agent = new Agent({ connections: width });
  const target = (path: string) =>
    sendTarget(
      { url: `${receiver.url}${path}`, headers: {}, timeoutMs: 15_000 },
      secretKey(generateSecret()),
      agent,
    );
  const targets = new Map<string, SendTarget>();
  const post = async (path: string) => {
    if (gatewaySender) {
      let t = targets.get(path);
      if (!t) {
        t = target(path);
        targets.set(path, t);
      }
      const result = await sendWebhook(t, "01934f6e-3b2a-7c41-9f0e-5d6c7b8a9e10", body);
      if (result.statusCode !== 200)
        throw new Error(`receiver answered ${result.statusCode ?? result.error}`);
      return;
    }
    const res = await pool.request({
      path,
      method: "POST",
      headers: { "content-type": "application/json" },
      body,
    });
    await res.body.dump();
    if (res.statusCode !== 200) throw new Error(`receiver answered ${res.statusCode}`);
  };
  const latencies: number[] = [];
  const run = async (path: string, ms: number, record: boolean) => {
    const end = now() + ms;
    let n = 0;
    await Promise.all(
      Array.from({ length: width }, async () => {
        while (now() < end) {
          const t0 = now();
          await post(path);
          if (record) latencies.push(now() - t0);
          n++;
        }
      }),
    );
    return n;
  };
  await run("/warmup", 1000, false);
  const t0 = now();
  const driverCpu = process.cpuUsage();
  const receiverCpu = cpuSecondsOf(receiver.child.pid as number);
  const n = await run("/ceiling", seconds * 1000, true);
  const elapsed = (now() - t0) / 1000;
  const used = process.cpuUsage(driverCpu);
  const driverUs = (used.user + used.system) / n;
  const receiverUs = ((cpuSecondsOf(receiver.child.pid as number) - receiverCpu) / n) * 1e6;
  await pool.close();
  await agent.close();
  latencies.sort((a, b) => a - b);
  return {
    name: gatewaySender
      ? `(1b) the gateway's sender (signed, Agent, snippet, timer) → receiver, ${width} in flight`
      : `(1) ceiling: raw undici POST → receiver, ${width} in flight`,
    rate: `${fmt(n / elapsed)} req/s`,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
    rssMb: undefined,
    note:
      `${fmt(n)} requests in ${elapsed.toFixed(1)} s; latency = request round trip; CPU per request: ` +
      `${gatewaySender ? "sender" : "undici client"} ${fmt(driverUs)} µs, receiver ${fmt(receiverUs)} µs`,
  };
}

export function table(rows: Row[]): string {
  const ms = (n: number | undefined) => (n === undefined ? "—" : fmt(n, 1));
  return [
    "| run | throughput | p50 ms | p99 ms | gateway RSS MiB | notes |",
    "| --- | ---: | ---: | ---: | ---: | --- |",
    ...rows.map(
      (r) =>
        `| ${r.name} | ${r.rate} | ${ms(r.p50)} | ${ms(r.p99)} | ${r.rssMb === undefined ? "—" : fmt(r.rssMb)} | ${r.note} |`,
    ),
  ].join("\n");
}

if (import.meta.main && process.argv[2] === CHILD_FLAG && process.argv[3] === "receiver")
  await childReceiver(process.argv[4] ?? "net");
