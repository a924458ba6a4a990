import { and, eq } from "drizzle-orm";
import { type Db, preparedPerDb } from "./db.ts";
import { deliveryOffsets } from "./schema.ts";

export interface OffsetRow {
  destinationId: string;
  partition: number;
  /** Next offset to read. */
  offset: number;
}

function prepareUpsert(db: Db) {
  return db.$client.prepare<[string, string, number, number, number]>(
    `insert into delivery_offsets (destination_id, topic, partition, offset, updated_at) values (?, ?, ?, ?, ?)
     on conflict (destination_id, topic, partition) do update set offset = excluded.offset,
       updated_at = excluded.updated_at`,
  );
}
const upsertStatement = preparedPerDb(prepareUpsert);

/** Mirrors committed progress (one transaction for all rows). */
export function saveOffsets(db: Db, topic: string, rows: OffsetRow[], at = Date.now()): void {
  if (rows.length === 0) return;
  const upsert = upsertStatement(db);
  db.$client.transaction(() => {
    for (const r of rows) upsert.run(r.destinationId, topic, r.partition, r.offset, at);
  })();
}

/** The mirrored progress of one destination: partition → next offset to read. */
export function loadOffsets(db: Db, topic: string, destinationId: string): Map<number, number> {
  const rows = db
    .select({ partition: deliveryOffsets.partition, offset: deliveryOffsets.offset })
    .from(deliveryOffsets)
    .where(and(eq(deliveryOffsets.destinationId, destinationId), eq(deliveryOffsets.topic, topic)))
    .all();
  return new Map(rows.map((r) => [r.partition, r.offset]));
}

/** Every destination's mirrored progress on a topic: destination → partition → next offset. */
export function loadAllOffsets(db: Db, topic: string): Map<string, Map<number, number>> {
  const out = new Map<string, Map<number, number>>();
  const rows = db.select().from(deliveryOffsets).where(eq(deliveryOffsets.topic, topic)).all();
  for (const r of rows) {
    let m = out.get(r.destinationId);
    if (!m) {
      m = new Map();
      out.set(r.destinationId, m);
    }
    m.set(r.partition, r.offset);
  }
  return out;
}

export function deleteOffsets(db: Db, destinationId: string): void {
  db.delete(deliveryOffsets).where(eq(deliveryOffsets.destinationId, destinationId)).run();
}
