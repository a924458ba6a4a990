/**
 * Entry of a delivery thread (worker_threads): a DeliveryEngine of its own — a member of the delivery
 * consumer group with its own SQLite connection, kafkajs client and metrics registry. Dead letters and
 * 410s go back to the main thread; metrics are read on scrape.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createKafka } from "../kafka/client.ts";
import { KafkaLog } from "../kafka/log-client.ts";
import { createLogger } from "../log.ts";
import { createMetrics, deliveryObserver, registerThreadMetrics } from "../metrics.ts";
import { openStore } from "../store/db.ts";
import { tracingFromConfig } from "../telemetry.ts";
import {
  type CallOf,
  dispatchTo,
  type EngineApi,
  MAIN_CALLS,
  type MainApi,
  type MetricsJson,
  proxyOf,
} from "./engine-api.ts";
import { engineFromConfig } from "./from-config.ts";
import { ThreadChannel, type ThreadData } from "./thread-channel.ts";

if (!parentPort) throw new Error("delivery-thread.ts runs as a worker thread only");
const port = parentPort;
const { index, logLevel, config, brokers } = workerData as ThreadData;

const logger = createLogger(logLevel).child({ deliveryThread: index });
// Each thread exports its own delivery-attempt spans (tracing is per thread: its own SDK and exporter).
const tracing = await tracingFromConfig(config, { "webhook.delivery_thread": index });
// The main thread applied the migrations before starting any thread.
const store = openStore(config.DB_PATH, { migrate: false });
const metrics = createMetrics({ processMetrics: false });
registerThreadMetrics(metrics.registry, index);
const kafka = createKafka({
  brokers,
  clientId: `${config.KAFKA_CLIENT_ID}-delivery-${index}`,
  logger,
  security: config.kafkaSecurity,
});
const log = new KafkaLog(kafka, { logger });

const channel: ThreadChannel<CallOf<MainApi>, CallOf<EngineApi>> = new ThreadChannel(port, (call) =>
  dispatchTo(api, call),
);
const main = proxyOf<MainApi>(MAIN_CALLS, (call) => channel.request(call));
const engine = engineFromConfig(config, {
  kafka,
  log,
  store,
  logger,
  observe: deliveryObserver(metrics),
  sink: main,
  onGone: (id, reason) => void main.gone(id, reason).catch(() => {}),
  outcomesCaughtUp: () => main.outcomesCaughtUp(),
});
metrics.lagSource = () => engine.lags();

const api: EngineApi = {
  start: () => engine.start(),
  async stop() {
    await engine.stop();
    await log.close();
    store.close();
    await tracing?.shutdown();
    // Nothing of ours is left to run; the port closes and the thread exits.
    setImmediate(() => port.close());
  },
  upsert: (destination) => engine.upsert(destination),
  remove: (id) => engine.remove(id),
  replay: (id, rows) => engine.replay(id, rows),
  lag: (id) => engine.lag(id),
  status: () => engine.status(),
  metrics: async (): Promise<MetricsJson> => metrics.registry.getMetricsAsJSON(),
};
