import { type ChildProcess, spawn } from "node:child_process";
import { randomBytes, randomUUID } from "node:crypto";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { freePort, testBrokers, uniqueName } from "../helpers.ts";

/**
 * The whole gateway as a child process (`node src/main.ts`), so a test can SIGKILL it, restart it on the
 * same SQLite file and topics, and measure it without sharing an event loop with the test's receivers.
 */

/**
 * Unique per test process: other suites run gateways on this machine too, and a port freed by freePort()
 * can be taken by one of them before our child binds it. Our token tells our gateway from theirs.
 */
export const ADMIN_TOKEN = `fault-${randomBytes(12).toString("hex")}`;
const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
const adminHeaders = { authorization: `Bearer ${ADMIN_TOKEN}`, "content-type": "application/json" };

/** Settings that survive a restart: the same database and topics, hence the same consumer groups. */
export interface GatewayEnv {
  KAFKA_BROKERS: string;
  DB_PATH: string;
  EVENTS_TOPIC: string;
  DEAD_LETTER_TOPIC: string;
  CONSUMER_GROUP_PREFIX: string;
  TOPIC_PARTITIONS: string;
  [name: string]: string;
}

/** Fresh names for one test: a new SQLite file under the OS temp dir and unique topics and groups. */
export function freshGatewayEnv(extra: Record<string, string> = {}): GatewayEnv {
  return {
    KAFKA_BROKERS: testBrokers().join(","),
    DB_PATH: join(tmpdir(), `${uniqueName("fault-gw")}.db`),
    EVENTS_TOPIC: uniqueName("fault-events"),
    DEAD_LETTER_TOPIC: uniqueName("fault-dead"),
    CONSUMER_GROUP_PREFIX: uniqueName("fault-gw"),
    TOPIC_PARTITIONS: "6",
    ...extra,
  };
}

export function removeDatabase(path: string): void {
  for (const suffix of ["", "-wal", "-shm"]) rmSync(`${path}${suffix}`, { force: true });
}

export interface ChildGateway {
  url: string;
  pid: number;
  /** Resolves with the exit code (or the signal's name) once the process is gone. */
  exited: Promise<number | string>;
  /** The last lines the child wrote (for a failing test's message). */
  output(): string;
  /** SIGKILL: no shutdown hook runs, nothing is flushed. */
  kill(): Promise<number | string>;
  /** SIGTERM: the gateway drains its workers and exits; SIGKILL after `graceMs`. */
  stop(graceMs?: number): Promise<number | string>;
}

/**
 * Starts `node src/main.ts` with `env` on a free port and waits until /readyz answers 200 and the admin API
 * takes our token (proof that the process on the port is ours). If the port was taken in the meantime
 * (EADDRINUSE, or another gateway answering), tries another one.
 */
export async function startChildGateway(env: GatewayEnv, readyTimeoutMs = 60_000): Promise<ChildGateway> {
  for (let tries = 1; ; tries++) {
    const gateway = await spawnGateway(env, await freePort());
    const outcome = await waitReady(gateway, readyTimeoutMs);
    if (outcome === "ready") return gateway;
    await gateway.kill();
    const portTaken = outcome === "not ours" || /EADDRINUSE/.test(gateway.output());
    if (!portTaken || tries >= 3) throw new Error(`gateway did not start (${outcome}): ${gateway.output()}`);
  }
}

async function waitReady(
  gateway: ChildGateway & { gone(): boolean },
  timeoutMs: number,
): Promise<"ready" | "exited" | "not ours" | "timed out"> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (gateway.gone()) return "exited";
    try {
      const res = await fetch(`${gateway.url}/readyz`);
      if (res.status === 200) {
        const mine = await fetch(`${gateway.url}/api/destinations`, { headers: adminHeaders });
        await mine.body?.cancel();
        if (mine.status !== 200) return "not ours";
        if (!gateway.gone()) return "ready";
      } else await res.body?.cancel();
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) return "timed out";
    await new Promise((r) => setTimeout(r, 100));
  }
}

