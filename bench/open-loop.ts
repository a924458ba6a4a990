/**
 * An open-loop load generator: requests leave at evenly spaced times (rate per second), whether or not
 * earlier ones were answered, and each latency counts from the time its request was due, so a stalled
 * server is charged for the requests that queued behind the stall (no coordinated omission).
 *
 * Why not autocannon's `overallRate`: each of its connections sends its share of a second's requests as
 * fast as answers come back, then waits for the next second. At 5,000/s over 100 connections every request
 * of a second arrived within about 150 ms and nothing in the other 850 ms (bench/README.md, session 17), so
 * its "offered 5,000/s" measured how fast a server drains a burst, not how it serves a steady 5,000/s.
 *
 * HTTP/1.1 over plain sockets, one request at a time per keep-alive connection: a client library costs
 * several times more CPU per request, and this runs on the cores the broker uses too. It reads only what
 * the bench's servers send: a status line and a Content-Length body.
 */
import { connect, type Socket } from "node:net";

export interface OpenLoopOptions {
  host: string;
  port: number;
  path: string;
  /** Requests per second. */
  rate: number;
  /** Seconds to send for, measured. */
  duration: number;
  /**
   * Seconds of the same load first, answered and counted but outside the latency figures (this process's
   * code and the connections warm up: a cold first second alone put p99 at 60 ms).
   */
  warmup?: number;
  /** Most connections open at once; one is opened when every open one is busy. */
  connections: number;
  /** The JSON body of request number `n` (0-based): a new userID each, like autocannon's [<id>]. */
  body: (n: number) => string;
  /** Give up on a request after this long (counted as a timeout; its connection is closed). */
  timeoutMs?: number;
}

/** What both generators count. */
export interface LoadResult {
  /** Requests sent; each was answered, failed or timed out by the time the run resolves. */
  sent: number;
  "2xx": number;
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Seconds from the start to the last answer. */
  duration: number;
  /** Milliseconds to each request's whole answer (open loop: from its due time, closed: from its sending). */
  latency: { p50: number; p99: number; p999: number; max: number };
}

/** The open loop's counts include its warm-up; its latencies do not. */
export interface OpenLoopResult extends LoadResult {
  /** Most requests sent in any 100 ms of the measured part: rate / 10 when the pacing held. */
  peakPer100Ms: number;
  /** Connections opened. */
  connectionsUsed: number;
  /**
   * Milliseconds this process itself was late sending (its tick ran after a request's due time), the
   * worst of the measured part: beyond a few ms it, not the server, was stalled (another process took the
   * core), and the latencies include that.
   */
  maxSendLag: number;
}

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  return sorted[Math.min(sorted.length - 1, Math.ceil((p / 100) * sorted.length) - 1)] as number;
}

const IDLE_CLOSE_MS = 4000;
const CONTENT_LENGTH = /\r\ncontent-length:[ \t]*(\d+)/i;

/**
 * Reads one answer at a time off a connection: the status once its Content-Length body is whole,
 * undefined while more is to come, "bad" for an answer without a Content-Length (never from these servers).
 */
class AnswerReader {
  #buf: Buffer | undefined;

  push(chunk: Buffer): number | "bad" | undefined {
    const buf = this.#buf ? Buffer.concat([this.#buf, chunk]) : chunk;
    this.#buf = buf;
    const end = buf.indexOf("\r\n\r\n");
    if (end < 0) return undefined;
    const length = CONTENT_LENGTH.exec(buf.toString("latin1", 0, end));
    if (!length) return "bad";
    if (buf.length < end + 4 + Number(length[1])) return undefined;
    this.#buf = undefined;
    return Number(buf.toString("latin1", 9, 12));
  }
}

/** The bytes of one POST with a JSON body. */
function postRequest(head: string, body: string): string {
  return `${head}content-length: ${Buffer.byteLength(body)}\r\n\r\n${body}`;
}

function requestHead(opts: { host: string; port: number; path: string }): string {
  return `POST ${opts.path} HTTP/1.1\r\nhost: ${opts.host}:${opts.port}\r\ncontent-type: application/json\r\n`;
}

function latencyFigures(latencies: Float64Array, count: number): OpenLoopResult["latency"] {
  const sorted = latencies.subarray(0, count).sort();
  return {
    p50: percentile(sorted, 50),
    p99: percentile(sorted, 99),
    p999: percentile(sorted, 99.9),
    max: percentile(sorted, 100),
  };
}

