import { setTimeout as sleep } from "node:timers/promises";
import type { Consumer, EachBatchPayload, Kafka } from "kafkajs";
import pRetry, { AbortError } from "p-retry";
import type { Dispatcher } from "undici";
import type { Message, RecordSink } from "../ingest/producer.ts";
import type { Logger } from "../log.ts";
import type { AttemptOutcome } from "../store/attempts.ts";
import type { Store } from "../store/db.ts";
import type { Destination } from "../store/destinations.ts";
import { type LedgerRow, ledgerRowsFor, replayingRows } from "../store/ledger.ts";
import { KeyedScheduler } from "./keyed-scheduler.ts";
import { PartitionTracker } from "./partition-tracker.ts";
import type { DeliveryRecorder } from "./recorder.ts";
import {
  type Attempt,
  type AttemptResult,
  abortAttempts,
  type SendTarget,
  sendTarget,
  sendWebhook,
} from "./send.ts";
import { secretKey } from "./sign.ts";

export interface WorkerDeps {
  kafka: Kafka;
  topic: string;
  deadLetterTopic: string;
  groupId: string;
  store: Store;
  recorder: DeliveryRecorder;
  /** Where dead letters are published (the ingest producer's group-commit sink). */
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  /** Builds the destination's own HTTP pool (SSRF-guarded unless private addresses are allowed). */
  createDispatcher(destination: Destination): Dispatcher;
  /** A 410 from the receiver: the supervisor disables the destination. */
  onGone(destinationId: string, reason: string): void;
  /** Observability hooks (metrics). */
  observe?: WorkerObserver;
  /** Defaults: DEFAULT_BUFFER_LIMITS (tests use small ones). */
  buffer?: BufferLimits;
  /** Default: DEFAULT_FETCH. */
  fetch?: FetchTuning;
}

export interface WorkerObserver {
  attempt(destinationId: string, result: AttemptResult): void;
  finished(destinationId: string, outcome: "delivered" | "dead", acceptedAt: number | undefined): void;
  buffered(destinationId: string, count: number): void;
  /** The destination is gone: drop its series. */
  forget?(destinationId: string): void;
}

/** One event to deliver: from Kafka (tracked by offset) or from a dead-letter replay (no offset). */
interface Job {
  eventId: string;
  userId: string;
  body: string;
  acceptedAt: number | undefined;
  attemptsSoFar: number;
  tracker: PartitionTracker | undefined;
  partition: number;
  offset: number;
}

interface ParsedEvent {
  id: string;
  userID: string;
  type: string;
  timestamp?: string;
}

/**
 * What one worker may hold in memory (queued or in flight, over all its partitions): above either bound
 * the partition that just delivered a batch is paused, and every paused partition resumes once both are
 * below half. One fetch can add up to `fetchBytes` on top. Ten destinations draining a 50,000-event
 * backlog held 1.7 GiB when the bound was 5,000 events per partition and fetches were kafkajs's 10 MiB.
 */
export interface BufferLimits {
  events: number;
  bytes: number;
  /** kafkajs `maxBytes` of one fetch, and `maxBytesPerPartition` (a larger single record still comes). */
  fetchBytes: number;
  fetchBytesPerPartition: number;
}
/**
 * How long the broker may hold a worker's fetch (kafkajs `maxWaitTimeInMs`) to collect `minBytes`. The
 * defaults (1 byte, 500 ms) answer a fetch as soon as one record is there: lowest latency, but at a few
 * hundred events/s per destination every record batch costs a fetch round trip of its own (12 partitions
 * encoded and decoded); raising minBytes trades latency for CPU — bench/README.md.
 */
export interface FetchTuning {
  minBytes: number;
  maxWaitMs: number;
}
export const DEFAULT_FETCH: FetchTuning = { minBytes: 1, maxWaitMs: 500 };

export const DEFAULT_BUFFER_LIMITS: BufferLimits = {
  events: 10_000,
  bytes: 16 * 1024 * 1024,
  fetchBytes: 4 * 1024 * 1024,
  fetchBytesPerPartition: 512 * 1024,
};
const COMMIT_EVERY_MS = 250;

class Stopped extends Error {
  override name = "Stopped";
}
/** An attempt's outcome carried through p-retry as an error. */
abstract class AttemptError extends Error {
  readonly result: AttemptResult;
  constructor(result: AttemptResult, fallback: string) {
    super(result.error ?? fallback);
    this.result = result;
  }
}
/** The last allowed attempt failed. */
class Exhausted extends AttemptError {
  override name = "Exhausted";
  constructor(result: AttemptResult) {
    super(result, "attempts exhausted");
  }
}
class Gone extends AttemptError {
  override name = "Gone";
  constructor(result: AttemptResult) {
    super(result, "410 Gone");
  }
}
/** A failed attempt that will be retried; p-retry sees it, the receiver's Retry-After rides along. */
class RetryableDeliveryError extends AttemptError {
  override name = "RetryableDeliveryError";
  constructor(result: AttemptResult) {
    super(result, "delivery failed");
  }
}

