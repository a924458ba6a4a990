import assert from "node:assert/strict";
import { createHash, randomInt } from "node:crypto";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { test } from "node:test";
import { setFlagsFromString } from "node:v8";
import { runInNewContext } from "node:vm";
import Database from "better-sqlite3";
import { Pool } from "undici";
import { ADMIN_MAX_BODY_BYTES } from "../src/http/admin-shared.ts";
import { insertAttempts } from "../src/store/attempts.ts";
import { openStore } from "../src/store/db.ts";
import { insertDestination } from "../src/store/destinations.ts";
import { upsertLedger } from "../src/store/ledger.ts";
import { type FuzzCase, type FuzzContext, generateCase } from "./fuzz-cases.ts";
import { uniqueName } from "./helpers.ts";
import { type IngestGateway, startIngestGateway } from "./ingest-fixture.ts";
import { sendRaw } from "./raw-http.ts";

/**
 * Hostile input against a whole gateway (ingest, admin API, health, metrics, OpenAPI) in-process:
 * FUZZ_WARM_UP (default 5,000) then FUZZ_REQUESTS (default 10,000) generated bad requests from FUZZ_SEED
 * (random unless given; printed), 16 at a time. Every answer must be a 4xx problem document (or a 2xx where the generator said the
 * request may be valid), never a 5xx or a dropped connection; afterwards the database and the topics are
 * unchanged and RSS has not grown past a generous slack. FUZZ_ONLY=3,17 replays just those cases,
 * FUZZ_GEN=headers only one generator's, FUZZ_TRACE=1 prints every request as it starts and ends,
 * FUZZ_TRACE_MEMORY=1 every memory sample.
 */
const SEED = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : randomInt(2 ** 31);
/** Requests after the warm-up; the warm-up's are judged the same way. */
const MEASURED = Number(process.env.FUZZ_REQUESTS ?? 10_000);
/**
 * Long enough for RSS to reach its plateau: allocator and V8 working sets grow for the first few
 * thousand requests (≈ +130 MiB here) and then stay flat — 41,000 requests moved RSS by 8 MiB after 6,000.
 */
const WARM_UP = Number(process.env.FUZZ_WARM_UP ?? 5000);
const ONLY = process.env.FUZZ_ONLY?.split(",").map(Number);
const CONCURRENCY = 16;
/** A leak check, not a benchmark: growth between the end of warm-up and the end of the run. */
const RSS_SLACK_BYTES = 100 * 1024 * 1024;
const HEAP_SLACK_BYTES = 50 * 1024 * 1024;
const MiB = (n: number) => `${(n / 1024 / 1024).toFixed(1)} MiB`;

const ADMIN_TOKEN = "test-admin-token-0123456789";
const INGEST_KEYS = ["fuzz-ingest-key-aaaaaaaaaaaa", "fuzz-ingest-key-bbbbbbbbbbbb"];
const MAX_BODY = 256 * 1024;

setFlagsFromString("--expose-gc");
const gc = runInNewContext("gc") as () => void;

/** RSS and live heap after a full GC: heap growth would be a leak of JS objects, RSS growth of anything. */
function memory(): { rss: number; heap: number } {
  gc();
  const m = process.memoryUsage();
  if (process.env.FUZZ_TRACE_MEMORY)
    console.log(JSON.stringify(Object.fromEntries(Object.entries(m).map(([k, v]) => [k, MiB(v)]))));
  return { rss: m.rss, heap: m.heapUsed };
}

/** A destination with attempts and dead letters, so the read routes have pages and cursors to fuzz. */
function seedDatabase(path: string): { destinationId: string; eventId: string } {
  const store = openStore(path);
  const destinationId = `dest_${"f".repeat(32)}`;
  const eventId = "0195c1f4-a3b0-7c3d-9e8f-1a2b3c4d5e6f";
  const now = Date.now();
  try {
    insertDestination(store.db, {
      id: destinationId,
      name: "seeded",
      // Never dialled: no event reaches the topic, and the connect-time guard refuses loopback anyway.
      url: "http://127.0.0.1:9/fuzz",
      eventTypes: [],
      headers: { authorization: "Bearer receiver-secret-value" },
      secret: `whsec_${Buffer.alloc(32, 7).toString("base64")}`,
      maxAttempts: 3,
      timeoutMs: 1000,
      backoffBaseMs: 10,
      backoffMaxMs: 100,
      maxConcurrency: 2,
      disabled: false,
      disabledReason: null,
      createdAt: now,
      updatedAt: now,
    });
    const events = [eventId, "0195c1f4-a3b0-7c3d-9e8f-000000000002", "0195c1f4-a3b0-7c3d-9e8f-000000000003"];
    insertAttempts(
      store.db,
      events.flatMap((id, i) =>
        [1, 2, 3].map((n) => ({
          eventId: id,
          destinationId,
          userId: `user-${i}`,
          attemptNumber: n,
          startedAt: now - 10_000 + n,
          durationMs: 5,
          statusCode: 500,
          error: "HTTP 500",
          responseSnippet: "nope",
          outcome: n === 3 ? "dead" : "failed",
        })),
      ),
    );
    upsertLedger(
      store.db,
      events.map((id, i) => ({
        destinationId,
        eventId: id,
        userId: `user-${i}`,
        status: i === 2 ? "delivered" : "dead",
        attempts: 3,
        lastError: "HTTP 500",
        event: i === 2 ? null : JSON.stringify({ id, userID: `user-${i}`, type: "t", payload: {} }),
        at: now - i,
      })),
    );
  } finally {
    store.close();
  }
  return { destinationId, eventId };
}

