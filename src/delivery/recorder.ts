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
/** After SQLITE_BUSY (another connection is writing), the batch is tried again this much later. */
const BUSY_RETRY_MS = 1;

function isBusy(err: unknown): boolean {
  const code = (err as { code?: unknown })?.code;
  return code === "SQLITE_BUSY" || code === "SQLITE_LOCKED";
}

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
 *
 * Delivery threads write the same file through connections of their own, and only one can write at a time.
 * SQLite's busy timeout would make a thread sleep on the lock (1, 2, 5, 10 … ms polls) with its event loop
 * stopped; the bench's ten-destination drain on two threads saw a DELETE starve past its 5 s timeout. So a
 * timer flush only tries the lock (busy timeout 0, BEGIN IMMEDIATE): when another connection holds it,
 * nothing was written, the rows stay in the batch (later ones join it) and the write is tried again
 * BUSY_RETRY_MS later while the thread goes on delivering. `flush({ wait: true })` (stopping) waits.
 */
export class DeliveryRecorder {
  #logger: Logger;
  #pending: Pending = newBatch();
  #timer: NodeJS.Timeout | undefined;
  #immediate: NodeJS.Immediate | undefined;
  #flushMs: number;
  /** A write found the lock taken; a retry timer is armed. */
  #busy = false;
  #noWait: () => void;
  #wait: () => void;
  #write: { immediate(): void };

  constructor(store: Store, logger: Logger, flushMs = 10) {
    this.#logger = logger;
    this.#flushMs = flushMs;
    const { sqlite, db } = store;
    const timeout = Number(sqlite.pragma("busy_timeout", { simple: true }));
    const noWait = sqlite.prepare("PRAGMA busy_timeout = 0");
    const wait = sqlite.prepare(`PRAGMA busy_timeout = ${Number.isFinite(timeout) ? timeout : 5000}`);
    this.#noWait = () => void noWait.run();
    this.#wait = () => void wait.run();
    this.#write = sqlite.transaction(() => {
      insertAttempts(db, this.#pending.attempts);
      upsertLedger(db, this.#pending.ledger);
    });
  }

  /** Rows waiting for their transaction (tests). */
  get pendingRows(): number {
    return this.#pending.rows;
  }

  record(attempt: AttemptRow | undefined, ledger: LedgerUpdate | undefined, urgent = false): Promise<void> {
    const batch = this.#pending;
    if (attempt) batch.attempts.push(attempt);
    if (ledger) batch.ledger.push(ledger);
    batch.rows++;
    // Every row of a batch is written by one transaction, so they share one promise (one per delivery cost
    // a promise, two closures and a waiter object: GC is a tenth of a busy gateway's time).
    const done = batch.done;
    if (this.#busy) return done; // the retry timer writes it, with everything that joins meanwhile
    if (batch.rows >= FLUSH_AT_ROWS) this.flush();
    else if (urgent) this.#immediate ??= setImmediate(() => this.flush());
    else this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
    return done;
  }

  /** Writes the batch now; `wait: true` waits for the write lock (busy timeout) instead of retrying later. */
  flush(opts: { wait?: boolean } = {}): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    clearImmediate(this.#immediate);
    this.#immediate = undefined;
    this.#busy = false;
    const batch = this.#pending;
    if (batch.rows === 0) return;
    try {
      if (!opts.wait) this.#noWait();
      try {
        this.#write.immediate();
      } finally {
        if (!opts.wait) this.#wait();
      }
    } catch (err) {
      if (!opts.wait && isBusy(err)) {
        this.#busy = true;
        this.#timer = setTimeout(() => this.flush(), BUSY_RETRY_MS);
        return;
      }
      this.#pending = newBatch();
      this.#logger.error({ err, rows: batch.rows }, "could not record deliveries; workers will retry");
      batch.settle(err ?? new Error("recording failed"));
      return;
    }
    this.#pending = newBatch();
    batch.settle();
  }
}
