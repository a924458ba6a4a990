import type { KafkaSecurity } from "../kafka/client.ts";
import type { Message } from "../kafka/sink.ts";
import type { BatchTrigger, IngestSenderKind } from "./producer.ts";

/** What a producer thread is started with (`workerData`). */
export interface ProducerThreadData {
  brokers: string[];
  clientId: string;
  security: KafkaSecurity;
  logLevel: string;
  maxRecords: number;
  maxBytes: number;
  lingerMs: number;
  ackTimeoutMs: number;
  sender: IngestSenderKind;
}

/**
 * The publishes of one turn of the main event loop, flattened: per publish `seq, topic, count`, then per
 * message `key, value, headerCount` and the header names and values. A structured clone of flat strings
 * costs a third of one of `{key, value, headers}` objects (≈0.7 vs 2.3 µs per event, both ways, in
 * 50-publish turns; bench/README.md "Issue 16"). Buffers arrive as Uint8Arrays.
 */
export type PublishWire = Array<string | number | null | Uint8Array>;

/** `sendNow`: after these publishes, the thread's open batch may leave at once (the producer's sendNow()). */
export type ToThread =
  | { t: "publish"; wire: PublishWire; sendNow: boolean }
  | { t: "start" }
  | { t: "close" };

export type FromThread =
  | { t: "state"; ready: boolean }
  /** Publishes answered since the last message: acknowledged ones, failed ones, and the batches sent. */
  | {
      t: "done";
      ok: number[];
      failed: Array<[seq: number, message: string]>;
      batches: Array<[records: number, seconds: number, ok: boolean, trigger: BatchTrigger]>;
    }
  | { t: "closed" };

/** Appends one publish to `wire`. */
export function packPublish(wire: PublishWire, seq: number, topic: string, messages: Message[]): void {
  wire.push(seq, topic, messages.length);
  for (const m of messages) {
    const at = wire.length + 2;
    wire.push(m.key, m.value, 0);
    const headers = m.headers;
    if (headers === undefined) continue;
    let count = 0;
    for (const name in headers) {
      wire.push(name, headers[name] as string | Buffer);
      count++;
    }
    wire[at] = count;
  }
}

/** Structured clone turns a Buffer into a plain Uint8Array; kafkajs wants Buffers. */
function asBuffer(v: string | number | null | Uint8Array): string | Buffer | null {
  if (v instanceof Uint8Array)
    return Buffer.isBuffer(v) ? v : Buffer.from(v.buffer, v.byteOffset, v.byteLength);
  return v as string | null;
}

/** Calls `each` for every publish packed into `wire`, with its messages rebuilt. */
export function unpackPublishes(
  wire: PublishWire,
  each: (seq: number, topic: string, messages: Message[]) => void,
): void {
  let i = 0;
  while (i < wire.length) {
    const seq = wire[i++] as number;
    const topic = wire[i++] as string;
    const count = wire[i++] as number;
    const messages: Message[] = new Array(count);
    for (let m = 0; m < count; m++) {
      const key = wire[i++] as string | null;
      const value = asBuffer(wire[i++] as string | null | Uint8Array);
      const headerCount = wire[i++] as number;
      if (headerCount === 0) {
        messages[m] = { key, value };
        continue;
      }
      const headers: Record<string, string | Buffer> = {};
      for (let h = 0; h < headerCount; h++) {
        const name = wire[i++] as string;
        headers[name] = asBuffer(wire[i++] as string | Uint8Array) as string | Buffer;
      }
      messages[m] = { key, value, headers };
    }
    each(seq, topic, messages);
  }
}