function parseEvent(value: string): ParsedEvent | undefined {
  try {
    const v = JSON.parse(value) as Partial<ParsedEvent>;
    if (typeof v.id === "string" && typeof v.userID === "string") {
      return {
        id: v.id,
        userID: v.userID,
        type: typeof v.type === "string" ? v.type : "event",
        timestamp: v.timestamp,
      };
    }
  } catch {
    // fall through: not an event this gateway wrote
  }
  return undefined;
}

/**
 * The delivery worker of one destination: its own consumer group, HTTP pool and concurrency limit.
 *
 * kafkajs fetches the next batch only after the handler returns, so the handler never awaits a delivery:
 * it resolves every offset at once (fetching moves on), hands events to per-user queues and returns. The
 * offset committed per partition is the lowest one not yet finished (PartitionTracker), so commits never
 * pass an event that is still retrying.
 */
export class DeliveryWorker {
  #deps: WorkerDeps;
  #destination: Destination;
  /** URL, headers, timeout, HMAC key and HTTP pool of the attempts, rebuilt when the destination changes. */
  #target: SendTarget;
  #inFlight = new Set<Attempt>();
  #consumer: Consumer | undefined;
  #scheduler: KeyedScheduler<Job>;
  #trackers = new Map<number, PartitionTracker>();
  #paused = new Set<number>();
  /** UTF-16 length of the bodies queued or in flight (≈ bytes: event JSON is mostly ASCII). */
  #bufferedBytes = 0;
  #limits: BufferLimits;
  #fetch: FetchTuning;
  /** Soft stop: no new attempts, backoff waits end. */
  #stop = new AbortController();
  /** Hard stop: attempts still in flight after the grace period were cut off. */
  #killed = false;
  #commitTimer: NodeJS.Timeout | undefined;
  #log: Logger;

