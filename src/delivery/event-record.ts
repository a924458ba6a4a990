/**
 * A record of the events topic, decoded once per reader and shared by every destination it goes to (the
 * body string and the parsed fields are the same objects for all of them).
 */
export interface EventRecord {
  partition: number;
  offset: number;
  eventId: string;
  userId: string;
  /** The event's type; undefined when the record is not a gateway event (it is dead-lettered). */
  type: string | undefined;
  /** The Kafka record value: the webhook body. */
  body: string;
  /** When ingest accepted it (Unix ms), from the event's `timestamp`. */
  acceptedAt: number | undefined;
  /** The ingest span's W3C `traceparent` (record header); read only when tracing is on. */
  traceparent: string | undefined;
  /**
   * The parsed body, kept only while readers hand the record out (payload filters read it; the decode
   * parsed it anyway), then dropped so queued events hold their body string alone.
   */
  parsed?: unknown;
  /** An operational event (record header `op`, set only by the gateway): for operational destinations only. */
  operational?: boolean;
}

interface ParsedEvent {
  id?: unknown;
  userID?: unknown;
  type?: unknown;
  timestamp?: unknown;
}

/** Decodes one record of the events topic; a value that is not a gateway event gets a synthetic id. */
export function decodeEventRecord(
  partition: number,
  offset: number,
  key: Buffer | null,
  value: Buffer | null,
  traceparent?: string,
  operational = false,
): EventRecord {
  const body = value?.toString("utf8") ?? "";
  let v: ParsedEvent | undefined;
  try {
    v = JSON.parse(body) as ParsedEvent;
  } catch {
    v = undefined;
  }
  if (v && typeof v.id === "string" && typeof v.userID === "string") {
    const acceptedAt = typeof v.timestamp === "string" ? Date.parse(v.timestamp) : Number.NaN;
    return {
      partition,
      offset,
      eventId: v.id,
      userId: v.userID,
      type: typeof v.type === "string" ? v.type : "event",
      body,
      acceptedAt: Number.isNaN(acceptedAt) ? undefined : acceptedAt,
      traceparent,
      parsed: v,
      operational,
    };
  }
  return {
    partition,
    offset,
    eventId: `kafka-${partition}-${offset}`,
    userId: key?.toString() ?? "",
    type: undefined,
    body,
    acceptedAt: undefined,
    traceparent,
  };
}

/** A record header as text (kafkajs gives Buffers, possibly several of one name: the last one wins). */
export function headerText(value: Buffer | string | (Buffer | string)[] | undefined): string | undefined {
  const v = Array.isArray(value) ? value[value.length - 1] : value;
  return v === undefined ? undefined : v.toString();
}
