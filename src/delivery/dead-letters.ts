import { setTimeout as sleep } from "node:timers/promises";
import type { Message, RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { StoppedError } from "./retry-rule.ts";

/** What a dead letter says about the event that died. */
export interface DeadLetter {
  eventId: string;
  userId: string;
  destinationId: string;
  /** The Kafka record value of the event. */
  body: string;
  attempts: number;
  lastError: string | null;
}

/** The dead-letter record: the event as value, why it died in headers. */
export function deadLetterMessage(d: DeadLetter, at = new Date()): Message {
  return {
    key: d.userId,
    value: d.body,
    headers: {
      "event-id": d.eventId,
      "destination-id": d.destinationId,
      attempts: String(Math.max(d.attempts, 1)),
      "last-error": (d.lastError ?? "").slice(0, 1000),
      "dead-at": at.toISOString(),
      "content-type": "application/json",
    },
  };
}

/**
 * Parks an event on the dead-letter topic, retrying (250 ms doubling to 5 s) until Kafka takes it; throws
 * StoppedError if `signal` aborts first (the event stays unfinished and is redelivered later).
 */
export async function publishDeadLetter(
  sink: Pick<RecordSink, "publish">,
  topic: string,
  letter: DeadLetter,
  signal: AbortSignal,
  log: Logger,
): Promise<void> {
  const message = deadLetterMessage(letter);
  for (let wait = 250; ; wait = Math.min(wait * 2, 5000)) {
    try {
      await sink.publish(topic, [message]);
      return;
    } catch (err) {
      if (signal.aborted) throw new StoppedError();
      log.warn({ err, eventId: letter.eventId }, "dead-letter publish failed; retrying");
      await sleep(wait, undefined, { signal }).catch(() => {});
    }
  }
}
