/**
 * The records of the shared-state topics, as written to Kafka and read back by every replica's view.
 *
 * - config (compacted, keyed `destination/<id>`): the whole destination row; a tombstone deletes it.
 *   Also keyed `event-type/<name>`: an entry of the event-type catalog (name, description, JSON Schema).
 * - outcomes (deleted by age, keyed `<destinationId>/<eventId>` so one event's outcomes at one destination
 *   stay in order on one partition): an attempt row and/or where the event now stands (ledger).
 * - idempotency (compacted and deleted by age, keyed by the route-scoped Idempotency-Key): the answer.
 *
 * Values are JSON with a version `v`; a record of a newer version than this build knows is skipped with a
 * warning rather than misread. Header `w` carries a write id: the replica that wrote the record waits for
 * its view to apply that id before it answers (read-your-writes).
 */
import type { Message } from "../kafka/sink.ts";
import type { AttemptRow } from "../store/attempts.ts";
import type { Destination } from "../store/destinations.ts";
import type { EventType } from "../store/event-types.ts";
import type { LedgerUpdate } from "../store/ledger.ts";
import type { AcceptedRollup } from "../store/stats.ts";

export const STATE_VERSION = 1;
const DESTINATION_PREFIX = "destination/";

export interface StateTopics {
  config: string;
  outcomes: string;
  idempotency: string;
}

export interface Outcome {
  attempt?: AttemptRow;
  ledger?: LedgerUpdate;
}

export interface IdempotencyValue {
  key: string;
  requestHash: string;
  status: number;
  response: string;
  createdAt: number;
  expiresAt: number;
}

export function destinationMessage(id: string, row: Destination | null, writeId: string): Message {
  return {
    key: `${DESTINATION_PREFIX}${id}`,
    value: row === null ? null : JSON.stringify({ v: STATE_VERSION, destination: row }),
    headers: { w: writeId },
  };
}

const EVENT_TYPE_PREFIX = "event-type/";

export function eventTypeMessage(name: string, row: EventType | null, writeId: string): Message {
  return {
    key: `${EVENT_TYPE_PREFIX}${name}`,
    value: row === null ? null : JSON.stringify({ v: STATE_VERSION, eventType: row }),
    headers: { w: writeId },
  };
}

/** The event-type name of a config record's key, or undefined for a key of another kind. */
export function eventTypeNameOf(key: string): string | undefined {
  return key.startsWith(EVENT_TYPE_PREFIX) ? key.slice(EVENT_TYPE_PREFIX.length) : undefined;
}

/** The destination id of a config record's key, or undefined for a key of another kind. */
export function destinationIdOf(key: string): string | undefined {
  return key.startsWith(DESTINATION_PREFIX) ? key.slice(DESTINATION_PREFIX.length) : undefined;
}

export function outcomeMessage(outcome: Outcome, writeId?: string): Message {
  const subject = outcome.attempt ?? outcome.ledger;
  if (!subject) throw new Error("an outcome needs an attempt or a ledger update");
  return {
    key: `${subject.destinationId}/${subject.eventId}`,
    value: JSON.stringify({ v: STATE_VERSION, a: outcome.attempt, l: outcome.ledger }),
    headers: writeId ? { w: writeId } : undefined,
  };
}

/**
 * An ingest roll-up on the outcomes topic (field `s`; views of older builds ignore it): events one replica
 * accepted in one bucket, per type and per heaviest user, so every replica's stats hold every replica's
 * ingest. Keyed per replica, so one replica's roll-ups stay in order on one partition.
 */
export function acceptedRollupMessage(replicaId: string, rollup: AcceptedRollup): Message {
  return { key: `stats/${replicaId}`, value: JSON.stringify({ v: STATE_VERSION, s: rollup }) };
}

export function idempotencyMessage(value: IdempotencyValue): Message {
  return { key: value.key, value: JSON.stringify({ v: STATE_VERSION, ...value }) };
}

/** A record value's JSON, or undefined when it is of a version this build does not know. */
export function parseState<T>(value: Buffer): (T & { v: number }) | undefined {
  const parsed = JSON.parse(value.toString("utf8")) as T & { v: number };
  return parsed.v === STATE_VERSION ? parsed : undefined;
}
