import { uuidv7 } from "../ingest/event-id.ts";
import type { Message } from "../kafka/sink.ts";

/**
 * Operational webhooks: events about the gateway itself, delivered to operator endpoints registered
 * through /api/operational-destinations. They travel the events topic like any event (so they get the
 * same signing, retries, attempts and dead letters) but carry the record header `op`, which only the
 * gateway sets: readers hand them to operational destinations only, and never hand user events to those.
 * Operational destinations themselves raise no operational events (no loop) and are never auto-disabled.
 */
export const OPERATIONAL_HEADER = "op";
/** The userID (and Kafka key) of every operational event: one partition, so they stay in order. */
export const OPERATIONAL_USER = "gateway.operational";

export const OPERATIONAL_TYPES = [
  "destination.disabled",
  "destination.enabled",
  "event.dead",
  "destination.recovered",
] as const;
export type OperationalType = (typeof OPERATIONAL_TYPES)[number];

/** Publishes an operational event (resolves once Kafka has it). */
export type PublishOperational = (type: OperationalType, payload: Record<string, unknown>) => Promise<void>;

export function operationalMessage(type: OperationalType, payload: Record<string, unknown>): Message {
  const id = uuidv7();
  const value = JSON.stringify({
    id,
    userID: OPERATIONAL_USER,
    type,
    timestamp: new Date().toISOString(),
    payload,
  });
  return {
    key: OPERATIONAL_USER,
    value,
    headers: { [OPERATIONAL_HEADER]: "1", "event-id": id, "content-type": "application/json" },
  };
}
