import type { Kafka } from "kafkajs";
import type { Config } from "../config.ts";
import type { RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import { DeliveryEngine, type EngineDeps } from "./engine.ts";
import type { DeliveryObserver } from "./observer.ts";
import type { OffsetLog } from "./offset-log.ts";
import { createDestinationAgent } from "./ssrf.ts";

/** What an engine needs besides the settings: the same on the main thread and in a delivery thread. */
export interface EngineParts {
  kafka: Kafka;
  log: OffsetLog;
  store: Store;
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  observe: DeliveryObserver;
  onGone: EngineDeps["onGone"];
  outcomesCaughtUp?: EngineDeps["outcomesCaughtUp"];
}

/** A DeliveryEngine with its settings from the gateway's Config. */
export function engineFromConfig(config: Config, parts: EngineParts): DeliveryEngine {
  return new DeliveryEngine({
    ...parts,
    topic: config.EVENTS_TOPIC,
    deadLetterTopic: config.DEAD_LETTER_TOPIC,
    outcomesTopic: config.OUTCOMES_TOPIC,
    groupPrefix: config.CONSUMER_GROUP_PREFIX,
    fetch: { minBytes: config.DELIVERY_FETCH_MIN_BYTES, maxWaitMs: config.DELIVERY_FETCH_MAX_WAIT_MS },
    commitEveryMs: config.DELIVERY_COMMIT_MS,
    keepaliveEveryMs: config.DELIVERY_OFFSET_KEEPALIVE_MINUTES * 60_000,
    // Each destination gets its own SSRF-guarded HTTP pool.
    createDispatcher: (d) =>
      createDestinationAgent({
        allowPrivate: config.ALLOW_PRIVATE_DESTINATIONS,
        connections: d.maxConcurrency,
        connectTimeoutMs: Math.min(d.timeoutMs, 10_000),
      }),
  });
}
