import { setTimeout as sleep } from "node:timers/promises";
import type { Kafka } from "kafkajs";
import { KafkaLog, type LogRecord, OffsetOutOfRangeError } from "../kafka/log-client.ts";
import type { Logger } from "../log.ts";
import { type AttemptRow, insertAttempts } from "../store/attempts.ts";
import type { Store } from "../store/db.ts";
import {
  type Destination,
  deleteDestination,
  getDestination,
  putDestination,
} from "../store/destinations.ts";
import { deleteEventType, type EventType, putEventType } from "../store/event-types.ts";
import { applyIdempotencyKey } from "../store/idempotency.ts";
import { deleteLedger, type LedgerRow, type LedgerUpdate, upsertLedger } from "../store/ledger.ts";
import { deleteOffsets } from "../store/offsets.ts";
import { loadStateOffsets, saveStateOffset } from "../store/state-offsets.ts";
import { type AcceptedRollup, rollUpAccepted, rollUpAttempts } from "../store/stats.ts";
import {
  destinationIdOf,
  eventTypeNameOf,
  type IdempotencyValue,
  type Outcome,
  parseState,
  type StateTopics,
} from "./records.ts";

/** What the rest of the gateway hears of changes the view applied once it is live (ready). */
export interface ViewListener {
  destinationPut(row: Destination, previous: Destination | undefined): Promise<void>;
  destinationRemoved(id: string): Promise<void>;
  /** Dead events of a destination were marked for replay (on whichever replica). */
  replaying(destinationId: string, rows: LedgerRow[]): Promise<void>;
}

export interface StateViewOptions {
  kafka: Kafka;
  store: Store;
  topics: StateTopics;
  logger: Logger;
  /** Longest a fetch waits for new records (the broker answers at once when some arrive). */
  maxWaitMs?: number;
  /** Told of every event-type record applied, before `ready` too (the catalog must be complete then). */
  onEventType?: (name: string, row: EventType | null) => void;
  /**
   * Told of the attempts each fetch applied, after their transaction committed (the console's live tail).
   * Called synchronously: it must not block or throw.
   */
  onAttempts?: (rows: AttemptRow[]) => void;
}

type Change =
  | { kind: "put"; row: Destination; previous: Destination | undefined }
  | { kind: "removed"; id: string };

interface Applied {
  destinations: Change[];
  /** destination → event → row, of events whose last applied state is "replaying". */
  replaying: Map<string, Map<string, LedgerRow>>;
  writeIds: string[];
  eventTypes: Array<{ name: string; row: EventType | null }>;
}

interface CatchUp {
  target: Array<{ topic: string; partition: number; offset: number }>;
  resolve(): void;
}

const FETCH = { maxBytes: 16 * 1024 * 1024, maxBytesPerPartition: 4 * 1024 * 1024 };

function ledgerRowOf(u: LedgerUpdate): LedgerRow {
  return {
    destinationId: u.destinationId,
    eventId: u.eventId,
    userId: u.userId,
    status: u.status,
    attempts: u.attempts,
    lastError: u.lastError,
    event: u.event,
    updatedAt: u.at,
    deadAt: u.status === "dead" ? u.at : null,
  };
}

/**
 * This replica's SQLite as a view of the shared-state topics (records.ts): one reader fetches every
 * partition of the three topics (one long poll per broker), applies what it got in one transaction with
 * its new positions (state_offsets), and then tells the listener. A replica with an empty database reads
 * the topics from their start; `ready` resolves once the view has applied everything that was in the
 * topics when it started (the gateway answers /readyz 503 and the admin API 503 until then).
 */
export class StateView {
  #opts: StateViewOptions;
  #log: KafkaLog;
  #logger: Logger;
  #positions = new Map<string, Map<number, number>>();
  #listener: ViewListener | undefined;
  #ready = false;
  #markReady: () => void = () => {};
  #stopped = false;
  #running: Promise<void> | undefined;
  #catchUps: CatchUp[] = [];
  #writes = new Map<string, { remaining: number; resolve(applied?: boolean): void }>();
  readonly ready: Promise<void>;

  constructor(opts: StateViewOptions) {
    this.#opts = opts;
    this.#log = new KafkaLog(opts.kafka, { logger: opts.logger });
    this.#logger = opts.logger.child({ component: "state-view" });
    this.ready = new Promise((resolve) => {
      this.#markReady = resolve;
    });
  }

  get topics(): StateTopics {
    return this.#opts.topics;
  }

  isReady(): boolean {
    return this.#ready;
  }