function spawnGateway(env: GatewayEnv, port: number): ChildGateway & { gone(): boolean } {
  const child: ChildProcess = spawn(process.execPath, ["src/main.ts"], {
    cwd: ROOT,
    env: {
      PATH: process.env.PATH ?? "",
      HOME: process.env.HOME ?? "",
      HOST: "127.0.0.1",
      PORT: String(port),
      ADMIN_TOKEN,
      ALLOW_PRIVATE_DESTINATIONS: "true",
      LOG_LEVEL: "warn",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  let tail = "";
  const keep = (chunk: Buffer) => {
    tail = (tail + chunk.toString("utf8")).slice(-20_000);
  };
  child.stdout?.on("data", keep);
  child.stderr?.on("data", keep);
  const exited = new Promise<number | string>((done) => {
    child.once("exit", (code, signal) => done(code ?? signal ?? "unknown"));
  });
  let gone = false;
  let signalled = false;
  void exited.then((code) => {
    gone = true;
    // A gateway that dies on its own is a finding: show why, whatever the test does next.
    if (!signalled) process.stderr.write(`gateway ${child.pid} exited by itself (${code}):\n${tail}\n`);
  });
  return {
    url: `http://127.0.0.1:${port}`,
    pid: child.pid ?? -1,
    exited,
    gone: () => gone,
    output: () => tail,
    async kill() {
      signalled = true;
      if (!gone) child.kill("SIGKILL");
      return exited;
    },
    async stop(graceMs = 30_000) {
      signalled = true;
      if (gone) return exited;
      child.kill("SIGTERM");
      const timer = setTimeout(() => child.kill("SIGKILL"), graceMs);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
}

/**
 * Registers a destination through the admin API. Until the gateway has created its topics the API
 * answers 503 (the consumer group cannot be pinned yet): retried.
 */
export async function registerDestination(
  gatewayUrl: string,
  body: Record<string, unknown>,
  timeoutMs = 60_000,
): Promise<{ id: string; secret: string } & Record<string, unknown>> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const res = await fetch(`${gatewayUrl}/api/destinations`, {
      method: "POST",
      headers: adminHeaders,
      body: JSON.stringify(body),
    });
    if (res.status === 201) return (await res.json()) as { id: string; secret: string };
    const text = await res.text();
    if (res.status !== 503 || Date.now() > deadline) {
      throw new Error(`registering ${String(body.url)}: ${res.status} ${text}`);
    }
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** GET an admin route as JSON. */
export async function adminGet<T>(gatewayUrl: string, path: string): Promise<T> {
  const res = await fetch(`${gatewayUrl}${path}`, { headers: adminHeaders });
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return (await res.json()) as T;
}

export interface EventToSend {
  userID: string;
  type?: string;
  payload: unknown;
}

/**
 * POST /api/events until the gateway answers 202. A 503 (Kafka setup still running, or an ack timeout)
 * is retried with the same Idempotency-Key, so any event of the refused attempt that did reach Kafka
 * carries the id the final 202 reports: nothing unaccounted-for can be delivered.
 * Returns the accepted ids in the batch's order.
 */
export async function ingestBatch(
  gatewayUrl: string,
  events: EventToSend[],
  timeoutMs = 60_000,
): Promise<{ ids: string[]; refused: number }> {
  const deadline = Date.now() + timeoutMs;
  let refused = 0;
  const key = randomUUID();
  for (;;) {
    const res = await fetch(`${gatewayUrl}/api/events`, {
      method: "POST",
      headers: { "content-type": "application/json", "idempotency-key": key },
      body: JSON.stringify({ events }),
    });
    if (res.status === 202) return { ids: ((await res.json()) as { ids: string[] }).ids, refused };
    const text = await res.text();
    if (res.status !== 503 || Date.now() > deadline) throw new Error(`ingest: ${res.status} ${text}`);
    refused++;
    await new Promise((r) => setTimeout(r, 200));
  }
}

/** Nearest-rank percentile of a list of numbers (sorted copy). */
export function percentile(values: number[], p: number): number {
  if (values.length === 0) return Number.NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[rank] as number;
}
