import { type Kafka, type KafkaConfig, logLevel } from "kafkajs";
import { describeKafkaError } from "../kafka/client.ts";
import type { Logger } from "../log.ts";
import type { IngestProducer } from "./producer-port.ts";
import { ensureTopics, type TopicSpec } from "./topics.ts";

/**
 * kafkajs options for the producer's client: its own logs go to `debug`. While a broker is down kafkajs
 * logs every connection attempt (and warns on each new idempotent producer with bounded retries); the
 * producer and this setup loop log each failure once per state change instead.
 */
export function kafkaLogsAtDebug(logger: Logger): Pick<KafkaConfig, "logLevel" | "logCreator"> {
  const log = logger.child({ component: "kafkajs" });
  return {
    logLevel: logLevel.WARN,
    logCreator:
      () =>
      ({ log: { message, ...extra } }) =>
        log.debug(extra, message),
  };
}

export interface KafkaSetupOptions {
  kafka: Kafka;
  producer: IngestProducer;
  topics: Array<string | TopicSpec>;
  partitions: number;
  replicationFactor?: number;
  logger: Logger;
}

export interface KafkaSetup {
  /** Resolves once the topics exist and the producer is connected (never rejects; never resolves if stopped first). */
  ready: Promise<void>;
  /** True while ingest can produce: topics made sure of, producer connected. */
  isReady(): boolean;
  stop(): void;
}

/**
 * The gateway starts serving before Kafka is reachable (ingest answers 503 meanwhile). This loop connects
 * the producer and makes sure the topics exist, retrying with backoff until both are done.
 */
export function startKafkaSetup(opts: KafkaSetupOptions): KafkaSetup {
  const log = opts.logger.child({ component: "kafka-setup" });
  let topicsDone = false;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  opts.producer.start();

  const topicsReady = (async () => {
    let delay = 250;
    let lastError = "";
    while (!stopped) {
      try {
        await ensureTopics(opts.kafka, {
          topics: opts.topics,
          partitions: opts.partitions,
          replicationFactor: opts.replicationFactor,
          logger: log,
        });
        topicsDone = true;
        if (lastError) log.info("Kafka topics are in place");
        return;
      } catch (err) {
        const message = describeKafkaError(opts.kafka, err);
        // Once per distinct failure: a broker that stays down must not flood the log.
        if (message !== lastError) {
          log.warn({ err: message, retryInMs: delay }, "cannot make sure the Kafka topics exist; retrying");
          lastError = message;
        }
        await new Promise<void>((done) => {
          timer = setTimeout(done, delay * (0.8 + Math.random() * 0.4));
        });
        delay = Math.min(delay * 2, 5000);
      }
    }
    // Stopped before Kafka was reached: ready stays pending.
    await new Promise(() => {});
  })();

  const ready = Promise.all([topicsReady, opts.producer.whenReady()]).then(() => {
    if (!stopped)
      log.info(
        { topics: opts.topics.map((t) => (typeof t === "string" ? t : t.topic)) },
        "Kafka ready: ingest accepts events",
      );
  });

  return {
    ready,
    isReady: () => topicsDone && opts.producer.ready,
    stop() {
      stopped = true;
      clearTimeout(timer);
    },
  };
}
