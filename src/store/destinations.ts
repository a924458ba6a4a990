import { eq } from "drizzle-orm";
import type { Db } from "./db.ts";
import { destinations } from "./schema.ts";

export type Destination = typeof destinations.$inferSelect;
export type NewDestination = typeof destinations.$inferInsert;
/**
 * The delivery-control columns a new destination starts with (issue 14's settings), in one place so a
 * row built in code (registration, tests, benches) gets every one.
 */
export const DELIVERY_CONTROL_DEFAULTS = {
  filter: null,
  previousSecret: null,
  previousSecretExpiresAt: null,
  rateLimitPerSecond: null,
  rateLimitBurst: null,
  kind: "webhook",
  autoDisableAfterHours: 120,
  autoDisableAfterDeadLetters: null,
  streakResetAt: null,
  replay: null,
} satisfies Partial<Destination>;

export type DestinationPatch = Partial<Omit<Destination, "id" | "createdAt">>;

export function insertDestination(db: Db, row: NewDestination): Destination {
  return db.insert(destinations).values(row).returning().get();
}

export function getDestination(db: Db, id: string): Destination | undefined {
  return db.select().from(destinations).where(eq(destinations.id, id)).get();
}

export function listDestinations(db: Db): Destination[] {
  return db.select().from(destinations).orderBy(destinations.createdAt, destinations.id).all();
}

export function updateDestination(db: Db, id: string, patch: DestinationPatch): Destination | undefined {
  return db
    .update(destinations)
    .set({ ...patch, updatedAt: patch.updatedAt ?? Date.now() })
    .where(eq(destinations.id, id))
    .returning()
    .get();
}

export function deleteDestination(db: Db, id: string): boolean {
  return db.delete(destinations).where(eq(destinations.id, id)).run().changes > 0;
}

/** Writes a destination row as given (the shared-state view applying the config topic). */
export function putDestination(db: Db, row: Destination): void {
  const { id, ...rest } = row;
  db.insert(destinations).values(row).onConflictDoUpdate({ target: destinations.id, set: rest }).run();
}
