import type { Kafka } from "kafkajs";
import { KafkaUnavailableError, type Message } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { type BatchSender, kafkajsSender } from "./batch-sender.ts";
import type { IngestProducer } from "./producer-port.ts";
import { wireSender } from "./wire-sender.ts";

export interface GroupCommitOptions {
  /** Flush a batch once it holds this many records. */
  maxRecords: number;
  /** Flush a batch once its keys and values reach this many bytes. */
  maxBytes: number;
  /** Longest a record waits for company before its batch is sent. 0 = the current I/O tick. */
  lingerMs: number;
  /** A batch without acknowledgement after this long fails (its publishes reject). */
  ackTimeoutMs: number;
  logger: Logger;
  /**
   * With a kafkajs client as the source: `own` (default) sends Produce requests encoded here
   * (src/ingest/wire-sender.ts) over its connections, `kafkajs` uses its idempotent producer.
   */
  sender?: IngestSenderKind;
  /** Passed to kafkajs's producer; only the idempotent lock's queue depth, see KAFKA-NOTES. */
  maxInFlightRequests?: number;
  /** Called after each batch with its size, how long Kafka took to answer and what sent it (metrics). */
  onBatch?: (records: number, seconds: number, ok: boolean, trigger: BatchTrigger) => void;
  /** Called when the producer becomes ready (connected) and when it stops being ready. */
  onReadyChange?: (ready: boolean) => void;
}

export type IngestSenderKind = "own" | "kafkajs";

/**
 * What made a batch leave: it reached `maxRecords` or `maxBytes` (`size`), its linger ran out (`linger`),
 * sendNow() said nobody else could join it (`all_waiting`), or the producer was closing (`shutdown`).
 */
export type BatchTrigger = "size" | "linger" | "all_waiting" | "shutdown";

interface Waiter {
  resolve(): void;
  reject(err: Error): void;
}

class Batch {
  readonly topics = new Map<string, Message[]>();
  readonly waiters: Waiter[] = [];
  records = 0;
  bytes = 0;
  /** The batch may leave as soon as nothing else is in flight; set with the first reason it got. */
  trigger: BatchTrigger | undefined;
  /** When its first publish arrived: the ack timeout counts from here, queueing included. */
  readonly openedAt = performance.now();

  add(topic: string, messages: Message[], bytes: number, waiter: Waiter): void {
    let list = this.topics.get(topic);
    if (!list) {
      list = [];
      this.topics.set(topic, list);
    }
    for (const m of messages) list.push(m);
    this.records += messages.length;
    this.bytes += bytes;
    this.waiters.push(waiter);
  }
}

function sizeOf(messages: Message[]): number {
  let bytes = 0;
  for (const m of messages) {
    bytes += m.value === null ? 0 : typeof m.value === "string" ? Buffer.byteLength(m.value) : m.value.length;
    if (m.key) bytes += m.key.length;
  }
  return bytes;
}

type State = "idle" | "connecting" | "ready" | "closed";

/**
 * Group commit over one idempotent producer (acks=-1, no compression): by default the gateway's own Produce
 * requests over kafkajs's connections (wire-sender.ts), or kafkajs's producer (`sender: "kafkajs"`).
 *
 * Concurrent publish() calls are gathered into one batch (which may span topics), one Produce request per
 * leader broker, that leaves when it reaches `maxRecords` or `maxBytes`, or `lingerMs` after its first
 * record; one batch is in flight at a time while the next fills. (kafkajs's producer sends one request per
 * send() and holds a lock per broker around each, so concurrent sends would only queue up one by one.)
 *
 * After any failed or timed-out batch the producer is thrown away and a new one (a new producer id) is
 * connected in the background. Reusing it would be unsafe: kafkajs rolls its sequence numbers back when a
 * request fails, so if the broker did write the lost request, the next batch could reuse those sequence
 * numbers and be acknowledged as a "duplicate" without being written. While no producer is connected,
 * publish() rejects at once, so ingest can answer 503 without waiting.
 *
 * A batch counts as acknowledged only when Kafka answered for every partition its records went to. kafkajs
 * 2.2.4's send retry skips partitions whose leader moved to a broker that had already answered the first
 * try (its per-broker response map survives the retry), and resolves without ever sending them
 * (tulios/kafkajs#1303, #1798) — the broker-loss fault test lost acknowledged events that way.
 */
