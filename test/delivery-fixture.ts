import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { TestContext } from "node:test";
import { setTimeout as sleep } from "node:timers/promises";
import type { Kafka } from "kafkajs";
import pino from "pino";
import { DeliveryCoordinator } from "../src/delivery/coordinator.ts";
import type { BufferLimits } from "../src/delivery/destination-worker.ts";
import { DEFAULT_FETCH, DeliveryEngine, type FetchTuning } from "../src/delivery/engine.ts";
import { generateSecret } from "../src/delivery/sign.ts";
import { createDestinationAgent } from "../src/delivery/ssrf.ts";
import { uuidv7 } from "../src/ingest/event-id.ts";
import { GroupCommitProducer } from "../src/ingest/producer.ts";
import { createKafka } from "../src/kafka/client.ts";
import { KafkaLog } from "../src/kafka/log-client.ts";
import { SharedState } from "../src/state/shared-state.ts";
import { openStore, type Store } from "../src/store/db.ts";
import { DELIVERY_CONTROL_DEFAULTS, type Destination } from "../src/store/destinations.ts";
import { createTestKafka, uniqueName, waitUntil } from "./helpers.ts";
import type { Receiver } from "./receiver.ts";

export interface DeliveryFixture {
  kafka: Kafka;
  store: Store;
  dbPath: string;
  topic: string;
  deadLetterTopic: string;
  groupPrefix: string;
  sink: GroupCommitProducer;
  /** The main thread's Kafka port (the coordinator's). */
  log: KafkaLog;
  /** The shared-state topics and this fixture's SQLite view of them. */
  state: SharedState;
  /** The admin API's view of delivery (registration, changes, replay, lag). */
  delivery: DeliveryCoordinator;
  /** The one engine that reads every partition. */
  engine: DeliveryEngine;
  /**
   * Registers a destination the way the admin API does: pin offsets (at the end of the topic, or at
   * `fromMs` like a startFrom), insert, start its worker.
   */
  addDestination(url: string, overrides?: Partial<Destination>, fromMs?: number): Promise<Destination>;
  /** Publishes one event as the ingest route would and returns its id. */
  publish(userID: string, payload: unknown, type?: string): Promise<string>;
  /** Stops the engine and starts a new one on the same database (a gateway restart). */
  restartEngine(): Promise<DeliveryEngine>;
  /**
   * Starts one more engine in the delivery group (another replica's, on the same database): Kafka splits
   * the partitions between them. Stopped at the end of the test if the test has not stopped it.
   */
  startEngine(): Promise<DeliveryEngine>;
}

const silent = pino({ level: "silent" });

/** Worker settings a test may shrink or stretch. */
interface FixtureOptions {
  /** Another broker than the run's (a test that needs broker settings of its own). */
  brokers?: string[];
  buffer?: BufferLimits;
  fetch?: FetchTuning;
  commitEveryMs?: number;
  keepaliveEveryMs?: number;
}

type FixtureBase = Omit<
  DeliveryFixture,
  "delivery" | "engine" | "addDestination" | "publish" | "restartEngine" | "startEngine"
>;

function newEngine(f: FixtureBase, onGone: (id: string, reason: string) => void, opts: FixtureOptions = {}) {
  return new DeliveryEngine({
    kafka: f.kafka,
    log: new KafkaLog(f.kafka),
    store: f.store,
    sink: f.sink,
    logger: silent,
    topic: f.topic,
    deadLetterTopic: f.deadLetterTopic,
    outcomesTopic: f.state.topics.outcomes,
    outcomesCaughtUp: () => f.state.outcomesCaughtUp(),
    groupPrefix: f.groupPrefix,
    buffer: opts.buffer,
    fetch: opts.fetch,
    commitEveryMs: opts.commitEveryMs ?? 250,
    keepaliveEveryMs: opts.keepaliveEveryMs,
    onGone,
    createDispatcher: (d) =>
      createDestinationAgent({ allowPrivate: true, connections: d.maxConcurrency, connectTimeoutMs: 2000 }),
  });
}