/**
 * Row counts and a digest of every row of every table — but `delivery_offsets`, the delivery engine's mirror
 * of each destination's committed progress, which it writes on its own schedule whatever requests come.
 */
function snapshotDatabase(path: string): { counts: Record<string, number>; digest: string } {
  const db = new Database(path, { readonly: true, fileMustExist: true });
  try {
    const tables = db
      .prepare("select name from sqlite_master where type = 'table' order by name")
      .all() as Array<{ name: string }>;
    const counts: Record<string, number> = {};
    const hash = createHash("sha256");
    for (const { name } of tables) {
      if (name === "delivery_offsets") continue;
      const rows = db.prepare(`select * from "${name}" order by rowid`).all();
      counts[name] = rows.length;
      hash.update(name).update(JSON.stringify(rows));
    }
    return { counts, digest: hash.digest("hex") };
  } finally {
    db.close();
  }
}

async function topicOffsets(gw: IngestGateway): Promise<string> {
  const admin = gw.kafka.admin();
  await admin.connect();
  try {
    const out: string[] = [];
    for (const topic of [gw.topic, gw.deadLetterTopic]) {
      for (const o of await admin.fetchTopicOffsets(topic)) out.push(`${topic}/${o.partition}=${o.high}`);
    }
    return out.sort().join(" ");
  } finally {
    await admin.disconnect();
  }
}

interface Answer {
  status: number;
  contentType: string;
  body: Buffer;
  transport: "undici" | "raw" | "raw-fallback";
}

async function* inPieces(body: Buffer): AsyncGenerator<Buffer> {
  for (let at = 0; at < body.length; at += 16 * 1024) yield body.subarray(at, at + 16 * 1024);
}

