import { setTimeout as sleep } from "node:timers/promises";
import pRetry, { AbortError } from "p-retry";
import type { Dispatcher } from "undici";
import type { RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import type { DestinationHealth } from "../store/attempt-queries.ts";
import type { AttemptOutcome } from "../store/attempts.ts";
import type { Destination } from "../store/destinations.ts";
import type { LedgerRow } from "../store/ledger.ts";
import {
  activeTracer,
  SpanKind,
  SpanStatusCode,
  startSpan,
  type Tracer,
  traceparentOf,
} from "../telemetry.ts";
import type { Cursor } from "./cursor.ts";
import { publishDeadLetter } from "./dead-letters.ts";
import type { EventRecord } from "./event-record.ts";
import { compileFilter, type FilterMatcher } from "./filter.ts";
import { KeyedScheduler } from "./keyed-scheduler.ts";
import type { DeliveryObserver } from "./observer.ts";
import { type OperationalType, operationalMessage } from "./operational.ts";
import { sharedLimit, TokenBucket } from "./rate-limit.ts";
import type { DeliveryRecorder } from "./recorder.ts";
import {
  type AttemptError,
  backoffOptions,
  ExhaustedError,
  GoneError,
  RetryableDeliveryError,
  retryAfterExtraMs,
  StoppedError,
  verdictOf,
} from "./retry-rule.ts";
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
  recorder: DeliveryRecorder;
  deadLetterTopic: string;
  /** Where dead letters are published (the ingest producer's group-commit sink). */
  sink: Pick<RecordSink, "publish">;
  logger: Logger;
  /** Builds the destination's own HTTP pool (SSRF-guarded unless private addresses are allowed). */
  createDispatcher(destination: Destination, connections: number): Dispatcher;
  /** A 410 from the receiver, or an auto-disable threshold crossed: the destination is disabled. */
  onGone(destinationId: string, reason: string): void;
  /** The events topic, where operational events (event.dead, destination.recovered) are published. */
  eventsTopic?: string;
  observe?: DeliveryObserver;
  limits: BufferLimits;
}

/**
 * What one destination's worker may hold (queued or in flight, over all its partitions). Above either
 * bound its cursors detach from the shared readers and catch up on their own once it has room again (below
 * half), so a slow destination costs memory up to this bound, never the others' progress.
 */
export interface BufferLimits {
  events: number;
  bytes: number;
}
export const DEFAULT_BUFFER_LIMITS: BufferLimits = { events: 5000, bytes: 8 * 1024 * 1024 };

/** The rotated-out secret's key while its grace period runs. */
function previousKey(d: Destination): SendTarget["previous"] {
  if (!d.previousSecret || !d.previousSecretExpiresAt || d.previousSecretExpiresAt <= Date.now()) {
    return undefined;
  }
  return { key: secretKey(d.previousSecret), until: d.previousSecretExpiresAt };
}

/** One event on its way to this destination. */
interface Job {
  event: EventRecord;
  attemptsSoFar: number;
  /** Undefined for a dead-letter replay (no offset to finish). */
  cursor: Cursor | undefined;
}

/**
 * The delivery side of one destination in one engine: its key-ordered queue (one lane per userID), its
 * concurrency limit, HTTP pool, retries and dead letters. It does not read Kafka: readers hand it records
 * (`offer`) and it finishes their offsets on its cursors once their outcome is recorded.
 */
export class DestinationWorker {
  #deps: WorkerDeps;
  #destination: Destination;
  /** This engine's share of the destination's maxConcurrency (see DeliveryEngine.concurrencyShare). */
  #share: number;
  #target: SendTarget;
  #inFlight = new Set<Attempt>();
  #scheduler: KeyedScheduler<Job>;
  /** UTF-16 length of the bodies queued or in flight (≈ bytes: event JSON is mostly ASCII). */
  #bufferedBytes = 0;
  #roomWaiters: Array<() => void> = [];
  /** Soft stop: no new attempts, backoff waits end. */
  #stop = new AbortController();
  /** Hard stop: attempts still in flight after the grace period were cut off. */
  #killed = false;
  #log: Logger;
  /** The destination's payload filter, compiled; undefined when it has none (no per-event cost). */
  #filter: FilterMatcher | undefined;
  /** The destination's rate limit (this engine's share of it); undefined when it has none. */
  #bucket: TokenBucket | undefined;
  /** The failing streak (seeded from the attempts on record): auto-disable and "recovered" follow it. */
  #health: DestinationHealth = { failingSince: undefined, deadStreak: 0, failing: false };
  #disableAsked = false;
  /**
   * A replay's window end per partition: events before it are delivered again even when the ledger says
   * they are finished (undefined: no replay).
   */
  replayUntil: Map<number, number> | undefined;
  readonly cursors = new Map<number, Cursor>();

