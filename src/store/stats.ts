import type { AttemptRow } from "./attempts.ts";
import { type Db, preparedPerDb } from "./db.ts";

/** Width of one roll-up bucket. GET /api/stats buckets are whole multiples of it. */
export const STATS_BUCKET_MS = 10_000;

/** Upper bounds (ms) of the latency histogram's bins; the last bin is everything above the last bound. */
export const LATENCY_BOUNDS_MS = [
  5, 10, 25, 50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 30_000, 60_000, 300_000, 3_600_000,
] as const;

/** What one ingest roll-up record carries: accepted events per type and per (heaviest) user. */
export interface AcceptedRollup {
  /** Start of the bucket the counts belong to (Unix ms, a multiple of STATS_BUCKET_MS). */
  bucket: number;
  types: Record<string, number>;
  users: Record<string, number>;
}

export function bucketOf(ms: number): number {
  return ms - (ms % STATS_BUCKET_MS);
}

/** Unix ms of a UUIDv7 (the first 48 bits), or undefined for an id of another shape. */
export function uuidv7Ms(id: string): number | undefined {
  const hex = id.slice(0, 8) + id.slice(9, 13);
  if (!/^[0-9a-f]{12}$/i.test(hex) || id[14] !== "7") return undefined;
  return Number.parseInt(hex, 16);
}

function binOf(ms: number): number {
  let i = 0;
  while (i < LATENCY_BOUNDS_MS.length && ms > (LATENCY_BOUNDS_MS[i] as number)) i++;
  return i;
}

const statements = preparedPerDb((db: Db) => {
  const s = db.$client;
  return {
    delivery: s.prepare<[number, string, string, number]>(
      `insert into stats_deliveries (bucket, destination_id, outcome, count) values (?, ?, ?, ?)
       on conflict do update set count = count + excluded.count`,
    ),
    latency: s.prepare<[number, string, number, number]>(
      `insert into stats_latency (bucket, destination_id, bin, count) values (?, ?, ?, ?)
       on conflict do update set count = count + excluded.count`,
    ),
    accepted: s.prepare<[number, string, number]>(
      `insert into stats_accepted (bucket, type, count) values (?, ?, ?)
       on conflict do update set count = count + excluded.count`,
    ),
    user: s.prepare<[number, string, number]>(
      `insert into stats_users (bucket, user_id, count) values (?, ?, ?)
       on conflict do update set count = count + excluded.count`,
    ),
    lastError: s.prepare<[string, number, string, number | null, string | null]>(
      `insert into stats_last_error (destination_id, at, event_id, status_code, error) values (?, ?, ?, ?, ?)
       on conflict do update set at = excluded.at, event_id = excluded.event_id,
         status_code = excluded.status_code, error = excluded.error where excluded.at >= at`,
    ),
  };
});

/**
 * Adds attempts to the roll-ups: counted in memory first, so a batch of a thousand attempts costs one
 * upsert per (bucket, destination, outcome) and per latency bin. Call inside the view's transaction.
 */
export function rollUpAttempts(db: Db, rows: AttemptRow[]): void {
  if (rows.length === 0) return;
  const st = statements(db);
  const outcomes = new Map<string, { bucket: number; dest: string; outcome: string; n: number }>();
  const bins = new Map<string, { bucket: number; dest: string; bin: number; n: number }>();
  const errors = new Map<string, AttemptRow>();
  for (const r of rows) {
    const finished = r.startedAt + r.durationMs;
    const bucket = bucketOf(finished);
    const k = `${bucket}\n${r.destinationId}\n${r.outcome}`;
    const o = outcomes.get(k);
    if (o) o.n++;
    else outcomes.set(k, { bucket, dest: r.destinationId, outcome: r.outcome, n: 1 });
    if (r.outcome === "succeeded") {
      const accepted = uuidv7Ms(r.eventId);
      if (accepted !== undefined) {
        const bin = binOf(Math.max(0, finished - accepted));
        const kb = `${bucket}\n${r.destinationId}\n${bin}`;
        const b = bins.get(kb);
        if (b) b.n++;
        else bins.set(kb, { bucket, dest: r.destinationId, bin, n: 1 });
      }
    } else {
      errors.set(r.destinationId, r);
    }
  }
  for (const o of outcomes.values()) st.delivery.run(o.bucket, o.dest, o.outcome, o.n);
  for (const b of bins.values()) st.latency.run(b.bucket, b.dest, b.bin, b.n);
  for (const r of errors.values()) {
    st.lastError.run(
      r.destinationId,
      r.startedAt + r.durationMs,
      r.eventId,
      r.statusCode ?? null,
      r.error ?? null,
    );
  }
}

/** Adds one ingest roll-up record (call inside the view's transaction). */
export function rollUpAccepted(db: Db, r: AcceptedRollup): void {
  const st = statements(db);
  for (const [type, n] of Object.entries(r.types)) st.accepted.run(r.bucket, type, n);
  for (const [user, n] of Object.entries(r.users)) st.user.run(r.bucket, user, n);
}

