/**
 * Replicas benchmark: `npm run bench:replicas [-- --seconds 10 --destinations 5 --attempts 1000000]`.
 *
 * (a) Throughput with 1, 2 and 3 gateway processes on one broker (a deployment: same
 *     CONSUMER_GROUP_PREFIX and topics, a database each): `POST /api/events` batches of 20 round-robin over
 *     the replicas for `--seconds`, every event delivered to `--destinations` destinations at one receiver.
 *     Reported: accepted events/s, deliveries/s while draining, the CPU every gateway process used per 1,000
 *     deliveries (ingest included), and each replica's share of the deliveries. Beside them, measured in the
 *     same run: (0i) a raw kafkajs producer sending the same records (acks=all, batches of 20, 16 in flight:
 *     Kafka's ceiling for this ingest) and (0d) raw undici POSTs to the receiver (the HTTP ceiling).
 *     On a 2-core machine more replicas cannot add throughput; the rows show what coordination costs.
 * (b) Rebuild: the shared-state topics of a fresh deployment filled with 1,000 destinations and
 *     `--attempts` outcome records (one attempt row + one ledger row each), then: (0r) a bare read of every
 *     record through KafkaLog.fetchMany (the reader's ceiling), (b1) the state view rebuilding an empty
 *     SQLite file in this process, (b2) a gateway process started on an empty DB_PATH until /readyz is 200.
 *
 * KAFKA_BROKERS points it at a running broker; unset, it starts the local runner's broker.
 */

import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { setTimeout as sleep } from "node:timers/promises";
import { parseArgs } from "node:util";
import { Pool } from "undici";
import { loadConfig } from "../src/config.ts";
import { uuidv7 } from "../src/ingest/event-id.ts";
import { ensureTopics } from "../src/ingest/topics.ts";
import { createKafka } from "../src/kafka/client.ts";
import { KafkaLog } from "../src/kafka/log-client.ts";
import { createLogger } from "../src/log.ts";
import { destinationMessage, outcomeMessage } from "../src/state/records.ts";
import { stateTopicSpecs, stateTopicsOf } from "../src/state/shared-state.ts";
import { StateView } from "../src/state/view.ts";
import { openStore } from "../src/store/db.ts";
import { DELIVERY_CONTROL_DEFAULTS } from "../src/store/destinations.ts";
import type { ChildGateway, GatewayEnv } from "../test/child-gateway.ts";
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
  type ReceiverClient,
  type Row,
  registerDestination,
  sampleRecord,
  scrape,
  startReceiver,
  stopReceiver,
  table,
} from "./harness.ts";
import { PAYLOAD } from "./payload.ts";

const { values } = parseArgs({
  options: {
    seconds: { type: "string", default: "10" },
    destinations: { type: "string", default: "5" },
    attempts: { type: "string", default: "1000000" },
    replicas: { type: "string", default: "1,2,3" },
    skip: { type: "string", default: "" },
  },
});
const SECONDS = Number(values.seconds);
const DESTINATIONS = Number(values.destinations);
const ATTEMPTS = Number(values.attempts);
const BATCH = 20;
const IN_FLIGHT = 16;
const PARTITIONS = 12;
const run = `r${Date.now().toString(36)}`;
const logs: string[] = [];
const dbPaths: string[] = [];

function deploymentEnv(brokers: string[], prefix: string): GatewayEnv {
  const dbPath = join(tmpdir(), `${prefix}-${uuidv7()}.db`);
  dbPaths.push(dbPath);
  const env = benchGatewayEnv(brokers, dbPath);
  return {
    ...env,
    EVENTS_TOPIC: `${prefix}.events`,
    DEAD_LETTER_TOPIC: `${prefix}.events.dead-letter`,
    CONSUMER_GROUP_PREFIX: prefix,
    TOPIC_PARTITIONS: String(PARTITIONS),
    DELIVERY_COMMIT_MS: "1000",
  };
}

