/**
 * Entry of a delivery thread (worker_threads): a DeliverySupervisor of its own, with its own SQLite
 * connection, kafkajs client and metrics registry, running the workers of the destinations the main
 * thread assigned to it. Dead letters go back to the main thread's producer; metrics are read on scrape.
 */
import { parentPort, workerData } from "node:worker_threads";
import { createKafka } from "../kafka/client.ts";
import { createLogger } from "../log.ts";
import { createMetrics, deliveryObserver, registerThreadMetrics } from "../metrics.ts";
import { openStore } from "../store/db.ts";
import { supervisorFromConfig } from "./from-config.ts";
import { type MainCall, type ThreadCall, ThreadChannel, type ThreadData } from "./thread-channel.ts";

if (!parentPort) throw new Error("delivery-thread.ts runs as a worker thread only");
const port = parentPort;
const { index, logLevel, config, brokers } = workerData as ThreadData;

const logger = createLogger(logLevel).child({ deliveryThread: index });
// The main thread applied the migrations before starting any thread.
const store = openStore(config.DB_PATH, { migrate: false });
const metrics = createMetrics({ processMetrics: false });
registerThreadMetrics(metrics.registry, index);
const kafka = createKafka({ brokers, clientId: `${config.KAFKA_CLIENT_ID}-delivery-${index}`, logger });
const owned = new Set<string>();

const channel: ThreadChannel<MainCall, ThreadCall> = new ThreadChannel<MainCall, ThreadCall>(port, handle);
const supervisor = supervisorFromConfig(config, {
  kafka,
  store,
  logger,
  observe: deliveryObserver(metrics),
  sink: { publish: (topic, messages) => channel.request<void>({ op: "publish", topic, messages }) },
  // A destination stays owned after a 410 disabled it: only the main thread moves destinations.
  owns: (id) => owned.has(id),
});

async function handle(call: ThreadCall): Promise<unknown> {
  switch (call.op) {
    case "start":
      for (const id of call.owned) owned.add(id);
      await supervisor.start();
      return undefined;
    case "prepare":
      return supervisor.prepareDestination(call.destinationId);
    case "added":
      owned.add(call.destination.id);
      return supervisor.destinationAdded(call.destination);
    case "changed":
      owned.add(call.destination.id);
      await supervisor.destinationChanged(call.destination);
      if (call.destination.disabled) owned.delete(call.destination.id);
      return undefined;
    case "removed":
      await supervisor.destinationRemoved(call.destinationId);
      owned.delete(call.destinationId);
      return undefined;
    case "replay":
      return supervisor.replay(call.destinationId, call.eventIds);
    case "metrics":
      return metrics.registry.getMetricsAsJSON();
    case "stop":
      await supervisor.stop();
      store.close();
      // Nothing of ours is left to run; the port closes and the thread exits.
      setImmediate(() => port.close());
      return undefined;
  }
}
