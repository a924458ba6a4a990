import type { Logger } from "../log.ts";
import { type AttemptRow, insertAttempts } from "../store/attempts.ts";
import type { Store } from "../store/db.ts";
import { type LedgerUpdate, upsertLedger } from "../store/ledger.ts";

/** The rows of one transaction-to-be, and the one promise every `record()` call in it was given. */
interface Pending {
  attempts: AttemptRow[];
  ledger: LedgerUpdate[];
  rows: number;
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
  return { attempts: [], ledger: [], rows: 0, done, settle };
}

/** A batch this large is written at once instead of waiting for the timer (bounds one transaction). */
const FLUSH_AT_ROWS = 500;

/**
 * Group-commits attempt rows and ledger updates of every worker into one SQLite transaction every
 * `flushMs`. A delivery counts as finished (and its offset may be committed) only once `record()`
 * resolved, i.e. once its rows are in the database. better-sqlite3 is synchronous, so a transaction never
 * spans network I/O.
 *
 * A commit costs about as much as its rows (two rows + commit: ~50 µs CPU at 5 a commit, ~32 µs at 20+),
 * so the window is 10 ms: back to back, one destination's drain went from 6.6k (a commit per event-loop
 * turn) to 7.9k deliveries/s — bench/README.md. But the next event of a userID waits for its
 * predecessor's write, and a lone busy userID would then be held to < 100 events/s: a worker passes
 * `urgent` when that wait is all that holds it back (a free slot and nothing else ready), and the batch is
 * written at the end of the current event-loop turn instead.
 */
export class DeliveryRecorder {
  #store: Store;
  #logger: Logger;
  #pending: Pending = newBatch();
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #flushMs: number;

  constructor(store: Store, logger: Logger, flushMs = 10) {
    this.#store = store;
    this.#logger = logger;
    this.#flushMs = flushMs;
  }

  record(attempt: AttemptRow | undefined, ledger: LedgerUpdate | undefined, urgent = false): Promise<void> {
    const batch = this.#pending;
    if (attempt) batch.attempts.push(attempt);
    if (ledger) batch.ledger.push(ledger);
    batch.rows++;
    // Every row of a batch is written by one transaction, so they share one promise (one per delivery cost
    // a promise, two closures and a waiter object: GC is a tenth of a busy gateway's time).
    const done = batch.done;
    if (batch.rows >= FLUSH_AT_ROWS) this.flush();
    else if (urgent) this.#immediate ??= setImmediate(() => this.flush());
    else this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
    return done;
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    const batch = this.#pending;
    if (batch.rows === 0) return;
    this.#pending = newBatch();
    try {
      this.#store.sqlite.transaction(() => {
        insertAttempts(this.#store.db, batch.attempts);
        upsertLedger(this.#store.db, batch.ledger);
      })();
    } catch (err) {
      this.#logger.error({ err, rows: batch.rows }, "could not record deliveries; workers will retry");
      batch.settle(err ?? new Error("recording failed"));
      return;
    }
    batch.settle();
  }
}
