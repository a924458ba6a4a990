import type { MetricObjectWithValues, MetricValue } from "prom-client";
import type { Destination } from "../store/destinations.ts";

/**
 * What the admin API may ask of the delivery side. The supervisor implements it; routes never touch
 * kafkajs or workers directly.
 */
export interface DeliveryControl {
  /**
   * Pins the consumer group of a destination about to be registered to the events topic's current end
   * offsets, so every event accepted after the registration's 201 is delivered to it. Call before the
   * destination row is committed-and-answered; throws when Kafka cannot do it (the route answers 503).
   */
  prepareDestination(destinationId: string): Promise<void>;
  /** Starts the worker of a new destination (its row is already in the store). */
  destinationAdded(destination: Destination): Promise<void>;
  /** The row changed (PATCH): the worker picks up the new settings, or stops/starts on `disabled`. */
  destinationChanged(destination: Destination): Promise<void>;
  /** The row was deleted: stop the worker and delete its consumer group. */
  destinationRemoved(destinationId: string): Promise<void>;
  /**
   * Re-delivers dead-lettered events of a destination with a fresh attempt budget (all of them when
   * `eventIds` is absent). Returns how many were queued for replay.
   */
  replay(destinationId: string, eventIds?: string[]): Promise<number>;
}

/** A running delivery side: workers on the main thread (DeliverySupervisor) or on delivery threads. */
export interface DeliveryRuntime extends DeliveryControl {
  /** Starts the workers of every enabled destination; call once the topics exist. */
  start(): Promise<void>;
  /** Stops every worker (in-flight attempts get a grace period) and releases Kafka and the database. */
  stop(): Promise<void>;
  /** Metrics kept on other threads, as `Registry.getMetricsAsJSON()` arrays, merged into /metrics. */
  collectMetrics?(): Promise<MetricObjectWithValues<MetricValue<string>>[][]>;
}

/** The consumer group id of a destination's worker. */
export function groupIdFor(prefix: string, destinationId: string): string {
  return `${prefix}.dest.${destinationId}`;
}
