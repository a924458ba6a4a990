import { and, asc, desc, eq, gte, lt } from "drizzle-orm";
import type { AttemptOutcome } from "./attempts.ts";
import type { Db } from "./db.ts";
import { attempts } from "./schema.ts";

export type Attempt = typeof attempts.$inferSelect;

/** Every attempt of one event at every destination, oldest first. */
export function listEventAttempts(db: Db, eventId: string): Attempt[] {
  return db.select().from(attempts).where(eq(attempts.eventId, eventId)).orderBy(asc(attempts.id)).all();
}

export interface DestinationAttemptsQuery {
  destinationId: string;
  outcome?: AttemptOutcome;
  /** Only attempts started at or after this Unix millisecond. */
  since?: number;
  /** Keyset cursor: only attempts with a smaller id (the previous page's last id). */
  beforeId?: number;
  limit: number;
}

export interface AttemptPage {
  attempts: Attempt[];
  /** The id to pass as `beforeId` for the next page; undefined when this page is the last. */
  nextBeforeId: number | undefined;
}

/**
 * One page of a destination's attempts, newest first. Keyset on the autoincrement id rather than
 * OFFSET: a page costs the same however deep it is, and rows written while a client pages (new
 * attempts get larger ids) never shift or repeat what it sees. The (destination_id, id) index serves it.
 */
export function listDestinationAttempts(db: Db, q: DestinationAttemptsQuery): AttemptPage {
  const rows = db
    .select()
    .from(attempts)
    .where(
      and(
        eq(attempts.destinationId, q.destinationId),
        q.outcome !== undefined ? eq(attempts.outcome, q.outcome) : undefined,
        q.since !== undefined ? gte(attempts.startedAt, q.since) : undefined,
        q.beforeId !== undefined ? lt(attempts.id, q.beforeId) : undefined,
      ),
    )
    .orderBy(desc(attempts.id))
    // One row more than asked tells whether another page exists without a COUNT.
    .limit(q.limit + 1)
    .all();
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  return { attempts: page, nextBeforeId: more ? page[page.length - 1]?.id : undefined };
}

/** Where a destination's failing streak stands: since when it fails without a success, and dead letters in a row. */
export interface DestinationHealth {
  /** Start of the first failed or dead attempt after the last success; undefined when not failing. */
  failingSince: number | undefined;
  deadStreak: number;
  /** A failure since the last success, counted or not (a "recovered" event is due at the next success). */
  failing: boolean;
}

/**
 * A destination's failing streak from the attempts this replica holds (every replica's outcomes): read
 * once when a worker starts, so auto-disable and "recovered" survive restarts and hand-overs. Attempts
 * started before `resetAt` (the admin API enabled the destination again then) do not count.
 */
export function destinationHealth(db: Db, destinationId: string, resetAt = 0): DestinationHealth {
  const last = db.$client
    .prepare<[string], { id: number | null }>(
      // Walks the (destination_id, id) index backwards: stops at the most recent success.
      "select id from attempts where destination_id = ? and outcome = 'succeeded' order by id desc limit 1",
    )
    .get(destinationId);
  const row = db.$client
    .prepare<[string, number, number], { since: number | null; dead: number }>(
      `select min(started_at) as since, coalesce(sum(outcome = 'dead'), 0) as dead
       from attempts where destination_id = ? and id > ? and outcome in ('failed', 'dead') and started_at >= ?`,
    )
    .get(destinationId, last?.id ?? 0, resetAt);
  const any = db.$client
    .prepare<[string, number], { id: number }>(
      "select id from attempts where destination_id = ? and id > ? and outcome in ('failed', 'dead') limit 1",
    )
    .get(destinationId, last?.id ?? 0);
  return { failingSince: row?.since ?? undefined, deadStreak: row?.dead ?? 0, failing: any !== undefined };
}
