import { and, eq, inArray, sql } from "drizzle-orm";
import type { Db } from "./db.ts";
import { deliveries } from "./schema.ts";

export type DeliveryStatus = "pending" | "delivered" | "dead" | "replaying";
export type LedgerRow = typeof deliveries.$inferSelect;

export interface LedgerUpdate {
  destinationId: string;
  eventId: string;
  userId: string;
  status: DeliveryStatus;
  attempts: number;
  lastError: string | null;
  /** The event, kept only while it is dead or replaying. */
  event: string | null;
  at: number;
}

/** Writes where an event stands at a destination (insert or overwrite). */
export function upsertLedger(db: Db, rows: LedgerUpdate[]): void {
  for (const r of rows) {
    const values = {
      destinationId: r.destinationId,
      eventId: r.eventId,
      userId: r.userId,
      status: r.status,
      attempts: r.attempts,
      lastError: r.lastError,
      event: r.event,
      updatedAt: r.at,
      deadAt: r.status === "dead" ? r.at : null,
    };
    db.insert(deliveries)
      .values(values)
      .onConflictDoUpdate({ target: [deliveries.destinationId, deliveries.eventId], set: values })
      .run();
  }
}

/** Ledger rows of some events at one destination, by event id (skip-finished and attempts-so-far on resume). */
export function ledgerRowsFor(db: Db, destinationId: string, eventIds: string[]): Map<string, LedgerRow> {
  const out = new Map<string, LedgerRow>();
  // SQLite limits bound parameters; 500 ids a query stays far below it.
  for (let i = 0; i < eventIds.length; i += 500) {
    const chunk = eventIds.slice(i, i + 500);
    const rows = db
      .select()
      .from(deliveries)
      .where(and(eq(deliveries.destinationId, destinationId), inArray(deliveries.eventId, chunk)))
      .all();
    for (const row of rows) out.set(row.eventId, row);
  }
  return out;
}

/**
 * Marks dead events of a destination for replay with a fresh attempt budget (all of them, or those listed)
 * and returns the rows marked. One statement: a replay request is all-or-nothing.
 */
export function markForReplay(
  db: Db,
  destinationId: string,
  eventIds: string[] | undefined,
  at: number,
): LedgerRow[] {
  const where = and(
    eq(deliveries.destinationId, destinationId),
    eq(deliveries.status, "dead"),
    eventIds ? inArray(deliveries.eventId, eventIds) : undefined,
  );
  return db
    .update(deliveries)
    .set({ status: "replaying", attempts: 0, updatedAt: at, deadAt: null })
    .where(where)
    .returning()
    .all();
}

/** Events of a destination waiting to be replayed (a worker picks them up when it starts). */
export function replayingRows(db: Db, destinationId: string): LedgerRow[] {
  return db
    .select()
    .from(deliveries)
    .where(and(eq(deliveries.destinationId, destinationId), eq(deliveries.status, "replaying")))
    .orderBy(deliveries.updatedAt, sql`rowid`)
    .all();
}

/** Drops a destination's ledger (its destination was deleted). */
export function deleteLedger(db: Db, destinationId: string): void {
  db.delete(deliveries).where(eq(deliveries.destinationId, destinationId)).run();
}
