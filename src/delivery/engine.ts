import { setTimeout as sleep } from "node:timers/promises";
import type { Consumer, EachBatchPayload, Kafka } from "kafkajs";
import type { Dispatcher } from "undici";
import { partitionForKey as partitionOf } from "../kafka/murmur2.ts";
import type { RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { destinationHealth } from "../store/attempt-queries.ts";
import type { Store } from "../store/db.ts";
import { type Destination, listDestinations } from "../store/destinations.ts";
import { type LedgerRow, ledgerRow, replayingRows } from "../store/ledger.ts";
import { loadAllOffsets, loadOffsets, type OffsetRow, saveOffsets } from "../store/offsets.ts";
import { activeTracer } from "../telemetry.ts";
import { groupIdFor, sharedGroupId } from "./control.ts";
import { Cursor } from "./cursor.ts";
import { type BufferLimits, DEFAULT_BUFFER_LIMITS, DestinationWorker } from "./destination-worker.ts";
import type { EngineApi, EngineStatus, MetricsJson } from "./engine-api.ts";
import { decodeEventRecord, type EventRecord, headerText } from "./event-record.ts";
import type { DeliveryObserver } from "./observer.ts";
import type { OffsetLog } from "./offset-log.ts";
import { OPERATIONAL_HEADER } from "./operational.ts";
import { DeliveryRecorder } from "./recorder.ts";

/**
 * How long the broker may hold the shared reader's fetch (kafkajs `maxWaitTimeInMs`) to collect
 * `minBytes`. The defaults (1 byte, 500 ms) answer as soon as one record is there: lowest latency.
 */
export interface FetchTuning {
  minBytes: number;
  maxWaitMs: number;
}
export const DEFAULT_FETCH: FetchTuning = { minBytes: 1, maxWaitMs: 500 };

export interface EngineDeps {
  kafka: Kafka;
  /** The engine's own Kafka port; stop() closes it. */
  log: OffsetLog;
  store: Store;
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  topic: string;
  deadLetterTopic: string;
  /** The changelog topic outcomes (attempts, ledger) are recorded to; every replica's view applies it. */
  outcomesTopic: string;
  groupPrefix: string;
  /**
   * Resolves once this replica's view has applied every outcome recorded so far (by any replica). Awaited
   * before cursors of newly assigned partitions are placed, so events another replica finished after its
   * last commit are skipped, not sent again.
   */
  outcomesCaughtUp?(): Promise<void>;
  createDispatcher(destination: Destination): Dispatcher;
  /** A receiver answered 410: whoever owns the configuration disables the destination everywhere. */
  onGone(destinationId: string, reason: string): void;
  observe?: DeliveryObserver;
  buffer?: BufferLimits;
  fetch?: FetchTuning;
  /** How often finished progress is committed to each destination's group (default 5 s). */
  commitEveryMs?: number;
  /**
   * How often every destination's offsets are committed again even when unchanged, so Kafka never expires
   * them (`offsets.retention.minutes`, 7 days by default). Default 1 h.
   */
  keepaliveEveryMs?: number;
  /** Bytes one catch-up fetch may return (default 1 MiB). */
  catchUpFetchBytes?: number;
}

/** Where the shared reader stands in one partition this engine owns. */
interface PartitionState {
  partition: number;
  /** Resolves once the cursors of every worker exist for this partition (committed offsets loaded). */
  ready: Promise<void>;
  isReady: boolean;
  /** The shared group's committed offset when the partition came to this engine: where its reader starts. */
  sharedStart: number | undefined;
  /** The offset after the shared reader's last batch; undefined before its first one. */
  sharedNext: number | undefined;
  /** The partition's high watermark as last seen by a fetch. */
  highWatermark: number;
  /** Last offset committed for the shared group. */
  sharedCommitted: number | undefined;
  /** Where the shared reader was sent on waking (see #wake); a batch from before it is stale. */
  seekTo?: number;
}

/** Run `tasks` with at most `width` at once. */
async function limited(tasks: Array<() => Promise<void>>, width: number): Promise<void> {
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) await (tasks[next++] as () => Promise<void>)();
  };
  await Promise.all(Array.from({ length: Math.min(width, tasks.length) }, lane));
}

/**
 * One member of the delivery consumer group (`<prefix>.delivery`): Kafka decides which partitions of the
 * events topic it reads; it reads each of them ONCE and hands every decoded record to the workers whose
 * cursor is there and whose filter matches, so the cost grows with deliveries, not destinations × events.
 *
 * A worker that is full (a slow or failing receiver) detaches its cursor: a catch-up reader then reads the
 * partition from that cursor's own position, only while the worker has room, and attaches it again when it
 * reaches the shared reader. An idle destination has no reader, connection or timer of its own.
 *
 * Each destination's progress is its own consumer group `<prefix>.dest.<id>`: the lowest unfinished
 * offset per partition is committed (as a member-less group) every `commitEveryMs`, mirrored to SQLite,
 * and re-committed every `keepaliveEveryMs` so Kafka never expires it.
 */
