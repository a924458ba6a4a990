import { and, eq, gte, inArray, sql } from "drizzle-orm";
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

/**
 * The literal terms the ledger's partial indexes are defined with (schema.ts): a query must contain one of
 * them as written, not `status = ?`, for SQLite to use the index.
 */
export const IS_DEAD = sql`${deliveries.status} = 'dead'`;
const IS_REPLAYING = sql`${deliveries.status} = 'replaying'`;

// The hot statements as plain better-sqlite3 ones with positional parameters (see store/attempts.ts).
function prepareUpsert(db: Db) {
  return db.$client.prepare<
    [string, string, string, DeliveryStatus, number, string | null, string | null, number, number | null]
  >(
    `insert into deliveries (destination_id, event_id, user_id, status, attempts, last_error, event,
       updated_at, dead_at) values (?, ?, ?, ?, ?, ?, ?, ?, ?)
     on conflict (destination_id, event_id) do update set user_id = excluded.user_id,
       status = excluded.status, attempts = excluded.attempts, last_error = excluded.last_error,
       event = excluded.event, updated_at = excluded.updated_at, dead_at = excluded.dead_at`,
  );
}
const upsertStatement = preparedPerDb(prepareUpsert);

/** Writes where an event stands at a destination (insert or overwrite). */
export function upsertLedger(db: Db, rows: LedgerUpdate[]): void {
  if (rows.length === 0) return;
  const upsert = upsertStatement(db);
  for (const r of rows) {
    upsert.run(
      r.destinationId,
      r.eventId,
      r.userId,
      r.status,
      r.attempts,
      r.lastError,
      r.event,
      r.at,
      r.status === "dead" ? r.at : null,
    );
  }
}

function prepareLookup(db: Db) {
  return db.$client.prepare<[string, string], LedgerRow>(
    `select destination_id as destinationId, event_id as eventId, user_id as userId, status,
       attempts, last_error as lastError, event, updated_at as updatedAt, dead_at as deadAt
     from deliveries where destination_id = ? and event_id = ?`,
  );
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
    const row = lookup.get(destinationId, eventId);
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
    IS_DEAD,
    eventIds ? inArray(deliveries.eventId, eventIds) : undefined,
  );
  return db
    .update(deliveries)
    .set({ status: "replaying", attempts: 0, updatedAt: at, deadAt: null })
    .where(where)
    .returning()
    .all();
}

/** Dead events of a destination (all of them, or those listed). */
export function deadRows(
  db: Db,
  destinationId: string,
  eventIds: string[] | undefined,
  deadSince?: number,
): LedgerRow[] {
  const where = and(
    eq(deliveries.destinationId, destinationId),
    IS_DEAD,
    eventIds ? inArray(deliveries.eventId, eventIds) : undefined,
    deadSince !== undefined ? gte(deliveries.deadAt, deadSince) : undefined,
  );
  return db.select().from(deliveries).where(where).all();
}

/** Events of a destination waiting to be replayed (a worker picks them up when it starts). */
export function replayingRows(db: Db, destinationId: string): LedgerRow[] {
  return db
    .select()
    .from(deliveries)
    .where(and(eq(deliveries.destinationId, destinationId), IS_REPLAYING))
    .orderBy(deliveries.updatedAt, sql`rowid`)
    .all();
}

/** Drops a destination's ledger (its destination was deleted). */
export function deleteLedger(db: Db, destinationId: string): void {
  db.delete(deliveries).where(eq(deliveries.destinationId, destinationId)).run();
}

/** One event's ledger row at one destination, if any (a prepared primary-key lookup). */
export function ledgerRow(db: Db, destinationId: string, eventId: string): LedgerRow | undefined {
  return lookupStatement(db).get(destinationId, eventId);
}
