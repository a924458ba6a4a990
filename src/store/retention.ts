import { setImmediate as yieldTurn } from "node:timers/promises";
import type { Logger } from "../log.ts";
import type { Store } from "./db.ts";
import { pruneStats } from "./stats.ts";

export interface PruneResult {
  attempts: number;
  ledger: number;
}

/**
 * Deletes attempt rows that started before `cutoff`, and ledger rows of finished events (`delivered` or
 * `dead`) last updated before it, a chunk per transaction with a turn of the event loop between chunks, so
 * the gateway keeps serving while a large backlog of old rows goes. Rows of unfinished events (`pending`,
 * `replaying`) are never touched: they are the worker's memory of what is still owed.
 *
 * Neither table has a time index (each would cost every delivery another B-tree insert), but both are
 * written in time order: attempts are appended (AUTOINCREMENT id), so pruning walks from the oldest id and
 * stops at the first row inside the window; ledger rows keep the rowid of their first write, so pruning
 * walks the whole table by rowid ranges (a pass over 10 million rows is a few seconds of CPU in 2,000 small
 * steps, once per `RETENTION_CHECK_MINUTES`).
 */
export async function pruneOnce(
  store: Store,
  cutoff: number,
  opts: { chunk?: number; signal?: AbortSignal } = {},
): Promise<PruneResult> {
  const { chunk = 2000, signal } = opts;
  const { sqlite } = store;
  const oldestAttempt = sqlite.prepare<[], { id: number; startedAt: number }>(
    "select id, started_at as startedAt from attempts order by id limit 1",
  );
  const deleteAttempts = sqlite.prepare<[number, number, number]>(
    "delete from attempts where id >= ? and id < ? and started_at < ?",
  );
  const ledgerRange = sqlite.prepare<[], { lo: number | null; hi: number | null }>(
    "select min(rowid) as lo, max(rowid) as hi from deliveries",
  );
  const deleteLedger = sqlite.prepare<[number, number, number]>(
    "delete from deliveries where rowid >= ? and rowid < ? and status in ('delivered', 'dead') and updated_at < ?",
  );

  const result: PruneResult = { attempts: 0, ledger: 0 };
  // started_at = recorded − duration (≤ 30 s), so id order is time order to within half a minute.
  while (!signal?.aborted) {
    const oldest = oldestAttempt.get();
    if (!oldest || oldest.startedAt >= cutoff) break;
    result.attempts += deleteAttempts.run(oldest.id, oldest.id + chunk, cutoff).changes;
    await yieldTurn();
  }
  const { lo, hi } = ledgerRange.get() ?? { lo: null, hi: null };
  if (lo !== null && hi !== null) {
    for (let from = lo; from <= hi && !signal?.aborted; from += chunk) {
      result.ledger += deleteLedger.run(from, from + chunk, cutoff).changes;
      await yieldTurn();
    }
  }
  return result;
}

/**
 * Prunes rows older than `retentionMs` at start-up and then every `everyMs`. A failed pass is logged and
 * tried again at the next tick; passes never overlap.
 */
export function startRetention(
  store: Store,
  logger: Logger,
  opts: { retentionMs: number; everyMs: number },
): { stop(): Promise<void> } {
  const log = logger.child({ component: "retention" });
  let running: Promise<void> | undefined;
  const stopping = new AbortController();
  const pass = () => {
    if (running || stopping.signal.aborted) return;
    running = (async () => {
      try {
        const cutoff = Date.now() - opts.retentionMs;
        const removed = await pruneOnce(store, cutoff, { signal: stopping.signal });
        pruneStats(store.db, cutoff);
        if (removed.attempts + removed.ledger > 0) {
          log.info({ ...removed, cutoff: new Date(cutoff).toISOString() }, "pruned rows past retention");
        }
      } catch (err) {
        if (!stopping.signal.aborted)
          log.warn({ err }, "pruning old rows failed; trying again at the next check");
      } finally {
        running = undefined;
      }
    })();
  };
  const timer = setInterval(pass, opts.everyMs);
  timer.unref();
  pass();
  return {
    async stop() {
      stopping.abort();
      clearInterval(timer);
      await running;
    },
  };
}
