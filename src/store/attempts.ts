import { type Db, preparedPerDb } from "./db.ts";
import type { attempts } from "./schema.ts";

export type AttemptRow = typeof attempts.$inferInsert;
export type AttemptOutcome = "succeeded" | "failed" | "dead";

/**
 * The hot write, as one better-sqlite3 statement with positional parameters: through drizzle's prepared
 * query (named placeholders mapped per call) the same insert cost a third more CPU (bench/README.md).
 */
function prepareInsert(db: Db) {
  return db.$client.prepare<
    [string, string, string, number, number, number, number | null, string | null, string | null, string]
  >(
    `insert into attempts (event_id, destination_id, user_id, attempt_number, started_at, duration_ms,
       status_code, error, response_snippet, outcome) values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
  );
}
const insertStatement = preparedPerDb(prepareInsert);

/** Inserts attempt rows; callers batch them into one transaction (see delivery/recorder.ts). */
export function insertAttempts(db: Db, rows: AttemptRow[]): void {
  if (rows.length === 0) return;
  const insert = insertStatement(db);
  for (const r of rows) {
    insert.run(
      r.eventId,
      r.destinationId,
      r.userId,
      r.attemptNumber,
      r.startedAt,
      r.durationMs,
      r.statusCode ?? null,
      r.error ?? null,
      r.responseSnippet ?? null,
      r.outcome,
    );
  }
}