async function startReplicas(brokers: string[], prefix: string, n: number): Promise<ChildGateway[]> {
  const out: ChildGateway[] = [];
  for (let i = 0; i < n; i++) {
    const logPath = join(tmpdir(), `${prefix}-replica${i + 1}.log`);
    logs.push(logPath);
    const g = await benchGateway(deploymentEnv(brokers, prefix), logPath);
    out.push(g);
    await g.start();
    await acceptOne(g, 120_000);
  }
  return out;
}

function removeDbs(): void {
  for (const path of dbPaths.splice(0))
    for (const s of ["", "-wal", "-shm"]) rmSync(`${path}${s}`, { force: true });
}

/** POST /api/events batches round-robin over the replicas for `seconds`; returns the accepted count. */
async function ingest(
  replicas: ChildGateway[],
  seconds: number,
): Promise<{ accepted: number; elapsed: number; refused: Map<number, number> }> {
  const pools = replicas.map((g) => new Pool(g.url, { connections: IN_FLIGHT }));
  const body = JSON.stringify({
    events: Array.from({ length: BATCH }, (_, i) => ({
      userID: `user-${i}`,
      type: "bench.replica",
      payload: PAYLOAD,
    })),
  });
  const t0 = now();
  const end = t0 + seconds * 1000;
  let accepted = 0;
  let turn = 0;
  const refused = new Map<number, number>();
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (now() < end) {
        const pool = pools[turn++ % pools.length] as Pool;
        const res = await pool.request({
          path: "/api/events",
          method: "POST",
          headers: { "content-type": "application/json" },
          body,
        });
        await res.body.dump();
        if (res.statusCode === 202) accepted += BATCH;
        else {
          refused.set(res.statusCode, (refused.get(res.statusCode) ?? 0) + 1);
          await sleep(100);
        }
      }
    }),
  );
  const elapsed = (now() - t0) / 1000;
  await Promise.all(pools.map((p) => p.close()));
  return { accepted, elapsed, refused };
}

async function throughputRow(brokers: string[], receiver: ReceiverClient, n: number): Promise<Row> {
  const prefix = `${run}-x${n}`;
  const replicas = await startReplicas(brokers, prefix, n);
  try {
    const [first] = replicas;
    if (!first) throw new Error("no replica");
    for (let d = 0; d < DESTINATIONS; d++) {
      await registerDestination(first, { url: `${receiver.url}/rep${n}/d${d}`, maxConcurrency: 64 });
    }
    // Every replica knows every destination before the load starts.
    for (const g of replicas) {
      for (;;) {
        const list = await g.get<{ destinations: unknown[] }>("/api/destinations");
        if (list.destinations.length === DESTINATIONS) break;
        await sleep(50);
      }
    }
    await sleep(2000); // the delivery group settles with every member
    const cpu0 = replicas.map((g) => cpuSecondsOf(g.pid));
    const delivered0 = await Promise.all(replicas.map(deliveriesOf));
    const t0 = now();
    const { accepted, elapsed, refused } = await ingest(replicas, SECONDS);
    const paths = Array.from({ length: DESTINATIONS }, (_, d) => `/rep${n}/d${d}`);
    // +1: each replica's probe event (acceptOne) was accepted before the destinations existed: not delivered.
    const stats = await receiver.waitUntil(
      (s) => paths.every((p) => (s[p]?.distinct ?? 0) >= accepted),
      `every accepted event at every destination (${accepted})`,
      600_000,
    );
    const last = Math.max(...paths.map((p) => stats[p]?.last ?? 0));
    const firstAt = Math.min(...paths.map((p) => stats[p]?.first ?? Number.POSITIVE_INFINITY));
    const deliveries = accepted * DESTINATIONS;
    const drain = (last - firstAt) / 1000;
    const cpu = replicas.reduce((sum, g, i) => sum + cpuSecondsOf(g.pid) - (cpu0[i] as number), 0);
    const shares = (await Promise.all(replicas.map(deliveriesOf))).map(
      (v, i) => v - (delivered0[i] as number),
    );
    const duplicates = paths.reduce(
      (sum, p) => sum + ((stats[p]?.count ?? 0) - (stats[p]?.distinct ?? 0)),
      0,
    );
    const rss = replicas.map((g) => memoryOf(g.pid).rssMb);
    return {
      name: `(a${n}) ${n} replica${n > 1 ? "s" : ""}: ingest round-robin, ${DESTINATIONS} destinations`,
      rate: `${fmt(accepted / elapsed)} events/s in; ${fmt(deliveries / drain)} deliveries/s`,
      p50: undefined,
      p99: undefined,
      rssMb: rss.reduce((a, b) => a + b, 0),
      note:
        `${fmt(accepted)} events in ${elapsed.toFixed(1)} s; ${fmt(deliveries)} deliveries, all done ` +
        `${((last - t0) / 1000).toFixed(1)} s after the load began; gateway CPU ${fmt(cpu, 1)} s = ` +
        `${fmt((cpu / deliveries) * 1e6)} µs per delivery (ingest included); deliveries per replica ` +
        `${shares.map((s) => fmt(s)).join(" / ")}; duplicates ${duplicates}; RSS ${rss.map((r) => fmt(r)).join(" + ")} MiB` +
        (refused.size > 0 ? `; refused batches ${[...refused].map(([s, c]) => `${c}×${s}`).join(", ")}` : ""),
    };
  } finally {
    await Promise.all(replicas.map((g) => g.stop()));
    removeDbs();
  }
}

