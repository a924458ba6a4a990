import { monitorEventLoopDelay } from "node:perf_hooks";
import { getHeapStatistics } from "node:v8";
import { Counter, collectDefaultMetrics, Gauge, Histogram, Registry } from "prom-client";
import type { DeliveryObserver } from "./delivery/observer.ts";

/**
 * Prometheus instruments of one gateway. Each gateway gets its own Registry rather than prom-client's
 * global one, so several gateways in one process (tests) never collide on metric names.
 */
export interface Metrics {
  registry: Registry;
  /** Events offered to ingest: accepted (Kafka acknowledged) or refused (503, Kafka could not take it). */
  ingestEvents: Counter<"outcome">;
  /** Records per group-commit batch sent to Kafka. */
  ingestBatchSize: Histogram;
  /** Batches sent, by what sent them (src/ingest/producer.ts BatchTrigger). */
  ingestBatches: Counter<"trigger">;
  /** Time from a batch's send to Kafka's acknowledgement. */
  ingestAckSeconds: Histogram;
  /** Events a destination finished: delivered, or dead (dead-lettered). */
  deliveries: Counter<"destination" | "outcome">;
  /** HTTP attempts by what the receiver did: success (2xx), retry (anything retryable), gone (410). */
  deliveryAttempts: Counter<"destination" | "result">;
  /** Duration of one HTTP attempt. */
  deliveryAttemptSeconds: Histogram<"destination">;
  /** From Kafka's acknowledgement of the event to the receiver's 2xx. */
  deliveryLagSeconds: Histogram<"destination">;
  /** Events put on the dead-letter topic. */
  deadLetters: Counter<"destination">;
  /** Events a destination's worker holds in memory, not yet finished. */
  workerBufferedEvents: Gauge<"destination">;
  /** Events in the log not yet finished per destination (set from `lagSource` at each scrape). */
  deliveryLagEvents: Gauge<"destination">;
  /** Where delivery_lag_events comes from: the delivery engine of this thread, once it runs. */
  lagSource: (() => Iterable<[string, number]>) | undefined;
  /** Drops every series of a deleted destination, so its last gauge value does not linger forever. */
  forgetDestination(destinationId: string): void;
}

export const DELIVERY_OUTCOMES = ["delivered", "dead"] as const;
export const ATTEMPT_RESULTS = ["success", "retry", "gone"] as const;

/**
 * Creates a registry with the gateway's instruments and, unless `processMetrics: false` (a delivery thread,
 * whose process is the main thread's), Node's default process metrics.
 */
