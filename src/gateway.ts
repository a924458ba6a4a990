import type { AddressInfo } from "node:net";
import type { Config } from "./config.ts";
import { DeliveryCoordinator } from "./delivery/coordinator.ts";
import type { DeliveryEngine } from "./delivery/engine.ts";
import type { EngineApi } from "./delivery/engine-api.ts";
import { engineFromConfig } from "./delivery/from-config.ts";
import { operationalMessage } from "./delivery/operational.ts";
import { DeliveryThreads } from "./delivery/threads.ts";
import { createApp } from "./http/app.ts";
import { ingestHttp } from "./http/ingest.ts";
import { OpenConnections, serveApp } from "./http/server.ts";
import { EventTypeCatalog } from "./ingest/event-types.ts";
import { kafkaLogsAtDebug, startKafkaSetup } from "./ingest/kafka-setup.ts";
import { type BatchTrigger, GroupCommitProducer } from "./ingest/producer.ts";
import type { IngestProducer } from "./ingest/producer-port.ts";
import { IngestRollup } from "./ingest/rollup.ts";
import { createIngestService } from "./ingest/service.ts";
import { ThreadedProducer } from "./ingest/threaded-producer.ts";
import { createKafka, createKafkaProbe } from "./kafka/client.ts";
import { KafkaLog } from "./kafka/log-client.ts";
import { type LocalKafka, startLocalKafka } from "./kafka/runner.ts";
import { LiveBus } from "./live/bus.ts";
import { findEvent } from "./live/event-finder.ts";
import type { Logger } from "./log.ts";
import { createMetrics, deliveryObserver, type Metrics } from "./metrics.ts";
import { SharedState, stateTopicSpecs, stateTopicsOf } from "./state/shared-state.ts";
import { isStoreHealthy, openStore } from "./store/db.ts";
import { startRetention } from "./store/retention.ts";
import { tracingFromConfig } from "./telemetry.ts";

export interface Gateway {
  /** Base URL the HTTP server listens on, e.g. http://127.0.0.1:8080 */
  url: string;
  port: number;
  brokers: string[];
  /** This gateway's Prometheus instruments (its own registry). */
  metrics: Metrics;
  /**
   * Resolves once the Kafka topics exist and the producer is connected (the gateway serves before that;
   * ingest answers 503 meanwhile). Never rejects; stays pending if the gateway stops first.
   */
  kafkaReady: Promise<void>;
  /** The delivery side: an engine on the main thread or one per delivery thread. */
  delivery: DeliveryCoordinator;
  /** Kafka-held shared state and this replica's SQLite view of it. */
  state: SharedState;
  /** The main thread's engine when DELIVERY_THREADS is 0 (tests read its workers); else undefined. */
  engine: DeliveryEngine | undefined;
  /** The delivery threads when DELIVERY_THREADS > 0; else undefined. */
  threads: DeliveryThreads | undefined;
  /** Stops accepting requests, drains workers and the producer, closes Kafka and the database. */
  stop(): Promise<void>;
}

/**
 * Wires config → database → Kafka → HTTP. main.ts calls it for the process; tests call it to run a
 * whole gateway in-process against the test broker.
 */
