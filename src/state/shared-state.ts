import { randomUUID } from "node:crypto";
import type { Kafka } from "kafkajs";
import type { Config } from "../config.ts";
import type { TopicSpec } from "../ingest/topics.ts";
import type { RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import type { Destination } from "../store/destinations.ts";
import type { EventType } from "../store/event-types.ts";
import type { LedgerUpdate } from "../store/ledger.ts";
import {
  destinationMessage,
  eventTypeMessage,
  type IdempotencyValue,
  idempotencyMessage,
  outcomeMessage,
  type StateTopics,
} from "./records.ts";
import { StateView, type StateViewOptions, type ViewListener } from "./view.ts";

export interface SharedStateOptions {
  kafka: Kafka;
  store: Store;
  sink: Pick<RecordSink, "publish">;
  topics: StateTopics;
  logger: Logger;
  /** How long a write waits for this replica's view to apply it before answering anyway (default 10 s). */
  applyTimeoutMs?: number;
  /** The view's long poll (default 500 ms). */
  maxWaitMs?: number;
  /** Told of every event-type record the view applies (the ingest catalog recompiles that type). */
  onEventType?: (name: string, row: EventType | null) => void;
  /** Told of the attempts the view applied (see StateViewOptions.onAttempts). */
  onAttempts?: StateViewOptions["onAttempts"];
}

/** The shared-state topics of a deployment, with the settings they are created with and checked for. */
export function stateTopicSpecs(config: Config): TopicSpec[] {
  return [
    {
      topic: config.CONFIG_TOPIC,
      // One partition: every configuration write is in one order, the same on every replica.
      partitions: 1,
      configs: { "cleanup.policy": "compact" },
      required: ["cleanup.policy"],
    },
    {
      topic: config.OUTCOMES_TOPIC,
      configs: {
        "cleanup.policy": "delete",
        "retention.ms": String(config.RETENTION_DAYS * 24 * 3_600_000),
      },
      required: ["cleanup.policy"],
    },
    {
      topic: config.IDEMPOTENCY_TOPIC,
      configs: {
        "cleanup.policy": "compact,delete",
        "retention.ms": String(config.IDEMPOTENCY_TTL_HOURS * 3_600_000),
      },
      required: ["cleanup.policy"],
    },
  ];
}

export function stateTopicsOf(config: Config): StateTopics {
  return {
    config: config.CONFIG_TOPIC,
    outcomes: config.OUTCOMES_TOPIC,
    idempotency: config.IDEMPOTENCY_TOPIC,
  };
}

/**
 * Kafka as the source of truth for what replicas share: every write is published (acks=all) to its topic
 * and answered once this replica's view applied it, so a read on the same replica right after sees it;
 * other replicas' views apply it within their next fetch (milliseconds; the long poll returns as soon as a
 * record arrives).
 */
export class SharedState {
  readonly view: StateView;
  #opts: SharedStateOptions;
  #logger: Logger;

  constructor(opts: SharedStateOptions) {
    this.#opts = opts;
    this.#logger = opts.logger.child({ component: "shared-state" });
    this.view = new StateView({
      kafka: opts.kafka,
      store: opts.store,
      topics: opts.topics,
      logger: opts.logger,
      maxWaitMs: opts.maxWaitMs,
      onEventType: opts.onEventType,
      onAttempts: opts.onAttempts,
    });
  }

  get topics(): StateTopics {
    return this.#opts.topics;
  }

  /** Starts the view (the topics must exist). */
  start(listener: ViewListener): void {
    this.view.start(listener);
  }

  get ready(): Promise<void> {
    return this.view.ready;
  }

  isReady(): boolean {
    return this.view.isReady();
  }

  stop(): Promise<void> {
    return this.view.stop();
  }

  /** Creates or replaces a destination on every replica. */
  putDestination(row: Destination): Promise<void> {
    return this.#write(this.#opts.topics.config, (w) => [destinationMessage(row.id, row, w)]);
  }

  /** Deletes a destination (a tombstone) on every replica. */
  removeDestination(id: string): Promise<void> {
    return this.#write(this.#opts.topics.config, (w) => [destinationMessage(id, null, w)]);
  }

  /** Creates or replaces an entry of the event-type catalog on every replica. */
  putEventType(row: EventType): Promise<void> {
    return this.#write(this.#opts.topics.config, (w) => [eventTypeMessage(row.name, row, w)]);
  }

  /** Deletes an entry of the event-type catalog (a tombstone) on every replica. */
  removeEventType(name: string): Promise<void> {
    return this.#write(this.#opts.topics.config, (w) => [eventTypeMessage(name, null, w)]);
  }

  /** Marks dead events for replay on every replica; the one reading each event's partition sends it. */
  markReplaying(rows: LedgerUpdate[]): Promise<void> {
    if (rows.length === 0) return Promise.resolve();
    return this.#write(this.#opts.topics.outcomes, (w) =>
      rows.map((ledger) => outcomeMessage({ ledger }, w)),
    );
  }

  /** Shares an answered Idempotency-Key with the other replicas (no wait for the local view: it has it). */
  async shareIdempotencyKey(value: IdempotencyValue): Promise<void> {
    await this.#opts.sink.publish(this.#opts.topics.idempotency, [idempotencyMessage(value)]);
  }

  /** Resolves once this replica's view holds every outcome recorded so far by any replica. */
  outcomesCaughtUp(): Promise<void> {
    return this.view.caughtUp([this.#opts.topics.outcomes]);
  }

  async #write(topic: string, build: (writeId: string) => ReturnType<typeof destinationMessage>[]) {
    const writeId = randomUUID();
    const messages = build(writeId);
    const applied = this.view.awaitWrite(writeId, messages.length, this.#opts.applyTimeoutMs ?? 10_000);
    try {
      await this.#opts.sink.publish(topic, messages);
    } catch (err) {
      this.view.forgetWrite(writeId);
      throw err;
    }
    // Kafka has it: it is durable and every view will apply it. A view that is slow to (a stalled fetch)
    // is reported, not turned into an error the client would retry into a second write.
    if (!(await applied)) {
      this.#logger.warn({ topic, writeId }, "a write Kafka acknowledged is not in this replica's view yet");
    }
  }
}
