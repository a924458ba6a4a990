/**
 * The whole gateway as a child process (`node src/main.ts`), for every test and benchmark that needs a real
 * process: SIGKILL it, stop it gracefully, restart it on the same SQLite file and topics, run several against
 * one cluster, measure it without sharing an event loop with the test's receivers.
 *
 *   gatewayEnv(overrides)             fresh names: SQLite file, topics, consumer-group prefix; PORT=0, ADMIN_TOKEN
 *   withFreshDb(env)                  the same env with a SQLite file of its own (another gateway, or an empty DB)
 *   startGateway(t, env, opts)        starts one; t's after hook kills it and removes its database
 *   startGateways(t, n, base, opts)   n gateways on one base env (brokers, group prefix, topics), own DB and port
 *   ChildGateway                      start / kill / stop / restart / waitReady, log lines, and GatewayClient's
 *   GatewayClient                     get / post / patch / delete with the admin token, registerDestination,
 *                                     ingestBatch — for any gateway URL, in-process ones too
 */
import { type ChildProcess, spawn, spawnSync } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { createWriteStream, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import type { Readable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { createKafka } from "../src/kafka/client.ts";
import { testBrokers, uniqueName, waitUntil } from "./helpers.ts";

const ROOT = resolve(import.meta.dirname, "..");

/** The admin token gatewayEnv() gives every gateway: unique per test process. */
export const ADMIN_TOKEN = `test-admin-${randomBytes(12).toString("hex")}`;
/** `Authorization` header for the admin API of a gateway running with ADMIN_TOKEN. */
export const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}` };

/** A test context (`t`), or `{ after }` from node:test for a file-level hook. */
export interface AfterHook {
  after(fn: () => unknown): void;
}

/** Environment of `node src/main.ts` (PATH and HOME are added); the named variables are always set. */
export interface GatewayEnv {
  KAFKA_BROKERS: string;
  DB_PATH: string;
  EVENTS_TOPIC: string;
  DEAD_LETTER_TOPIC: string;
  [name: string]: string;
}

/** The exit code, or the name of the signal that ended the process. */
export type Exit = number | string;

// ---------------------------------------------------------------------------------------------------------
// Environment

const freshDbPath = () => join(tmpdir(), `${uniqueName("gw")}.db`);

/**
 * Environment for one gateway with fresh names (SQLite file, topics, consumer-group prefix), the test
 * brokers, PORT=0 (the URL is read from the "gateway listening" log line, so no other process can take the
 * port first), ADMIN_TOKEN, private destinations allowed, info-level logs. `overrides` win; an override of
 * `undefined` leaves the variable unset (e.g. `ADMIN_TOKEN: undefined`).
 */
export function gatewayEnv(overrides: Record<string, string | undefined> = {}): GatewayEnv {
  const env: Record<string, string | undefined> = {
    KAFKA_BROKERS: overrides.KAFKA_BROKERS ?? testBrokers().join(","),
    HOST: "127.0.0.1",
    PORT: "0",
    DB_PATH: freshDbPath(),
    EVENTS_TOPIC: uniqueName("gw-events"),
    DEAD_LETTER_TOPIC: uniqueName("gw-dead"),
    CONSUMER_GROUP_PREFIX: uniqueName("gw"),
    TOPIC_PARTITIONS: "6",
    ADMIN_TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
    LOG_LEVEL: "info",
    ...overrides,
  };
  return Object.fromEntries(Object.entries(env).filter(([, value]) => value !== undefined)) as GatewayEnv;
}

/** `env` with a new, empty SQLite file: brokers, topics and consumer-group prefix stay shared. */
export function withFreshDb(env: GatewayEnv): GatewayEnv {
  return { ...env, DB_PATH: freshDbPath() };
}

/** Removes a SQLite file and its -wal and -shm. */
export function removeDb(path: string): void {
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
}

/**
 * Deletes the env's events and dead-letter topics and its shared-state topics; best effort (the brokers may
 * be gone already).
 */
export async function dropTopics(env: GatewayEnv): Promise<void> {
  const prefix = env.CONSUMER_GROUP_PREFIX ?? "gw";
  const topics = [
    env.EVENTS_TOPIC,
    env.DEAD_LETTER_TOPIC,
    env.CONFIG_TOPIC ?? `${prefix}.config`,
    env.OUTCOMES_TOPIC ?? `${prefix}.outcomes`,
    env.IDEMPOTENCY_TOPIC ?? `${prefix}.idempotency`,
  ];
  const admin = createKafka({
    brokers: env.KAFKA_BROKERS.split(","),
    clientId: uniqueName("gw-cleanup"),
    overrides: { retry: { retries: 2 } },
  }).admin();
  try {
    await admin.connect();
    await admin.deleteTopics({ topics });
  } catch {
    // nothing to delete, or no broker left to ask
  } finally {
    await admin.disconnect().catch(() => {});
  }
}

// ---------------------------------------------------------------------------------------------------------
// Admin and ingest API

/** A non-2xx answer. */
export class HttpError extends Error {
  readonly status: number;
  readonly body: string;
  constructor(method: string, path: string, status: number, body: string) {
    super(`${method} ${path} → ${status}: ${body}`);
    this.status = status;
    this.body = body;
  }
}

export interface RequestOptions {
  /** Aborts the request after this many ms. */
  timeoutMs?: number;
  headers?: Record<string, string>;
}

export interface EventToSend {
  userID: string;
  type?: string;
  payload: unknown;
}

export type Destination = { id: string; secret: string } & Record<string, unknown>;

/** The HTTP API of one gateway: admin routes with its token (none when `token` is undefined), and ingest. */
export class GatewayClient {
  protected baseUrl: string | undefined;
  readonly token: string | undefined;

  constructor(url: string | undefined, token: string | undefined = ADMIN_TOKEN) {
    this.baseUrl = url;
    this.token = token;
  }

  /** e.g. http://127.0.0.1:41234 */
  get url(): string {
    if (!this.baseUrl) throw new Error("the gateway has not started");
    return this.baseUrl;
  }

  /** A request with the admin token and `body` as JSON; the raw answer. */
  request(method: string, path: string, body?: unknown, opts: RequestOptions = {}): Promise<Response> {
    const auth: Record<string, string> = this.token ? { authorization: `Bearer ${this.token}` } : {};
    return this.#send(method, path, body, { ...opts, headers: { ...auth, ...opts.headers } });
  }

  /** The JSON answer (undefined when empty); HttpError on anything but 2xx. */
  async json<T>(method: string, path: string, body?: unknown, opts?: RequestOptions): Promise<T> {
    const res = await this.request(method, path, body, opts);
    const text = await res.text();
    if (!res.ok) throw new HttpError(method, path, res.status, text);
    return (text ? JSON.parse(text) : undefined) as T;
  }

  get<T = unknown>(path: string, opts?: RequestOptions): Promise<T> {
    return this.json<T>("GET", path, undefined, opts);
  }

  post<T = unknown>(path: string, body: unknown, opts?: RequestOptions): Promise<T> {
    return this.json<T>("POST", path, body, opts);
  }

  patch<T = unknown>(path: string, body: unknown, opts?: RequestOptions): Promise<T> {
    return this.json<T>("PATCH", path, body, opts);
  }

  delete<T = unknown>(path: string, opts?: RequestOptions): Promise<T> {
    return this.json<T>("DELETE", path, undefined, opts);
  }

  /**
   * POST /api/destinations. Until the gateway has created its topics the API answers 503 (the consumer
   * group cannot be pinned yet): retried for `retryForMs` (default 60 s).
   */
  async registerDestination(
    body: Record<string, unknown>,
    opts: RequestOptions & { retryForMs?: number } = {},
  ): Promise<Destination> {
    const deadline = Date.now() + (opts.retryForMs ?? 60_000);
    for (;;) {
      try {
        return await this.post<Destination>("/api/destinations", body, opts);
      } catch (err) {
        if (!(err instanceof HttpError && err.status === 503) || Date.now() > deadline) throw err;
      }
      await sleep(250);
    }
  }

  /**
   * POST /api/events (without the admin token) until the gateway answers 202. A 503 (Kafka setup still
   * running, or an ack timeout) is retried with the same Idempotency-Key, so any event of the refused
   * attempt that did reach Kafka carries the id the final 202 reports: nothing unaccounted-for can be
   * delivered. Returns the accepted ids in the batch's order and how many attempts were refused.
   */
  async ingestBatch(
    events: EventToSend[],
    opts: RequestOptions & { retryForMs?: number } = {},
  ): Promise<{ ids: string[]; refused: number }> {
    const deadline = Date.now() + (opts.retryForMs ?? 60_000);
    const headers = { "idempotency-key": randomUUID(), ...opts.headers };
    for (let refused = 0; ; refused++) {
      const res = await this.#send("POST", "/api/events", { events }, { ...opts, headers });
      if (res.status === 202) return { ids: ((await res.json()) as { ids: string[] }).ids, refused };
      const text = await res.text();
      if (res.status !== 503 || Date.now() > deadline)
        throw new HttpError("POST", "/api/events", res.status, text);
      await sleep(200);
    }
  }

  #send(method: string, path: string, body: unknown, opts: RequestOptions): Promise<Response> {
    const json = body === undefined ? {} : { "content-type": "application/json" };
    return fetch(`${this.url}${path}`, {
      method,
      headers: { ...json, ...opts.headers },
      body: body === undefined ? undefined : JSON.stringify(body),
      signal: opts.timeoutMs === undefined ? undefined : AbortSignal.timeout(opts.timeoutMs),
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// The child process

export interface ChildGatewayOptions {
  /** Node's own flags for the gateway, e.g. `["--cpu-prof"]`. */
  execArgv?: string[];
  /** This process's environment beneath `env` (benchmarks); by default only PATH and HOME, so nothing leaks in. */
  inheritEnv?: boolean;
  /** Log lines kept in memory, the newest (default 10,000); `Infinity` keeps every line. */
  keepLines?: number;
  /** Also appends everything the process writes to this file (across restarts). */
  logFile?: string;
  /** How long start() waits for the URL and /readyz 200 (default 60 s). */
  readyTimeoutMs?: number;
}

/** Levels at which the gateway does not log "gateway listening". */
const QUIET = new Set(["fatal", "error", "warn", "silent"]);

/** `setpriv --pdeathsig KILL`: the kernel kills the gateway if the process that started it dies. */
let pdeathsig: boolean | undefined;
const hasPdeathsig = () =>
  (pdeathsig ??= process.platform === "linux" && spawnSync("setpriv", ["--version"]).status === 0);

/**
 * One gateway process at a time on a fixed env: start() it, kill() or stop() it, start() it again on the
 * same database and topics (with PORT=0 the URL changes: read `url` after each start).
 */
export class ChildGateway extends GatewayClient {
  readonly env: GatewayEnv;
  readonly #opts: ChildGatewayOptions;
  /** The current (or last) process; `signalled` once we have sent it a signal. */
  #run: { child: ChildProcess; exited: Promise<Exit>; signalled: boolean } | undefined;
  #lines: Array<{ stderr: boolean; text: string }> = [];
  #dropped = 0;
  #listeningAt: string | undefined;
  #onListening: ((url: string) => void) | undefined;

  constructor(env: GatewayEnv, opts: ChildGatewayOptions = {}) {
    super(undefined, env.ADMIN_TOKEN);
    this.env = env;
    this.#opts = opts;
  }

  get dbPath(): string {
    return this.env.DB_PATH;
  }

  get running(): boolean {
    const child = this.#run?.child;
    return !!child && child.exitCode === null && child.signalCode === null;
  }

  /** The running process's id. */
  get pid(): number {
    const pid = this.#run?.child.pid;
    if (!this.running || pid === undefined) throw new Error("the gateway is not running");
    return pid;
  }

  /** Resolves with the exit code (or the signal's name) once the current process is gone. */
  get exited(): Promise<Exit> {
    return this.#run?.exited ?? Promise.resolve("never started");
  }

  /** Spawns the process, learns its URL and (unless `ready: false`) waits until /readyz answers 200. */
  async start(opts: { ready?: boolean } = {}): Promise<this> {
    if (this.running) throw new Error(`the gateway is running already (pid ${this.pid})`);
    if ((this.env.PORT ?? "8080") === "0" && QUIET.has(this.env.LOG_LEVEL ?? "info")) {
      throw new Error("PORT=0 needs LOG_LEVEL info or finer: the URL is read from the log");
    }
    await this.exited; // the last lines of a previous process are in
    const timeoutMs = this.#opts.readyTimeoutMs ?? 60_000;
    const started = Date.now();
    this.#spawn();
    try {
      this.baseUrl = await this.#listeningUrl(timeoutMs);
      if (opts.ready !== false) await this.waitReady(timeoutMs - (Date.now() - started));
    } catch (err) {
      await this.kill(); // a half-started gateway must not outlive its failed start
      throw err;
    }
    return this;
  }

  /** Until GET /readyz answers 200, asking every `intervalMs`; fails with the log tail if the process exits. */
  async waitReady(timeoutMs = 60_000, intervalMs = 100): Promise<void> {
    await waitUntil(
      async () => {
        if (!this.running) throw new Error(`the gateway exited (${await this.exited}) before it was ready`);
        const res = await fetch(`${this.url}/readyz`).catch(() => undefined);
        await res?.body?.cancel();
        return res?.status === 200;
      },
      `${this.url}/readyz to answer 200`,
      Math.max(0, timeoutMs),
      intervalMs,
    ).catch((err: Error) => {
      throw new Error(`${err.message}:\n${this.output()}`);
    });
  }

  /** Sends `signal` (SIGKILL: no shutdown hook runs, nothing is flushed) and waits for the exit. */
  async kill(signal: NodeJS.Signals = "SIGKILL"): Promise<Exit> {
    if (this.#run && this.running) {
      this.#run.signalled = true;
      this.#run.child.kill(signal);
    }
    return this.exited;
  }

  /** SIGTERM (the gateway drains and leaves its groups); SIGKILL if it is still running after `graceMs`. */
  async stop(graceMs = 30_000): Promise<Exit> {
    const run = this.#run;
    if (!run || !this.running) return this.exited;
    run.signalled = true;
    run.child.kill("SIGTERM");
    const force = setTimeout(() => run.child.kill("SIGKILL"), graceMs);
    try {
      return await run.exited;
    } finally {
      clearTimeout(force);
    }
  }

  /** stop(), then start() on the same env. */
  async restart(): Promise<this> {
    await this.stop();
    return this.start();
  }

  /** kill(), then removes the database: what the after hook of startGateway does. */
  async dispose(): Promise<void> {
    await this.kill();
    removeDb(this.dbPath);
  }

  /** Kept stdout lines (pino's JSON logs), across restarts. */
  stdout(): string {
    return this.#text(this.#lines.filter((l) => !l.stderr));
  }

  /** Kept stderr lines, across restarts. */
  stderr(): string {
    return this.#text(this.#lines.filter((l) => l.stderr));
  }

  /** The newest lines of both streams, at most `chars` characters: for a failing test's message. */
  output(chars = 8000): string {
    let first = this.#lines.length;
    for (let size = 0; first > 0 && size < chars; ) size += (this.#lines[--first]?.text.length ?? 0) + 1;
    const dropped = this.#dropped + first;
    return (dropped ? `(${dropped} earlier lines left out)\n` : "") + this.#text(this.#lines.slice(first));
  }

  /** Kept lines, parsed (a line that is not JSON comes back as `{ msg: line }`). */
  logs(): Array<Record<string, unknown>> {
    return this.#lines.map(({ text }) => {
      try {
        return JSON.parse(text) as Record<string, unknown>;
      } catch {
        return { msg: text };
      }
    });
  }

  /** How many kept lines at level warn or above carry each `msg`. */
  warnings(): Map<string, number> {
    const counts = new Map<string, number>();
    for (const line of this.logs()) {
      if (typeof line.level === "number" && line.level < 40) continue;
      const msg = String(line.msg ?? "");
      counts.set(msg, (counts.get(msg) ?? 0) + 1);
    }
    return counts;
  }

  #text(lines: Array<{ text: string }>): string {
    return lines.map((l) => `${l.text}\n`).join("");
  }

  #spawn(): void {
    const main = [...(this.#opts.execArgv ?? []), join(ROOT, "src", "main.ts")];
    const [command, args] = hasPdeathsig()
      ? ["setpriv", ["--pdeathsig", "KILL", process.execPath, ...main]]
      : [process.execPath, main];
    const base = this.#opts.inheritEnv ? process.env : { PATH: process.env.PATH, HOME: process.env.HOME };
    const child = spawn(command, args, {
      cwd: ROOT,
      env: { ...base, ...this.env },
      stdio: ["ignore", "pipe", "pipe"],
    });
    this.#listeningAt = undefined;
    const file = this.#opts.logFile ? createWriteStream(this.#opts.logFile, { flags: "a" }) : undefined;
    const streams = [this.#collect(child.stdout, false, file), this.#collect(child.stderr, true, file)];
    const run = { child, exited: Promise.resolve<Exit>(0), signalled: false };
    run.exited = new Promise((done) => {
      child.once("exit", async (code, signal) => {
        // The last lines may still be in the pipes; a grandchild holding them must not hold us too.
        let timer: NodeJS.Timeout | undefined;
        await Promise.race([Promise.all(streams), new Promise((r) => (timer = setTimeout(r, 2000)))]);
        clearTimeout(timer);
        file?.end();
        const exit = code ?? signal ?? "unknown";
        // A gateway that dies on its own is a finding: show why, whatever the test does next.
        if (!run.signalled) {
          process.stderr.write(`gateway ${child.pid} exited by itself (${exit}):\n${this.output()}\n`);
        }
        done(exit);
      });
    });
    this.#run = run;
  }

  /** Splits a stream into kept lines; resolves when it closes. */
  #collect(stream: Readable | null, stderr: boolean, file: NodeJS.WritableStream | undefined): Promise<void> {
    if (!stream) return Promise.resolve();
    stream.setEncoding("utf8");
    let partial = "";
    stream.on("data", (chunk: string) => {
      file?.write(chunk);
      const parts = (partial + chunk).split("\n");
      partial = parts.pop() ?? "";
      for (const text of parts) this.#keep(stderr, text);
    });
    return new Promise((done) =>
      stream.once("close", () => {
        if (partial) this.#keep(stderr, partial);
        done();
      }),
    );
  }

  #keep(stderr: boolean, text: string): void {
    this.#lines.push({ stderr, text });
    const keep = this.#opts.keepLines ?? 10_000;
    if (this.#lines.length > keep * 1.5) {
      const drop = this.#lines.length - keep;
      this.#lines.splice(0, drop);
      this.#dropped += drop;
    }
    if (!stderr && !this.#listeningAt && text.includes('"gateway listening"')) {
      try {
        this.#listeningAt = (JSON.parse(text) as { url?: string }).url;
      } catch {
        return; // not pino's JSON line
      }
      if (this.#listeningAt) this.#onListening?.(this.#listeningAt);
    }
  }

  /** A fixed PORT gives the URL at once; PORT=0 waits for the "gateway listening" line. */
  #listeningUrl(timeoutMs: number): Promise<string> {
    const port = this.env.PORT ?? "8080";
    if (port !== "0") return Promise.resolve(`http://${this.env.HOST ?? "127.0.0.1"}:${port}`);
    if (this.#listeningAt) return Promise.resolve(this.#listeningAt);
    let timer: NodeJS.Timeout | undefined;
    return new Promise<string>((done, fail) => {
      this.#onListening = done;
      timer = setTimeout(
        () => fail(new Error(`not listening within ${timeoutMs} ms:\n${this.output()}`)),
        timeoutMs,
      );
      void this.exited.then((exit) =>
        fail(new Error(`the gateway exited (${exit}) before listening:\n${this.output()}`)),
      );
    }).finally(() => {
      clearTimeout(timer);
      this.#onListening = undefined;
    });
  }
}