export function createMetrics(opts: { processMetrics?: boolean } = {}): Metrics {
  const registry = new Registry();
  if (opts.processMetrics !== false) collectDefaultMetrics({ register: registry });
  const registers = [registry];

  const ingestEvents = new Counter({
    name: "ingest_events_total",
    help: "Events offered to ingest, by outcome (accepted = acknowledged by Kafka, refused = answered 503).",
    labelNames: ["outcome"] as const,
    registers,
  });
  const ingestBatchSize = new Histogram({
    name: "ingest_batch_size",
    help: "Records per group-commit batch sent to Kafka.",
    buckets: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000],
    registers,
  });
  const ingestBatches = new Counter({
    name: "ingest_batches_total",
    help: "Group-commit batches sent to Kafka, by what sent them: size (full), linger (its time ran out), all_waiting (every connection waited for it), shutdown.",
    labelNames: ["trigger"] as const,
    registers,
  });
  const ingestAckSeconds = new Histogram({
    name: "ingest_ack_seconds",
    help: "Time from sending a batch to Kafka's acks=all acknowledgement.",
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const deliveries = new Counter({
    name: "deliveries_total",
    help: "Events a destination finished, by outcome (delivered, dead).",
    labelNames: ["destination", "outcome"] as const,
    registers,
  });
  const deliveryAttempts = new Counter({
    name: "delivery_attempts_total",
    help: "HTTP delivery attempts, by result (success = 2xx, retry, gone = 410).",
    labelNames: ["destination", "result"] as const,
    registers,
  });
  const deliveryAttemptSeconds = new Histogram({
    name: "delivery_attempt_seconds",
    help: "Duration of one HTTP delivery attempt.",
    labelNames: ["destination"] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
    registers,
  });
  const deliveryLagSeconds = new Histogram({
    name: "delivery_lag_seconds",
    help: "Time from an event's acceptance to its successful delivery, retries included.",
    labelNames: ["destination"] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600, 21600],
    registers,
  });
  const deadLetters = new Counter({
    name: "dead_letters_total",
    help: "Events put on the dead-letter topic after their attempts ran out (or the receiver said 410).",
    labelNames: ["destination"] as const,
    registers,
  });
  const workerBufferedEvents = new Gauge({
    name: "worker_buffered_events",
    help: "Events a destination's worker holds in memory and has not finished.",
    labelNames: ["destination"] as const,
    registers,
  });

  const metrics = {} as Metrics;
  const deliveryLagEvents = new Gauge({
    name: "delivery_lag_events",
    help: "Events in the events topic not yet finished (delivered, dead-lettered or filtered out) for a destination.",
    labelNames: ["destination"] as const,
    registers,
    collect() {
      const source = metrics.lagSource;
      if (!source) return;
      this.reset();
      for (const [destination, lag] of source()) this.set({ destination }, lag);
    },
  });

  return Object.assign(metrics, {
    registry,
    deliveryLagEvents,
    lagSource: undefined,
    ingestEvents,
    ingestBatchSize,
    ingestBatches,
    ingestAckSeconds,
    deliveries,
    deliveryAttempts,
    deliveryAttemptSeconds,
    deliveryLagSeconds,
    deadLetters,
    workerBufferedEvents,
    forgetDestination(destination: string) {
      // prom-client removes a series only by its full label set, so every known combination is named.
      for (const outcome of DELIVERY_OUTCOMES) deliveries.remove({ destination, outcome });
      for (const result of ATTEMPT_RESULTS) deliveryAttempts.remove({ destination, result });
      deliveryAttemptSeconds.remove({ destination });
      deliveryLagSeconds.remove({ destination });
      deadLetters.remove({ destination });
      workerBufferedEvents.remove({ destination });
      deliveryLagEvents.remove({ destination });
    },
  });
}

/** The delivery workers' observer hooks, feeding the delivery instruments. */
export function deliveryObserver(metrics: Metrics): DeliveryObserver {
  return {
    attempt(destination, result) {
      metrics.deliveryAttempts.inc({ destination, result: result.verdict });
      metrics.deliveryAttemptSeconds.observe({ destination }, result.durationMs / 1000);
    },
    finished(destination, outcome, acceptedAt) {
      metrics.deliveries.inc({ destination, outcome });
      if (outcome === "dead") metrics.deadLetters.inc({ destination });
      else if (acceptedAt !== undefined) {
        metrics.deliveryLagSeconds.observe({ destination }, Math.max(0, Date.now() - acceptedAt) / 1000);
      }
    },
    buffered(destination, count) {
      metrics.workerBufferedEvents.set({ destination }, count);
    },
    forget(destination) {
      metrics.forgetDestination(destination);
    },
  };
}

/**
 * A delivery thread's own health on its registry: Node's default metrics describe the main thread only,
 * and each thread has its own V8 heap and event loop.
 */
export function registerThreadMetrics(registry: Registry, thread: number): void {
  const labels = { thread: String(thread) };
  const lag = monitorEventLoopDelay({ resolution: 10 });
  lag.enable();
  new Gauge({
    name: "delivery_thread_heap_used_bytes",
    help: "V8 heap in use by a delivery thread (live objects and garbage not yet collected).",
    labelNames: ["thread"] as const,
    registers: [registry],
    collect() {
      this.set(labels, getHeapStatistics().used_heap_size);
    },
  });
  new Gauge({
    name: "delivery_thread_event_loop_lag_p99_seconds",
    help: "p99 event-loop delay of a delivery thread since the previous scrape.",
    labelNames: ["thread"] as const,
    registers: [registry],
    collect() {
      this.set(labels, lag.percentile(99) / 1e9);
      lag.reset();
    },
  });
}