export class GroupCommitProducer implements IngestProducer {
  #newSender: () => BatchSender;
  #opts: GroupCommitOptions;
  #log: Logger;
  #state: State = "idle";
  #producer: BatchSender | undefined;
  #open: Batch | undefined;
  #sealed: Batch[] = [];
  #inFlight = false;
  #cancelLinger: (() => void) | undefined;
  /** The producer being connected, so close() can end an attempt in progress. */
  #connecting: BatchSender | undefined;
  #retryTimer: NodeJS.Timeout | undefined;
  #readyWaiters: Array<() => void> = [];
  #drained: (() => void) | undefined;
  #lastError = "";
  /**
   * @param source a kafkajs client (`opts.sender` says how batches are sent through it), or a function
   *   making a BatchSender of another client. A new sender is made after every failed batch.
   */
  constructor(source: Kafka | (() => BatchSender), opts: GroupCommitOptions) {
    this.#newSender =
      typeof source === "function"
        ? source
        : opts.sender === "kafkajs"
          ? () => kafkajsSender(source, opts.maxInFlightRequests)
          : () => wireSender(source);
    this.#opts = opts;
    this.#log = opts.logger.child({ component: "producer" });
  }

  /** True while a producer is connected and publish() can be acknowledged. */
  get ready(): boolean {
    return this.#state === "ready";
  }

