import type { Logger } from "../log.ts";
import { type AttemptRow, insertAttempts } from "../store/attempts.ts";
import type { Store } from "../store/db.ts";
import { type LedgerUpdate, upsertLedger } from "../store/ledger.ts";

interface Pending {
  attempts: AttemptRow[];
  ledger: LedgerUpdate[];
  waiters: Array<{ done: () => void; fail: (err: unknown) => void }>;
}

/** A batch this large is written at once instead of waiting for the timer (bounds one transaction). */
const FLUSH_AT_ROWS = 500;

/**
 * Group-commits attempt rows and ledger updates of every worker into one SQLite transaction every few
 * milliseconds. A delivery counts as finished (and its offset may be committed) only once `record()`
 * resolved, i.e. once its rows are in the database. better-sqlite3 is synchronous, so a transaction never
 * spans network I/O.
 *
 * 10 ms, not less: the commit costs about as much as the rows, so at a few thousand deliveries/s a 2 ms
 * window (~5 rows a commit) spent twice the CPU per delivery of a 10 ms one (20+ rows) — see
 * bench/README.md. Only the next event of the same userID waits on it; deliveries in flight do not.
 */
export class DeliveryRecorder {
  #store: Store;
  #logger: Logger;
  #pending: Pending = { attempts: [], ledger: [], waiters: [] };
  #timer: NodeJS.Timeout | undefined;
  #flushMs: number;

  constructor(store: Store, logger: Logger, flushMs = 10) {
    this.#store = store;
    this.#logger = logger;
    this.#flushMs = flushMs;
  }

  record(attempt: AttemptRow | undefined, ledger: LedgerUpdate | undefined): Promise<void> {
    if (attempt) this.#pending.attempts.push(attempt);
    if (ledger) this.#pending.ledger.push(ledger);
    const done = new Promise<void>((resolve, reject) =>
      this.#pending.waiters.push({ done: resolve, fail: reject }),
    );
    if (this.#pending.waiters.length >= FLUSH_AT_ROWS) this.flush();
    else this.#timer ??= setTimeout(() => this.flush(), this.#flushMs);
    return done;
  }

  flush(): void {
    clearTimeout(this.#timer);
    this.#timer = undefined;
    const batch = this.#pending;
    if (batch.waiters.length === 0) return;
    this.#pending = { attempts: [], ledger: [], waiters: [] };
    try {
      this.#store.sqlite.transaction(() => {
        insertAttempts(this.#store.db, batch.attempts);
        upsertLedger(this.#store.db, batch.ledger);
      })();
    } catch (err) {
      this.#logger.error(
        { err, rows: batch.waiters.length },
        "could not record deliveries; workers will retry",
      );
      for (const w of batch.waiters) w.fail(err);
      return;
    }
    for (const w of batch.waiters) w.done();
  }
}
