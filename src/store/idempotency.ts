import { and, eq, lte, sql } from "drizzle-orm";
import type { Db } from "./db.ts";
import { idempotencyKeys } from "./schema.ts";

export type IdempotencyRecord = typeof idempotencyKeys.$inferSelect;

/**
 * `status` of a key reserved before its events went to Kafka and not yet acknowledged. Its `response`
 * already holds the answer the request will get (event ids, receivedAt), so a retry re-sends the very same
 * events, and the delivery ledger's dedupe by event id absorbs any that Kafka did take the first time.
 */
export const RESERVED = 0;

/** The live record of a key, or undefined when it is unknown or expired. */
export function findIdempotencyKey(db: Db, key: string, now: number): IdempotencyRecord | undefined {
  const row = db.select().from(idempotencyKeys).where(eq(idempotencyKeys.key, key)).get();
  return row && row.expiresAt > now ? row : undefined;
}

/**
 * Reserves a key for a request about to be produced. Returns false when a live record of the key exists
 * (another request got there first); an expired record is replaced.
 */
export function reserveIdempotencyKey(
  db: Db,
  row: { key: string; requestHash: string; response: string; createdAt: number; expiresAt: number },
): boolean {
  const result = db
    .insert(idempotencyKeys)
    .values({ ...row, status: RESERVED })
    .onConflictDoUpdate({
      target: idempotencyKeys.key,
      set: {
        requestHash: row.requestHash,
        status: RESERVED,
        response: row.response,
        createdAt: row.createdAt,
        expiresAt: row.expiresAt,
      },
      setWhere: lte(idempotencyKeys.expiresAt, row.createdAt),
    })
    .run();
  return result.changes > 0;
}

/** Marks a reserved key answered with `status`; its stored response is what repeats get. */
export function completeIdempotencyKey(db: Db, key: string, status: number): void {
  db.update(idempotencyKeys)
    .set({ status })
    .where(and(eq(idempotencyKeys.key, key), eq(idempotencyKeys.status, RESERVED)))
    .run();
}

/** Deletes expired keys, at most `limit` per call so one purge never holds the database for long. */
export function purgeExpiredIdempotencyKeys(db: Db, now: number, limit = 10_000): number {
  return db.run(
    sql`delete from ${idempotencyKeys} where ${idempotencyKeys.key} in (select ${idempotencyKeys.key} from ${idempotencyKeys} where ${idempotencyKeys.expiresAt} <= ${now} limit ${limit})`,
  ).changes;
}

/**
 * Applies a key answered on some replica (the shared-state view): it replaces no live answered record,
 * only an unknown, expired or merely reserved one.
 */
export function applyIdempotencyKey(db: Db, row: Omit<IdempotencyRecord, never>): void {
  db.insert(idempotencyKeys)
    .values(row)
    .onConflictDoUpdate({
      target: idempotencyKeys.key,
      set: {
        requestHash: row.requestHash,
        status: row.status,
        response: row.response,
        createdAt: row.createdAt,
        expiresAt: row.expiresAt,
      },
      setWhere: sql`${idempotencyKeys.status} = ${RESERVED} or ${idempotencyKeys.expiresAt} <= ${row.createdAt}`,
    })
    .run();
}
