import type { Logger } from "../log.ts";
import { type AttemptRow, insertAttempts } from "../store/attempts.ts";
import type { Store } from "../store/db.ts";
import { type LedgerUpdate, upsertLedger } from "../store/ledger.ts";

interface Pending {
  attempts: AttemptRow[];
  ledger: LedgerUpdate[];
  waiters: Array<{ done: () => void; fail: (err: unknown) => void }>;
}

/** A batch this large is written at once instead of waiting for the end of the turn (bounds one transaction). */
const FLUSH_AT_ROWS = 500;

/**
 * Group-commits attempt rows and ledger updates of every worker into one SQLite transaction. A delivery
 * counts as finished (and its offset may be committed) only once `record()` resolved, i.e. once its rows
 * are in the database. better-sqlite3 is synchronous, so a transaction never spans network I/O.
 *
 * The batch is written at the end of the event-loop turn (setImmediate) that queued its first row: every
 * response that turn handled shares one commit, and batches grow by themselves with the load. A commit
 * costs about as much as its rows (two rows + commit: ~50 µs CPU at 5 a commit, ~32 µs at 20+), so a fixed
 * 10 ms window batches more (35 rows a commit at 2k deliveries/s against ~8 here, ≈ 15 µs a delivery), but
 * the next event of the same userID waits for this write: a timer caps a hot key's rate (10 ms: < 100
 * events/s per userID and destination). See bench/README.md.
 */
export class DeliveryRecorder {
  #store: Store;
  #logger: Logger;
  #pending: Pending = { attempts: [], ledger: [], waiters: [] };
  #scheduled: NodeJS.Immediate | undefined;

  constructor(store: Store, logger: Logger) {
    this.#store = store;
    this.#logger = logger;
  }

  record(attempt: AttemptRow | undefined, ledger: LedgerUpdate | undefined): Promise<void> {
    if (attempt) this.#pending.attempts.push(attempt);
    if (ledger) this.#pending.ledger.push(ledger);
    const done = new Promise<void>((resolve, reject) =>
      this.#pending.waiters.push({ done: resolve, fail: reject }),
    );
    if (this.#pending.waiters.length >= FLUSH_AT_ROWS) this.flush();
    else this.#scheduled ??= setImmediate(() => this.flush());
    return done;
  }

  flush(): void {
    clearImmediate(this.#scheduled);
    this.#scheduled = undefined;
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
