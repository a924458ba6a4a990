import type { Db } from "./db.ts";
import { attempts } from "./schema.ts";

export type AttemptRow = typeof attempts.$inferInsert;
export type AttemptOutcome = "succeeded" | "failed" | "dead";

/** Inserts attempt rows; callers batch them into one transaction (see delivery/recorder.ts). */
export function insertAttempts(db: Db, rows: AttemptRow[]): void {
  if (rows.length > 0) db.insert(attempts).values(rows).run();
}
