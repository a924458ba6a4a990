import type { KafkaLog } from "../kafka/log-client.ts";
import { partitionForKey as partitionOf } from "../kafka/murmur2.ts";
import { listEventAttempts } from "../store/attempt-queries.ts";
import type { Db } from "../store/db.ts";
import { uuidv7Ms } from "../store/stats.ts";

export interface StoredEvent {
  id: string;
  userID: string;
  type: string;
  timestamp: string;
  payload: unknown;
}

/** How far past the id's time a search reads before it gives up (records are written within the ack timeout). */
const SEARCH_WINDOW_MS = 60_000;
const FETCH_BYTES = 1024 * 1024;
const MAX_FETCHES = 8;

/**
 * Finds an accepted event's record in the events topic, for the console's event page: the id is a UUIDv7, so
 * its time says where to start (ListOffsets by time); its attempts say which user and so which partition
 * (all partitions are searched when none is recorded yet). Reads at most a few MiB per partition, never the
 * whole topic; undefined when the record is not there (never accepted, or past the topic's retention).
 */
export async function findEvent(
  deps: { log: Pick<KafkaLog, "offsetsForTime" | "fetch">; db: Db; topic: string },
  id: string,
): Promise<StoredEvent | undefined> {
  const at = uuidv7Ms(id);
  if (at === undefined) return undefined;
  const starts = await deps.log.offsetsForTime(deps.topic, at);
  const userId = listEventAttempts(deps.db, id)[0]?.userId;
  const partitions =
    userId === undefined
      ? [...starts.keys()]
      : [partitionOf(userId, starts.size)].filter((p) => starts.has(p));
  for (const partition of partitions) {
    let offset = starts.get(partition) as number;
    for (let i = 0; i < MAX_FETCHES; i++) {
      const r = await deps.log.fetch(deps.topic, partition, offset, { maxBytes: FETCH_BYTES, maxWaitMs: 0 });
      for (const record of r.records) {
        if (record.headers["event-id"]?.toString() === id && record.value) {
          return JSON.parse(record.value.toString("utf8")) as StoredEvent;
        }
      }
      const last = r.records.at(-1);
      if (!last || r.next >= r.highWatermark || last.timestamp > at + SEARCH_WINDOW_MS) break;
      offset = r.next;
    }
  }
  return undefined;
}