export async function startGateway(config: Config, logger: Logger): Promise<Gateway> {
  // Off (and the SDK never loaded) unless OTEL_EXPORTER_OTLP_ENDPOINT is set.
  const tracing = await tracingFromConfig(config);
  if (tracing) logger.info({ endpoint: config.OTEL_EXPORTER_OTLP_ENDPOINT }, "exporting traces (OTLP/HTTP)");
  let embedded: LocalKafka | undefined;
  let brokers = config.KAFKA_BROKERS;
  if (!brokers) {
    logger.info("KAFKA_BROKERS is not set: starting a local Kafka broker (embedded mode)");
    embedded = await startLocalKafka({ log: (line) => logger.info({ component: "local-kafka" }, line) });
    brokers = embedded.brokers;
    logger.info({ brokers }, "local Kafka broker is up");
  }

  const store = openStore(config.DB_PATH);
  const retention = startRetention(store, logger, {
    retentionMs: config.RETENTION_DAYS * 24 * 3600 * 1000,
    everyMs: config.RETENTION_CHECK_MINUTES * 60 * 1000,
  });
  const security = config.kafkaSecurity;
  const kafka = createKafka({ brokers, clientId: config.KAFKA_CLIENT_ID, logger, security });
  const probe = createKafkaProbe(kafka);
  const metrics = createMetrics();

  // One group-commit producer for ingest, also the delivery workers' dead-letter sink. Kafka may be
  // down right now: HTTP starts anyway and a background loop connects it and makes sure the topics exist.
  const producerKafka = createKafka({
    brokers,
    clientId: config.KAFKA_CLIENT_ID,
    security,
    overrides: kafkaLogsAtDebug(logger),
  });
  const batchOptions = {
    maxRecords: config.BATCH_MAX_RECORDS,
    maxBytes: config.BATCH_MAX_BYTES,
    lingerMs: config.BATCH_LINGER_MS,
    ackTimeoutMs: config.INGEST_ACK_TIMEOUT_MS,
    sender: config.INGEST_SENDER,
    onBatch: (records: number, seconds: number, ok: boolean, trigger: BatchTrigger) => {
      metrics.ingestBatchSize.observe(records);
      metrics.ingestBatches.inc({ trigger });
      if (ok) metrics.ingestAckSeconds.observe(seconds);
    },
  };
  const producer: IngestProducer = config.INGEST_PRODUCER_THREAD
    ? new ThreadedProducer({
        ...batchOptions,
        brokers,
        clientId: config.KAFKA_CLIENT_ID,
        security,
        logLevel: logger.level,
        logger,
      })
    : new GroupCommitProducer(producerKafka, { ...batchOptions, logger });
  const kafkaSetup = startKafkaSetup({
    kafka: producerKafka,
    producer,
    topics: [config.EVENTS_TOPIC, config.DEAD_LETTER_TOPIC, ...stateTopicSpecs(config)],
    partitions: config.TOPIC_PARTITIONS,
    replicationFactor: config.TOPIC_REPLICATION_FACTOR,
    logger,
  });
  /** Start delivery workers after this: the topics exist and dead letters can be published. */
  const kafkaReady = kafkaSetup.ready;
  // The event-type catalog: what this database holds now, then every change the view applies.
  const eventTypes = new EventTypeCatalog(config.UNKNOWN_EVENT_TYPES);
  eventTypes.load(store.db);
  // The console's live tail (accepted here; deliveries of every replica, as the view applies them) and
  // the ingest counts every replica's stats add up.
  const live = new LiveBus();
  const rollup = new IngestRollup({ sink: producer, topic: config.OUTCOMES_TOPIC, logger });
  // The shared-state topics' reader: this replica's SQLite becomes their view once it has caught up.
  const state = new SharedState({
    onEventType: (name, row) => eventTypes.apply(name, row),
    kafka,
    store,
    sink: producer,
    topics: stateTopicsOf(config),
    logger,
    onAttempts: (rows) => live.attempts(rows),
  });
  // The HTTP server counts its connections; ingest sends a batch early once all of them wait on it.
  const connections = new OpenConnections();
  const ingest = createIngestService({
    db: store.db,
    clients: config.BATCH_SEND_EARLY ? connections : undefined,
    sink: producer,
    topic: config.EVENTS_TOPIC,
    kafkaReady: kafkaSetup.isReady,
    idempotencyTtlMs: config.IDEMPOTENCY_TTL_HOURS * 3_600_000,
    shareKey: (value) => state.shareIdempotencyKey(value),
    logger,
    onOutcome: (outcome, events) => metrics.ingestEvents.inc({ outcome }, events),
    onAccepted: (events, ids, at) => {
      rollup.add(events, at);
      live.accepted(events, ids, at);
    },
  });

  // Delivery engines: each a member of the delivery consumer group, reading its share of the partitions
  // once for every destination. They start once the topics exist.
  const threadCount = config.DELIVERY_THREADS;
  const log = new KafkaLog(kafka, { logger });
  let delivery: DeliveryCoordinator | undefined;
  let engine: DeliveryEngine | undefined;
  let threads: DeliveryThreads | undefined;
  const gone = async (id: string, reason: string) => delivery?.gone(id, reason);
  let engines: EngineApi[];
  if (threadCount === 0) {
    const local = engineFromConfig(config, {
      kafka,
      log: new KafkaLog(kafka, { logger }),
      store,
      sink: producer,
      logger,
      observe: deliveryObserver(metrics),
      onGone: (id, reason) => void gone(id, reason).catch(() => {}),
      outcomesCaughtUp: () => state.outcomesCaughtUp(),
    });
    metrics.lagSource = () => local.lags();
    engine = local;
    engines = [local];
  } else {
    threads = new DeliveryThreads({
      threads: threadCount,
      config,
      brokers,
      logger,
      main: {
        publish: (topic, messages) => producer.publish(topic, messages),
        gone,
        outcomesCaughtUp: () => state.outcomesCaughtUp(),
      },
    });
    engines = threads.engines();
  }
  const runningThreads = threads;
  delivery = new DeliveryCoordinator({
    publishOperational: (type, payload) =>
      producer.publish(config.EVENTS_TOPIC, [operationalMessage(type, payload)]),
    store,
    state,
    log,
    topic: config.EVENTS_TOPIC,
    groupPrefix: config.CONSUMER_GROUP_PREFIX,
    logger,
    engines: () => engines,
    collectMetrics: runningThreads ? () => runningThreads.collectMetrics() : undefined,
    afterStop: async () => {
      await runningThreads?.stop();
      await log.close();
    },
  });
  logger.info(
    { deliveryThreads: threadCount },
    threadCount
      ? `delivery engines run on ${threadCount} thread(s)`
      : "the delivery engine runs on the main thread",
  );
  const coordinator = delivery;
  let stopping = false;
  /** Joins the delivery group; a start Kafka fails (a broker down, a coordinator moving) is tried again. */
  const startDelivery = async () => {
    for (let attempt = 1; !stopping; attempt++) {
      try {
        await log.connect();
        await coordinator.start();
        return;
      } catch (err) {
        if (stopping) return;
        logger.warn({ err, attempt }, "delivery could not start; trying again");
        await new Promise((done) => setTimeout(done, Math.min(500 * attempt, 5000)));
      }
    }
  };
  // Topics first, then the view catches up (the admin API answers 503 until it has), then the engines
  // join the delivery group with every destination known.
  void kafkaReady
    .then(() => {
      // Stopped (or a failed listen) while Kafka was being set up: the view must not start after its stop.
      if (stopping) return;
      state.start(coordinator);
      return state.ready;
    })
    .then(() => startDelivery())
    .catch((err: unknown) => logger.error({ err }, "delivery failed to start"));

  const ingestEndpoints = ingestHttp({
    service: ingest,
    eventTypes,
    apiKeys: config.INGEST_API_KEYS,
    maxBodyBytes: config.MAX_BODY_BYTES,
    retryAfterSeconds: config.INGEST_RETRY_AFTER_S,
    logger,
  });
  const app = createApp({
    config,
    logger,
    health: {
      // Ready only once ingest can produce (topics made, producer connected) and a broker answers now.
      kafkaReady: async () => kafkaSetup.isReady() && (await probe.check()),
      stateReady: () => state.isReady(),
      storeReady: () => isStoreHealthy(store),
    },
    metrics,
    collectMetrics: coordinator.collectMetrics?.bind(coordinator),
    store,
    delivery: coordinator,
    state,
    eventTypes: { catalog: eventTypes, state },
    live,
    findEvent: (id) => findEvent({ log, db: store.db, topic: config.EVENTS_TOPIC }, id),
    ingest: ingestEndpoints,
  });

  /** Everything started above, stopped in order: workers, the view, then the producer and the rest. */
  const release = async () => {
    stopping = true;
    // Workers first: their last dead letters and outcomes still need the producer.
    await coordinator.stop();
    await state.stop();
    // In-flight ingest requests have been answered; send what is queued, then disconnect.
    kafkaSetup.stop();
    ingest.close();
    await rollup.close();
    await producer.close();
    await probe.close();
    await retention.stop();
    store.close();
    await embedded?.stop();
    // Last: the spans of everything above are exported before the process may exit.
    await tracing?.shutdown();
  };

  let server: Awaited<ReturnType<typeof serveApp>>;
  try {
    server = await serveApp(app.fetch, {
      port: config.PORT,
      hostname: config.HOST,
      reusePort: config.HTTP_REUSE_PORT,
      logger,
      direct: ingestEndpoints.direct,
      connections,
    });
  } catch (err) {
    // A port another process holds (or a host not on this machine): nothing started may outlive this.
    await release().catch((e: unknown) => logger.warn({ err: e }, "stopping after a failed listen"));
    const code = (err as NodeJS.ErrnoException).code;
    const hint =
      code === "EADDRINUSE" && !config.HTTP_REUSE_PORT
        ? " (to run several gateways on one port, set HTTP_REUSE_PORT=true on every one of them)"
        : "";
    throw new Error(`cannot listen on ${config.HOST}:${config.PORT}: ${(err as Error).message}${hint}`, {
      cause: err,
    });
  }
  const port = (server.address() as AddressInfo).port;
  const url = `http://${config.HOST.includes(":") ? `[${config.HOST}]` : config.HOST}:${port}`;
  logger.info({ url }, "gateway listening");

  let stopped: Promise<void> | undefined;
  return {
    url,
    port,
    brokers,
    metrics,
    kafkaReady,
    delivery: coordinator,
    state,
    engine,
    threads,
    stop() {
      stopped ??= (async () => {
        stopping = true;
        const closed = new Promise<void>((done) => {
          server.close(() => done());
        });
        // Open live tails would hold the server's close until their consoles left.
        live.close();
        await closed;
        await release();
      })();
      return stopped;
    },
  };
}