/** The case as bytes on the wire, for what undici refuses to send. */
function serialize(c: FuzzCase, port: number): Buffer {
  const names = new Set(c.headers.map(([n]) => n.toLowerCase()));
  const lines = [`${c.method} ${c.target} HTTP/1.1`];
  if (!names.has("host")) lines.push(`host: 127.0.0.1:${port}`);
  for (const [name, value] of c.headers) lines.push(`${name}: ${value}`);
  if (c.body && !names.has("content-length") && !names.has("transfer-encoding")) {
    lines.push(`content-length: ${c.body.length}`);
  }
  if (!names.has("connection")) lines.push("connection: close");
  return Buffer.concat([Buffer.from(`${lines.join("\r\n")}\r\n\r\n`, "utf8"), c.body ?? Buffer.alloc(0)]);
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
/** Headers undici consumes, rewrites or refuses: requests carrying them go out raw, as written. */
const UNDICI_OWNED = new Set([
  "host",
  "content-length",
  "transfer-encoding",
  "keep-alive",
  "upgrade",
  "connection",
  "expect",
]);

/**
 * Whether undici (8.x) would refuse the request. Asking it is not an option: a request a Pool refuses
 * leaks that connection's slot, and after `connections` refusals the Pool queues everything forever.
 */
function undiciRefuses(c: FuzzCase): boolean {
  if (!TOKEN.test(c.method)) return true;
  if (!/^(\/|https?:\/\/)/.test(c.target) || /[^\x21-\x7e]/.test(c.target)) return true;
  return c.headers.some(
    ([name, value]) =>
      !TOKEN.test(name) || /[^\t\x20-\x7e]/.test(value) || UNDICI_OWNED.has(name.toLowerCase()),
  );
}

/** undici threw before writing a byte: the request is not one it will send. */
function refusedLocally(err: unknown): boolean {
  const name = (err as Error)?.name;
  return name === "InvalidArgumentError" || name === "NotSupportedError" || name === "AssertionError";
}

/** The undici pool in use; replaced (and the old one destroyed at the end) if undici refuses a request after all. */
interface Pools {
  current: Pool;
  retired: Pool[];
  create(): Pool;
}

async function send(pools: Pools, port: number, c: FuzzCase): Promise<Answer> {
  if (!c.raw && !undiciRefuses(c)) {
    const pool = pools.current;
    try {
      const res = await pool.request({
        path: c.target,
        method: c.method,
        headers: c.headers.flat(),
        body: c.body && c.chunked ? Readable.from(inPieces(c.body)) : c.body,
      });
      const body = Buffer.from(await res.body.arrayBuffer());
      return {
        status: res.statusCode,
        contentType: String(res.headers["content-type"] ?? ""),
        body,
        transport: "undici",
      };
    } catch (err) {
      if (!refusedLocally(err)) throw err;
      if (pools.current === pool) {
        pools.retired.push(pool);
        pools.current = pools.create();
      }
    }
  }
  const bytes = c.raw ?? serialize(c, port);
  const res = await sendRaw(port, bytes, { method: c.method, halfClose: c.halfClose });
  return {
    status: res.status,
    contentType: res.headers["content-type"] ?? "",
    body: res.body,
    transport: c.raw ? "raw" : "raw-fallback",
  };
}

/** Why an answer breaks the rules, or undefined when it keeps them. */
function judge(c: FuzzCase, a: Answer): string | undefined {
  const clientError = a.status >= 400 && a.status < 500;
  const success = a.status >= 200 && a.status < 300;
  if (!clientError && !(success && c.allowed === "2xx|4xx"))
    return `status ${a.status} (allowed: ${c.allowed})`;
  if (!clientError) return undefined;
  if (!/^application\/problem\+json\b/.test(a.contentType))
    return `${a.status} with content-type "${a.contentType}"`;
  if (c.method === "HEAD") return undefined;
  try {
    const p = JSON.parse(a.body.toString("utf8"));
    if (
      p.status !== a.status ||
      typeof p.type !== "string" ||
      typeof p.title !== "string" ||
      typeof p.detail !== "string"
    ) {
      return `problem document does not match: ${a.body.subarray(0, 200)}`;
    }
  } catch {
    return `problem body is not JSON: ${JSON.stringify(a.body.subarray(0, 200).toString())}`;
  }
  return undefined;
}

function describeCase(i: number, c: FuzzCase): string {
  const target = c.target.length > 80 ? `${c.target.slice(0, 80)}…(${c.target.length})` : c.target;
  return `#${i} ${c.generator} ${c.method.slice(0, 20)} ${JSON.stringify(target)} body=${c.body?.length ?? c.raw?.length ?? 0}B`;
}

test("fuzz: generated bad requests on every route get 4xx problems; nothing changes, nothing leaks", async (t) => {
  const dbPath = join(tmpdir(), `${uniqueName("fuzz")}.db`);
  t.after(() => {
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
  });
  const seeded = seedDatabase(dbPath);
  const gw = await startIngestGateway({
    DB_PATH: dbPath,
    INGEST_API_KEYS: INGEST_KEYS.join(","),
    TOPIC_PARTITIONS: "2",
    MAX_BODY_BYTES: String(MAX_BODY),
  });
  t.after(() => gw.stop());
  await gw.gateway.kafkaReady;
  const pools: Pools = {
    current: undefined as unknown as Pool,
    retired: [],
    create: () =>
      new Pool(gw.gateway.url, { connections: CONCURRENCY, headersTimeout: 30_000, bodyTimeout: 30_000 }),
  };
  pools.current = pools.create();
  t.after(async () => {
    await pools.current.close();
    await Promise.all(pools.retired.map((p) => p.destroy()));
  });

  const ctx: FuzzContext = {
    adminToken: ADMIN_TOKEN,
    ingestKeys: INGEST_KEYS,
    seededId: seeded.destinationId,
    seededEventId: seeded.eventId,
    ingestMaxBody: MAX_BODY,
    adminMaxBody: ADMIN_MAX_BODY_BYTES,
  };
  const indices = ONLY ?? Array.from({ length: WARM_UP + MEASURED }, (_, i) => i);
  const warmUp = ONLY ? 0 : WARM_UP;
  console.log(
    `fuzz seed ${SEED}, ${indices.length} requests, concurrency ${CONCURRENCY}; reproduce with ` +
      `FUZZ_SEED=${SEED} node --test --test-global-setup=test/global-setup.ts test/fuzz.test.ts`,
  );

  const dbBefore = snapshotDatabase(dbPath);
  const offsetsBefore = await topicOffsets(gw);
  const statuses = new Map<number, number>();
  const perGenerator = new Map<string, Map<string, number>>();
  const transports = new Map<string, number>();
  const failures: string[] = [];
  let failureCount = 0;
  const bump = <K>(m: Map<K, number>, k: K) => m.set(k, (m.get(k) ?? 0) + 1);

  async function run(slice: number[]): Promise<void> {
    let next = 0;
    await Promise.all(
      Array.from({ length: CONCURRENCY }, async () => {
        while (next < slice.length) {
          const i = slice[next++] as number;
          const c = generateCase(SEED, i, ctx);
          if (process.env.FUZZ_GEN && c.generator !== process.env.FUZZ_GEN) continue;
          if (process.env.FUZZ_TRACE) console.log(`start ${describeCase(i, c)}`);
          let problem: string | undefined;
          try {
            const answer = await send(pools, gw.gateway.port, c);
            bump(statuses, answer.status);
            bump(transports, answer.transport);
            const g = perGenerator.get(c.generator) ?? new Map<string, number>();
            perGenerator.set(c.generator, g);
            bump(g, `${answer.status}`);
            problem = judge(c, answer);
          } catch (err) {
            bump(statuses, 0);
            problem = `no answer: ${(err as Error).name}: ${(err as Error).message}`;
          }
          if (process.env.FUZZ_TRACE)
            console.log(`done #${i} ${problem ?? "ok"} ${JSON.stringify(pools.current.stats)}`);
          if (problem) {
            failureCount++;
            if (failures.length < 25) failures.push(`${describeCase(i, c)} → ${problem}`);
          }
        }
      }),
    );
  }

  const started = performance.now();
  const before = memory();
  await run(indices.slice(0, warmUp));
  const warm = memory();
  await run(indices.slice(warmUp));
  const after = memory();
  const seconds = (performance.now() - started) / 1000;

  // The process is alive and still serves.
  assert.equal((await fetch(`${gw.gateway.url}/healthz`)).status, 200);
  const list = await fetch(`${gw.gateway.url}/api/destinations`, {
    headers: { authorization: `Bearer ${ADMIN_TOKEN}` },
  });
  assert.equal(list.status, 200);
  const dbAfter = snapshotDatabase(dbPath);
  const offsetsAfter = await topicOffsets(gw);

  const histogram = [...statuses.entries()]
    .sort(([a], [b]) => a - b)
    .map(([s, n]) => `${s === 0 ? "none" : s}: ${n}`);
  if (pools.retired.length > 0)
    console.log(`undici refused ${pools.retired.length} requests the predicate let through`);
  console.log(
    `sent ${indices.length} requests in ${seconds.toFixed(1)} s (${[...transports].map(([k, n]) => `${k} ${n}`).join(", ")})`,
  );
  console.log(`status histogram: ${histogram.join(", ")}`);
  for (const [name, g] of [...perGenerator].sort()) {
    const total = [...g.values()].reduce((a, b) => a + b, 0);
    console.log(
      `  ${name.padEnd(12)} ${String(total).padStart(5)}  ${[...g]
        .sort()
        .map(([s, n]) => `${s}×${n}`)
        .join(" ")}`,
    );
  }
  console.log(
    `RSS: before ${MiB(before.rss)}, after warm-up (${warmUp} requests) ${MiB(warm.rss)}, after run ${MiB(after.rss)}; ` +
      `heap used: ${MiB(before.heap)}, ${MiB(warm.heap)}, ${MiB(after.heap)}`,
  );
  console.log(
    `database rows before ${JSON.stringify(dbBefore.counts)} after ${JSON.stringify(dbAfter.counts)}`,
  );
  console.log(`topic end offsets before [${offsetsBefore}] after [${offsetsAfter}]`);

  assert.equal(
    failureCount,
    0,
    `${failureCount} answers broke the rules (seed ${SEED}):\n${failures.join("\n")}`,
  );
  assert.deepEqual(dbAfter.counts, dbBefore.counts, "no table gained or lost rows");
  assert.equal(dbAfter.digest, dbBefore.digest, "no row changed");
  assert.equal(offsetsAfter, offsetsBefore, "no record reached the events or dead-letter topic");
  assert.ok(
    after.rss - warm.rss <= RSS_SLACK_BYTES,
    `RSS grew by ${MiB(after.rss - warm.rss)} after warm-up (slack ${MiB(RSS_SLACK_BYTES)})`,
  );
  assert.ok(
    after.heap - warm.heap <= HEAP_SLACK_BYTES,
    `the live heap grew by ${MiB(after.heap - warm.heap)} after warm-up (slack ${MiB(HEAP_SLACK_BYTES)})`,
  );
});
