import type { MetricObjectWithValues, MetricValue } from "prom-client";
import type { Destination } from "../store/destinations.ts";

/**
 * What the admin API may ask of the delivery side. The coordinator implements it; routes never touch
 * kafkajs, engines or workers directly.
 */
export interface DeliveryControl {
  /**
   * Pins the consumer group of a destination about to be registered to the events topic's current end
   * offsets (committed to Kafka and mirrored to SQLite), so every event accepted after the registration's
   * 201 is delivered to it. Call before the destination row is committed-and-answered; throws when Kafka
   * cannot do it (the route answers 503). With `fromMs` (`startFrom`), pinned instead to the first event
   * accepted at or after that time (0: the log's start), so the destination is backfilled from history.
   */
  prepareDestination(destinationId: string, fromMs?: number): Promise<void>;
  /**
   * Starts delivering to a new destination (its row is already in the store). Called by the state view when
   * it applies a destination record, on every replica — not by the admin routes, which write to Kafka.
   */
  destinationAdded(destination: Destination): Promise<void>;
  /** The row changed (PATCH, or a 410's disable; applied by the view): workers pick up the new settings, or stop/start on `disabled`. */
  destinationChanged(destination: Destination): Promise<void>;
  /** The view deleted the row (a tombstone): stop its workers and delete its consumer group. */
  destinationRemoved(destinationId: string): Promise<void>;
  /**
   * Re-delivers dead-lettered events of a destination with a fresh attempt budget (all of them when
   * `eventIds` is absent). Returns how many were queued for replay.
   */
  replay(destinationId: string, eventIds?: string[], deadSince?: number): Promise<number>;
  /** Events in the log not yet finished for the destination (null when Kafka cannot say right now). */
  lag(destinationId: string): Promise<number | null>;
  /**
   * Raises an operational event about a destination (an admin PATCH enabled or disabled it); nothing for
   * an operational destination. Best effort: a failure is logged, never the admin change's failure.
   */
  announce?(destination: Destination, type: "destination.disabled" | "destination.enabled"): Promise<void>;
}

/** A running delivery side: engines on the main thread or on delivery threads. */
export interface DeliveryRuntime extends DeliveryControl {
  /** Starts the engines; call once the topics exist. */
  start(): Promise<void>;
  /** Stops every engine (in-flight attempts get a grace period) and releases Kafka and the database. */
  stop(): Promise<void>;
  /** Metrics kept on other threads, as `Registry.getMetricsAsJSON()` arrays, merged into /metrics. */
  collectMetrics?(): Promise<MetricObjectWithValues<MetricValue<string>>[][]>;
}

/** The consumer group holding a destination's progress. */
export function groupIdFor(prefix: string, destinationId: string): string {
  return `${prefix}.dest.${destinationId}`;
}

/**
 * The one consumer group whose members share the events topic's partitions between them. The topic is part
 * of the name: members of one group must all subscribe to the same topic, so gateways of one prefix that
 * read different topics never end up in one group.
 */
export function sharedGroupId(prefix: string, topic: string): string {
  return `${prefix}.delivery.${topic}`;
}
