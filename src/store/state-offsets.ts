import { type Db, preparedPerDb } from "./db.ts";

const upsertStatement = preparedPerDb((db: Db) =>
  db.$client.prepare<[string, number, number]>(
    `insert into state_offsets (topic, partition, offset) values (?, ?, ?)
     on conflict (topic, partition) do update set offset = excluded.offset`,
  ),
);

/** What the view has applied: topic → partition → next offset to read. */
export function loadStateOffsets(db: Db): Map<string, Map<number, number>> {
  const rows = db.$client
    .prepare<[], { topic: string; partition: number; offset: number }>(
      "select topic, partition, offset from state_offsets",
    )
    .all();
  const out = new Map<string, Map<number, number>>();
  for (const r of rows) {
    let parts = out.get(r.topic);
    if (!parts) {
      parts = new Map();
      out.set(r.topic, parts);
    }
    parts.set(r.partition, r.offset);
  }
  return out;
}

/** Records the view's position; call inside the transaction that applied the records before it. */
export function saveStateOffset(db: Db, topic: string, partition: number, offset: number): void {
  upsertStatement(db).run(topic, partition, offset);
}
