import { setTimeout as sleep } from "node:timers/promises";
import type { Logger } from "../log.ts";
import type { SharedState } from "../state/shared-state.ts";
import type { ViewListener } from "../state/view.ts";
import type { Store } from "../store/db.ts";
import { type Destination, getDestination } from "../store/destinations.ts";
import { deadRows, type LedgerRow } from "../store/ledger.ts";
import { saveOffsets } from "../store/offsets.ts";
import { type DeliveryRuntime, groupIdFor } from "./control.ts";
import type { EngineApi, MetricsJson } from "./engine-api.ts";
import type { OffsetLog } from "./offset-log.ts";
import type { PublishOperational } from "./operational.ts";

export interface CoordinatorDeps {
  store: Store;
  /** Where configuration and replay marks are written (Kafka first, then every replica's view). */
  state: Pick<SharedState, "putDestination" | "markReplaying">;
  /** The main thread's own Kafka port (registration, group deletion, lag of partitions read elsewhere). */
  log: OffsetLog;
  topic: string;
  groupPrefix: string;
  logger: Logger;
  /** The engines of this process: one on the main thread, or one per delivery thread. */
  engines(): EngineApi[];
  /** Threads' metrics (absent when the engine runs on the main thread, whose registry is the gateway's). */
  collectMetrics?(): Promise<MetricsJson[]>;
  /** Publishes an operational event (to the events topic, for operational destinations). */
  publishOperational?: PublishOperational;
  /** Extra work when stopping (ending threads). */
  afterStop?(): Promise<void>;
}

/** Retries a Kafka call that failed with a retriable error (leadership moving) for a few seconds. */
async function retriable<T>(fn: () => Promise<T>): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await fn();
    } catch (err) {
      if (attempt >= 10 || !(err as { retriable?: boolean }).retriable) throw err;
      await sleep(100 * attempt);
    }
  }
}

/**
 * The delivery side as the admin API sees it: registration pins a destination's group, every change goes
 * to every engine of the process (each reads its own share of the partitions), and the answers of the
 * engines are merged.
 */
export class DeliveryCoordinator implements DeliveryRuntime, ViewListener {
  #deps: CoordinatorDeps;
  #log: Logger;