  /** Starts connecting in the background, retrying with backoff until it succeeds or close() is called. */
  start(): void {
    if (this.#state !== "idle") return;
    this.#state = "connecting";
    void this.#connectLoop();
  }

  /** Resolves the next time the producer is connected (at once if it is); stays pending once closed. */
  whenReady(): Promise<void> {
    if (this.#state === "ready") return Promise.resolve();
    return new Promise((done) => this.#readyWaiters.push(done));
  }

  publish(topic: string, messages: Message[]): Promise<void> {
    if (this.#state !== "ready") {
      return Promise.reject(
        new KafkaUnavailableError(
          this.#state === "closed" ? "the producer is closed" : "not connected to Kafka",
        ),
      );
    }
    if (messages.length === 0) return Promise.resolve();
    const bytes = sizeOf(messages);
    return new Promise<void>((resolve, reject) => {
      const { maxRecords, maxBytes } = this.#opts;
      let batch = this.#open;
      if (batch && (batch.records + messages.length > maxRecords || batch.bytes + bytes > maxBytes)) {
        this.#seal("size");
        batch = undefined;
      }
      if (!batch) batch = this.#openBatch();
      batch.add(topic, messages, bytes, { resolve, reject });
      if (batch.records >= maxRecords || batch.bytes >= maxBytes) this.#seal("size");
      this.#pump();
    });
  }

  /** Sends what is queued (when connected), then disconnects. Later publishes reject. */
  async close(): Promise<void> {
    if (this.#state === "closed") return;
    const wasReady = this.#state === "ready";
    this.#state = "closed";
    clearTimeout(this.#retryTimer);
    await this.#connecting?.disconnect().catch(() => {});
    if (this.#open) this.#seal("shutdown");
    if (wasReady && (this.#inFlight || this.#sealed.length > 0)) {
      await new Promise<void>((done) => {
        this.#drained = done;
        this.#pump();
      });
    }
    this.#failQueued(new KafkaUnavailableError("the producer is closed"));
    await this.#producer?.disconnect().catch(() => {});
    this.#producer = undefined;
  }

  #openBatch(): Batch {
    const batch = new Batch();
    this.#open = batch;
    // setImmediate for 0 still gathers every request parsed in the same I/O tick.
    if (this.#opts.lingerMs > 0) {
      const timer = setTimeout(this.#lingerDone, this.#opts.lingerMs);
      this.#cancelLinger = () => clearTimeout(timer);
    } else {
      const immediate = setImmediate(this.#lingerDone);
      this.#cancelLinger = () => clearImmediate(immediate);
    }
    return batch;
  }

  /**
   * The open batch leaves as soon as nothing else is in flight, without waiting out its linger: the caller
   * knows nobody else is going to add to it (ingest: every client connection waits for an answer).
   */
  sendNow(): void {
    const batch = this.#open;
    if (!batch) return;
    batch.trigger ??= "all_waiting";
    this.#pump();
  }

  /** The open batch's linger ran out (a sealed batch cancels its timer, so the open one is the batch). */
  #lingerDone = (): void => {
    this.#cancelLinger = undefined;
    if (this.#open) this.#open.trigger ??= "linger";
    this.#pump();
  };

  /** The open batch stops taking records and leaves as soon as nothing is in flight. */
  #seal(trigger: BatchTrigger): void {
    const batch = this.#open;
    if (!batch) return;
    batch.trigger ??= trigger;
    this.#open = undefined;
    this.#cancelLinger?.();
    this.#cancelLinger = undefined;
    this.#sealed.push(batch);
  }

  #pump(): void {
    if (this.#inFlight) return;
    // A due open batch keeps filling while another is in flight, and leaves when that one is answered.
    const open = this.#open;
    if (this.#sealed.length === 0 && open?.trigger !== undefined) this.#seal(open.trigger);
    const next = this.#sealed.shift();
    if (!next) {
      this.#drained?.();
      return;
    }
    const producer = this.#producer;
    if (!producer || (this.#state !== "ready" && this.#state !== "closed")) {
      this.#reject(next, new KafkaUnavailableError("not connected to Kafka"));
      this.#pump();
      return;
    }
    void this.#send(producer, next);
  }

  async #send(producer: BatchSender, batch: Batch): Promise<void> {
    this.#inFlight = true;
    const { ackTimeoutMs, onBatch } = this.#opts;
    const started = performance.now();
    // The deadline is the first publisher's: time spent queued behind a slow batch counts.
    const budget = Math.max(1, Math.round(ackTimeoutMs - (started - batch.openedAt)));
    let ok = false;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<never>((_, fail) => {
      timer = setTimeout(
        () => fail(new KafkaUnavailableError(`Kafka did not acknowledge within ${ackTimeoutMs} ms`)),
        budget,
      );
    });
    try {
      await Promise.race([producer.send(batch.topics, ackTimeoutMs), timeout]);
      ok = true;
      for (const w of batch.waiters) w.resolve();
    } catch (err) {
      const error =
        err instanceof KafkaUnavailableError
          ? err
          : new KafkaUnavailableError(`Kafka refused the batch: ${(err as Error).message}`, { cause: err });
      this.#reject(batch, error);
      this.#replaceProducer(producer, error);
    } finally {
      clearTimeout(timer);
      this.#inFlight = false;
      onBatch?.(batch.records, (performance.now() - started) / 1000, ok, batch.trigger ?? "size");
    }
    this.#pump();
  }

  #reject(batch: Batch, err: Error): void {
    for (const w of batch.waiters) w.reject(err);
  }

  #failQueued(err: Error): void {
    if (this.#open) this.#seal("shutdown");
    for (const batch of this.#sealed.splice(0)) this.#reject(batch, err);
  }

  /** Drops a producer whose sequence state can no longer be trusted and connects a fresh one. */
  #replaceProducer(producer: BatchSender, err: Error): void {
    if (this.#producer !== producer) return;
    this.#producer = undefined;
    // The in-flight request of a timed-out batch may still be running; disconnecting ends it.
    producer.disconnect().catch(() => {});
    // Whatever waited behind the failed batch would meet the same fate; answer it now.
    this.#failQueued(new KafkaUnavailableError("not connected to Kafka", { cause: err }));
    if (this.#state === "closed") return;
    this.#state = "connecting";
    this.#opts.onReadyChange?.(false);
    this.#log.warn({ err: err.message }, "Kafka batch failed; reconnecting the producer");
    this.#lastError = "";
    void this.#connectLoop();
  }

  async #connectLoop(): Promise<void> {
    let delay = 250;
    while (this.#state === "connecting") {
      const producer = this.#newSender();
      try {
        this.#connecting = producer;
        await producer.connect();
        this.#connecting = undefined;
        if (this.#state !== "connecting") {
          await producer.disconnect().catch(() => {});
          return;
        }
        this.#producer = producer;
        this.#state = "ready";
        this.#opts.onReadyChange?.(true);
        this.#log.info("Kafka producer connected");
        for (const done of this.#readyWaiters.splice(0)) done();
        this.#pump();
        return;
      } catch (err) {
        this.#connecting = undefined;
        await producer.disconnect().catch(() => {});
        const message = producer.describe(err);
        // Log a failure once, not once per retry, until it changes or the producer connects.
        if (message !== this.#lastError) {
          this.#log.warn({ err: message, retryInMs: delay }, "cannot connect the Kafka producer; retrying");
          this.#lastError = message;
        }
        if (this.#state !== "connecting") return;
        await new Promise<void>((done) => {
          this.#retryTimer = setTimeout(done, delay * (0.8 + Math.random() * 0.4));
        });
        delay = Math.min(delay * 2, 5000);
      }
    }
  }
}