  constructor(destination: Destination, deps: WorkerDeps) {
    this.#deps = deps;
    this.#limits = deps.buffer ?? DEFAULT_BUFFER_LIMITS;
    this.#fetch = deps.fetch ?? DEFAULT_FETCH;
    this.#destination = destination;
    this.#target = sendTarget(
      destination,
      secretKey(destination.secret),
      deps.createDispatcher(destination),
      this.#inFlight,
    );
    this.#log = deps.logger.child({ destinationId: destination.id });
    this.#scheduler = new KeyedScheduler(destination.maxConcurrency, (job) => this.#run(job));
  }

  get destination(): Destination {
    return this.#destination;
  }

  /** Events queued or in flight. */
  get buffered(): number {
    return this.#scheduler.size;
  }

  /** Partitions paused because the buffer is full. */
  get pausedPartitions(): number {
    return this.#paused.size;
  }

  /** New settings take effect for the next attempt; the consumer keeps its position. */
  update(destination: Destination): void {
    const old = this.#destination;
    this.#destination = destination;
    if (destination.maxConcurrency !== old.maxConcurrency) this.#scheduler.limit = destination.maxConcurrency;
    const key = destination.secret !== old.secret ? secretKey(destination.secret) : this.#target.key;
    let dispatcher = this.#target.dispatcher;
    if (destination.url !== old.url) {
      void dispatcher.close().catch(() => {});
      dispatcher = this.#deps.createDispatcher(destination);
    }
    this.#target = sendTarget(destination, key, dispatcher, this.#inFlight);
  }

  async start(): Promise<void> {
    const consumer = this.#deps.kafka.consumer({
      groupId: this.#deps.groupId,
      // The handler never blocks, so heartbeats are timely: a short session lets a crashed replica's
      // partitions move on in ~10 s instead of kafkajs's default 30 s.
      sessionTimeout: 10_000,
      heartbeatInterval: 3000,
      maxWaitTimeInMs: this.#fetch.maxWaitMs,
      minBytes: this.#fetch.minBytes,
      maxBytes: this.#limits.fetchBytes,
      maxBytesPerPartition: this.#limits.fetchBytesPerPartition,
      allowAutoTopicCreation: false,
    });
    this.#consumer = consumer;
    consumer.on(consumer.events.GROUP_JOIN, ({ payload }) => {
      // Partitions no longer ours start afresh if they come back: their committed offset is the truth.
      const mine = new Set(payload.memberAssignment[this.#deps.topic] ?? []);
      for (const partition of this.#trackers.keys()) {
        if (!mine.has(partition)) {
          this.#trackers.delete(partition);
          this.#paused.delete(partition);
        }
      }
    });
    consumer.on(consumer.events.CRASH, ({ payload }) => {
      this.#log.warn({ err: payload.error, restart: payload.restart }, "consumer crashed");
      if (!payload.restart && !this.#stop.signal.aborted) void this.#restartConsumer();
    });
    await consumer.connect();
    await consumer.subscribe({ topic: this.#deps.topic, fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatchAutoResolve: false,
      eachBatch: (payload) => this.#onBatch(payload),
    });
    this.#commitTimer = setInterval(() => void this.#commit(), COMMIT_EVERY_MS);
    for (const row of replayingRows(this.#deps.store.db, this.#destination.id)) this.enqueueReplay(row);
    this.#log.info({ groupId: this.#deps.groupId }, "delivery worker started");
  }

  async #restartConsumer(): Promise<void> {
    await this.#consumer?.disconnect().catch(() => {});
    while (!this.#stop.signal.aborted) {
      try {
        clearInterval(this.#commitTimer);
        await this.start();
        return;
      } catch (err) {
        this.#log.warn({ err }, "consumer restart failed; retrying");
        await sleep(2000, undefined, { signal: this.#stop.signal }).catch(() => {});
      }
    }
  }

  async #onBatch({ batch, resolveOffset, heartbeat, pause }: EachBatchPayload): Promise<void> {
    let tracker = this.#trackers.get(batch.partition);
    if (!tracker) {
      tracker = new PartitionTracker();
      this.#trackers.set(batch.partition, tracker);
    }
    const fresh: Array<{
      message: (typeof batch.messages)[number];
      event: ParsedEvent | undefined;
      body: string;
    }> = [];
    for (const message of batch.messages) {
      const offset = Number(message.offset);
      if (tracker.add(offset)) {
        const body = message.value?.toString("utf8") ?? "";
        fresh.push({ message, event: parseEvent(body), body });
      }
      resolveOffset(message.offset);
    }
    const ledger = ledgerRowsFor(
      this.#deps.store.db,
      this.#destination.id,
      fresh.flatMap((f) => (f.event ? [f.event.id] : [])),
    );
    const types = this.#destination.eventTypes;
    for (const { message, event, body } of fresh) {
      const offset = Number(message.offset);
      if (!event) {
        this.#log.error(
          { partition: batch.partition, offset },
          "record is not a gateway event; dead-lettering it",
        );
        this.#enqueue(`offset:${batch.partition}:${offset}`, {
          eventId: `kafka-${batch.partition}-${offset}`,
          userId: message.key?.toString() ?? "",
          body,
          acceptedAt: undefined,
          attemptsSoFar: Number.POSITIVE_INFINITY,
          tracker,
          partition: batch.partition,
          offset,
        });
        continue;
      }
      const row: LedgerRow | undefined = ledger.get(event.id);
      // Finished before a crash or rebalance (delivered, dead, or handed to replay): skip, don't resend.
      if ((row && row.status !== "pending") || (types.length > 0 && !types.includes(event.type))) {
        tracker.finish(offset);
        continue;
      }
      const acceptedAt = event.timestamp ? Date.parse(event.timestamp) : undefined;
      this.#enqueue(event.userID, {
        eventId: event.id,
        userId: event.userID,
        body,
        acceptedAt: Number.isNaN(acceptedAt) ? undefined : acceptedAt,
        attemptsSoFar: row?.attempts ?? 0,
        tracker,
        partition: batch.partition,
        offset,
      });
    }
    if (this.#overLimit() && !this.#paused.has(batch.partition)) {
      this.#paused.add(batch.partition);
      pause();
    }
    this.#deps.observe?.buffered(this.#destination.id, this.#scheduler.size);
    await heartbeat();
  }

  /** Queues a dead-lettered event for another round of attempts (it is in the ledger as "replaying"). */
  enqueueReplay(row: LedgerRow): void {
    if (row.event === null) return;
    this.#enqueue(row.userId, {
      eventId: row.eventId,
      userId: row.userId,
      body: row.event,
      acceptedAt: undefined,
      attemptsSoFar: 0,
      tracker: undefined,
      partition: -1,
      offset: -1,
    });
  }

  #enqueue(key: string, job: Job): void {
    this.#bufferedBytes += job.body.length;
    this.#scheduler.push(key, job);
  }

  #overLimit(): boolean {
    return this.#scheduler.size > this.#limits.events || this.#bufferedBytes > this.#limits.bytes;
  }

  /** The scheduler's job: one event from first attempt to finished (or stopped). */
  async #run(job: Job): Promise<void> {
    try {
      await this.#deliver(job);
    } finally {
      this.#bufferedBytes -= job.body.length;
      if (
        this.#paused.size > 0 &&
        this.#scheduler.size <= this.#limits.events / 2 &&
        this.#bufferedBytes <= this.#limits.bytes / 2
      ) {
        const partitions = [...this.#paused];
        this.#paused.clear();
        this.#consumer?.resume([{ topic: this.#deps.topic, partitions }]);
      }
    }
  }

  #finish(job: Job): void {
    job.tracker?.finish(job.offset);
  }

  async #record(
    job: Job,
    attemptNumber: number,
    result: AttemptResult,
    outcome: AttemptOutcome,
    keepEvent: boolean,
  ) {
    const status = outcome === "succeeded" ? "delivered" : outcome === "dead" ? "dead" : "pending";
    const at = Date.now();
    // Recording must not be skipped: retry until the database takes it (or the worker stops).
    for (;;) {
      try {
        await this.#deps.recorder.record(
          {
            eventId: job.eventId,
            destinationId: this.#destination.id,
            userId: job.userId,
            attemptNumber,
            startedAt: at - result.durationMs,
            durationMs: result.durationMs,
            statusCode: result.statusCode,
            error: result.error,
            responseSnippet: result.responseSnippet,
            outcome,
          },
          {
            destinationId: this.#destination.id,
            eventId: job.eventId,
            userId: job.userId,
            status,
            attempts: attemptNumber,
            lastError: result.error,
            event: keepEvent ? job.body : null,
            at,
          },
          // The next event of this userID waits for this write; write it now if nothing else can run.
          this.#scheduler.isStarving(job.userId),
        );
        return;
      } catch {
        if (this.#stop.signal.aborted) throw new Stopped();
        await sleep(500);
      }
    }
  }

  async #deliver(job: Job): Promise<void> {
    if (this.#stop.signal.aborted) return;
    try {
      const result = await this.#attemptWithRetries(job);
      await this.#record(job, job.attemptsSoFar, result, "succeeded", false);
      this.#deps.observe?.finished(this.#destination.id, "delivered", job.acceptedAt);
      this.#finish(job);
    } catch (err) {
      // Unfinished: redelivered after a restart. But a verdict the receiver already gave (410, or the last
      // allowed attempt failed) is carried out even while stopping, so that attempt is recorded and the
      // event dead-lettered rather than silently dropped (a 410 stops the worker while other events'
      // 410s are still arriving).
      const verdict = err instanceof Gone || err instanceof Exhausted;
      if (!verdict && (err instanceof Stopped || this.#stop.signal.aborted)) return;
      const gone = err instanceof Gone;
      const result =
        err instanceof Exhausted || err instanceof Gone
          ? err.result
          : ({
              verdict: "retry",
              statusCode: null,
              durationMs: 0,
              error: (err as Error).message,
              responseSnippet: null,
              retryAfterMs: null,
            } satisfies AttemptResult);
      try {
        await this.#deadLetter(job, result);
        await this.#record(job, Math.max(job.attemptsSoFar, 1), result, "dead", true);
      } catch {
        return; // stopping, and Kafka or the database refused: unfinished, redelivered after a restart
      }
      this.#deps.observe?.finished(this.#destination.id, "dead", job.acceptedAt);
      this.#finish(job);
      if (gone) this.#deps.onGone(this.#destination.id, result.error ?? "410 Gone");
    }
  }

  /** Attempts until success; throws Exhausted, Gone or Stopped. Backoff waits hold no concurrency slot. */
  async #attemptWithRetries(job: Job): Promise<AttemptResult> {
    if (!Number.isFinite(job.attemptsSoFar)) {
      throw new Exhausted({
        verdict: "retry",
        statusCode: null,
        durationMs: 0,
        error: "record is not a gateway event (unparseable value)",
        responseSnippet: null,
        retryAfterMs: null,
      });
    }
    const signal = this.#stop.signal;
    const d = () => this.#destination;
    // p-retry discards a result when its signal aborted during the attempt; a delivery the receiver has
    // accepted must still be recorded, or it would be sent again after the restart.
    let delivered: AttemptResult | undefined;
    // Likewise p-retry reports an abort instead of the Gone/Exhausted thrown during the attempt.
    let verdict: Gone | Exhausted | undefined;
    return pRetry(
      async () => {
        if (signal.aborted) throw new AbortError(new Stopped());
        const dest = d();
        const result = await this.#scheduler.slot(async () => {
          // Waiting for a slot can outlast a stop: no new attempt starts once the worker is stopping.
          if (signal.aborted) throw new AbortError(new Stopped());
          return sendWebhook(this.#target, job.eventId, job.body);
        });
        job.attemptsSoFar += 1;
        this.#deps.observe?.attempt(dest.id, result);
        if (result.verdict === "success") {
          delivered = result;
          return result;
        }
        if (result.verdict === "gone") {
          verdict = new Gone(result);
          throw new AbortError(verdict);
        }
        // An attempt our own hard stop cut off is not the receiver's failure: it never exhausts the budget.
        if (job.attemptsSoFar >= dest.maxAttempts && !this.#killed) {
          verdict = new Exhausted(result);
          throw new AbortError(verdict);
        }
        await this.#record(job, job.attemptsSoFar, result, "failed", false);
        throw new RetryableDeliveryError(result);
      },
      {
        retries: Number.POSITIVE_INFINITY, // the budget is maxAttempts, checked above (it may change via PATCH)
        factor: 2,
        minTimeout: d().backoffBaseMs,
        maxTimeout: d().backoffMaxMs,
        randomize: true,
        signal,
        onFailedAttempt: async ({ error, retryDelay }) => {
          // Honour the receiver's Retry-After (clamped to backoffMaxMs) when it asks for more than our backoff.
          const wanted = error instanceof RetryableDeliveryError ? error.result.retryAfterMs : null;
          if (wanted !== null) {
            const extra = Math.min(wanted, d().backoffMaxMs) - retryDelay;
            if (extra > 0) await sleep(extra, undefined, { signal });
          }
        },
      },
    ).catch((err: unknown) => {
      if (delivered) return delivered;
      if (verdict) throw verdict;
      if (signal.aborted) throw new Stopped();
      throw err;
    });
  }

  /** Parks an event on the dead-letter topic; retried until Kafka takes it or the worker stops. */
  async #deadLetter(job: Job, result: AttemptResult): Promise<void> {
    const message: Message = {
      key: job.userId,
      value: job.body,
      headers: {
        "event-id": job.eventId,
        "destination-id": this.#destination.id,
        attempts: String(Math.max(job.attemptsSoFar, 1)),
        "last-error": (result.error ?? "").slice(0, 1000),
        "dead-at": new Date().toISOString(),
        "content-type": "application/json",
      },
    };
    for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
      try {
        await this.#deps.sink.publish(this.#deps.deadLetterTopic, [message]);
        return;
      } catch (err) {
        if (this.#stop.signal.aborted) throw new Stopped();
        this.#log.warn({ err, eventId: job.eventId }, "dead-letter publish failed; retrying");
        await sleep(wait, undefined, { signal: this.#stop.signal }).catch(() => {});
      }
    }
  }

  async #commit(): Promise<void> {
    const consumer = this.#consumer;
    if (!consumer) return;
    const offsets: Array<{ partition: number; offset: number; tracker: PartitionTracker }> = [];
    for (const [partition, tracker] of this.#trackers) {
      const offset = tracker.takeCommit();
      if (offset !== undefined) offsets.push({ partition, offset, tracker });
    }
    if (offsets.length === 0) return;
    try {
      await consumer.commitOffsets(
        offsets.map((o) => ({ topic: this.#deps.topic, partition: o.partition, offset: String(o.offset) })),
      );
    } catch (err) {
      for (const o of offsets) o.tracker.commitFailed(o.offset);
      this.#log.debug({ err }, "offset commit failed; will retry");
    }
  }

  /**
   * Stops fetching, abandons backoff waits (those events stay uncommitted and are redelivered after a
   * restart), gives HTTP attempts in flight `graceMs` to finish (then aborts them), commits what is
   * finished and disconnects.
   */
  async stop(graceMs = 5000): Promise<void> {
    if (this.#stop.signal.aborted) return;
    this.#stop.abort();
    clearInterval(this.#commitTimer);
    await this.#consumer?.stop().catch(() => {});
    const kill = setTimeout(() => {
      this.#killed = true;
      abortAttempts(this.#inFlight, "aborted: the worker is stopping");
    }, graceMs);
    await this.#scheduler.idle();
    clearTimeout(kill);
    this.#deps.recorder.flush({ wait: true });
    await this.#commit();
    await this.#consumer?.disconnect().catch(() => {});
    await this.#target.dispatcher.close().catch(() => {});
    this.#log.info("delivery worker stopped");
  }
}
