import { and, asc, eq, gt, or, sql } from "drizzle-orm";
import type { Db } from "./db.ts";
import { IS_DEAD } from "./ledger.ts";
import { deliveries } from "./schema.ts";

/** A ledger row of an event that exhausted its attempts at a destination. */
export interface DeadLetter {
  eventId: string;
  userId: string;
  attempts: number;
  lastError: string | null;
  deadAt: number;
}

export interface DeadLetterQuery {
  destinationId: string;
  /** Keyset cursor: the (deadAt, eventId) of the previous page's last row. */
  after?: { deadAt: number; eventId: string };
  limit: number;
}

export interface DeadLetterPage {
  deadLetters: DeadLetter[];
  /** The key to pass as `after` for the next page; undefined when this page is the last. */
  nextAfter: { deadAt: number; eventId: string } | undefined;
}

/**
 * One page of a destination's dead letters, oldest death first. Keyset on (deadAt, eventId) so that
 * replays removing rows between pages never make a client skip one.
 */
export function listDeadLetters(db: Db, q: DeadLetterQuery): DeadLetterPage {
  const rows = db
    .select({
      eventId: deliveries.eventId,
      userId: deliveries.userId,
      attempts: deliveries.attempts,
      lastError: deliveries.lastError,
      deadAt: sql<number>`${deliveries.deadAt}`,
    })
    .from(deliveries)
    .where(
      and(
        eq(deliveries.destinationId, q.destinationId),
        IS_DEAD,
        q.after
          ? or(
              gt(deliveries.deadAt, q.after.deadAt),
              and(eq(deliveries.deadAt, q.after.deadAt), gt(deliveries.eventId, q.after.eventId)),
            )
          : undefined,
      ),
    )
    .orderBy(asc(deliveries.deadAt), asc(deliveries.eventId))
    .limit(q.limit + 1)
    .all();
  const more = rows.length > q.limit;
  const page = more ? rows.slice(0, q.limit) : rows;
  const last = page[page.length - 1];
  return {
    deadLetters: page,
    nextAfter: more && last ? { deadAt: last.deadAt, eventId: last.eventId } : undefined,
  };
}
