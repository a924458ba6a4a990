import { setTimeout as sleep } from "node:timers/promises";
import type { Admin, Kafka } from "kafkajs";
import type { Dispatcher } from "undici";
import type { RecordSink } from "../ingest/producer.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import {
  type Destination,
  getDestination,
  listDestinations,
  updateDestination,
} from "../store/destinations.ts";
import { deleteLedger, markForReplay } from "../store/ledger.ts";
import { type DeliveryControl, groupIdFor } from "./control.ts";
import { DeliveryRecorder } from "./recorder.ts";
import { type BufferLimits, DeliveryWorker, type FetchTuning, type WorkerObserver } from "./worker.ts";

export interface SupervisorDeps {
  kafka: Kafka;
  store: Store;
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  topic: string;
  deadLetterTopic: string;
  groupPrefix: string;
  createDispatcher(destination: Destination): Dispatcher;
  observe?: WorkerObserver;
  /** Per-worker memory bounds (default DEFAULT_BUFFER_LIMITS). */
  buffer?: BufferLimits;
  /** Consumer fetch settings of every worker (default DEFAULT_FETCH). */
  fetch?: FetchTuning;
  /**
   * Which destinations this supervisor runs (default: all). A delivery thread's supervisor runs only those
   * the main thread assigned to it, so start() and its retries never start another thread's worker.
   */
  owns?(destinationId: string): boolean;
}

/**
 * Runs one DeliveryWorker per enabled destination and implements what the admin API may ask of delivery.
 * Workers start once Kafka is usable (`start()`); until then destinations are only recorded.
 */
export class DeliverySupervisor implements DeliveryControl {
  #deps: SupervisorDeps;
  #workers = new Map<string, DeliveryWorker>();
  #starting = new Map<string, Promise<void>>();
  #recorder: DeliveryRecorder;
  #admin: Admin | undefined;
  #started = false;
  #stopped = false;
  #log: Logger;

