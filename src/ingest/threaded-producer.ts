import { Worker } from "node:worker_threads";
import { KafkaUnavailableError, type Message } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import type { BatchTrigger } from "./producer.ts";
import type { IngestProducer } from "./producer-port.ts";
import {
  type FromThread,
  type ProducerThreadData,
  type PublishWire,
  packPublish,
  type ToThread,
} from "./producer-wire.ts";

const ENTRY = new URL("./producer-thread-entry.ts", import.meta.url);

export interface ThreadedProducerOptions extends ProducerThreadData {
  logger: Logger;
  onBatch?: (records: number, seconds: number, ok: boolean, trigger: BatchTrigger) => void;
}

interface Pending {
  resolve(): void;
  reject(err: Error): void;
}

/**
 * The gateway's group-commit producer on a thread of its own (INGEST_PRODUCER_THREAD). Publishes made in
 * one turn of the main event loop cross to the thread in one message; the thread answers in one message per
 * turn of its own. Same promises as GroupCommitProducer: publish() resolves only after Kafka acknowledged
 * (acks=all) and rejects with KafkaUnavailableError otherwise, at once while not connected.
 *
 * If the thread dies, everything it had not answered is refused (the clients get 503 and may retry) and a
 * new thread connects a new producer.
 */
export class ThreadedProducer implements IngestProducer {
  #opts: ThreadedProducerOptions;
  #log: Logger;
  #worker: Worker | undefined;
  #ready = false;
  #started = false;
  #closed = false;
  #seq = 0;
  #pending = new Map<number, Pending>();
  /** This turn's publishes, packed for the crossing, and their numbers. */
  #outbox: PublishWire = [];
  #outboxSeqs: number[] = [];
  /** sendNow() was called this turn: the crossing tells the thread's producer the same. */
  #outboxSendNow = false;
  #flushQueued = false;
  #readyWaiters: Array<() => void> = [];
  #closedSignal: (() => void) | undefined;
  #respawnTimer: NodeJS.Timeout | undefined;

  constructor(opts: ThreadedProducerOptions) {
    this.#opts = opts;
    this.#log = opts.logger.child({ component: "producer-thread" });
  }

  get ready(): boolean {
    return this.#ready;
  }

  start(): void {
    if (this.#started || this.#closed) return;
    this.#started = true;
    this.#spawn();
  }

  whenReady(): Promise<void> {
    if (this.#ready) return Promise.resolve();
    return new Promise((done) => this.#readyWaiters.push(done));
  }

  publish(topic: string, messages: Message[]): Promise<void> {
    if (!this.#ready) {
      return Promise.reject(
        new KafkaUnavailableError(this.#closed ? "the producer is closed" : "not connected to Kafka"),
      );
    }
    if (messages.length === 0) return Promise.resolve();
    const seq = ++this.#seq;
    packPublish(this.#outbox, seq, topic, messages);
    this.#outboxSeqs.push(seq);
    this.#flushSoon();
    return new Promise<void>((resolve, reject) => this.#pending.set(seq, { resolve, reject }));
  }

  /** The thread's open batch may leave at once; said with this turn's publishes. */
  sendNow(): void {
    if (!this.#ready) return;
    this.#outboxSendNow = true;
    this.#flushSoon();
  }

  #flushSoon(): void {
    if (this.#flushQueued) return;
    this.#flushQueued = true;
    // Every publish of this turn of the event loop (all requests read in one poll) crosses in one message.
    setImmediate(() => this.#flush());
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    this.#ready = false;
    clearTimeout(this.#respawnTimer);
    const worker = this.#worker;
    if (worker) {
      this.#flush();
      // The thread sends what it holds (when connected), answers it, then says "closed".
      await new Promise<void>((done) => {
        this.#closedSignal = done;
        worker.once("exit", () => done());
        worker.postMessage({ t: "close" } satisfies ToThread);
      });
      this.#worker = undefined;
      await worker.terminate();
    }
    this.#failAll(new KafkaUnavailableError("the producer is closed"));
  }

  #flush(): void {
    this.#flushQueued = false;
    const sendNow = this.#outboxSendNow;
    this.#outboxSendNow = false;
    if (this.#outboxSeqs.length === 0 && !sendNow) return;
    const wire = this.#outbox;
    const seqs = this.#outboxSeqs;
    this.#outbox = [];
    this.#outboxSeqs = [];
    const worker = this.#worker;
    if (!worker) {
      for (const seq of seqs) this.#answer(seq, new KafkaUnavailableError("not connected to Kafka"));
      return;
    }
    worker.postMessage({ t: "publish", wire, sendNow } satisfies ToThread);
  }

  #answer(seq: number, err?: Error): void {
    const pending = this.#pending.get(seq);
    if (!pending) return;
    this.#pending.delete(seq);
    if (err) pending.reject(err);
    else pending.resolve();
  }

  #failAll(err: Error): void {
    for (const seq of this.#outboxSeqs) this.#answer(seq, err);
    this.#outbox = [];
    this.#outboxSeqs = [];
    for (const pending of this.#pending.values()) pending.reject(err);
    this.#pending.clear();
  }

  #spawn(): void {
    const { logger: _logger, onBatch: _onBatch, ...data } = this.#opts;
    const worker = new Worker(ENTRY, { workerData: data satisfies ProducerThreadData, name: "producer" });
    this.#worker = worker;
    worker.on("message", (msg: FromThread) => this.#onMessage(msg));
    worker.on("error", (err) => this.#log.error({ err }, "producer thread failed"));
    worker.once("exit", (code) => {
      if (this.#worker !== worker) return;
      this.#worker = undefined;
      this.#ready = false;
      // Whatever the thread held may or may not be in Kafka: refused, so clients retry (idempotency keys
      // make that safe), never acknowledged without an acknowledgement.
      this.#failAll(new KafkaUnavailableError(`the producer thread exited (code ${code})`));
      if (this.#closed) return;
      this.#log.error({ code }, "producer thread exited; starting another");
      this.#respawnTimer = setTimeout(() => this.#spawn(), 1000);
    });
    worker.postMessage({ t: "start" } satisfies ToThread);
  }

  #onMessage(msg: FromThread): void {
    if (msg.t === "done") {
      for (const seq of msg.ok) this.#answer(seq);
      // The thread's producer refuses with KafkaUnavailableError only.
      for (const [seq, message] of msg.failed) this.#answer(seq, new KafkaUnavailableError(message));
      for (const [records, seconds, ok, trigger] of msg.batches)
        this.#opts.onBatch?.(records, seconds, ok, trigger);
    } else if (msg.t === "state") {
      this.#ready = msg.ready && !this.#closed;
      if (this.#ready) for (const done of this.#readyWaiters.splice(0)) done();
    } else if (msg.t === "closed") {
      this.#closedSignal?.();
    }
  }
}