/** Events this replica finished (every one is delivered here: the receiver answers 200); 0 before the first. */
async function deliveriesOf(g: ChildGateway): Promise<number> {
  return metricSum(await scrape(g), "deliveries_total") || 0;
}

/** (0i) kafkajs producer, same records and batch size, acks=all, IN_FLIGHT batches at once. */
async function rawProducerRow(brokers: string[]): Promise<Row> {
  const { Partitioners } = await import("kafkajs");
  const kafka = createKafka({ brokers, clientId: "bench-replicas-raw" });
  const topic = `${run}-raw`;
  await ensureTopics(kafka, { topics: [topic], partitions: PARTITIONS });
  const producer = kafka.producer({ idempotent: true, createPartitioner: Partitioners.DefaultPartitioner });
  await producer.connect();
  const value = sampleRecord();
  const t0 = now();
  const end = t0 + SECONDS * 1000;
  let sent = 0;
  await Promise.all(
    Array.from({ length: IN_FLIGHT }, async () => {
      while (now() < end) {
        await producer.send({
          topic,
          acks: -1,
          messages: Array.from({ length: BATCH }, (_, i) => ({ key: `user-${i}`, value })),
        });
        sent += BATCH;
      }
    }),
  );
  const elapsed = (now() - t0) / 1000;
  await producer.disconnect();
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: [topic] }).catch(() => {});
  await admin.disconnect();
  return {
    name: `(0i) ceiling: raw kafkajs producer, idempotent, acks=all, ${BATCH} records a send, ${IN_FLIGHT} sends at once`,
    rate: `${fmt(sent / elapsed)} events/s`,
    p50: undefined,
    p99: undefined,
    rssMb: undefined,
    note: `${fmt(sent)} records in ${elapsed.toFixed(1)} s`,
  };
}

