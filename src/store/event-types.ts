import { eq } from "drizzle-orm";
import type { Db } from "./db.ts";
import { eventTypes } from "./schema.ts";

export type EventType = typeof eventTypes.$inferSelect;

export function listEventTypes(db: Db): EventType[] {
  return db.select().from(eventTypes).orderBy(eventTypes.name).all();
}

export function getEventType(db: Db, name: string): EventType | undefined {
  return db.select().from(eventTypes).where(eq(eventTypes.name, name)).get();
}

/** Writes an event type as given (the shared-state view applying the config topic). */
export function putEventType(db: Db, row: EventType): void {
  const { name, ...rest } = row;
  db.insert(eventTypes).values(row).onConflictDoUpdate({ target: eventTypes.name, set: rest }).run();
}

export function deleteEventType(db: Db, name: string): boolean {
  return db.delete(eventTypes).where(eq(eventTypes.name, name)).run().changes > 0;
}