  /** Starts reading (call once the topics exist). Changes applied before `ready` are not announced. */
  start(listener: ViewListener): void {
    this.#listener = listener;
    this.#running ??= this.#run().catch((err: unknown) => {
      if (!this.#stopped) this.#logger.error({ err }, "the state view stopped reading");
    });
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    await this.#log.close();
    await this.#running;
    for (const c of this.#catchUps) c.resolve();
    for (const w of this.#writes.values()) w.resolve();
  }

  /**
   * Resolves once `count` records carrying `writeId` are applied (and announced), or after `timeoutMs`
   * (returns false then). Call it before publishing the records.
   */
  awaitWrite(writeId: string, count: number, timeoutMs: number): Promise<boolean> {
    return new Promise((resolve) => {
      const timer = setTimeout(() => {
        this.#writes.delete(writeId);
        resolve(false);
      }, timeoutMs);
      this.#writes.set(writeId, {
        remaining: count,
        resolve: (applied = true) => {
          clearTimeout(timer);
          resolve(applied);
        },
      });
    });
  }

  /** Stops waiting for a write that was never published (its publish failed). */
  forgetWrite(writeId: string): void {
    const w = this.#writes.get(writeId);
    this.#writes.delete(writeId);
    w?.resolve(false);
  }

  /** Resolves once the view has applied everything now in `topics` (a partition taken over: outcomes). */
  async caughtUp(topics: string[] = [this.#opts.topics.outcomes]): Promise<void> {
    const target: CatchUp["target"] = [];
    for (const topic of topics) {
      const ends = await this.#retrying(() => this.#log.endOffsets(topic));
      for (const [partition, offset] of ends) target.push({ topic, partition, offset });
    }
    if (this.#reached(target)) return;
    await new Promise<void>((resolve) => this.#catchUps.push({ target, resolve }));
  }

  #reached(target: CatchUp["target"]): boolean {
    return target.every((t) => (this.#positions.get(t.topic)?.get(t.partition) ?? 0) >= t.offset);
  }

  async #retrying<T>(fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (err) {
        if (this.#stopped) throw err;
        if (attempt === 1 || attempt % 30 === 0) {
          this.#logger.warn({ err, attempt }, "state topics unreachable; retrying");
        }
        await sleep(Math.min(200 * attempt, 2000));
      }
    }
  }

  async #run(): Promise<void> {
    const { store, topics } = this.#opts;
    const saved = loadStateOffsets(store.db);
    const target: CatchUp["target"] = [];
    for (const topic of [topics.config, topics.idempotency, topics.outcomes]) {
      const [starts, ends] = await this.#retrying(() =>
        Promise.all([this.#log.startOffsets(topic), this.#log.endOffsets(topic)]),
      );
      const positions = new Map<number, number>();
      for (const [partition, end] of ends) {
        const start = starts.get(partition) ?? 0;
        const at = saved.get(topic)?.get(partition);
        positions.set(partition, at === undefined || at < start ? start : at);
        target.push({ topic, partition, offset: end });
      }
      this.#positions.set(topic, positions);
    }
    const started = performance.now();
    this.#catchUps.push({
      target,
      resolve: () => {
        this.#ready = true;
        this.#logger.info(
          { ms: Math.round(performance.now() - started) },
          "state view caught up with the shared-state topics",
        );
        this.#markReady();
      },
    });
    this.#settleCatchUps();

    let failures = 0;
    while (!this.#stopped) {
      const wanted = [...this.#positions].flatMap(([topic, parts]) =>
        [...parts].map(([partition, offset]) => ({ topic, partition, offset })),
      );
      let results: Awaited<ReturnType<KafkaLog["fetchMany"]>>;
      try {
        results = await this.#log.fetchMany(wanted, { ...FETCH, maxWaitMs: this.#opts.maxWaitMs ?? 500 });
        failures = 0;
      } catch (err) {
        if (this.#stopped) return;
        if (err instanceof OffsetOutOfRangeError && err.logStartOffset !== undefined) {
          // Retention removed records this view never read (outcomes older than RETENTION_DAYS).
          this.#logger.warn(
            { err },
            "state records expired before this view read them; skipping to the log start",
          );
          this.#positions.get(err.topic)?.set(err.partition, err.logStartOffset);
          continue;
        }
        failures++;
        if (failures === 1 || failures % 30 === 0)
          this.#logger.warn({ err, failures }, "state view fetch failed");
        await sleep(Math.min(100 * failures, 2000));
        continue;
      }
      const changes = this.#apply(results);
      if (this.#ready && this.#listener) await this.#announce(changes);
      this.#settleWrites(changes.writeIds);
      this.#settleCatchUps();
    }
  }

  /** One transaction: every record of the fetch, and the positions after them. */
  #apply(results: Awaited<ReturnType<KafkaLog["fetchMany"]>>): Applied {
    const { store, topics } = this.#opts;
    const db = store.db;
    const destinations: Change[] = [];
    const replaying = new Map<string, Map<string, LedgerRow>>();
    const writeIds: string[] = [];
    const eventTypes: Applied["eventTypes"] = [];
    const attempts: AttemptRow[] = [];
    const applied: AttemptRow[] = [];
    const ledger: LedgerUpdate[] = [];
    const moved: Array<{ topic: string; partition: number; next: number }> = [];

    const onRecord = (topic: string, r: LogRecord) => {
      const w = r.headers.w;
      if (w) writeIds.push(w.toString());
      const key = r.key?.toString() ?? "";
      if (topic === topics.config) {
        const typeName = eventTypeNameOf(key);
        if (typeName !== undefined) {
          if (r.value === null) {
            if (deleteEventType(db, typeName)) eventTypes.push({ name: typeName, row: null });
            return;
          }
          const parsed = parseState<{ eventType: EventType }>(r.value);
          if (!parsed) return this.#unknownVersion(topic, r);
          putEventType(db, parsed.eventType);
          eventTypes.push({ name: typeName, row: parsed.eventType });
          return;
        }
        const id = destinationIdOf(key);
        if (id === undefined) return;
        if (r.value === null) {
          if (deleteDestination(db, id)) {
            deleteLedger(db, id);
            deleteOffsets(db, id);
            destinations.push({ kind: "removed", id });
          }
          return;
        }
        const parsed = parseState<{ destination: Destination }>(r.value);
        if (!parsed) return this.#unknownVersion(topic, r);
        const previous = getDestination(db, id);
        putDestination(db, parsed.destination);
        destinations.push({ kind: "put", row: parsed.destination, previous });
      } else if (topic === topics.outcomes) {
        if (r.value === null) return;
        const parsed = parseState<{
          a?: Outcome["attempt"];
          l?: Outcome["ledger"];
          s?: AcceptedRollup;
        }>(r.value);
        if (!parsed) return this.#unknownVersion(topic, r);
        if (parsed.s) rollUpAccepted(db, parsed.s);
        if (parsed.a) attempts.push(parsed.a);
        if (parsed.l) {
          ledger.push(parsed.l);
          const byEvent = replaying.get(parsed.l.destinationId);
          if (parsed.l.status === "replaying") {
            const map = byEvent ?? new Map<string, LedgerRow>();
            map.set(parsed.l.eventId, ledgerRowOf(parsed.l));
            replaying.set(parsed.l.destinationId, map);
          } else {
            byEvent?.delete(parsed.l.eventId);
          }
        }
      } else if (topic === topics.idempotency) {
        if (r.value === null) return;
        const parsed = parseState<IdempotencyValue>(r.value);
        if (!parsed) return this.#unknownVersion(topic, r);
        const { v: _v, ...row } = parsed;
        applyIdempotencyKey(db, row);
      }
    };

    store.sqlite.transaction(() => {
      for (const result of results) {
        for (const r of result.records) onRecord(result.topic, r);
        // Attempts and ledger rows go in record order, after each partition's records.
        insertAttempts(db, attempts);
        rollUpAttempts(db, attempts);
        // Only once live (a rebuild's millions of old attempts are nobody's tail).
        if (this.#opts.onAttempts && this.#ready) for (const a of attempts) applied.push(a);
        attempts.length = 0;
        upsertLedger(db, ledger.splice(0));
        const at = this.#positions.get(result.topic)?.get(result.partition) ?? 0;
        if (result.next > at) {
          saveStateOffset(db, result.topic, result.partition, result.next);
          moved.push({ topic: result.topic, partition: result.partition, next: result.next });
        }
      }
    })();
    for (const m of moved) this.#positions.get(m.topic)?.set(m.partition, m.next);
    for (const { name, row } of eventTypes) {
      try {
        this.#opts.onEventType?.(name, row);
      } catch (err) {
        this.#logger.error({ err, eventType: name }, "could not apply an event type to the catalog");
      }
    }
    if (applied.length > 0) this.#opts.onAttempts?.(applied);
    return { destinations, replaying, writeIds, eventTypes };
  }

  #unknownVersion(topic: string, r: LogRecord): void {
    this.#logger.warn(
      { topic, offset: r.offset },
      "skipped a state record of a newer version than this gateway",
    );
  }

  async #announce(changes: Applied): Promise<void> {
    const listener = this.#listener;
    if (!listener) return;
    for (const change of changes.destinations) {
      try {
        if (change.kind === "put") await listener.destinationPut(change.row, change.previous);
        else await listener.destinationRemoved(change.id);
      } catch (err) {
        this.#logger.error({ err, change: change.kind }, "could not apply a destination change to delivery");
      }
    }
    for (const [destinationId, rows] of changes.replaying) {
      if (rows.size === 0) continue;
      await listener.replaying(destinationId, [...rows.values()]).catch((err: unknown) => {
        this.#logger.error({ err, destinationId }, "could not hand replayed events to delivery");
      });
    }
  }

  #settleWrites(writeIds: string[]): void {
    for (const id of writeIds) {
      const w = this.#writes.get(id);
      if (!w) continue;
      w.remaining--;
      if (w.remaining <= 0) {
        this.#writes.delete(id);
        w.resolve();
      }
    }
  }

  #settleCatchUps(): void {
    if (this.#catchUps.length === 0) return;
    const still: CatchUp[] = [];
    for (const c of this.#catchUps) {
      if (this.#reached(c.target)) c.resolve();
      else still.push(c);
    }
    this.#catchUps = still;
  }
}
