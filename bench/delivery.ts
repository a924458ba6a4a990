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
 */
import { type ChildProcess, fork, spawn } from "node:child_process";
import { closeSync, openSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer as createNetServer, type Server as NetServer, type Socket } from "node:net";
import { loadavg, tmpdir } from "node:os";
import { dirname, join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Agent, Pool } from "undici";
import { type SendTarget, sendTarget, sendWebhook } from "../src/delivery/send.ts";
import { generateSecret, secretKey } from "../src/delivery/sign.ts";
import { PAYLOAD } from "./payload.ts";

const CHILD_FLAG = "--bench-child";
const HERE = new URL(import.meta.url).pathname;
const REPO = dirname(dirname(HERE));
const ADMIN_TOKEN = "bench-admin-token-0123456789";
const TOPIC = "events";
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

/** Wall-clock milliseconds with sub-millisecond resolution; every process on this machine shares the clock. */
const now = () => performance.timeOrigin + performance.now();

interface PathStats {
  count: number;
  distinct: number;
  first: number;
  last: number;
}

type ReceiverMessage =
  | { type: "ready"; url: string }
  | { type: "stats"; stats: Record<string, PathStats> }
  | { type: "arrivals"; arrivals: Array<[id: string, at: number, timestamp: number]> };

// ---------------------------------------------------------------------------------------------------------
// Receiver child
// ---------------------------------------------------------------------------------------------------------

/** What the receiver keeps per path; `arrivals` only under /lat/. */
interface PathRecord extends PathStats {
  ids: Set<string>;
  arrivals?: Map<string, [at: number, timestamp: number]>;
}

/**
 * Records one request whose body is in: count, distinct event ids (webhook-id), first and last arrival, and
 * under /lat/ the event's arrival and `timestamp`. `body` is called only there, once per event id.
 */
type Recorder = (at: number, path: string, id: string | undefined, body: () => string) => void;

/**
 * Answers 200 with an empty body as soon as a request's body is in and records it (Recorder); the stats,
 * arrivals and stop messages read it back. `kind` "net" (default): the lean node:net server below; "node":
 * node:http, the previous receiver, kept for comparison (`--receiver node`).
 */