export class DeliveryEngine implements EngineApi {
  #deps: EngineDeps;
  #log: Logger;
  #recorder: DeliveryRecorder;
  #workers = new Map<string, DestinationWorker>();
  /** Workers subscribed to every type, and per type those subscribed to it. */
  #allTypes = new Set<DestinationWorker>();
  #byType = new Map<string, Set<DestinationWorker>>();
  /** Workers of operational destinations: they get operational events only. */
  #operational = new Set<DestinationWorker>();
  #partitions = new Map<number, PartitionState>();
  #totalPartitions = 0;
  #consumer: Consumer | undefined;
  /**
   * The shared reader is paused: no destination runs here. Reading the events topic for nobody cost
   * ≈ 20–27 µs of CPU per ingested event (kafkajs fetches and decodes every record; bench/README.md
   * "Issue 16").
   */
  #idle = false;
  #waking = false;
  #commitTimer: NodeJS.Timeout | undefined;
  #keepaliveTimer: NodeJS.Timeout | undefined;
  #committing: Promise<void> | undefined;
  /** Cursor creation runs one call at a time (a join and a registration may race). */
  #cursorChain: Promise<void> = Promise.resolve();
  #stop = new AbortController();
  #started = false;
  /** Catch-up readers running now (stop waits for them before closing the Kafka port). */
  #catchUps = new Set<Promise<void>>();

  constructor(deps: EngineDeps) {
    this.#deps = deps;
    this.#log = deps.logger.child({ component: "delivery-engine" });
    this.#recorder = new DeliveryRecorder(deps.sink, deps.outcomesTopic, this.#log);
  }

  get #stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  /** The worker of a destination, if it runs here (tests read it). */
  worker(destinationId: string): DestinationWorker | undefined {
    return this.#workers.get(destinationId);
  }

  /** True while the shared reader is paused because no destination runs here. */
  get idle(): boolean {
    return this.#idle;
  }

