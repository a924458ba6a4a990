import { and, eq, inArray, sql } from "drizzle-orm";
import { type Db, preparedPerDb } from "./db.ts";
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

const p = (name: string) => sql.placeholder(name);
/** The value the conflicting INSERT proposed for a column (SQLite's `excluded.` row). */
const excluded = (column: { name: string }) => sql.raw(`excluded."${column.name}"`);
function prepareUpsert(db: Db) {
  return db
    .insert(deliveries)
    .values({
      destinationId: p("destinationId"),
      eventId: p("eventId"),
      userId: p("userId"),
      status: p("status"),
      attempts: p("attempts"),
      lastError: p("lastError"),
      event: p("event"),
      updatedAt: p("updatedAt"),
      deadAt: p("deadAt"),
    })
    .onConflictDoUpdate({
      target: [deliveries.destinationId, deliveries.eventId],
      set: {
        userId: excluded(deliveries.userId),
        status: excluded(deliveries.status),
        attempts: excluded(deliveries.attempts),
        lastError: excluded(deliveries.lastError),
        event: excluded(deliveries.event),
        updatedAt: excluded(deliveries.updatedAt),
        deadAt: excluded(deliveries.deadAt),
      },
    })
    .prepare();
}
const upsertStatement = preparedPerDb(prepareUpsert);

/** Writes where an event stands at a destination (insert or overwrite). */
export function upsertLedger(db: Db, rows: LedgerUpdate[]): void {
  if (rows.length === 0) return;
  const upsert = upsertStatement(db);
  for (const r of rows) {
    upsert.run({
      destinationId: r.destinationId,
      eventId: r.eventId,
      userId: r.userId,
      status: r.status,
      attempts: r.attempts,
      lastError: r.lastError,
      event: r.event,
      updatedAt: r.at,
      deadAt: r.status === "dead" ? r.at : null,
    });
  }
}

function prepareLookup(db: Db) {
  return db
    .select()
    .from(deliveries)
    .where(and(eq(deliveries.destinationId, p("destinationId")), eq(deliveries.eventId, p("eventId"))))
    .prepare();
}
const lookupStatement = preparedPerDb(prepareLookup);

/**
 * Ledger rows of some events at one destination, by event id (skip-finished and attempts-so-far on resume).
 * One prepared primary-key lookup per event rather than one `IN (…)` query per call: a worker calls this
 * for every fetched batch, and at a steady 1,000 events/s batches hold a few events each, so building and
 * compiling a fresh query per batch was a sixth of the gateway's CPU (bench/README.md).
 */
export function ledgerRowsFor(db: Db, destinationId: string, eventIds: string[]): Map<string, LedgerRow> {
  const out = new Map<string, LedgerRow>();
  if (eventIds.length === 0) return out;
  const lookup = lookupStatement(db);
  for (const eventId of eventIds) {
    const row = lookup.get({ destinationId, eventId });
    if (row) out.set(eventId, row);
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
