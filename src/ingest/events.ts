import { z } from "@hono/zod-openapi";
import type { Message } from "../kafka/sink.ts";

/** Most events one `POST /api/events` may carry. */
export const MAX_BATCH_EVENTS = 1000;

export const EventInputSchema = z
  .object({
    userID: z.string().min(1).max(256).openapi({
      description: "Whose event this is. Events of one userID keep their order (one Kafka partition).",
      example: "user-42",
    }),
    type: z
      .string()
      .regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1–128 characters of [A-Za-z0-9._-]")
      .default("event")
      .openapi({
        description: "Event type; destinations may subscribe to some types only.",
        example: "order.paid",
      }),
    // Any JSON value (null included) but not absent. No recursive schema: a deeply nested payload would
    // cost a validator stack frames per level, and JSON.parse has already proven it is JSON.
    payload: z
      .unknown()
      .refine((v) => v !== undefined, { message: "required (any JSON value)" })
      .openapi({
        description: "Any JSON value, delivered as is.",
        example: { orderId: "o-1", amount: 12.5 },
      }),
  })
  .openapi("EventInput");

export type EventInput = z.output<typeof EventInputSchema>;

export const EventBatchSchema = z
  .object({
    events: z
      .array(EventInputSchema)
      .min(1)
      .max(MAX_BATCH_EVENTS)
      .openapi({
        description: `1–${MAX_BATCH_EVENTS} events, accepted all together or not at all.`,
      }),
  })
  .openapi("EventBatch");

const receivedAt = z.string().openapi({
  description: "When the gateway received the event (ISO 8601); the record's `timestamp`.",
  example: "2025-01-01T12:00:00.000Z",
});

export const AcceptedEventSchema = z
  .object({
    id: z
      .string()
      .openapi({ description: "The event id (UUIDv7).", example: "01941f29-7c4a-7b6e-9d3c-2a1f0e9b8c7d" }),
    userID: z.string(),
    type: z.string(),
    receivedAt,
  })
  .openapi("AcceptedEvent");

export const AcceptedBatchSchema = z
  .object({
    ids: z
      .array(z.string())
      .openapi({ description: "Event ids (UUIDv7), in the order of the request's events." }),
    receivedAt,
  })
  .openapi("AcceptedBatch");

/** A payload that JSON.stringify cannot write back (nested deeper than the stack allows). */
export class EventNotSerializableError extends Error {
  override name = "EventNotSerializableError";
}

const HEADER_CONTENT_TYPE = "application/json";

/**
 * The Kafka record of an accepted event: key = userID, value = `{"id","userID","type","timestamp","payload"}`
 * — the body the delivery workers send — and headers naming the event id and the value's content type.
 */
export function toRecord(event: EventInput, id: string, receivedAt: string): Message {
  let value: string;
  try {
    value = JSON.stringify({
      id,
      userID: event.userID,
      type: event.type,
      timestamp: receivedAt,
      payload: event.payload,
    });
  } catch (err) {
    throw new EventNotSerializableError(`payload cannot be serialized: ${(err as Error).message}`);
  }
  return { key: event.userID, value, headers: { "event-id": id, "content-type": HEADER_CONTENT_TYPE } };
}