/** Fills a fresh deployment's state topics with 1,000 destinations and ATTEMPTS outcome records. */
async function fillState(brokers: string[], prefix: string): Promise<number> {
  const { CompressionTypes } = await import("kafkajs");
  const config = loadConfig({
    CONSUMER_GROUP_PREFIX: prefix,
    TOPIC_PARTITIONS: String(PARTITIONS),
    LOG_LEVEL: "silent",
  });
  const kafka = createKafka({ brokers, clientId: "bench-replicas-fill" });
  await ensureTopics(kafka, { topics: stateTopicSpecs(config), partitions: PARTITIONS });
  const topics = stateTopicsOf(config);
  const producer = kafka.producer();
  await producer.connect();
  const t0 = now();
  const destinations = Array.from({ length: 1000 }, (_, i) => `dest_${run}${String(i).padStart(4, "0")}`);
  const at = Date.now();
  await producer.sendBatch({
    acks: -1,
    topicMessages: [
      {
        topic: topics.config,
        messages: destinations.map((id) => {
          const m = destinationMessage(
            id,
            {
              id,
              name: null,
              url: `https://example.test/hooks/${id}`,
              ...DELIVERY_CONTROL_DEFAULTS,
              eventTypes: [],
              headers: {},
              secret: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
              maxAttempts: 8,
              timeoutMs: 10_000,
              backoffBaseMs: 1000,
              backoffMaxMs: 60_000,
              maxConcurrency: 64,
              disabled: false,
              disabledReason: null,
              createdAt: at,
              updatedAt: at,
            },
            uuidv7(),
          );
          return { key: m.key, value: m.value, headers: m.headers };
        }),
      },
    ],
  });
  const chunk = 5000;
  for (let sent = 0; sent < ATTEMPTS; sent += chunk * 4) {
    await Promise.all(
      Array.from({ length: 4 }, (_, k) => {
        const from = sent + k * chunk;
        const count = Math.max(0, Math.min(chunk, ATTEMPTS - from));
        if (count === 0) return Promise.resolve();
        const messages = Array.from({ length: count }, (_, i) => {
          const eventId = uuidv7();
          const destinationId = destinations[(from + i) % destinations.length] as string;
          const userId = `user-${(from + i) % 10_000}`;
          const m = outcomeMessage({
            attempt: {
              eventId,
              destinationId,
              userId,
              attemptNumber: 1,
              startedAt: at,
              durationMs: 12,
              statusCode: 200,
              error: null,
              responseSnippet: "ok",
              outcome: "succeeded",
            },
            ledger: {
              destinationId,
              eventId,
              userId,
              status: "delivered",
              attempts: 1,
              lastError: null,
              event: null,
              at,
            },
          });
          return { key: m.key, value: m.value };
        });
        return producer.sendBatch({
          acks: -1,
          compression: CompressionTypes.None,
          topicMessages: [{ topic: topics.outcomes, messages }],
        });
      }),
    );
  }
  await producer.disconnect();
  return (now() - t0) / 1000;
}

