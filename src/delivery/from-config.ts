import type { Kafka } from "kafkajs";
import type { Config } from "../config.ts";
import type { RecordSink } from "../ingest/producer.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import { createDestinationAgent } from "./ssrf.ts";
import { DeliverySupervisor, type SupervisorDeps } from "./supervisor.ts";
import type { WorkerObserver } from "./worker.ts";

/** What a supervisor needs besides the settings: the same on the main thread and in a delivery thread. */
export interface SupervisorParts {
  kafka: Kafka;
  store: Store;
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  observe: WorkerObserver;
  owns?: SupervisorDeps["owns"];
}

/** A DeliverySupervisor with its settings from the gateway's Config. */
export function supervisorFromConfig(config: Config, parts: SupervisorParts): DeliverySupervisor {
  return new DeliverySupervisor({
    ...parts,
    topic: config.EVENTS_TOPIC,
    deadLetterTopic: config.DEAD_LETTER_TOPIC,
    groupPrefix: config.CONSUMER_GROUP_PREFIX,
    fetch: { minBytes: config.DELIVERY_FETCH_MIN_BYTES, maxWaitMs: config.DELIVERY_FETCH_MAX_WAIT_MS },
    // Each destination gets its own SSRF-guarded HTTP pool.
    createDispatcher: (d) =>
      createDestinationAgent({
        allowPrivate: config.ALLOW_PRIVATE_DESTINATIONS,
        connections: d.maxConcurrency,
        connectTimeoutMs: Math.min(d.timeoutMs, 10_000),
      }),
  });
}