// ---------------------------------------------------------------------------------------------------------
// Starting gateways with their cleanup

export interface StartOptions extends ChildGatewayOptions {
  /** Also deletes the env's topics afterwards (for a broker that outlives the test). */
  dropTopics?: boolean;
}

/** One after hook for all of `gateways`: SIGKILL each, remove their databases, drop their topics once. */
function cleanUpAfter(t: AfterHook, gateways: ChildGateway[], opts: StartOptions): void {
  t.after(async () => {
    await Promise.all(gateways.map((g) => g.dispose()));
    if (!opts.dropTopics) return;
    const envs = new Map(gateways.map((g) => [`${g.env.EVENTS_TOPIC}/${g.env.DEAD_LETTER_TOPIC}`, g.env]));
    for (const env of envs.values()) await dropTopics(env);
  });
}

/** Starts a gateway on `env`; `t`'s after hook kills it (whatever state it is in) and removes its database. */
export async function startGateway(
  t: AfterHook,
  env: GatewayEnv,
  opts: StartOptions = {},
): Promise<ChildGateway> {
  const gateway = new ChildGateway(env, opts);
  cleanUpAfter(t, [gateway], opts);
  return gateway.start();
}

/**
 * Starts `count` gateways, one after another, on `base` (the same brokers, consumer-group prefix and topics),
 * each with a SQLite file of its own (and, with PORT=0, a port of its own); cleaned up as startGateway's.
 */
export async function startGateways(
  t: AfterHook,
  count: number,
  base: GatewayEnv,
  opts: StartOptions = {},
): Promise<ChildGateway[]> {
  const gateways = Array.from({ length: count }, () => new ChildGateway(withFreshDb(base), opts));
  cleanUpAfter(t, gateways, opts);
  for (const gateway of gateways) await gateway.start();
  return gateways;
}