  constructor(deps: SupervisorDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ component: "supervisor" });
    this.#recorder = new DeliveryRecorder(deps.store, this.#log);
  }

  /** The worker of a destination, if one runs (tests and metrics read it). */
  worker(destinationId: string): DeliveryWorker | undefined {
    return this.#workers.get(destinationId);
  }

  get workerCount(): number {
    return this.#workers.size;
  }

  async #adminClient(): Promise<Admin> {
    if (!this.#admin) {
      const admin = this.#deps.kafka.admin();
      await admin.connect();
      this.#admin = admin;
    }
    return this.#admin;
  }

  /**
   * Starts a worker for every enabled destination, in parallel. A worker that cannot start (Kafka
   * flapping) is retried in the background until it runs or the supervisor stops.
   */
  async start(): Promise<void> {
    if (this.#stopped) return;
    this.#started = true;
    const owns = this.#deps.owns ?? (() => true);
    const enabled = listDestinations(this.#deps.store.db).filter((d) => !d.disabled && owns(d.id));
    await Promise.all(enabled.map((d) => this.#startWorker(d).catch(() => this.#retryStart(d.id))));
    this.#log.info({ workers: this.#workers.size, destinations: enabled.length }, "delivery workers running");
  }

  #retryStart(destinationId: string, delayMs = 1000): void {
    const timer = setTimeout(() => {
      const row = getDestination(this.#deps.store.db, destinationId);
      if (this.#stopped || !row || row.disabled || this.#workers.has(destinationId)) return;
      if (this.#deps.owns && !this.#deps.owns(destinationId)) return;
      this.#startWorker(row).catch(() => this.#retryStart(destinationId, Math.min(delayMs * 2, 30_000)));
    }, delayMs);
    timer.unref();
  }

  #startWorker(destination: Destination): Promise<void> {
    if (!this.#started || this.#stopped || this.#workers.has(destination.id)) return Promise.resolve();
    const pending = this.#starting.get(destination.id);
    if (pending) return pending;
    const worker = new DeliveryWorker(destination, {
      kafka: this.#deps.kafka,
      topic: this.#deps.topic,
      deadLetterTopic: this.#deps.deadLetterTopic,
      groupId: groupIdFor(this.#deps.groupPrefix, destination.id),
      store: this.#deps.store,
      recorder: this.#recorder,
      sink: this.#deps.sink,
      logger: this.#deps.logger,
      createDispatcher: this.#deps.createDispatcher,
      onGone: (id, reason) => void this.#disable(id, reason),
      observe: this.#deps.observe,
      buffer: this.#deps.buffer,
      fetch: this.#deps.fetch,
    });
    const started = worker
      .start()
      .then(() => {
        this.#workers.set(destination.id, worker);
      })
      .catch(async (err: unknown) => {
        this.#log.error({ err, destinationId: destination.id }, "worker failed to start");
        await worker.stop();
        throw err;
      })
      .finally(() => this.#starting.delete(destination.id));
    this.#starting.set(destination.id, started);
    return started;
  }

  async #stopWorker(destinationId: string): Promise<void> {
    await this.#starting.get(destinationId)?.catch(() => {});
    const worker = this.#workers.get(destinationId);
    this.#workers.delete(destinationId);
    await worker?.stop();
  }

  /** A 410 Gone: the receiver asked us to stop. Disable the destination and stop its worker. */
  async #disable(destinationId: string, reason: string): Promise<void> {
    const row = updateDestination(this.#deps.store.db, destinationId, {
      disabled: true,
      disabledReason: reason,
    });
    this.#log.warn({ destinationId, reason }, "destination disabled");
    if (row) await this.#stopWorker(destinationId);
  }

  async prepareDestination(destinationId: string): Promise<void> {
    // Leadership moves (a broker restart, a topic just created) answer NOT_LEADER for a moment: retry
    // retriable errors for a few seconds before the admin API gives up with a 503.
    for (let attempt = 1; ; attempt++) {
      try {
        const admin = await this.#adminClient();
        const ends = await admin.fetchTopicOffsets(this.#deps.topic);
        await admin.setOffsets({
          groupId: groupIdFor(this.#deps.groupPrefix, destinationId),
          topic: this.#deps.topic,
          partitions: ends.map((p) => ({ partition: p.partition, offset: p.high })),
        });
        return;
      } catch (err) {
        if (attempt >= 10 || !(err as { retriable?: boolean }).retriable) throw err;
        await sleep(100 * attempt);
      }
    }
  }

  async destinationAdded(destination: Destination): Promise<void> {
    if (!destination.disabled) await this.#startWorker(destination);
  }

  async destinationChanged(destination: Destination): Promise<void> {
    const worker = this.#workers.get(destination.id);
    if (destination.disabled) await this.#stopWorker(destination.id);
    else if (worker) worker.update(destination);
    else await this.#startWorker(destination);
  }

  async destinationRemoved(destinationId: string): Promise<void> {
    await this.#stopWorker(destinationId);
    deleteLedger(this.#deps.store.db, destinationId);
    this.#deps.observe?.forget?.(destinationId);
    const groupId = groupIdFor(this.#deps.groupPrefix, destinationId);
    try {
      const admin = await this.#adminClient();
      await admin.deleteGroups([groupId]);
    } catch (err) {
      // The group may never have been created, or Kafka is down: an orphan group only costs a few bytes.
      this.#log.warn({ err, groupId }, "could not delete consumer group");
    }
  }

  async replay(destinationId: string, eventIds?: string[]): Promise<number> {
    const rows = markForReplay(this.#deps.store.db, destinationId, eventIds, Date.now());
    const worker = this.#workers.get(destinationId);
    // Without a running worker the rows stay "replaying" and are picked up when one starts.
    if (worker && getDestination(this.#deps.store.db, destinationId)) {
      for (const row of rows) worker.enqueueReplay(row);
    }
    return rows.length;
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await Promise.all([...this.#starting.values()].map((p) => p.catch(() => {})));
    await Promise.all([...this.#workers.keys()].map((id) => this.#stopWorker(id)));
    this.#recorder.flush({ wait: true });
    await this.#admin?.disconnect().catch(() => {});
  }
}
