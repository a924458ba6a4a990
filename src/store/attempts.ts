import { sql } from "drizzle-orm";
import { type Db, preparedPerDb } from "./db.ts";
import { attempts } from "./schema.ts";

export type AttemptRow = typeof attempts.$inferInsert;
export type AttemptOutcome = "succeeded" | "failed" | "dead";

const p = (name: string) => sql.placeholder(name);
function prepareInsert(db: Db) {
  return db
    .insert(attempts)
    .values({
      eventId: p("eventId"),
      destinationId: p("destinationId"),
      userId: p("userId"),
      attemptNumber: p("attemptNumber"),
      startedAt: p("startedAt"),
      durationMs: p("durationMs"),
      statusCode: p("statusCode"),
      error: p("error"),
      responseSnippet: p("responseSnippet"),
      outcome: p("outcome"),
    })
    .prepare();
}
const insertStatement = preparedPerDb(prepareInsert);

/** Inserts attempt rows; callers batch them into one transaction (see delivery/recorder.ts). */
export function insertAttempts(db: Db, rows: AttemptRow[]): void {
  if (rows.length === 0) return;
  const insert = insertStatement(db);
  for (const r of rows) {
    insert.run({
      eventId: r.eventId,
      destinationId: r.destinationId,
      userId: r.userId,
      attemptNumber: r.attemptNumber,
      startedAt: r.startedAt,
      durationMs: r.durationMs,
      statusCode: r.statusCode ?? null,
      error: r.error ?? null,
      responseSnippet: r.responseSnippet ?? null,
      outcome: r.outcome,
    });
  }
}