interface Pending {
  n: number;
  due: number;
}

/** Sends `rate × (warmup + duration)` requests evenly spaced in time; resolves when each is answered or failed. */
export async function openLoop(opts: OpenLoopOptions): Promise<OpenLoopResult> {
  const warm = Math.round(opts.rate * (opts.warmup ?? 0));
  const total = warm + Math.round(opts.rate * opts.duration);
  const interval = 1000 / opts.rate;
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const head = requestHead(opts);
  const latencies = new Float64Array(total);
  const sentAt = new Float64Array(total);
  let measured = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let settled = 0;
  let lastDone = 0;
  let opened = 0;
  let maxSendLag = 0;
  const idle: Conn[] = [];
  const queue: Pending[] = [];
  let queueAt = 0;
  const start = performance.now();
  let allSettled: () => void = () => {};

  const finish = (p: Pending, status: number | "error" | "timeout") => {
    const done = performance.now();
    if (status === "error") errors++;
    else if (status === "timeout") timeouts++;
    else {
      if (status >= 200 && status < 300) ok++;
      else non2xx++;
      if (p.n >= warm) latencies[measured++] = done - p.due;
      lastDone = done;
    }
    if (++settled === total) allSettled();
  };

  class Conn {
    readonly socket: Socket;
    current: Pending | undefined;
    readonly reader = new AnswerReader();
    timer: NodeJS.Timeout | undefined;
    /** When it last went idle: Node servers close a connection idle for 5 s (keepAliveTimeout). */
    idleSince = 0;

    constructor() {
      opened++;
      this.socket = connect({ host: opts.host, port: opts.port, noDelay: true });
      this.socket.on("connect", () => this.next());
      this.socket.on("data", (chunk: Buffer) => this.onData(chunk));
      this.socket.on("error", () => {});
      this.socket.on("close", () => {
        opened--;
        this.fail("error");
        // Nothing left to take the queue (the server refuses connections): those requests fail too.
        if (opened === 0)
          for (; queueAt < queue.length; queueAt++) finish(queue[queueAt] as Pending, "error");
      });
    }

    send(p: Pending): void {
      this.current = p;
      this.socket.write(postRequest(head, opts.body(p.n)));
      this.timer = setTimeout(() => {
        this.fail("timeout");
        this.socket.destroy();
      }, timeoutMs);
    }

    /** Takes the next queued request, or waits among the idle connections. */
    next(): void {
      const p = queueAt < queue.length ? queue[queueAt++] : undefined;
      if (queueAt === queue.length) {
        queue.length = 0;
        queueAt = 0;
      }
      if (p) this.send(p);
      else {
        this.idleSince = performance.now();
        idle.push(this);
      }
    }

    onData(chunk: Buffer): void {
      const status = this.reader.push(chunk);
      if (status === undefined) return;
      if (status === "bad") {
        this.socket.destroy();
        return;
      }
      const p = this.current as Pending;
      this.current = undefined;
      clearTimeout(this.timer);
      finish(p, status);
      this.next();
    }

    fail(status: "error" | "timeout"): void {
      clearTimeout(this.timer);
      const i = idle.indexOf(this);
      if (i >= 0) idle.splice(i, 1);
      const p = this.current;
      this.current = undefined;
      if (p) finish(p, status);
    }
  }

  const dispatch = (p: Pending) => {
    let conn = idle.pop();
    // One idle for 4 s is closed rather than used: the server may be closing it at this very moment (its
    // 5 s keep-alive timeout), and a request written into that race fails. Real clients do the same.
    while (conn && performance.now() - conn.idleSince > IDLE_CLOSE_MS) {
      conn.socket.end();
      conn = idle.pop();
    }
    if (conn) conn.send(p);
    else {
      queue.push(p);
      if (opened < opts.connections) new Conn();
    }
  };

  const settledAll = new Promise<void>((done) => {
    allSettled = done;
  });
  await new Promise<void>((finished) => {
    let sent = 0;
    // A 1 ms tick sends every request that has come due; each one's latency counts from its due time.
    const tick = () => {
      const now = performance.now();
      const due = Math.min(total, Math.floor((now - start) / interval) + 1);
      for (; sent < due; sent++) {
        sentAt[sent] = now - start;
        if (sent >= warm) maxSendLag = Math.max(maxSendLag, now - (start + sent * interval));
        dispatch({ n: sent, due: start + sent * interval });
      }
      if (sent < total) setTimeout(tick, 1);
      else finished();
    };
    tick();
  });
  await settledAll;
  for (const conn of idle) conn.socket.end();

  // How even the sending was: the most requests that left in any 100 ms window.
  let peak = 0;
  for (let i = warm, j = warm; i < total; i++) {
    while ((sentAt[i] as number) - (sentAt[j] as number) >= 100) j++;
    peak = Math.max(peak, i - j + 1);
  }
  return {
    sent: total,
    "2xx": ok,
    non2xx,
    errors,
    timeouts,
    duration: ((lastDone || performance.now()) - start) / 1000,
    latency: latencyFigures(latencies, measured),
    peakPer100Ms: peak,
    connectionsUsed: opened,
    maxSendLag,
  };
}

