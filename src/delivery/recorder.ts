import type { Message, RecordSink } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { outcomeMessage } from "../state/records.ts";
import type { AttemptRow } from "../store/attempts.ts";
import type { LedgerUpdate } from "../store/ledger.ts";

/** The records of one publish-to-be, and the one promise every `record()` call in it was given. */
interface Pending {
  messages: Message[];
  done: Promise<void>;
  settle: (err?: unknown) => void;
}

function newBatch(): Pending {
  let settle: (err?: unknown) => void = () => {};
  const done = new Promise<void>((resolve, reject) => {
    settle = (err) => (err === undefined ? resolve() : reject(err));
  });
  // A batch nobody awaits any more (its worker stopped) must not surface as an unhandled rejection.
  done.catch(() => {});
  return { messages: [], done, settle };
}

/** A batch this large is published at once instead of waiting for the timer. */
const FLUSH_AT_RECORDS = 500;

/**
 * Group-commits the outcomes of every worker (attempt rows and ledger updates) to the outcomes topic, the
 * changelog every replica's view applies to its SQLite (state/view.ts). A delivery counts as finished (its
 * offset may be committed) only once `record()` resolved, i.e. once Kafka acknowledged its outcome with
 * acks=all: a replica that takes over the partition then knows it is finished.
 *
 * The window is `flushMs` (10 ms): the producer under it group-commits too, but one publish per delivery
 * would cost a promise and a waiter each. The next event of a userID waits for its predecessor's outcome,
 * so a worker passes `urgent` when that wait is all that holds it back (a free slot and nothing else
 * ready), and the batch leaves at the end of the current event-loop turn instead.
 */
export class DeliveryRecorder {
  #logger: Logger;
  #sink: Pick<RecordSink, "publish">;
  #topic: string;
  #pending: Pending = newBatch();
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #flushMs: number;
  #inFlight = new Set<Promise<void>>();

  constructor(sink: Pick<RecordSink, "publish">, topic: string, logger: Logger, flushMs = 10) {
    this.#sink = sink;
    this.#topic = topic;
    this.#logger = logger;
    this.#flushMs = flushMs;
  }

  /** Records waiting for their publish (tests). */
  get pendingRows(): number {
    return this.#pending.messages.length;
  }

  record(attempt: AttemptRow | undefined, ledger: LedgerUpdate | undefined, urgent = false): Promise<void> {
    const batch = this.#pending;
    batch.messages.push(outcomeMessage({ attempt, ledger }));
    const done = batch.done;
    if (batch.messages.length >= FLUSH_AT_RECORDS) this.flush();
    else if (urgent) this.#immediate ??= setImmediate(() => this.flush());
    else this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
    return done;
  }

  /** Publishes the batch now. */
  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    const batch = this.#pending;
    if (batch.messages.length === 0) return;
    this.#pending = newBatch();
    const sent = this.#sink.publish(this.#topic, batch.messages).then(
      () => batch.settle(),
      (err: unknown) => {
        this.#logger.warn(
          { err, records: batch.messages.length },
          "could not record outcomes; workers will retry",
        );
        batch.settle(err ?? new Error("recording failed"));
      },
    );
    this.#inFlight.add(sent);
    void sent.finally(() => this.#inFlight.delete(sent));
  }

  /** Publishes what is pending and waits for every publish under way (stopping). */
  async drain(): Promise<void> {
    this.flush();
    await Promise.all([...this.#inFlight]);
  }
}