  constructor(deps: CoordinatorDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ component: "delivery" });
    if (deps.collectMetrics) this.collectMetrics = deps.collectMetrics;
  }

  collectMetrics?: () => Promise<MetricsJson[]>;

  #all<T>(fn: (engine: EngineApi) => Promise<T>): Promise<T[]> {
    return Promise.all(this.#deps.engines().map(fn));
  }

  async start(): Promise<void> {
    await this.#all((e) => e.start());
  }

  async stop(): Promise<void> {
    await this.#all((e) => e.stop()).catch((err: unknown) => this.#log.warn({ err }, "engine stop failed"));
    await this.#deps.afterStop?.();
  }

  /**
   * One ListOffsets and one OffsetCommit: the new destination's group starts at the topic's end. The
   * offsets are mirrored to SQLite first, so an engine can place the destination even if Kafka later loses
   * the group's offsets.
   */
  async prepareDestination(destinationId: string, fromMs?: number): Promise<void> {
    const { log, topic, store } = this.#deps;
    const ends = await retriable(() =>
      fromMs === undefined ? log.endOffsets(topic) : log.offsetsForTime(topic, fromMs),
    );
    const offsets = [...ends].map(([partition, offset]) => ({ partition, offset }));
    saveOffsets(
      store.db,
      topic,
      offsets.map((o) => ({ destinationId, ...o })),
    );
    await retriable(() => log.commit(groupIdFor(this.#deps.groupPrefix, destinationId), topic, offsets));
  }

  async destinationAdded(destination: Parameters<EngineApi["upsert"]>[0]): Promise<void> {
    if (!destination.disabled) await this.#all((e) => e.upsert(destination));
  }

  async destinationChanged(destination: Parameters<EngineApi["upsert"]>[0]): Promise<void> {
    await this.#all((e) => e.upsert(destination));
  }

  async destinationRemoved(destinationId: string): Promise<void> {
    await this.#all((e) => e.remove(destinationId));
    const groupId = groupIdFor(this.#deps.groupPrefix, destinationId);
    try {
      await this.#deps.log.deleteGroups([groupId]);
    } catch (err) {
      // Kafka is down: an orphan group only costs a few bytes, and its offsets expire on their own.
      this.#log.warn({ err, groupId }, "could not delete consumer group");
    }
  }

  /** The view applied a destination write (from this replica or another): every engine follows it. */
  async destinationPut(row: Destination, previous: Destination | undefined): Promise<void> {
    if (previous) await this.destinationChanged(row);
    else await this.destinationAdded(row);
  }

  /** The view applied replay marks: the engines reading those events' partitions send them again. */
  async replaying(destinationId: string, rows: LedgerRow[]): Promise<void> {
    const row = getDestination(this.#deps.store.db, destinationId);
    // Without a running worker the rows stay "replaying" and are picked up when one starts.
    if (row && !row.disabled) await this.#all((e) => e.replay(destinationId, rows));
  }

  /** Marks dead events for replay with a fresh attempt budget (through the outcomes topic); returns how many. */
  async replay(destinationId: string, eventIds?: string[], deadSince?: number): Promise<number> {
    const at = Date.now();
    const rows = deadRows(this.#deps.store.db, destinationId, eventIds, deadSince);
    await this.#deps.state.markReplaying(
      rows.map((r) => ({
        destinationId,
        eventId: r.eventId,
        userId: r.userId,
        status: "replaying" as const,
        attempts: 0,
        lastError: r.lastError,
        event: r.event,
        at,
      })),
    );
    return rows.length;
  }

  /**
   * The engines' own figures for the partitions this process reads; for any other partition (read by
   * another process, or not assigned right now) the topic's end minus the group's committed offset.
   */
  async lag(destinationId: string): Promise<number | null> {
    const parts = await this.#all((e) => e.lag(destinationId)).catch(
      () => [] as Array<Record<number, number>>,
    );
    const known = new Map<number, number>();
    for (const part of parts) for (const [p, n] of Object.entries(part)) known.set(Number(p), n);
    try {
      const ends = await this.#deps.log.endOffsets(this.#deps.topic);
      let total = 0;
      const missing = [...ends.keys()].filter((p) => !known.has(p));
      const committed =
        missing.length > 0
          ? await this.#deps.log.committed(
              groupIdFor(this.#deps.groupPrefix, destinationId),
              this.#deps.topic,
            )
          : new Map<number, number>();
      for (const [p, end] of ends) {
        total += known.get(p) ?? Math.max(0, end - (committed.get(p) ?? end));
      }
      return total;
    } catch {
      return known.size > 0 ? [...known.values()].reduce((a, b) => a + b, 0) : null;
    }
  }

  /** A receiver answered 410 Gone: the destination is disabled with the reason, on every replica. */
  async gone(destinationId: string, reason: string): Promise<void> {
    const row = getDestination(this.#deps.store.db, destinationId);
    if (!row || row.disabled) return;
    this.#log.warn({ destinationId, reason }, "destination disabled");
    const disabled = { ...row, disabled: true, disabledReason: reason, updatedAt: Date.now() };
    await this.#deps.state.putDestination(disabled);
    await this.announce(disabled, "destination.disabled");
  }

  async announce(
    destination: Destination,
    type: "destination.disabled" | "destination.enabled",
  ): Promise<void> {
    if (destination.kind === "operational" || !this.#deps.publishOperational) return;
    await this.#deps
      .publishOperational(type, {
        destinationId: destination.id,
        name: destination.name,
        url: destination.url,
        ...(type === "destination.disabled" ? { reason: destination.disabledReason } : {}),
      })
      .catch((err: unknown) =>
        this.#log.warn(
          { err, destinationId: destination.id, type },
          "could not publish an operational event",
        ),
      );
  }
}