export interface ClosedLoopOptions {
  host: string;
  port: number;
  path: string;
  /** Keep-alive connections, each with one request at a time: the next leaves when the last is answered. */
  connections: number;
  /** Seconds to send for. */
  duration: number;
  /** The JSON body of request number `n` (0-based): a new userID each, like autocannon's [<id>]. */
  body: (n: number) => string;
  /** Give up on a request after this long (counted as a timeout; its connection is replaced). */
  timeoutMs?: number;
}

export interface ClosedLoopResult extends LoadResult {
  /** Connections opened, replacements of failed ones included. */
  connectionsOpened: number;
}

/**
 * A closed-loop load generator, for the highest rate a server sustains at `connections` connections (what
 * autocannon measures without a rate), at about a third of autocannon's CPU per request: on these 2-core
 * machines autocannon saturated its core before the bare endpoint did (bench/README.md, session 18). A
 * connection that fails is replaced (after 10 ms) until the time is up; its request counts as an error.
 */
export async function closedLoop(opts: ClosedLoopOptions): Promise<ClosedLoopResult> {
  const head = requestHead(opts);
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const start = performance.now();
  const end = start + opts.duration * 1000;
  let latencies = new Float64Array(1 << 16);
  let answered = 0;
  let sent = 0;
  let ok = 0;
  let non2xx = 0;
  let errors = 0;
  let timeouts = 0;
  let opened = 0;
  let open = 0;
  let lastDone = start;
  let allClosed: () => void = () => {};
  const closed = new Promise<void>((done) => {
    allClosed = done;
  });

  const connection = () => {
    opened++;
    open++;
    const socket = connect({ host: opts.host, port: opts.port, noDelay: true });
    const reader = new AnswerReader();
    let sentAt = 0;
    let inFlight = false;
    let timer: NodeJS.Timeout | undefined;
    const send = () => {
      if (performance.now() >= end) {
        socket.end();
        return;
      }
      inFlight = true;
      sentAt = performance.now();
      socket.write(postRequest(head, opts.body(sent++)));
      timer = setTimeout(() => {
        timeouts++;
        inFlight = false;
        socket.destroy();
      }, timeoutMs);
    };
    socket.on("connect", send);
    socket.on("data", (chunk: Buffer) => {
      const status = reader.push(chunk);
      if (status === undefined) return;
      clearTimeout(timer);
      inFlight = false;
      if (status === "bad") {
        errors++;
        socket.destroy();
        return;
      }
      lastDone = performance.now();
      if (answered === latencies.length) {
        const grown = new Float64Array(latencies.length * 2);
        grown.set(latencies);
        latencies = grown;
      }
      latencies[answered++] = lastDone - sentAt;
      if (status >= 200 && status < 300) ok++;
      else non2xx++;
      send();
    });
    socket.on("error", () => {});
    socket.on("close", () => {
      clearTimeout(timer);
      open--;
      if (inFlight) errors++;
      if (performance.now() < end) {
        // A refused or broken connection is replaced, not retried in a hot loop.
        if (!inFlight && sentAt === 0) errors++;
        open++;
        setTimeout(() => {
          open--;
          connection();
        }, 10);
      } else if (open === 0) allClosed();
    });
  };

  for (let i = 0; i < opts.connections; i++) connection();
  await closed;
  return {
    sent,
    "2xx": ok,
    non2xx,
    errors,
    timeouts,
    duration: (lastDone - start) / 1000,
    latency: latencyFigures(latencies, answered),
    connectionsOpened: opened,
  };
}