async function childReceiver(kind: string): Promise<void> {
  const stats = new Map<string, PathRecord>();
  const record: Recorder = (at, path, id, body) => {
    let s = stats.get(path);
    if (!s) {
      s = { count: 0, distinct: 0, first: at, last: at, ids: new Set() };
      if (path.startsWith("/lat/")) s.arrivals = new Map();
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
  process.on("message", (m: { type: string; path?: string }) => {
    if (m.type === "stats") {
      const out: Record<string, PathStats> = {};
      for (const [path, { count, distinct, first, last }] of stats)
        out[path] = { count, distinct, first, last };
      process.send?.({ type: "stats", stats: out });
    } else if (m.type === "arrivals") {
      const a = stats.get(m.path ?? "")?.arrivals ?? new Map();
      process.send?.({ type: "arrivals", arrivals: [...a].map(([id, [at, ts]]) => [id, at, ts]) });
    } else if (m.type === "stop") {
      closeAll();
      server.close(() => process.exit(0));
    }
  });
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
      res.writeHead(200, { "content-length": "0" });
      res.end();
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
    const complete = (head: RequestHead, parts: Buffer | Buffer[]) => {
      record(now(), head.path, head.id, () =>
        (Array.isArray(parts) ? Buffer.concat(parts) : parts).toString(),
      );
    };
    socket.on("data", (chunk: Buffer) => {
      if (ended) return; // after a 400 or a connection: close, whatever else comes is not read
      let out = "";
      let buf = chunk;
      let pos = 0;
      if (pending) {
        pos = Math.min(pending.missing, buf.length);
        pending.parts.push(buf.subarray(0, pos));
        pending.missing -= pos;
        if (pending.missing === 0) {
          complete(pending.head, pending.parts);
          out += OK;
          ended = pending.head.close;
          pending = undefined;
        }
      } else if (partialHead) {
        buf = Buffer.concat([partialHead, chunk]);
        partialHead = undefined;
      }
      while (!ended && pos < buf.length) {
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
        complete(head, buf.subarray(bodyStart, bodyEnd));
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

function nextMessage<T extends ReceiverMessage["type"]>(
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

class ReceiverClient {
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

async function freePort(): Promise<number> {
  return new Promise((done, fail) => {
    const server = createNetServer();
    server.on("error", fail);
    server.listen(0, "127.0.0.1", () => {
      const address = server.address();
      const port = typeof address === "object" && address ? address.port : 0;
      server.close(() => done(port));
    });
  });
}

/** Resident and peak resident set size of a process, MiB, from /proc. */
function memoryOf(pid: number): { rssMb: number; peakMb: number } {
  const status = readFileSync(`/proc/${pid}/status`, "utf8");
  const kb = (field: string) =>
    Number(new RegExp(`^${field}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? Number.NaN);
  return { rssMb: kb("VmRSS") / 1024, peakMb: kb("VmHWM") / 1024 };
}

/** CPU seconds (user + system) a process has used, from /proc/<pid>/stat (clock ticks of 1/100 s). */
function cpuSecondsOf(pid: number): number {
  // The command name (field 2) may hold spaces; the fields after its closing parenthesis are fixed.
  const fields = readFileSync(`/proc/${pid}/stat`, "utf8").split(") ")[1]?.split(" ") ?? [];
  return (Number(fields[11]) + Number(fields[12])) / 100;
}

/** Every sample of a metric, over all its series. */
function metricValues(text: string, name: string): number[] {
  return [...text.matchAll(new RegExp(`^${name}(?:\\{[^}]*\\})? (\\S+)$`, "gm"))].map((m) => Number(m[1]));
}

/** The sum of a metric's series in the gateway's /metrics text (NaN when absent). */
function metricSum(text: string, name: string): number {
  const values = metricValues(text, name);
  return values.length ? values.reduce((a, b) => a + b, 0) : Number.NaN;
}

async function scrape(gw: GatewayProcess): Promise<string> {
  try {
    return await (await fetch(`${gw.url}/metrics`)).text();
  } catch {
    return "";
  }
}

/** The largest sample of a metric over its series (NaN when it has none). */
function metricMax(text: string, name: string): number {
  const values = metricValues(text, name);
  return values.length ? Math.max(...values) : Number.NaN;
}

/** V8 heap in use: the main thread's plus every delivery thread's (each thread has a heap of its own). */
async function heapUsedMb(gw: GatewayProcess): Promise<number> {
  const text = await scrape(gw);
  const threads = metricSum(text, "delivery_thread_heap_used_bytes");
  return (
    (metricSum(text, "nodejs_heap_size_used_bytes") + (Number.isFinite(threads) ? threads : 0)) / 2 ** 20
  );
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return Number.NaN;
  return sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] as number;
}

/** The gateway as `node src/main.ts`, its output in a log file (printed when something fails). */
class GatewayProcess {
  readonly url: string;
  readonly logPath: string;
  #env: Record<string, string>;
  #execArgv: string[];
  child: ChildProcess | undefined;
  #exited: Promise<void> = Promise.resolve();

  constructor(port: number, env: Record<string, string>, logPath: string, cpuProf: boolean) {
    this.url = `http://127.0.0.1:${port}`;
    this.#env = { ...env, PORT: String(port), HOST: "127.0.0.1" };
    this.logPath = logPath;
    this.#execArgv = cpuProf ? ["--cpu-prof", `--cpu-prof-dir=${PROFILE_DIR}`] : [];
  }

  get pid(): number {
    const pid = this.child?.pid;
    if (pid === undefined || this.child?.exitCode !== null) throw new Error("the gateway is not running");
    return pid;
  }

  spawn(): void {
    const fd = openSync(this.logPath, "a");
    const child = spawn(process.execPath, [...this.#execArgv, "src/main.ts"], {
      cwd: REPO,
      env: { ...process.env, ...this.#env },
      stdio: ["ignore", fd, fd],
    });
    closeSync(fd);
    this.child = child;
    this.#exited = new Promise((done) => child.once("exit", () => done()));
  }

  /** SIGTERM (graceful: workers leave their groups, so a restart does not wait out their sessions). */
  async stop(timeoutMs = 30_000): Promise<boolean> {
    const child = this.child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return true;
    child.kill("SIGTERM");
    const graceful = await Promise.race([this.#exited.then(() => true), sleep(timeoutMs).then(() => false)]);
    if (!graceful) {
      child.kill("SIGKILL");
      await this.#exited;
    }
    return graceful;
  }

  logTail(chars = 4000): string {
    try {
      return readFileSync(this.logPath, "utf8").slice(-chars);
    } catch {
      return "";
    }
  }

  async api<T = unknown>(method: string, path: string, body?: unknown): Promise<T> {
    const res = await fetch(`${this.url}${path}`, {
      method,
      headers: { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path} → ${res.status}: ${text}`);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  /** A fresh process on the same database, so a run's RSS is not what an earlier run left behind. */
  async restart(): Promise<void> {
    await this.stop();
    this.spawn();
    await this.waitReady(120_000);
    await this.acceptOne(120_000);
  }

  /** Until GET /readyz answers 200. */
  async waitReady(timeoutMs: number): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (this.child?.exitCode !== null) throw new Error(`the gateway exited:\n${this.logTail()}`);
      const ok = await fetch(`${this.url}/readyz`).then(
        (r) => r.status === 200,
        () => false,
      );
      if (ok) return;
      if (Date.now() > deadline) throw new Error(`the gateway was not ready within ${timeoutMs} ms`);
      await sleep(25);
    }
  }

  /** Until one event is accepted (202): the topics exist and the producer is connected. Returns its id. */
  async acceptOne(timeoutMs: number, userID = "bench-probe"): Promise<string> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const res = await fetch(`${this.url}/api/singleEvent`, {
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
}

/** Registers a destination; a 503 (Kafka could not pin the group yet, e.g. just after topic creation) is retried. */
async function registerDestination(gw: GatewayProcess, url: string, name: string): Promise<string> {
  for (let attempt = 1; ; attempt++) {
    try {
      const d = await gw.api<{ id: string }>("POST", "/api/destinations", {
        url,
        name,
        maxConcurrency: concurrency,
      });
      return d.id;
    } catch (err) {
      if (attempt >= 10 || !(err as Error).message.includes("→ 503")) throw err;
      await sleep(500);
    }
  }
}

/** Runs `fn` over `items` with at most `width` at a time. */
async function inParallel<T, R>(items: T[], width: number, fn: (item: T) => Promise<R>): Promise<R[]> {
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
async function preload(brokers: string[], count: number): Promise<number> {
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
function sampleRecord(): string {
  const id = "01941f29-7c4a-7b6e-9d3c-2a1f0e9b8c7d";
  return JSON.stringify({
    id,
    userID: "user-42",
    type: "order.created",
    timestamp: new Date().toISOString(),
    payload: PAYLOAD,
  });
}

function eventBody(i: number): string {
  return JSON.stringify({ userID: `user-${i % users}`, type: "order.created", payload: PAYLOAD });
}

// ---------------------------------------------------------------------------------------------------------
// Phases
// ---------------------------------------------------------------------------------------------------------

interface Row {
  name: string;
  rate: string;
  p50: number | undefined;
  p99: number | undefined;
  rssMb: number | undefined;
  note: string;
}

const fmt = (n: number, d = 0) =>
  Number.isFinite(n)
    ? n.toLocaleString("en-US", { maximumFractionDigits: d, minimumFractionDigits: d })
    : "—";

/**
 * (1) raw undici POSTs of the same body to the receiver, `width` in flight on a keep-alive Pool; (1b) the
 * same through the gateway's own sender (an Agent as each worker has, Standard Webhooks signature, snippet,
 * deadline timer): the client CPU per request of the two, side by side.
 */
async function ceiling(
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

/**
 * (2)/(3) drain: `count` destinations are registered, then disabled (their groups stay pinned at the topic
 * end), N events are put in the topic, the destinations are enabled together and the receiver is polled
 * until every one has all N.
 */
async function drain(
  gw: GatewayProcess,
  receiver: ReceiverClient,
  brokers: string[],
  label: string,
  count: number,
  events: number,
  log: (s: string) => void,
): Promise<Row[]> {
  const paths = Array.from({ length: count }, (_, i) => `/${label}/${i}`);
  const ids = await inParallel(paths, 4, (p) => registerDestination(gw, `${receiver.url}${p}`, `bench ${p}`));
  await inParallel(ids, 4, (id) => gw.api("PATCH", `/api/destinations/${id}`, { disabled: true }));
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
    await Promise.all(ids.map((id) => gw.api("PATCH", `/api/destinations/${id}`, { disabled: false })));
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
    await inParallel(ids, 4, (id) => gw.api("DELETE", `/api/destinations/${id}`));
  }
}

/**
 * (4) accept→receive latency: `rate` events/s offered through POST /api/singleEvent by a paced loop (the
 * number due so far is sent each millisecond tick, never waiting on answers), warm-up first.
 */
async function latency(
  gw: GatewayProcess,
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
    await gw.acceptOne(30_000, "bench-latency-probe");
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
    await inParallel(ids, 4, (id) => gw.api("DELETE", `/api/destinations/${id}`));
  }
}

/**
 * (5) start-up: `count` destinations registered, the gateway stopped (SIGTERM) and spawned again; time until
 * an event accepted after /readyz has reached every destination (so every worker runs and has joined).
 */
async function startup(
  gw: GatewayProcess,
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
  const graceful = await gw.stop();
  const stopSeconds = (now() - stopStart) / 1000;
  const spawnedAt = now();
  gw.spawn();
  await gw.waitReady(120_000);
  const readyAt = now();
  await gw.acceptOne(120_000, "bench-startup");
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

function table(rows: Row[]): string {
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
  const receiverChild = fork(HERE, [CHILD_FLAG, "receiver", receiverKind], {
    stdio: ["ignore", "inherit", "inherit", "ipc"],
  });
  const gw = new GatewayProcess(
    await freePort(),
    {
      KAFKA_BROKERS: brokers.join(","),
      DB_PATH: dbPath,
      ADMIN_TOKEN,
      ALLOW_PRIVATE_DESTINATIONS: "true",
      LOG_LEVEL: process.env.LOG_LEVEL ?? "warn",
      EVENTS_TOPIC: TOPIC,
      DEAD_LETTER_TOPIC: `${TOPIC}.dead-letter`,
    },
    logPath,
    values["cpu-prof"],
  );
  const rows: Row[] = [];
  let failed = false;
  try {
    const receiver = new ReceiverClient(receiverChild, (await nextMessage(receiverChild, "ready")).url);

    if (runs.has("1")) {
      log("(1) ceiling: raw undici POSTs to the receiver …");
      rows.push(await ceiling(receiver, concurrency, ceilingSeconds, false));
      rows.push(await ceiling(receiver, concurrency, ceilingSeconds, true));
    }

    log("starting the gateway …");
    const spawnedAt = now();
    gw.spawn();
    await gw.waitReady(120_000);
    await gw.acceptOne(120_000);
    const idle = memoryOf(gw.pid);
    log(`  up in ${((now() - spawnedAt) / 1000).toFixed(1)} s, RSS ${fmt(idle.rssMb)} MiB`);

    if (runs.has("2")) {
      log("(2) drain, 1 destination …");
      rows.push(...(await drain(gw, receiver, brokers, "one", 1, events, log)));
    }
    if (runs.has("3")) {
      if (runs.has("2")) await gw.restart();
      log(`(3) drain, ${destinations} destinations …`);
      rows.push(...(await drain(gw, receiver, brokers, "ten", destinations, events, log)));
    }
    if (runs.has("4")) {
      if (runs.has("2") || runs.has("3")) await gw.restart();
      log("(4) latency, 1 destination …");
      rows.push(await latency(gw, receiver, "(4)", 1, rate, duration, warmup, log));
    }
    if (runs.has("4b")) {
      if (runs.has("2") || runs.has("3") || runs.has("4")) await gw.restart();
      log(`(4b) latency, ${destinations} destinations …`);
      rows.push(await latency(gw, receiver, "(4b)", destinations, rate10, duration, warmup, log));
    }
    if (runs.has("4i")) {
      // Diagnostic, not in the default runs: the same offered load with no destination = ingest's share.
      await gw.restart();
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
    log(`gateway log tail (${logPath}):\n${gw.logTail()}`);
    if (rows.length) log(`rows so far:\n${table(rows)}`);
  } finally {
    await gw.stop();
    receiverChild.send({ type: "stop" });
    await Promise.race([new Promise((done) => receiverChild.once("exit", done)), sleep(5000)]);
    if (receiverChild.exitCode === null) receiverChild.kill("SIGKILL");
    await kafka.stop();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
    if (!failed) rmSync(logPath, { force: true });
  }
  if (failed) process.exitCode = 1;
}

const childKind = process.argv[2] === CHILD_FLAG ? process.argv[3] : undefined;
if (childKind === "receiver") await childReceiver(process.argv[4] ?? "net");
else await main();
