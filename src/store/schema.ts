import { sql } from "drizzle-orm";
import { index, integer, primaryKey, real, sqliteTable, text } from "drizzle-orm/sqlite-core";

export interface DestinationReplay {
  id: string;
  /** Unix ms: re-deliver from the first event accepted at or after it. */
  from: number;
  /** Unix ms, exclusive; null = up to the replay's request. */
  to: number | null;
  requestedAt: number;
  cancelled: boolean;
}

/** Webhook destinations registered through the admin API. Times are Unix milliseconds. */
export const destinations = sqliteTable("destinations", {
  id: text("id").primaryKey(),
  name: text("name"),
  url: text("url").notNull(),
  /** JSON array of subscribed event types; empty = every type. */
  eventTypes: text("event_types", { mode: "json" }).$type<string[]>().notNull().default(sql`'[]'`),
  /** JSON object of extra request headers. */
  headers: text("headers", { mode: "json" }).$type<Record<string, string>>().notNull().default(sql`'{}'`),
  secret: text("secret").notNull(),
  /** The secret a rotation replaced; deliveries carry its signature too until previousSecretExpiresAt. */
  previousSecret: text("previous_secret"),
  previousSecretExpiresAt: integer("previous_secret_expires_at"),
  maxAttempts: integer("max_attempts").notNull(),
  timeoutMs: integer("timeout_ms").notNull(),
  backoffBaseMs: integer("backoff_base_ms").notNull(),
  backoffMaxMs: integer("backoff_max_ms").notNull(),
  maxConcurrency: integer("max_concurrency").notNull(),
  /** Token bucket per destination: attempts per second (null = no limit) and the tokens saved up. */
  rateLimitPerSecond: real("rate_limit_per_second"),
  rateLimitBurst: integer("rate_limit_burst"),
  /** "webhook", or "operational": an operator endpoint that receives only operational events. */
  kind: text("kind").notNull().default("webhook"),
  /** Disabled after failing this many hours without a success (null = never); default 120. */
  autoDisableAfterHours: real("auto_disable_after_hours").default(120),
  /** Disabled after this many dead letters in a row (null = never). */
  autoDisableAfterDeadLetters: integer("auto_disable_after_dead_letters"),
  /** When the admin API last enabled it: attempts before do not count toward the failing streak. */
  streakResetAt: integer("streak_reset_at"),
  /**
   * The last replay asked for (POST …/replay, or `startFrom` at registration): the destination's progress
   * was moved back to the first event at or after `from`, and events up to `to` (or `requestedAt`) are
   * delivered again even when finished. `cancelled` moves progress forward to `requestedAt` again.
   */
  replay: text("replay", { mode: "json" }).$type<DestinationReplay | null>(),
  /** JSON payload filter (src/delivery/filter.ts); null = every event of the subscribed types. */
  filter: text("filter", { mode: "json" }).$type<Record<string, unknown> | null>(),
  disabled: integer("disabled", { mode: "boolean" }).notNull().default(false),
  disabledReason: text("disabled_reason"),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/** One row per HTTP attempt (or per decision that ended an event) of an event at a destination. */
export const attempts = sqliteTable(
  "attempts",
  {
    id: integer("id").primaryKey({ autoIncrement: true }),
    eventId: text("event_id").notNull(),
    destinationId: text("destination_id").notNull(),
    userId: text("user_id").notNull(),
    attemptNumber: integer("attempt_number").notNull(),
    startedAt: integer("started_at").notNull(),
    durationMs: integer("duration_ms").notNull(),
    statusCode: integer("status_code"),
    error: text("error"),
    responseSnippet: text("response_snippet"),
    /** "succeeded" | "failed" | "dead" */
    outcome: text("outcome").notNull(),
  },
  (t) => [
    index("attempts_destination_idx").on(t.destinationId, t.id),
    index("attempts_event_idx").on(t.eventId),
  ],
);

/** The delivery ledger: where each event stands at each destination. */
export const deliveries = sqliteTable(
  "deliveries",
  {
    destinationId: text("destination_id").notNull(),
    eventId: text("event_id").notNull(),
    userId: text("user_id").notNull(),
    /** "pending" | "delivered" | "dead" | "replaying" */
    status: text("status").notNull(),
    attempts: integer("attempts").notNull().default(0),
    lastError: text("last_error"),
    /** The Kafka record value, kept while the event is dead or being replayed so replay needs no topic scan. */
    event: text("event"),
    updatedAt: integer("updated_at").notNull(),
    deadAt: integer("dead_at"),
  },
  (t) => [
    primaryKey({ columns: [t.destinationId, t.eventId] }),
    // Partial indexes: the rows that are delivered or pending (all but a few) enter neither, which saves
    // every delivery a B-tree insert (bench/README.md). A query uses one only if its WHERE has the same
    // literal term, e.g. `status = 'dead'` — a bound parameter does not count (SQLite plans before binding).
    index("deliveries_dead_idx").on(t.destinationId, t.deadAt, t.eventId).where(sql`status = 'dead'`),
    index("deliveries_replaying_idx").on(t.destinationId, t.updatedAt).where(sql`status = 'replaying'`),
  ],
);

/** Idempotency-Key records of the ingest routes; a repeat within the TTL gets the stored answer. */
export const idempotencyKeys = sqliteTable(
  "idempotency_keys",
  {
    /** The route and the client's key, e.g. "singleEvent:abc". */
    key: text("key").primaryKey(),
    /** SHA-256 of the request body: the same key with a different body is a client error. */
    requestHash: text("request_hash").notNull(),
    status: integer("status").notNull(),
    response: text("response").notNull(),
    createdAt: integer("created_at").notNull(),
    expiresAt: integer("expires_at").notNull(),
  },
  (t) => [index("idempotency_expires_idx").on(t.expiresAt)],
);

/**
 * Each destination's delivery progress per partition ("next offset to read"), mirrored from what the
 * gateway commits to the destination's consumer group. Kafka deletes a member-less group's offsets after
 * `offsets.retention.minutes` without a commit; a destination whose Kafka offsets are gone resumes from
 * here instead of from the beginning of the topic.
 */
export const deliveryOffsets = sqliteTable(
  "delivery_offsets",
  {
    destinationId: text("destination_id").notNull(),
    topic: text("topic").notNull(),
    partition: integer("partition").notNull(),
    offset: integer("offset").notNull(),
    updatedAt: integer("updated_at").notNull(),
  },
  (t) => [primaryKey({ columns: [t.destinationId, t.topic, t.partition] })],
);

/**
 * How far this replica's view has applied each partition of the shared-state topics (config, outcomes,
 * idempotency): the next offset to read. Written in the same transaction as the rows it applied, so the
 * view is exactly the topics' prefix up to these offsets.
 */
export const stateOffsets = sqliteTable(
  "state_offsets",
  {
    topic: text("topic").notNull(),
    partition: integer("partition").notNull(),
    offset: integer("offset").notNull(),
  },
  (t) => [primaryKey({ columns: [t.topic, t.partition] })],
);

/**
 * The event-type catalog (POST /api/event-types): a type's JSON Schema (2020-12) for its events' payload.
 * A view of the config topic's `event-type/<name>` records, like destinations.
 */
export const eventTypes = sqliteTable("event_types", {
  name: text("name").primaryKey(),
  description: text("description"),
  schema: text("schema", { mode: "json" }).$type<unknown>().notNull(),
  createdAt: integer("created_at").notNull(),
  updatedAt: integer("updated_at").notNull(),
});

/**
 * Roll-ups for GET /api/stats and the console, written by the state view in the same transaction as the
 * outcomes and ingest-count records they come from (so every replica holds the same numbers and no request
 * scans the attempts table). Buckets are STATS_BUCKET_MS (10 s) wide; `bucket` is its start, Unix ms.
 */
export const statsDeliveries = sqliteTable(
  "stats_deliveries",
  {
    bucket: integer("bucket").notNull(),
    destinationId: text("destination_id").notNull(),
    /** "succeeded" | "failed" | "dead" */
    outcome: text("outcome").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.destinationId, t.outcome] })],
);

/** Accept→receive latency of successful attempts: a histogram (bin = index into LATENCY_BOUNDS_MS). */
export const statsLatency = sqliteTable(
  "stats_latency",
  {
    bucket: integer("bucket").notNull(),
    destinationId: text("destination_id").notNull(),
    bin: integer("bin").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.destinationId, t.bin] })],
);

/** Events accepted per type (from the ingest roll-up records every replica publishes). */
export const statsAccepted = sqliteTable(
  "stats_accepted",
  {
    bucket: integer("bucket").notNull(),
    type: text("type").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.type] })],
);

/** Events accepted per user (each roll-up record carries its heaviest users only, see STATS_TOP_USERS). */
export const statsUsers = sqliteTable(
  "stats_users",
  {
    bucket: integer("bucket").notNull(),
    userId: text("user_id").notNull(),
    count: integer("count").notNull(),
  },
  (t) => [primaryKey({ columns: [t.bucket, t.userId] })],
);

/** The last failed attempt of each destination (the console's "last error"). */
export const statsLastError = sqliteTable("stats_last_error", {
  destinationId: text("destination_id").primaryKey(),
  at: integer("at").notNull(),
  eventId: text("event_id").notNull(),
  statusCode: integer("status_code"),
  error: text("error"),
});
