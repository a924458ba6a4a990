import { createHash } from "node:crypto";
import { KafkaUnavailableError, type Message, type RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import type { IdempotencyValue } from "../state/records.ts";
import type { Db } from "../store/db.ts";
import {
  completeIdempotencyKey,
  findIdempotencyKey,
  purgeExpiredIdempotencyKeys,
  RESERVED,
  reserveIdempotencyKey,
} from "../store/idempotency.ts";
import { activeTracer, endWithError, SpanKind, startSpan, type Tracer, traceparentOf } from "../telemetry.ts";
import { isoTime, uuidv7 } from "./event-id.ts";
import { type EventInput, toRecord } from "./events.ts";

/** Which route a request came through; an Idempotency-Key is scoped to it. */
export type IngestKind = "singleEvent" | "events";

export interface Accepted {
  /** Event ids in request order. */
  ids: string[];
  receivedAt: string;
  /** True when this is the stored answer to an earlier request with the same Idempotency-Key. */
  replayed: boolean;
}

export interface IdempotencyRequest {
  key: string;
  /** Who asked (e.g. a hash of the API key), so two clients' keys never collide. */
  scope: string;
}

/** The Idempotency-Key was used before with a different request body. */
export class IdempotencyKeyReusedError extends Error {
  override name = "IdempotencyKeyReusedError";
}

/** A request with the same Idempotency-Key is being produced right now. */
export class IdempotencyKeyInFlightError extends Error {
  override name = "IdempotencyKeyInFlightError";
}

export interface IngestServiceOptions {
  db: Db;
  sink: RecordSink;
  topic: string;
  /** False while the producer is disconnected or the topics are not there yet: answer 503 at once. */
  kafkaReady: () => boolean;
  idempotencyTtlMs: number;
  /**
   * Shares an answered key with the other replicas (the idempotency topic). Called after the events were
   * acknowledged; a failure is logged, not turned into an error: the events are accepted, and this replica
   * still holds the key.
   */
  shareKey?: (value: IdempotencyValue) => Promise<void>;
  logger: Logger;
  /** Counts events accepted (Kafka acknowledged) or refused (Kafka could not take them), for metrics. */
  onOutcome?: (outcome: "accepted" | "refused", events: number) => void;
  /** Told of the events Kafka acknowledged, with their ids (stats roll-ups, the console's live tail). */
  onAccepted?: (events: EventInput[], ids: string[], at: number) => void;
  /**
   * How many clients could still send events now (the HTTP server's open connections). Given, a request
   * that leaves every one of them waiting for Kafka tells the sink to send its batch now (`sendNow`):
   * waiting out the linger could not add anyone else's events, only delay these (a client that waits for
   * each answer would otherwise wait the whole linger every time).
   */
  clients?: { readonly count: number };
}

export interface IngestService {
  /**
   * Turns validated events into records and resolves once Kafka acknowledged all of them. Rejects with
   * KafkaUnavailableError (→ 503), IdempotencyKeyReusedError (→ 422), IdempotencyKeyInFlightError (→ 409)
   * or EventNotSerializableError (→ 400). With tracing on, the request is one span (a child of the
   * client's `traceparent` when it sent one) whose context every record carries in its `traceparent`.
   */
  accept(
    kind: IngestKind,
    events: EventInput[],
    idempotency?: IdempotencyRequest,
    traceparent?: string,
  ): Promise<Accepted>;
  /** Stops the periodic purge of expired idempotency keys. */
  close(): void;
}

interface StoredAnswer {
  ids: string[];
  receivedAt: string;
}

function requestHash(kind: IngestKind, events: EventInput[]): string {
  return createHash("sha256").update(kind).update("\n").update(JSON.stringify(events)).digest("base64url");
}

/** New event ids (one per event) and the receive time of a request accepted at `now`. */
function freshAnswer(events: EventInput[], now: number): StoredAnswer {
  return { ids: events.map(() => uuidv7(now)), receivedAt: isoTime(now) };
}

const PURGE_EVERY_MS = 10 * 60_000;

export function createIngestService(opts: IngestServiceOptions): IngestService {
  const { db, sink, topic, logger, clients } = opts;
  // Keys whose produce is running in this process: a concurrent repeat must not send the events twice.
  const inFlight = new Set<string>();
  /** Requests waiting for their publish to be acknowledged (or refused). */
  let waiting = 0;

  function recordsOf(
    events: EventInput[],
    { ids, receivedAt }: StoredAnswer,
    traceparent: string | undefined,
  ): Message[] {
    const messages = events.map((event, i) => toRecord(event, ids[i] as string, receivedAt));
    // Only with tracing on: the ingest span's context, for the delivery attempts' spans to continue.
    if (traceparent !== undefined) {
      for (const m of messages) (m.headers as Record<string, string>).traceparent = traceparent;
    }
    return messages;
  }

  function assertKafkaReady(events: number): void {
    if (opts.kafkaReady()) return;
    opts.onOutcome?.("refused", events);
    throw new KafkaUnavailableError("Kafka is not available");
  }

  /** Publishes, counting the outcome. A plain promise chain: this is on every request's path. */
  function send(messages: Message[]): Promise<void> {
    const published = sink.publish(topic, messages);
    waiting++;
    if (clients !== undefined && waiting >= clients.count) sink.sendNow?.();
    return published.then(
      () => {
        waiting--;
        opts.onOutcome?.("accepted", messages.length);
      },
      (err: unknown) => {
        waiting--;
        opts.onOutcome?.("refused", messages.length);
        throw err;
      },
    );
  }

  async function acceptIdempotent(
    kind: IngestKind,
    events: EventInput[],
    { key, scope }: IdempotencyRequest,
    traceparent: string | undefined,
  ): Promise<Accepted> {
    const storeKey = `${kind}:${scope}:${key}`;
    const hash = requestHash(kind, events);
    const now = Date.now();
    let answer: StoredAnswer;
    let messages: Message[];

    const existing = findIdempotencyKey(db, storeKey, now);
    if (existing) {
      if (existing.requestHash !== hash) {
        throw new IdempotencyKeyReusedError("this Idempotency-Key was used with a different request body");
      }
      answer = JSON.parse(existing.response) as StoredAnswer;
      if (existing.status !== RESERVED) return { ...answer, replayed: true };
      if (inFlight.has(storeKey)) {
        throw new IdempotencyKeyInFlightError("a request with this Idempotency-Key is still being processed");
      }
      // Reserved but never acknowledged (a 503, or a crash): send the very same events again.
      assertKafkaReady(events.length);
      messages = recordsOf(events, answer, traceparent);
    } else {
      answer = freshAnswer(events, now);
      messages = recordsOf(events, answer, traceparent);
      assertKafkaReady(events.length);
      const reserved = reserveIdempotencyKey(db, {
        key: storeKey,
        requestHash: hash,
        response: JSON.stringify(answer),
        createdAt: now,
        expiresAt: now + opts.idempotencyTtlMs,
      });
      // Lost a race with a concurrent first request of the same key (SQLite serialises the two inserts).
      if (!reserved) {
        throw new IdempotencyKeyInFlightError("a request with this Idempotency-Key is still being processed");
      }
    }

    inFlight.add(storeKey);
    try {
      await send(messages);
    } finally {
      inFlight.delete(storeKey);
    }
    opts.onAccepted?.(events, answer.ids, Date.now());
    completeIdempotencyKey(db, storeKey, 202);
    if (opts.shareKey) {
      const value: IdempotencyValue = {
        key: storeKey,
        requestHash: hash,
        status: 202,
        response: JSON.stringify(answer),
        createdAt: now,
        expiresAt: now + opts.idempotencyTtlMs,
      };
      await opts.shareKey(value).catch((err: unknown) => {
        logger.warn({ err, key: storeKey }, "could not share an Idempotency-Key with the other replicas");
      });
    }
    return { ...answer, replayed: false };
  }

  const purge = () => {
    try {
      const removed = purgeExpiredIdempotencyKeys(db, Date.now());
      if (removed > 0) logger.debug({ removed }, "purged expired idempotency keys");
    } catch (err) {
      logger.warn({ err }, "purging expired idempotency keys failed");
    }
  };
  purge();
  const purgeTimer = setInterval(purge, PURGE_EVERY_MS);
  purgeTimer.unref();

  async function acceptUntraced(
    kind: IngestKind,
    events: EventInput[],
    idempotency: IdempotencyRequest | undefined,
    traceparent: string | undefined,
  ): Promise<Accepted> {
    if (idempotency) return acceptIdempotent(kind, events, idempotency, traceparent);
    const now = Date.now();
    const answer = freshAnswer(events, now);
    const messages = recordsOf(events, answer, traceparent);
    assertKafkaReady(events.length);
    await send(messages);
    opts.onAccepted?.(events, answer.ids, now);
    return { ...answer, replayed: false };
  }

  async function acceptTraced(
    tracer: Tracer,
    kind: IngestKind,
    events: EventInput[],
    idempotency: IdempotencyRequest | undefined,
    parent: string | undefined,
  ): Promise<Accepted> {
    const span = startSpan(tracer, `ingest ${kind}`, {
      kind: SpanKind.PRODUCER,
      parent,
      attributes: {
        "messaging.system": "kafka",
        "messaging.operation.type": "send",
        "messaging.destination.name": topic,
        "messaging.batch.message_count": events.length,
        "webhook.ingest.route": kind,
      },
    });
    try {
      const accepted = await acceptUntraced(kind, events, idempotency, traceparentOf(span));
      // The ids of a batch, up to 100 of them (the count is messaging.batch.message_count).
      span.setAttribute(
        "webhook.event.ids",
        accepted.ids.length <= 100 ? accepted.ids : accepted.ids.slice(0, 100),
      );
      if (accepted.replayed) span.setAttribute("webhook.idempotent_replay", true);
      span.end();
      return accepted;
    } catch (err) {
      endWithError(span, err);
      throw err;
    }
  }

  return {
    accept(kind, events, idempotency, parent) {
      const tracer = activeTracer();
      if (tracer === undefined) return acceptUntraced(kind, events, idempotency, undefined);
      return acceptTraced(tracer, kind, events, idempotency, parent);
    },
    close() {
      clearInterval(purgeTimer);
    },
  };
}