  /** Partitions this engine reads now. */
  get partitions(): number[] {
    return [...this.#partitions.keys()].sort((a, b) => a - b);
  }

  /** Workers for the enabled destinations, the shared reader's start, and the delivery group. */
  async #join(): Promise<void> {
    await this.#deps.log.connect();
    const ends = await this.#deps.log.endOffsets(this.#deps.topic);
    // A stop() while starting wins: nothing more is started.
    if (this.#stopped) return;
    this.#totalPartitions = ends.size;
    // A destination the view announced while this engine was starting has its worker already.
    for (const d of listDestinations(this.#deps.store.db)) {
      if (!d.disabled && !this.#workers.has(d.id)) this.#addWorker(d);
    }
    await this.#seedShared(ends);
    if (this.#stopped) return;
    await this.#startConsumer();
  }

  /** Starts a worker for every enabled destination and joins the delivery group; may be retried after a throw. */
  async start(): Promise<void> {
    if (this.#stopped || this.#started) return;
    this.#started = true;
    try {
      await this.#join();
    } catch (err) {
      // Kafka failed us while starting (a broker down, a coordinator moving): start() may be called again.
      this.#started = false;
      const consumer = this.#consumer;
      this.#consumer = undefined;
      await consumer?.disconnect().catch(() => {});
      throw err;
    }
    if (this.#stopped) return;
    const every = this.#deps.commitEveryMs ?? 5000;
    this.#commitTimer = setInterval(() => void this.commit(), every);
    this.#keepaliveTimer = setInterval(() => void this.keepalive(), this.#deps.keepaliveEveryMs ?? 3_600_000);
    this.#log.info({ workers: this.#workers.size }, "delivery engine started");
  }

  /**
   * Gives the shared group a committed offset on every partition that has none (a first start, or a group
   * gone for longer than the offsets' retention), at the lowest position of the destinations — so its
   * reader starts where the destinations stand, never at kafkajs's "latest", which would pass over
   * records no batch ever shows the gap of. Only possible while the group has no members: if another
   * member already runs, it did this.
   */
  async #seedShared(ends: Map<number, number>): Promise<void> {
    const { log, topic, groupPrefix } = this.#deps;
    const group = sharedGroupId(groupPrefix, topic);
    try {
      const have = await log.committed(group, topic);
      const missing = [...ends.keys()].filter((p) => !have.has(p));
      if (missing.length === 0) return;
      const workers = [...this.#workers.values()];
      const committed = await log.committedMany(
        workers.map((w) => groupIdFor(groupPrefix, w.id)),
        topic,
      );
      const mirror = loadAllOffsets(this.#deps.store.db, topic);
      const offsets = missing.map((partition) => {
        let offset = ends.get(partition) as number;
        for (const w of workers) {
          const at =
            committed.get(groupIdFor(groupPrefix, w.id))?.get(partition) ?? mirror.get(w.id)?.get(partition);
          if (at !== undefined && at < offset) offset = at;
        }
        return { partition, offset };
      });
      await log.commit(group, topic, offsets);
      this.#log.info({ offsets }, "shared reader's start placed");
    } catch (err) {
      // Another member runs (it placed the start), or Kafka hiccuped: the gap check still catches up.
      this.#log.debug({ err }, "could not place the shared reader's start");
    }
  }

  async #startConsumer(): Promise<void> {
    const fetch = this.#deps.fetch ?? DEFAULT_FETCH;
    const consumer = this.#deps.kafka.consumer({
      groupId: sharedGroupId(this.#deps.groupPrefix, this.#deps.topic),
      // The handler never blocks on delivery, so heartbeats are timely: a short session lets a crashed
      // member's partitions move on in ~10 s instead of kafkajs's default 30 s.
      sessionTimeout: 10_000,
      heartbeatInterval: 3000,
      maxWaitTimeInMs: fetch.maxWaitMs,
      minBytes: fetch.minBytes,
      maxBytes: 8 * 1024 * 1024,
      maxBytesPerPartition: 1024 * 1024,
      allowAutoTopicCreation: false,
      // kafkajs restarts a crashed consumer on its own after a delay; one stopped meanwhile must stay down
      // (it would rejoin the group and keep a stopped gateway's process alive).
      retry: { retries: 5, restartOnFailure: async () => !this.#stopped },
    });
    this.#consumer = consumer;
    this.#idle = false;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      this.#assigned(payload.memberAssignment[this.#deps.topic] ?? []);
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      this.#log.warn({ err: payload.error, restart: payload.restart }, "delivery consumer crashed");
      if (!payload.restart && !this.#stopped) void this.#restartConsumer(consumer);
    });
    await consumer.connect();
    await consumer.subscribe({ topic: this.#deps.topic, fromBeginning: false });
    if (this.#stopped) {
      await consumer.disconnect().catch(() => {});
      return;
    }
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.#onBatch(payload),
    });
    this.#syncIdle();
  }

  /** Pauses the shared reader when the last worker is gone and wakes it when the first one comes. */
  #syncIdle(): void {
    const consumer = this.#consumer;
    if (!consumer || this.#stopped || this.#waking) return;
    if (this.#workers.size === 0 && !this.#idle) {
      this.#idle = true;
      consumer.pause([{ topic: this.#deps.topic }]);
      this.#log.debug("no destination runs here: the shared reader is paused");
    } else if (this.#workers.size > 0 && this.#idle) {
      void this.#wake(consumer);
    }
  }

  /**
   * Resumes the shared reader at the end of the topic, not where it paused: what arrived while it slept is
   * read only for the destinations that need it, by the catch-up readers of their cursors (each behind the
   * new position, so detached) — never the whole backlog by the shared reader.
   */
  async #wake(consumer: Consumer): Promise<void> {
    const topic = this.#deps.topic;
    this.#waking = true;
    try {
      let ends: Map<number, number> | undefined;
      while (ends === undefined) {
        try {
          ends = await this.#deps.log.endOffsets(topic);
        } catch (err) {
          this.#log.warn({ err }, "could not read the topic's end to wake the shared reader; retrying");
          await sleep(1000, undefined, { signal: this.#stop.signal }).catch(() => {});
        }
        if (this.#stopped || this.#consumer !== consumer) return;
      }
      // Every worker went away again meanwhile: stay paused.
      if (this.#workers.size === 0) return;
      for (const [partition, state] of this.#partitions) {
        const end = ends.get(partition);
        const at = state.sharedNext ?? state.sharedStart;
        if (end === undefined || (at !== undefined && at >= end)) continue;
        consumer.seek({ topic, partition, offset: String(end) });
        state.seekTo = end;
        state.sharedNext = end;
        state.highWatermark = Math.max(state.highWatermark, end);
        for (const w of this.#workers.values()) {
          const c = w.cursors.get(partition);
          if (c?.attached && c.next < end) this.#detach(w, c);
        }
      }
      this.#idle = false;
      consumer.resume([{ topic }]);
      this.#log.debug("a destination runs here: the shared reader reads again");
    } finally {
      this.#waking = false;
      // Workers added or removed while waking.
      if (this.#consumer === consumer) this.#syncIdle();
    }
  }

  async #restartConsumer(old: Consumer): Promise<void> {
    await old.disconnect().catch(() => {});
    while (!this.#stopped) {
      try {
        await this.#startConsumer();
        return;
      } catch (err) {
        this.#log.warn({ err }, "delivery consumer restart failed; retrying");
        await sleep(2000, undefined, { signal: this.#stop.signal }).catch(() => {});
      }
    }
  }

  /** The group gave this member `partitions`: release the others, make cursors for the new ones. */
  #assigned(partitions: number[]): void {
    const now = new Set(partitions);
    for (const p of [...this.#partitions.keys()]) if (!now.has(p)) this.#release(p);
    const fresh = partitions.filter((p) => !this.#partitions.has(p));
    if (fresh.length > 0) {
      const states = fresh.map((p) => {
        const state: PartitionState = {
          partition: p,
          ready: Promise.resolve(),
          isReady: false,
          sharedStart: undefined,
          sharedNext: undefined,
          highWatermark: 0,
          sharedCommitted: undefined,
        };
        this.#partitions.set(p, state);
        return state;
      });
      // Where the shared reader starts (the group's committed offset) before any cursor is placed: a cursor
      // behind it must catch up even if no batch ever comes to show the gap.
      const ready = this.#sharedStarts(states)
        .then(() => this.#outcomesCaughtUp())
        .then(() => this.#makeCursors(fresh))
        .finally(() => {
          for (const state of states) state.isReady = true;
        });
      for (const state of states) state.ready = ready;
    }
    this.#reshare();
    this.#log.info({ partitions: this.partitions }, "delivery partitions assigned");
  }

  async #outcomesCaughtUp(): Promise<void> {
    const caughtUp = this.#deps.outcomesCaughtUp;
    if (!caughtUp) return;
    const started = performance.now();
    await caughtUp().catch((err: unknown) => {
      // The view cannot reach Kafka either; placing the cursors anyway risks only duplicates.
      this.#log.warn({ err }, "could not wait for the outcomes of other replicas");
    });
    this.#log.debug(
      { ms: Math.round(performance.now() - started) },
      "outcomes caught up before placing cursors",
    );
  }

  async #sharedStarts(states: PartitionState[]): Promise<void> {
    const { log, topic, groupPrefix } = this.#deps;
    for (;;) {
      try {
        const committed = await log.committed(sharedGroupId(groupPrefix, topic), topic);
        for (const state of states) state.sharedStart = committed.get(state.partition);
        return;
      } catch (err) {
        if (this.#stopped) return;
        this.#log.warn({ err }, "cannot read the shared group's offsets; retrying");
        await sleep(1000, undefined, { signal: this.#stop.signal }).catch(() => {});
      }
    }
  }

  /** This engine's share of each destination's maxConcurrency: the share of partitions it reads. */
  #share(): number {
    return this.#totalPartitions > 0 ? this.#partitions.size / this.#totalPartitions : 1;
  }

  #reshare(): void {
    const share = this.#share();
    for (const w of this.#workers.values()) w.update(w.destination, share);
  }

  /** The partition moved to another member: stop handing its records out, commit what is finished. */
  #release(partition: number): void {
    this.#partitions.delete(partition);
    const offsets: Array<{ worker: DestinationWorker; offset: number }> = [];
    for (const w of this.#workers.values()) {
      const c = w.cursors.get(partition);
      if (!c) continue;
      c.released = true;
      w.cursors.delete(partition);
      const offset = c.takeCommit();
      if (offset !== undefined) offsets.push({ worker: w, offset });
    }
    void limited(
      offsets.map(
        ({ worker, offset }) =>
          () =>
            this.#commitGroup(worker.id, [{ partition, offset }]).catch((err: unknown) => {
              // Its next owner resumes from the previous commit: events since are delivered again, not lost.
              this.#log.warn(
                { err, destinationId: worker.id, partition, offset },
                "could not commit a handed-over partition's progress",
              );
            }),
      ),
      16,
    );
  }

  /**
   * Makes the cursors every current worker lacks on `partitions`: from the destination group's committed
   * offsets, else from the SQLite mirror, else (a known destination whose progress is lost everywhere)
   * from the first offset at or after its creation time — never from the beginning of the topic.
   */
  #makeCursors(partitions: number[]): Promise<void> {
    const run = async () => {
      let placed = -1;
      for (;;) {
        if (this.#stopped) return;
        // Only partitions still read here: one handed on meanwhile needs no cursor (and would never get one).
        const owned = partitions.filter((p) => this.#partitions.has(p));
        const lacking = [...this.#workers.values()].filter((w) => owned.some((p) => !w.cursors.has(p)));
        if (lacking.length === 0) return;
        // A pass that placed nothing (Kafka unreachable) waits before the next; one that placed some goes on
        // at once (workers added while it ran).
        if (placed === 0) await sleep(1000, undefined, { signal: this.#stop.signal }).catch(() => {});
        if (this.#stopped) return;
        try {
          placed = await this.#placeCursors(lacking, owned);
        } catch (err) {
          placed = 0;
          this.#log.warn({ err }, "could not place every cursor; retrying");
        }
      }
    };
    const next = this.#cursorChain.then(run, run);
    this.#cursorChain = next.catch(() => {});
    return next;
  }

  /** One pass of #makeCursors: places the cursors of `lacking` on `partitions` that it can; says how many. */
  async #placeCursors(lacking: DestinationWorker[], partitions: number[]): Promise<number> {
    let placed = 0;
    const committed = await this.#deps.log.committedMany(
      lacking.map((w) => groupIdFor(this.#deps.groupPrefix, w.id)),
      this.#deps.topic,
    );
    for (const w of lacking) {
      if (this.#workers.get(w.id) !== w) continue;
      const fromKafka = committed.get(groupIdFor(this.#deps.groupPrefix, w.id));
      // Read only when Kafka lacks something (normally never): it is one query per destination.
      let mirrored: Map<number, number> | undefined;
      const fromMirror = () => {
        mirrored ??= loadOffsets(this.#deps.store.db, this.#deps.topic, w.id);
        return mirrored;
      };
      let fromTime: Map<number, number> | undefined;
      const made: number[] = [];
      const replay = w.destination.replay;
      if (replay && !replay.cancelled && w.replayUntil === undefined) {
        // Events of the replay's window are delivered again even though finished: where it ends.
        w.replayUntil = await this.#deps.log.offsetsForTime(
          this.#deps.topic,
          replay.to ?? replay.requestedAt,
        );
      }
      for (const p of partitions) {
        if (w.cursors.has(p) || !this.#partitions.has(p)) continue;
        let start = fromKafka?.get(p);
        let recovered = false;
        if (start === undefined) {
          recovered = true;
          start = fromMirror().get(p);
          if (start === undefined) {
            fromTime ??= await this.#deps.log
              .offsetsForTime(this.#deps.topic, w.destination.createdAt)
              .catch(() => new Map<number, number>());
            start = fromTime.get(p);
          }
          if (start === undefined) continue; // Kafka unreachable: the next pass tries again
          this.#log.warn(
            {
              destinationId: w.id,
              partition: p,
              offset: start,
              from: fromMirror().has(p) ? "mirror" : "time",
            },
            "destination had no committed offset in Kafka; resuming from the gateway's own record",
          );
        }
        const cursor = new Cursor(p, start);
        // Put a recovered position back into Kafka at the next commit.
        if (recovered) cursor.commitFailed(start);
        w.cursors.set(p, cursor);
        made.push(p);
        this.#place(w, cursor);
      }
      placed += made.length;
      if (made.length > 0) this.#enqueueReplays(w, made);
    }
    return placed;
  }

  /** A new cursor behind the shared reader catches up on its own; one at or ahead of it attaches. */
  #place(w: DestinationWorker, c: Cursor): void {
    const state = this.#partitions.get(c.partition);
    const shared = state?.sharedNext ?? state?.sharedStart;
    if (shared !== undefined && c.next < shared) this.#detach(w, c);
  }

  #enqueueReplays(w: DestinationWorker, partitions: number[]): void {
    const owned = new Set(partitions);
    for (const row of replayingRows(this.#deps.store.db, w.id)) {
      const p = partitionOf(row.userId, this.#totalPartitions);
      if (owned.has(p)) w.enqueueReplay(row, p);
    }
  }

  #ledger(w: DestinationWorker, event: EventRecord): LedgerRow | undefined {
    return event.type === undefined ? undefined : ledgerRow(this.#deps.store.db, w.id, event.eventId);
  }

  async #onBatch({ batch, resolveOffset, heartbeat, pause }: EachBatchPayload): Promise<void> {
    const partition = batch.partition;
    const state = this.#partitions.get(partition);
    if (!state || batch.messages.length === 0 || this.#stopped) return;
    // Fetched just before the reader paused: left unresolved (waking sends the reader on anyway). Never a
    // partition pause here while idle: kafkajs would lift the topic's pause for every other partition.
    if (this.#idle) return;
    if (!state.isReady) {
      // Cursors are still being placed. Never wait inside the handler (kafkajs would hold every partition of
      // this broker, heartbeats and stop() behind it): leave the batch unresolved, so it is fetched again,
      // and pause the partition until its cursors exist.
      pause();
      void state.ready.then(() => {
        // An idle reader stays paused; waking resumes every partition (one not ready pauses itself again).
        if (this.#partitions.get(partition) === state && !this.#stopped && !this.#idle) {
          try {
            this.#consumer?.resume([{ topic: this.#deps.topic, partitions: [partition] }]);
          } catch (err) {
            // kafkajs is restarting a crashed consumer (it has no group now): the new one is not paused.
            this.#log.debug({ err, partition }, "could not resume a partition whose cursors are placed");
          }
        }
      });
      return;
    }
    const fetched = Number((batch as unknown as { fetchedOffset: string }).fetchedOffset);
    if (state.seekTo !== undefined) {
      // Fetched before the reader was sent ahead on waking: those records are the catch-up readers' now.
      if (Number((batch.messages[0] as { offset: string }).offset) < state.seekTo) return;
      state.seekTo = undefined;
    }
    state.highWatermark = Math.max(state.highWatermark, Number(batch.highWatermark));
    let anyAttached = false;
    for (const w of this.#workers.values()) if (w.cursors.get(partition)?.attached) anyAttached = true;
    if (!anyAttached) {
      // No destination reads along (none registered here, or all catching up on their own): nothing to
      // decode or offer; the shared reader only moves on.
      state.sharedNext = Number((batch.messages[batch.messages.length - 1] as { offset: string }).offset) + 1;
      resolveOffset(String(state.sharedNext - 1));
      await heartbeat();
      return;
    }
    const traced = activeTracer() !== undefined;
    const records = batch.messages.map((m) =>
      decodeEventRecord(
        partition,
        Number(m.offset),
        m.key,
        m.value,
        traced ? headerText(m.headers?.traceparent) : undefined,
        m.headers?.[OPERATIONAL_HEADER] !== undefined,
      ),
    );
    const end = (records[records.length - 1] as EventRecord).offset + 1;

    // A cursor behind this batch's start missed records (the shared reader was placed ahead of it).
    for (const w of this.#workers.values()) {
      const c = w.cursors.get(partition);
      if (c?.attached && c.next < fetched) this.#detach(w, c);
    }
    for (const event of records) {
      if (event.operational) {
        for (const w of this.#operational) if (w.accepts(event)) this.#offer(w, partition, event);
        event.parsed = undefined;
        continue;
      }
      if (event.type === undefined) {
        for (const w of this.#workers.values()) if (!w.operational) this.#offer(w, partition, event);
        continue;
      }
      for (const w of this.#allTypes) this.#offer(w, partition, event);
      const typed = this.#byType.get(event.type);
      if (typed) for (const w of typed) this.#offer(w, partition, event);
      // Filters have read it: queued events keep only their body.
      event.parsed = undefined;
    }
    for (const w of this.#workers.values()) {
      const c = w.cursors.get(partition);
      if (!c?.attached) continue;
      c.skipTo(end);
      if (w.full) this.#detach(w, c);
    }
    state.sharedNext = end;
    resolveOffset(String(end - 1));
    await heartbeat();
  }

  #offer(w: DestinationWorker, partition: number, event: EventRecord): void {
    const c = w.cursors.get(partition);
    if (!c?.attached || event.offset < c.next) return;
    // Filtered out: not offered, so the cursor passes over it as finished at the end of the batch.
    if (w.filtered && !w.accepts(event)) return;
    w.offer(c, event, this.#ledger(w, event));
    w.reportBuffered();
  }

  #detach(w: DestinationWorker, c: Cursor): void {
    c.attached = false;
    if (c.catchingUp) return;
    const running = this.#catchUp(w, c).finally(() => this.#catchUps.delete(running));
    this.#catchUps.add(running);
  }

  /**
   * A detached cursor's own reader: fetches from the cursor's position only while the worker has room,
   * hands over what the worker wants, and attaches the cursor again once it reaches the shared reader.
   * Records at or past the shared reader's position are left to it, so nothing is handed over twice and
   * a user's events keep their order.
   */
  async #catchUp(w: DestinationWorker, c: Cursor): Promise<void> {
    c.catchingUp = true;
    const { log, topic } = this.#deps;
    const maxBytes = this.#deps.catchUpFetchBytes ?? 1024 * 1024;
    try {
      while (!c.attached && !c.released && !this.#stopped && !w.stopped) {
        await w.room();
        const state = this.#partitions.get(c.partition);
        if (c.released || !state || w.stopped) return;
        let fetched: Awaited<ReturnType<OffsetLog["fetch"]>>;
        try {
          fetched = await log.fetch(topic, c.partition, c.next, { maxBytes, maxWaitMs: 200 });
        } catch (err) {
          const start = (err as { logStartOffset?: number }).logStartOffset;
          if (typeof start === "number" && start > c.next) {
            // Kafka's retention deleted what this destination had not read: say so, go on from what is left.
            this.#log.error(
              { destinationId: w.id, partition: c.partition, from: c.next, to: start },
              "events expired from the topic before this destination received them",
            );
            c.skipTo(start);
            continue;
          }
          this.#log.warn(
            { err, destinationId: w.id, partition: c.partition },
            "catch-up fetch failed; retrying",
          );
          await sleep(1000, undefined, { signal: this.#stop.signal }).catch(() => {});
          continue;
        }
        if (c.released || this.#partitions.get(c.partition) !== state) return;
        state.highWatermark = Math.max(state.highWatermark, fetched.highWatermark);
        // Where the shared reader stands (or, before its first batch, where it starts).
        const shared = state.sharedNext ?? state.sharedStart;
        let upTo = fetched.next;
        for (const r of fetched.records) {
          if (shared !== undefined && r.offset >= shared) {
            upTo = shared;
            break;
          }
          if (r.offset < c.next) continue;
          const event = decodeEventRecord(
            c.partition,
            r.offset,
            r.key,
            r.value,
            activeTracer() === undefined ? undefined : r.headers?.traceparent?.toString(),
            r.headers?.[OPERATIONAL_HEADER] !== undefined,
          );
          if (w.accepts(event)) w.offer(c, event, this.#ledger(w, event));
          event.parsed = undefined;
        }
        c.skipTo(shared !== undefined ? Math.min(upTo, shared) : upTo);
        w.reportBuffered();
        if (shared !== undefined ? c.next >= shared : c.next >= fetched.highWatermark) c.attached = true;
      }
    } finally {
      c.catchingUp = false;
    }
  }

  /** Adds, updates or (when disabled) stops the worker of a destination. */
  async upsert(destination: Destination): Promise<void> {
    if (this.#stopped) return;
    const existing = this.#workers.get(destination.id);
    if (destination.disabled) {
      if (existing) await this.#removeWorker(existing, 5000, true);
      return;
    }
    if (existing) {
      if (destination.replay && destination.replay.id !== existing.destination.replay?.id) {
        await this.#rewind(existing, destination);
        return;
      }
      if (destination.replay?.cancelled && !existing.destination.replay?.cancelled) {
        await this.#rewind(existing, destination);
        return;
      }
      this.#unindex(existing);
      existing.update(destination, this.#share());
      this.#index(existing);
      return;
    }
    this.#addWorker(destination);
    if (this.#started) await this.#makeCursors([...this.#partitions.keys()]);
  }

  /**
   * A replay asked for (or cancelled): the worker stops (committing what it finished), the destination's
   * progress on this engine's partitions moves to the first event at or after `from` (or, cancelled,
   * forward to the replay's request time), and a new worker places its cursors there. The normal readers
   * then re-deliver: a cursor behind the shared reader catches up on its own, so live delivery to other
   * destinations is never held, and a user's events go in log order.
   */
  async #rewind(w: DestinationWorker, destination: Destination): Promise<void> {
    const replay = destination.replay;
    if (!replay) return;
    const { log, topic, groupPrefix } = this.#deps;
    const owned = [...this.#partitions.keys()];
    await this.#removeWorker(w, 5000, true);
    if (this.#stopped) return;
    try {
      const group = groupIdFor(groupPrefix, destination.id);
      let offsets: Array<{ partition: number; offset: number }>;
      if (!replay.cancelled) {
        const from = await log.offsetsForTime(topic, replay.from);
        offsets = owned.flatMap((p) => {
          const offset = from.get(p);
          return offset === undefined ? [] : [{ partition: p, offset }];
        });
      } else {
        // Cancelled: skip what is left of the window, never back over what it already passed.
        const [resume, committed] = await Promise.all([
          log.offsetsForTime(topic, replay.requestedAt),
          log.committed(group, topic),
        ]);
        offsets = owned.flatMap((p) => {
          const offset = resume.get(p);
          const at = committed.get(p);
          return offset === undefined || (at !== undefined && at >= offset) ? [] : [{ partition: p, offset }];
        });
      }
      if (offsets.length > 0) await this.#commitGroup(destination.id, offsets);
      this.#log.info(
        { destinationId: destination.id, replay, offsets },
        "destination progress moved for a replay",
      );
    } catch (err) {
      this.#log.error(
        { err, destinationId: destination.id },
        "could not move the destination's progress for a replay",
      );
    }
    if (this.#stopped || destination.disabled) return;
    this.#addWorker(destination);
    if (this.#started) await this.#makeCursors(owned);
  }

  /** The destination was deleted: its in-flight attempts are cut off, nothing more is committed. */
  async remove(destinationId: string): Promise<void> {
    const w = this.#workers.get(destinationId);
    if (w) await this.#removeWorker(w, 0, false);
  }

  /** Queues replaying rows whose user's partition this engine reads. */
  async replay(destinationId: string, rows: LedgerRow[]): Promise<void> {
    const w = this.#workers.get(destinationId);
    if (!w) return;
    for (const row of rows) {
      const p = partitionOf(row.userId, this.#totalPartitions);
      if (this.#partitions.has(p)) w.enqueueReplay(row, p);
    }
  }

  /** Events in the log not yet finished for a destination, per partition this engine reads. */
  async lag(destinationId: string): Promise<Record<number, number>> {
    const w = this.#workers.get(destinationId);
    const out: Record<number, number> = {};
    if (!w) return out;
    for (const [p, c] of w.cursors) {
      const state = this.#partitions.get(p);
      if (state) out[p] = Math.max(0, state.highWatermark - c.watermark);
    }
    return out;
  }

  async status(): Promise<EngineStatus> {
    return { partitions: this.partitions, workers: this.#workers.size };
  }

  /** On the main thread the gateway's own registry holds the engine's metrics: nothing to add. */
  async metrics(): Promise<MetricsJson> {
    return [];
  }

  /** Every destination's lag over this engine's partitions (the delivery_lag_events gauge). */
  *lags(): Iterable<[string, number]> {
    for (const w of this.#workers.values()) {
      let sum = 0;
      for (const [p, c] of w.cursors) {
        const state = this.#partitions.get(p);
        if (state) sum += Math.max(0, state.highWatermark - c.watermark);
      }
      yield [w.id, sum];
    }
  }

  #addWorker(destination: Destination): DestinationWorker {
    const w = new DestinationWorker(
      destination,
      {
        recorder: this.#recorder,
        deadLetterTopic: this.#deps.deadLetterTopic,
        sink: this.#deps.sink,
        logger: this.#deps.logger,
        createDispatcher: (d) => this.#deps.createDispatcher(d),
        onGone: (id, reason) => this.#deps.onGone(id, reason),
        eventsTopic: this.#deps.topic,
        observe: this.#deps.observe,
        limits: this.#deps.buffer ?? DEFAULT_BUFFER_LIMITS,
      },
      this.#share(),
    );
    try {
      w.seedHealth(destinationHealth(this.#deps.store.db, destination.id, destination.streakResetAt ?? 0));
    } catch (err) {
      this.#log.warn(
        { err, destinationId: destination.id },
        "could not read the destination's failing streak",
      );
    }
    this.#workers.set(destination.id, w);
    this.#index(w);
    this.#syncIdle();
    return w;
  }

  async #removeWorker(w: DestinationWorker, graceMs: number, commit: boolean): Promise<void> {
    if (this.#workers.get(w.id) === w) this.#workers.delete(w.id);
    this.#unindex(w);
    this.#syncIdle();
    const cursors = [...w.cursors.values()];
    await w.stop(graceMs);
    await this.#recorder.drain();
    if (commit) {
      const offsets = cursors.flatMap((c) => {
        const offset = c.takeCommit();
        return offset === undefined ? [] : [{ partition: c.partition, offset }];
      });
      await this.#commitGroup(w.id, offsets);
    }
    this.#deps.observe?.forget?.(w.id);
  }

  #index(w: DestinationWorker): void {
    if (w.operational) {
      this.#operational.add(w);
      return;
    }
    const types = w.destination.eventTypes;
    if (types.length === 0) {
      this.#allTypes.add(w);
      return;
    }
    for (const t of types) {
      let set = this.#byType.get(t);
      if (!set) {
        set = new Set();
        this.#byType.set(t, set);
      }
      set.add(w);
    }
  }

  #unindex(w: DestinationWorker): void {
    this.#operational.delete(w);
    this.#allTypes.delete(w);
    for (const [t, set] of this.#byType) {
      set.delete(w);
      if (set.size === 0) this.#byType.delete(t);
    }
  }

  /** Commits one destination's offsets to its group and mirrors them; a failure is logged, retried later. */
  async #commitGroup(destinationId: string, offsets: Array<{ partition: number; offset: number }>) {
    if (offsets.length === 0) return;
    saveOffsets(
      this.#deps.store.db,
      this.#deps.topic,
      offsets.map((o) => ({ destinationId, ...o })),
    );
    try {
      await this.#deps.log.commit(
        groupIdFor(this.#deps.groupPrefix, destinationId),
        this.#deps.topic,
        offsets,
      );
    } catch (err) {
      this.#log.debug({ err, destinationId }, "offset commit failed; will retry");
      throw err;
    }
  }

  /**
   * Commits every destination's finished progress that moved (one OffsetCommit per destination group),
   * mirrors it to SQLite, and commits the shared group at the lowest position of the attached cursors
   * (where a member that takes a partition over starts its shared reader).
   */
  commit(): Promise<void> {
    this.#committing ??= this.#commitNow().finally(() => {
      this.#committing = undefined;
    });
    return this.#committing;
  }

  /** `stopping`: the workers have stopped (their cursors are released); commit what they finished. */
  async #commitNow(stopping = false): Promise<void> {
    const mirror: OffsetRow[] = [];
    const tasks: Array<() => Promise<void>> = [];
    for (const w of this.#workers.values()) {
      const taken: Array<{ cursor: Cursor; partition: number; offset: number }> = [];
      for (const c of w.cursors.values()) {
        if (c.released && !stopping) continue;
        const offset = c.takeCommit();
        if (offset !== undefined) taken.push({ cursor: c, partition: c.partition, offset });
      }
      if (taken.length === 0) continue;
      for (const t of taken) mirror.push({ destinationId: w.id, partition: t.partition, offset: t.offset });
      const group = groupIdFor(this.#deps.groupPrefix, w.id);
      const offsets = taken.map(({ partition, offset }) => ({ partition, offset }));
      tasks.push(async () => {
        try {
          await this.#deps.log.commit(group, this.#deps.topic, offsets);
        } catch (err) {
          for (const t of taken) t.cursor.commitFailed(t.offset);
          this.#log.debug({ err, destinationId: w.id }, "offset commit failed; will retry");
        }
      });
    }
    try {
      saveOffsets(this.#deps.store.db, this.#deps.topic, mirror);
    } catch (err) {
      this.#log.warn({ err }, "could not mirror delivery offsets to SQLite");
    }
    await limited(tasks, 16);
    // A stopping engine committed the shared group before its consumer stopped (it can only commit as a member).
    if (!stopping) await this.#commitShared();
  }

  async #commitShared(): Promise<void> {
    const consumer = this.#consumer;
    if (!consumer) return;
    const offsets: Array<{ topic: string; partition: number; offset: string }> = [];
    for (const state of this.#partitions.values()) {
      let low: number | undefined;
      for (const w of this.#workers.values()) {
        const c = w.cursors.get(state.partition);
        if (c?.attached && (low === undefined || c.watermark < low)) low = c.watermark;
      }
      const at = low ?? state.sharedNext;
      if (at === undefined || at === state.sharedCommitted) continue;
      state.sharedCommitted = at;
      offsets.push({ topic: this.#deps.topic, partition: state.partition, offset: String(at) });
    }
    if (offsets.length === 0) return;
    try {
      await consumer.commitOffsets(offsets);
    } catch (err) {
      for (const o of offsets) {
        const state = this.#partitions.get(o.partition);
        if (state) state.sharedCommitted = undefined;
      }
      this.#log.debug({ err }, "shared offset commit failed; will retry");
    }
  }

  /**
   * Commits every destination's offsets on this engine's partitions again, unchanged ones and disabled
   * destinations' included, so Kafka's offset retention never deletes a destination's progress.
   */
  async keepalive(): Promise<void> {
    const owned = [...this.#partitions.keys()];
    if (owned.length === 0) return;
    const mirror = loadAllOffsets(this.#deps.store.db, this.#deps.topic);
    const tasks: Array<() => Promise<void>> = [];
    for (const d of listDestinations(this.#deps.store.db)) {
      const w = this.#workers.get(d.id);
      const offsets: Array<{ partition: number; offset: number }> = [];
      for (const p of owned) {
        const c = w?.cursors.get(p);
        const offset = c && c.committed >= 0 ? c.committed : mirror.get(d.id)?.get(p);
        if (offset !== undefined) offsets.push({ partition: p, offset });
      }
      if (offsets.length === 0) continue;
      const group = groupIdFor(this.#deps.groupPrefix, d.id);
      tasks.push(() =>
        this.#deps.log.commit(group, this.#deps.topic, offsets).catch((err: unknown) => {
          this.#log.warn({ err, destinationId: d.id }, "offset keepalive commit failed");
        }),
      );
    }
    await limited(tasks, 16);
  }

  /**
   * Leaves the group, stops every worker (attempts in flight get `graceMs`), records and commits what
   * finished.
   */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#stopped) return;
    this.#stop.abort();
    clearInterval(this.#commitTimer);
    clearInterval(this.#keepaliveTimer);
    // Where the shared reader stands now; positions only move forward, so an earlier commit is a safe one.
    await this.#commitShared();
    await this.#consumer?.stop().catch(() => {});
    await Promise.all([...this.#workers.values()].map((w) => w.stop(graceMs)));
    await Promise.all(this.#catchUps);
    await this.#recorder.drain();
    await this.#committing?.catch(() => {});
    await this.#commitNow(true).catch(() => {});
    await this.#consumer?.disconnect().catch(() => {});
    await this.#deps.log.close().catch(() => {});
    this.#log.info("delivery engine stopped");
  }
}