/** Deletes roll-up rows of buckets before `cutoff` (with the attempts' retention). */
export function pruneStats(db: Db, cutoff: number): number {
  let removed = 0;
  for (const table of ["stats_deliveries", "stats_latency", "stats_accepted", "stats_users"]) {
    removed += db.$client.prepare(`delete from ${table} where bucket < ?`).run(cutoff).changes;
  }
  return removed;
}

// ---------------------------------------------------------------------------------------------------------
// Reads

export interface StatsQuery {
  from: number;
  to: number;
  bucketMs: number;
  topUsers: number;
}

export interface StatsResult {
  accepted: Array<{ bucket: number; type: string; count: number }>;
  deliveries: Array<{ bucket: number; destinationId: string; outcome: string; count: number }>;
  latency: Array<{ bucket: number; count: number; p50: number | null; p99: number | null }>;
  topUsers: Array<{ userId: string; count: number }>;
}

/** The bin's upper bound, as the percentile's estimate (the last, open bin reports its lower bound). */
function boundOf(bin: number): number {
  return LATENCY_BOUNDS_MS[Math.min(bin, LATENCY_BOUNDS_MS.length - 1)] as number;
}

/** A percentile (0–1) of a histogram given as counts per bin. */
export function percentileOf(counts: number[], q: number): number | null {
  const total = counts.reduce((a, b) => a + b, 0);
  if (total === 0) return null;
  const rank = Math.max(1, Math.ceil(q * total));
  let seen = 0;
  for (let bin = 0; bin < counts.length; bin++) {
    seen += counts[bin] ?? 0;
    if (seen >= rank) return boundOf(bin);
  }
  return boundOf(counts.length - 1);
}

/** Reads the roll-ups of [from, to), regrouped into buckets of `bucketMs` (a multiple of STATS_BUCKET_MS). */
export function readStats(db: Db, q: StatsQuery): StatsResult {
  const s = db.$client;
  const group = `(bucket - (bucket % ${q.bucketMs}))`;
  const accepted = s
    .prepare<[number, number], { bucket: number; type: string; count: number }>(
      `select ${group} as bucket, type, sum(count) as count from stats_accepted
       where bucket >= ? and bucket < ? group by 1, 2 order by 1, 2`,
    )
    .all(q.from, q.to);
  const deliveries = s
    .prepare<[number, number], { bucket: number; destinationId: string; outcome: string; count: number }>(
      `select ${group} as bucket, destination_id as destinationId, outcome, sum(count) as count
       from stats_deliveries where bucket >= ? and bucket < ? group by 1, 2, 3 order by 1, 2, 3`,
    )
    .all(q.from, q.to);
  const bins = s
    .prepare<[number, number], { bucket: number; bin: number; count: number }>(
      `select ${group} as bucket, bin, sum(count) as count from stats_latency
       where bucket >= ? and bucket < ? group by 1, 2 order by 1, 2`,
    )
    .all(q.from, q.to);
  const byBucket = new Map<number, number[]>();
  for (const b of bins) {
    const counts = byBucket.get(b.bucket) ?? new Array(LATENCY_BOUNDS_MS.length + 1).fill(0);
    counts[b.bin] = b.count;
    byBucket.set(b.bucket, counts);
  }
  const latency = [...byBucket].map(([bucket, counts]) => ({
    bucket,
    count: counts.reduce((a, b) => a + b, 0),
    p50: percentileOf(counts, 0.5),
    p99: percentileOf(counts, 0.99),
  }));
  const topUsers = s
    .prepare<[number, number, number], { userId: string; count: number }>(
      `select user_id as userId, sum(count) as count from stats_users
       where bucket >= ? and bucket < ? group by 1 order by 2 desc, 1 limit ?`,
    )
    .all(q.from, q.to, q.topUsers);
  return { accepted, deliveries, latency, topUsers };
}

export interface DestinationHealthRow {
  destinationId: string;
  succeeded: number;
  failed: number;
  dead: number;
}

/** Outcome counts per destination since `since` (the console's success rate over the last hour). */
export function outcomeCountsSince(db: Db, since: number): DestinationHealthRow[] {
  return db.$client
    .prepare<[number], DestinationHealthRow>(
      `select destination_id as destinationId,
         sum(case when outcome = 'succeeded' then count else 0 end) as succeeded,
         sum(case when outcome = 'failed' then count else 0 end) as failed,
         sum(case when outcome = 'dead' then count else 0 end) as dead
       from stats_deliveries where bucket >= ? group by 1`,
    )
    .all(bucketOf(since));
}

export interface LastErrorRow {
  destinationId: string;
  at: number;
  eventId: string;
  statusCode: number | null;
  error: string | null;
}

export function lastErrors(db: Db): LastErrorRow[] {
  return db.$client
    .prepare<[], LastErrorRow>(
      `select destination_id as destinationId, at, event_id as eventId, status_code as statusCode, error
       from stats_last_error`,
    )
    .all();
}