/** A real broker topic pair, a fresh SQLite file, a real producer and a running delivery engine; all torn down after. */
export async function deliveryFixture(
  t: TestContext,
  partitions = 4,
  opts: FixtureOptions = {},
): Promise<DeliveryFixture> {
  const kafka = opts.brokers
    ? createKafka({ brokers: opts.brokers, clientId: uniqueName("test") })
    : createTestKafka();
  const topic = uniqueName("events");
  const deadLetterTopic = uniqueName("dead");
  const groupPrefix = uniqueName("gw");
  const topics = {
    config: `${groupPrefix}.config`,
    outcomes: `${groupPrefix}.outcomes`,
    idempotency: `${groupPrefix}.idempotency`,
  };
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({
    topics: [
      { topic, numPartitions: partitions },
      { topic: deadLetterTopic, numPartitions: 1 },
      {
        topic: topics.config,
        numPartitions: 1,
        configEntries: [{ name: "cleanup.policy", value: "compact" }],
      },
      { topic: topics.outcomes, numPartitions: partitions },
      { topic: topics.idempotency, numPartitions: 1 },
    ],
    waitForLeaders: true,
  });
  const dbPath = join(tmpdir(), `${uniqueName("delivery")}.db`);
  const store = openStore(dbPath);
  const sink = new GroupCommitProducer(kafka, {
    maxRecords: 1000,
    maxBytes: 1024 * 1024,
    lingerMs: 1,
    ackTimeoutMs: 10_000,
    logger: silent,
  });
  sink.start();
  await sink.whenReady();
  const log = new KafkaLog(kafka);
  await log.connect();
  const state = new SharedState({ kafka, store, sink, topics, logger: silent, maxWaitMs: 100 });
  const base = { kafka, store, dbPath, topic, deadLetterTopic, groupPrefix, sink, log, state };
  const onGone = (id: string, reason: string) => void fixture.delivery.gone(id, reason);
  const fixture: DeliveryFixture = {
    ...base,
    engine: newEngine(base, onGone, opts),
    delivery: new DeliveryCoordinator({
      store,
      state,
      log,
      topic,
      groupPrefix: base.groupPrefix,
      logger: silent,
      engines: () => [fixture.engine],
    }),
    async addDestination(url, overrides = {}, fromMs) {
      const id = `dest_${uuidv7().replaceAll("-", "")}`;
      await fixture.delivery.prepareDestination(id, fromMs);
      const now = Date.now();
      const row: Destination = {
        id,
        url,
        name: null,
        disabledReason: null,
        ...DELIVERY_CONTROL_DEFAULTS,
        eventTypes: [],
        headers: {},
        secret: generateSecret(),
        maxAttempts: 8,
        timeoutMs: 5000,
        backoffBaseMs: 20,
        backoffMaxMs: 200,
        maxConcurrency: 16,
        disabled: false,
        createdAt: now,
        updatedAt: now,
        ...overrides,
      };
      const wakes = fixture.engine.idle && !row.disabled;
      // As the admin API does: through the config topic; the view starts its worker.
      await state.putDestination(row);
      if (wakes) {
        // The first destination wakes the shared reader (paused while none ran). Its next fetch leaves
        // after kafkajs's idle wait (maxWaitTimeInMs): tests that bound buffers or count fetches start from
        // a reader with a fetch waiting at the broker, as they did before it could sleep.
        await waitUntil(() => !fixture.engine.idle, "the shared reader to wake", 30_000, 10);
        await sleep((opts.fetch?.maxWaitMs ?? DEFAULT_FETCH.maxWaitMs) + 200);
      }
      return row;
    },
    async publish(userID, payload, type = "event") {
      const id = uuidv7();
      const value = JSON.stringify({ id, userID, type, timestamp: new Date().toISOString(), payload });
      await sink.publish(topic, [{ key: userID, value, headers: { "event-id": id } }]);
      return id;
    },
    async restartEngine() {
      await fixture.engine.stop();
      fixture.engine = newEngine(base, onGone, opts);
      await fixture.engine.start();
      return fixture.engine;
    },
    async startEngine() {
      const engine = newEngine(base, onGone, opts);
      others.push(engine);
      await engine.start();
      return engine;
    },
  };
  const others: DeliveryEngine[] = [];
  state.start(fixture.delivery);
  await state.ready;
  await fixture.engine.start();
  t.after(async () => {
    await Promise.all(others.map((e) => e.stop()));
    await fixture.engine.stop();
    await state.stop();
    await log.close();
    await sink.close();
    store.close();
    await admin
      .deleteTopics({ topics: [topic, deadLetterTopic, topics.config, topics.outcomes, topics.idempotency] })
      .catch(() => {});
    await admin.disconnect();
    for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
  });
  return fixture;
}

/** Per user, the sequence numbers a receiver accepted, in arrival order. */
export function sequencesByUser(receiver: Receiver): Map<string, number[]> {
  const out = new Map<string, number[]>();
  for (const e of receiver.delivered) {
    const list = out.get(e.userID) ?? [];
    list.push((e.payload as { seq: number }).seq);
    out.set(e.userID, list);
  }
  return out;
}

/** `perUser` events for each of `users` users (payload {seq}), each user's published one after another. */
export async function publishPerUser(
  f: Pick<DeliveryFixture, "publish">,
  users: number,
  perUser: number,
  type?: (seq: number) => string,
) {
  const ids: string[] = [];
  // Users publish concurrently; each user's events go one after another, as sequential requests would.
  await Promise.all(
    Array.from({ length: users }, async (_, u) => {
      for (let seq = 0; seq < perUser; seq++) {
        ids.push(await f.publish(`user-${u}`, { seq, pad: "x".repeat(100) }, type?.(seq)));
      }
    }),
  );
  return ids;
}