  constructor(destination: Destination, deps: WorkerDeps, share = 1) {
    this.#deps = deps;
    this.#destination = destination;
    this.#share = share;
    const limit = this.#limit();
    this.#target = sendTarget(
      destination,
      secretKey(destination.secret),
      deps.createDispatcher(destination, limit),
      this.#inFlight,
    );
    this.#target.previous = previousKey(destination);
    this.#log = deps.logger.child({ destinationId: destination.id });
    this.#filter = this.#compileFilter(destination);
    this.#configureBucket();
    this.#scheduler = new KeyedScheduler(limit, (job) => this.#run(job));
  }

  get destination(): Destination {
    return this.#destination;
  }

  get id(): string {
    return this.#destination.id;
  }

  get stopped(): boolean {
    return this.#stop.signal.aborted;
  }

  /** Events queued or in flight. */
  get buffered(): number {
    return this.#scheduler.size;
  }

  #limit(): number {
    return Math.max(1, Math.round(this.#destination.maxConcurrency * this.#share));
  }

  /** Above either buffer bound: readers must stop handing it records. */
  get full(): boolean {
    return this.#scheduler.size > this.#deps.limits.events || this.#bufferedBytes > this.#deps.limits.bytes;
  }

  /** Below half of both bounds. */
  get hasRoom(): boolean {
    return (
      this.#scheduler.size <= this.#deps.limits.events / 2 &&
      this.#bufferedBytes <= this.#deps.limits.bytes / 2
    );
  }

  /** Resolves once the worker has room (or stops). */
  room(): Promise<void> {
    if (this.hasRoom || this.stopped) return Promise.resolve();
    return new Promise((done) => this.#roomWaiters.push(done));
  }

  /** New settings take effect for the next attempt. */
  update(destination: Destination, share = this.#share): void {
    const old = this.#destination;
    this.#destination = destination;
    this.#share = share;
    this.#scheduler.limit = this.#limit();
    this.#configureBucket();
    const key = destination.secret !== old.secret ? secretKey(destination.secret) : this.#target.key;
    let dispatcher = this.#target.dispatcher;
    if (destination.url !== old.url || destination.maxConcurrency !== old.maxConcurrency) {
      void dispatcher.close().catch(() => {});
      dispatcher = this.#deps.createDispatcher(destination, this.#limit());
    }
    const previous =
      destination.previousSecret === old.previousSecret &&
      destination.previousSecretExpiresAt === old.previousSecretExpiresAt
        ? this.#target.previous
        : previousKey(destination);
    // One assignment: an attempt signs with the old target or the new one, never with neither secret.
    const target = sendTarget(destination, key, dispatcher, this.#inFlight);
    target.previous = previous;
    this.#target = target;
    if (JSON.stringify(destination.filter) !== JSON.stringify(old.filter)) {
      this.#filter = this.#compileFilter(destination);
    }
  }

  #configureBucket(): void {
    const d = this.#destination;
    if (!d.rateLimitPerSecond) {
      // Attempts already waiting on the old bucket keep it; new ones take none.
      this.#bucket = undefined;
      return;
    }
    const { rate, burst } = sharedLimit(d.rateLimitPerSecond, d.rateLimitBurst ?? null, this.#share);
    if (this.#bucket) this.#bucket.configure(rate, burst);
    else this.#bucket = new TokenBucket(rate, burst);
  }

  #compileFilter(destination: Destination): FilterMatcher | undefined {
    if (!destination.filter) return undefined;
    try {
      return compileFilter(destination.filter);
    } catch (err) {
      // The admin API refuses such a filter; a record from a newer build could still carry one.
      this.#log?.error({ err }, "destination filter cannot be compiled; it matches nothing");
      return () => false;
    }
  }

  /** An operational destination (operator endpoint): operational events only, none raised about it. */
  get operational(): boolean {
    return this.#destination.kind === "operational";
  }

  /** Starts the failing streak where the attempts on record leave it. */
  seedHealth(health: DestinationHealth): void {
    this.#health = health;
  }

  #emit(type: OperationalType, payload: Record<string, unknown>): void {
    const topic = this.#deps.eventsTopic;
    if (!topic || this.operational) return;
    this.#deps.sink
      .publish(topic, [operationalMessage(type, { destinationId: this.id, ...payload })])
      .catch((err: unknown) => this.#log.warn({ err, type }, "could not publish an operational event"));
  }

  /** An attempt's outcome moves the failing streak; crossing a threshold disables the destination. */
  #track(outcome: "succeeded" | "failed" | "dead", at: number): void {
    if (this.operational) return;
    const h = this.#health;
    if (outcome === "succeeded") {
      if (h.failing || h.failingSince !== undefined) {
        this.#emit("destination.recovered", {
          failingSince: h.failingSince === undefined ? null : new Date(h.failingSince).toISOString(),
        });
      }
      this.#health = { failingSince: undefined, deadStreak: 0, failing: false };
      this.#disableAsked = false;
      return;
    }
    h.failingSince ??= at;
    h.failing = true;
    if (outcome === "dead") h.deadStreak++;
    if (this.#disableAsked) return;
    const d = this.#destination;
    // A row written before the setting existed has no value: the default, 120 hours.
    const hours = d.autoDisableAfterHours === undefined ? 120 : d.autoDisableAfterHours;
    let reason: string | undefined;
    if (d.autoDisableAfterDeadLetters && h.deadStreak >= d.autoDisableAfterDeadLetters) {
      reason = `auto-disabled: ${h.deadStreak} dead letters in a row`;
    } else if (hours && at - h.failingSince >= hours * 3_600_000) {
      reason = `auto-disabled: failing without a success since ${new Date(h.failingSince).toISOString()} (autoDisableAfterHours ${hours})`;
    }
    if (reason) {
      this.#disableAsked = true;
      this.#deps.onGone(this.id, reason);
    }
  }

  /** Has a payload filter (readers then ask `accepts` for each event). */
  get filtered(): boolean {
    return this.#filter !== undefined;
  }

  /**
   * Does this destination want this event: its type subscribed and its payload filter matching? An
   * undecodable record goes to all (it dies). An event it does not want counts as finished for it.
   */
  accepts(event: EventRecord): boolean {
    if ((event.operational === true) !== this.operational) return false;
    if (event.type === undefined) return true;
    if (!this.wants(event.type)) return false;
    return this.#filter === undefined || this.#filter(event.parsed ?? JSON.parse(event.body));
  }

  /** Does this destination want events of this type? (An undecodable record goes to all: it dies.) */
  wants(type: string | undefined): boolean {
    const types = this.#destination.eventTypes;
    return type === undefined || types.length === 0 || types.includes(type);
  }

  /**
   * Hands a record to the worker (its cursor moves past it). `ledger` is the event's row at this
   * destination, if any: an event finished before a crash or hand-over is passed over, not sent again.
   */
  offer(cursor: Cursor, event: EventRecord, ledger: LedgerRow | undefined): void {
    const replayed =
      this.replayUntil !== undefined && event.offset < (this.replayUntil.get(cursor.partition) ?? -1);
    if (ledger && ledger.status !== "pending" && !replayed) {
      cursor.skipTo(event.offset + 1);
      return;
    }
    cursor.track(event.offset);
    this.#enqueue({
      event,
      attemptsSoFar:
        event.type === undefined ? Number.POSITIVE_INFINITY : replayed ? 0 : (ledger?.attempts ?? 0),
      cursor,
    });
  }

  /** Queues a dead-lettered event for another round of attempts (it is in the ledger as "replaying"). */
  enqueueReplay(row: LedgerRow, partition: number): void {
    if (row.event === null) return;
    this.#enqueue({
      event: {
        partition,
        offset: -1,
        eventId: row.eventId,
        userId: row.userId,
        type: "replay",
        body: row.event,
        acceptedAt: undefined,
        traceparent: undefined,
      },
      attemptsSoFar: 0,
      cursor: undefined,
    });
  }

  #enqueue(job: Job): void {
    this.#bufferedBytes += job.event.body.length;
    this.#scheduler.push(job.event.userId, job);
  }

  /** Reports the buffer to the observer (readers call it once per batch). */
  reportBuffered(): void {
    this.#deps.observe?.buffered(this.#destination.id, this.#scheduler.size);
  }

  /** The scheduler's job: one event from first attempt to finished (or stopped). */
  async #run(job: Job): Promise<void> {
    try {
      // A partition handed over to another reader: its new owner resumes from the committed offset.
      if (job.cursor?.released) return;
      await this.#deliver(job);
    } finally {
      this.#bufferedBytes -= job.event.body.length;
      if (this.#roomWaiters.length > 0 && this.hasRoom) {
        for (const done of this.#roomWaiters.splice(0)) done();
      }
    }
  }

  async #record(
    job: Job,
    attemptNumber: number,
    result: AttemptResult,
    outcome: AttemptOutcome,
    keep: boolean,
  ) {
    const status = outcome === "succeeded" ? "delivered" : outcome === "dead" ? "dead" : "pending";
    const at = Date.now();
    const { eventId, userId, body } = job.event;
    const destinationId = this.#destination.id;
    // Recording must not be skipped: retry until the database takes it (or the worker stops).
    for (;;) {
      try {
        await this.#deps.recorder.record(
          {
            eventId,
            destinationId,
            userId,
            attemptNumber,
            startedAt: at - result.durationMs,
            durationMs: result.durationMs,
            statusCode: result.statusCode,
            error: result.error,
            responseSnippet: result.responseSnippet,
            outcome,
          },
          {
            destinationId,
            eventId,
            userId,
            status,
            attempts: attemptNumber,
            lastError: result.error,
            event: keep ? body : null,
            at,
          },
          // The next event of this userID waits for this write; write it now if nothing else can run.
          this.#scheduler.isStarving(userId),
        );
        this.#track(outcome, at);
        return;
      } catch {
        if (this.stopped) throw new StoppedError();
        await sleep(500);
      }
    }
  }

  #finish(job: Job): void {
    job.cursor?.finish(job.event.offset);
  }

  async #deliver(job: Job): Promise<void> {
    if (this.stopped) return;
    try {
      const result = await this.#attemptWithRetries(job);
      await this.#record(job, job.attemptsSoFar, result, "succeeded", false);
      this.#deps.observe?.finished(this.#destination.id, "delivered", job.event.acceptedAt);
      this.#finish(job);
    } catch (err) {
      // Unfinished: redelivered after a restart. But a verdict the receiver already gave (410, or the last
      // allowed attempt failed) is carried out even while stopping, so that attempt is recorded and the
      // event dead-lettered rather than silently dropped.
      const verdict = err instanceof GoneError || err instanceof ExhaustedError;
      if (!verdict && (err instanceof StoppedError || this.stopped)) return;
      const result: AttemptResult = verdict
        ? (err as AttemptError).result
        : {
            verdict: "retry",
            statusCode: null,
            durationMs: 0,
            error: (err as Error).message,
            responseSnippet: null,
            retryAfterMs: null,
          };
      try {
        await publishDeadLetter(
          this.#deps.sink,
          this.#deps.deadLetterTopic,
          {
            eventId: job.event.eventId,
            userId: job.event.userId,
            destinationId: this.#destination.id,
            body: job.event.body,
            attempts: job.attemptsSoFar,
            lastError: result.error,
          },
          this.#stop.signal,
          this.#log,
        );
        await this.#record(job, Math.max(job.attemptsSoFar, 1), result, "dead", true);
      } catch {
        return; // stopping, and Kafka or the database refused: unfinished, redelivered after a restart
      }
      this.#deps.observe?.finished(this.#destination.id, "dead", job.event.acceptedAt);
      this.#emit("event.dead", {
        eventId: job.event.eventId,
        userID: job.event.userId,
        attempts: job.attemptsSoFar,
        lastError: result.error,
      });
      this.#finish(job);
      if (err instanceof GoneError) this.#deps.onGone(this.#destination.id, result.error ?? "410 Gone");
    }
  }

  /** One attempt as a span (child of the ingest span); the webhook carries the span's `traceparent`. */
  async #tracedSend(tracer: Tracer, job: Job): Promise<AttemptResult> {
    const span = startSpan(tracer, "webhook attempt", {
      kind: SpanKind.CLIENT,
      parent: job.event.traceparent,
      attributes: {
        "webhook.destination.id": this.#destination.id,
        "webhook.event.id": job.event.eventId,
        "webhook.attempt": job.attemptsSoFar + 1,
        "http.request.method": "POST",
        "webhook.destination.origin": this.#target.origin,
      },
    });
    const result = await sendWebhook(this.#target, job.event.eventId, job.event.body, traceparentOf(span));
    if (result.statusCode !== null) span.setAttribute("http.response.status_code", result.statusCode);
    span.setAttribute("webhook.verdict", result.verdict);
    if (result.verdict === "success") span.setStatus({ code: SpanStatusCode.OK });
    else span.setStatus({ code: SpanStatusCode.ERROR, message: result.error ?? result.verdict });
    span.end();
    return result;
  }

  /** Attempts until success; throws ExhaustedError, GoneError or StoppedError. Backoff waits hold no slot. */
  async #attemptWithRetries(job: Job): Promise<AttemptResult> {
    if (!Number.isFinite(job.attemptsSoFar)) {
      throw new ExhaustedError({
        verdict: "retry",
        statusCode: null,
        durationMs: 0,
        error: "record is not a gateway event (unparseable value)",
        responseSnippet: null,
        retryAfterMs: null,
      });
    }
    const signal = this.#stop.signal;
    const policy = () => this.#destination;
    // p-retry discards a result when its signal aborted during the attempt; a delivery the receiver has
    // accepted must still be recorded, or it would be sent again after the restart. Likewise p-retry
    // reports an abort instead of the Gone/Exhausted thrown during the attempt.
    let delivered: AttemptResult | undefined;
    let verdict: GoneError | ExhaustedError | undefined;
    return pRetry(
      async () => {
        if (signal.aborted || job.cursor?.released) throw new AbortError(new StoppedError());
        // The token first, then a slot: waiting for a token holds no concurrency slot, and as only this
        // user's running job waits, the user's later events stay behind it (order kept).
        const bucket = this.#bucket;
        if (bucket) await bucket.take(signal).catch(() => Promise.reject(new AbortError(new StoppedError())));
        const result = await this.#scheduler.slot(async () => {
          // Waiting for a slot can outlast a stop: no new attempt starts once the worker is stopping.
          if (signal.aborted) throw new AbortError(new StoppedError());
          const tracer = activeTracer();
          if (tracer === undefined) return sendWebhook(this.#target, job.event.eventId, job.event.body);
          return this.#tracedSend(tracer, job);
        });
        job.attemptsSoFar += 1;
        this.#deps.observe?.attempt(this.#destination.id, result);
        const outcome = verdictOf(result, job.attemptsSoFar, policy(), this.#killed);
        if (outcome === "success") {
          delivered = result;
          return result;
        }
        if (!(outcome instanceof RetryableDeliveryError)) {
          verdict = outcome as GoneError | ExhaustedError;
          throw new AbortError(verdict);
        }
        await this.#record(job, job.attemptsSoFar, result, "failed", false);
        throw outcome;
      },
      {
        ...backoffOptions(policy),
        signal,
        onFailedAttempt: async ({ error, retryDelay }) => {
          const extra = retryAfterExtraMs(error, retryDelay, policy());
          if (extra > 0) await sleep(extra, undefined, { signal });
        },
      },
    ).catch((err: unknown) => {
      if (delivered) return delivered;
      if (verdict) throw verdict;
      if (signal.aborted || job.cursor?.released) throw new StoppedError();
      throw err;
    });
  }

  /**
   * Stops: no new attempts, backoff waits end (those events stay unfinished and are redelivered by whoever
   * reads the partition next), attempts in flight get `graceMs` to finish, then are cut off.
   */
  async stop(graceMs = 5000): Promise<void> {
    if (this.stopped) return;
    this.#stop.abort();
    for (const done of this.#roomWaiters.splice(0)) done();
    for (const c of this.cursors.values()) c.released = true;
    const kill = setTimeout(() => {
      this.#killed = true;
      abortAttempts(this.#inFlight, "aborted: the worker is stopping");
    }, graceMs);
    await this.#scheduler.idle();
    clearTimeout(kill);
    await this.#target.dispatcher.close().catch(() => {});
    this.#log.debug("destination worker stopped");
  }
}