async function rebuildRows(brokers: string[]): Promise<Row[]> {
  const prefix = `${run}-rebuild`;
  const fillSeconds = await fillState(brokers, prefix);
  const config = loadConfig({ CONSUMER_GROUP_PREFIX: prefix, LOG_LEVEL: "silent" });
  const topics = stateTopicsOf(config);
  const kafka = createKafka({ brokers, clientId: "bench-replicas-read" });
  const rows: Row[] = [];

  // (0r) every record read, nothing applied.
  {
    const log = new KafkaLog(kafka);
    const positions: Array<{ topic: string; partition: number; offset: number }> = [];
    const ends = new Map<string, number>();
    for (const topic of Object.values(topics)) {
      for (const [partition, end] of await log.endOffsets(topic)) {
        positions.push({ topic, partition, offset: 0 });
        ends.set(`${topic}/${partition}`, end);
      }
    }
    const cpu0 = process.cpuUsage();
    const t0 = now();
    let records = 0;
    let bytes = 0;
    while (positions.some((p) => p.offset < (ends.get(`${p.topic}/${p.partition}`) ?? 0))) {
      const results = await log.fetchMany(positions, {
        maxBytes: 16 * 1024 * 1024,
        maxBytesPerPartition: 4 * 1024 * 1024,
        maxWaitMs: 10,
      });
      for (const r of results) {
        records += r.records.length;
        for (const rec of r.records) bytes += rec.value?.length ?? 0;
        const p = positions.find((x) => x.topic === r.topic && x.partition === r.partition);
        if (p) p.offset = r.next;
      }
    }
    const seconds = (now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    await log.close();
    rows.push({
      name: "(0r) ceiling: read every state record (KafkaLog.fetchMany), apply nothing",
      rate: `${fmt(records / seconds)} records/s`,
      p50: undefined,
      p99: undefined,
      rssMb: undefined,
      note: `${fmt(records)} records (${fmt(bytes / 1048576)} MiB of values) in ${seconds.toFixed(1)} s, CPU ${fmt((cpu.user + cpu.system) / 1e6, 1)} s; filling the topics took ${fillSeconds.toFixed(1)} s`,
    });
  }

  // (b1) the view rebuilding an empty SQLite file in this process.
  {
    const dbPath = join(tmpdir(), `${prefix}-view.db`);
    const store = openStore(dbPath);
    const view = new StateView({ kafka, store, topics, logger: createLogger("silent") });
    const cpu0 = process.cpuUsage();
    const t0 = now();
    view.start({
      destinationPut: async () => {},
      destinationRemoved: async () => {},
      replaying: async () => {},
    });
    await view.ready;
    const seconds = (now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const count = (table: string) =>
      (store.sqlite.prepare(`select count(*) as n from ${table}`).get() as { n: number }).n;
    const [d, a, l] = [count("destinations"), count("attempts"), count("deliveries")];
    await view.stop();
    store.close();
    for (const s of ["", "-wal", "-shm"]) rmSync(`${dbPath}${s}`, { force: true });
    rows.push({
      name: "(b1) the state view rebuilds an empty SQLite file (this process)",
      rate: `${fmt(a / seconds)} attempt rows/s`,
      p50: undefined,
      p99: undefined,
      rssMb: process.memoryUsage().rss / 1048576,
      note: `${fmt(d)} destinations, ${fmt(a)} attempt rows, ${fmt(l)} ledger rows in ${seconds.toFixed(1)} s, CPU ${fmt((cpu.user + cpu.system) / 1e6, 1)} s`,
    });
  }

  // (b2) a gateway process on an empty database, until /readyz answers 200.
  {
    const env = { ...deploymentEnv(brokers, prefix), LOG_LEVEL: "info" };
    const logPath = join(tmpdir(), `${prefix}-gateway.log`);
    logs.push(logPath);
    const g = await benchGateway(env, logPath);
    const t0 = now();
    await g.start({ ready: false });
    await g.waitReady(600_000, 25);
    const seconds = (now() - t0) / 1000;
    const rss = memoryOf(g.pid).rssMb;
    const list = await g.get<{ destinations: unknown[] }>("/api/destinations");
    await g.stop();
    removeDbs();
    rows.push({
      name: "(b2) a gateway process on an empty DB_PATH, spawn → /readyz 200",
      rate: `${seconds.toFixed(1)} s`,
      p50: undefined,
      p99: undefined,
      rssMb: rss,
      note: `lists ${fmt(list.destinations.length)} destinations once ready`,
    });
  }
  const admin = kafka.admin();
  await admin.connect();
  await admin.deleteTopics({ topics: Object.values(topics) }).catch(() => {});
  await admin.disconnect();
  return rows;
}

const { startLocalKafka } = await import("../src/kafka/runner.ts");
let local: Awaited<ReturnType<typeof startLocalKafka>> | undefined;
let brokers = process.env.KAFKA_BROKERS?.split(",");
if (!brokers) {
  local = await startLocalKafka({});
  brokers = local.brokers;
}
const receiver = await startReceiver();
const rows: Row[] = [];
try {
  const skip = new Set(values.skip.split(",").filter(Boolean));
  if (!skip.has("throughput")) {
    rows.push(await rawProducerRow(brokers));
    rows.push(await ceiling(receiver, 64, 5, false));
    for (const n of values.replicas.split(",").map(Number)) {
      rows.push(await throughputRow(brokers, receiver, n));
      console.log(table(rows));
    }
  }
  if (!skip.has("rebuild")) rows.push(...(await rebuildRows(brokers)));
  console.log(table(rows));
} catch (err) {
  console.error(err);
  console.error(`gateway logs: ${logs.join(" ")}`);
  process.exitCode = 1;
} finally {
  await stopReceiver(receiver);
  await local?.stop();
}
