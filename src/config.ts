import { randomBytes } from "node:crypto";
import { z } from "zod";

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"], { message: "must be true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const topicName = z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, "must be a Kafka topic name ([A-Za-z0-9._-])");

const EnvSchema = z.object({
  PORT: int(0, 65535).default(8080),
  HOST: z.string().min(1).default("127.0.0.1"),
  KAFKA_BROKERS: z
    .string()
    .optional()
    .transform((v) =>
      v
        ? v
            .split(",")
            .map((b) => b.trim())
            .filter(Boolean)
        : undefined,
    )
    .refine((v) => v === undefined || v.every((b) => /^[^\s:]+:\d{1,5}$/.test(b)), {
      message: "must be a comma-separated list of host:port",
    }),
  KAFKA_CLIENT_ID: z.string().min(1).default("webhook-gateway"),
  DB_PATH: z.string().min(1).default("./data/gateway.db"),
  ADMIN_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  INGEST_API_KEYS: z
    .string()
    .optional()
    .transform((v) =>
      v
        ? v
            .split(",")
            .map((k) => k.trim())
            .filter(Boolean)
        : [],
    ),
  ALLOW_PRIVATE_DESTINATIONS: bool.default(false),
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`; unset leaves it open. */
  METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  LOG_LEVEL: z.enum(["fatal", "error", "warn", "info", "debug", "trace", "silent"]).default("info"),
  EVENTS_TOPIC: topicName.default("events"),
  DEAD_LETTER_TOPIC: topicName.default("events.dead-letter"),
  TOPIC_PARTITIONS: int(1, 10_000).default(12),
  /** Unset: min(3, number of brokers). */
  TOPIC_REPLICATION_FACTOR: int(1, 10).optional(),
  CONSUMER_GROUP_PREFIX: z
    .string()
    .regex(/^[A-Za-z0-9._-]{1,100}$/)
    .default("gw"),
  /**
   * The shared-state topics every replica with the same CONSUMER_GROUP_PREFIX reads (README "Replicas"):
   * destinations (compacted), delivery outcomes (changelog, kept RETENTION_DAYS), idempotency keys
   * (compacted, kept IDEMPOTENCY_TTL_HOURS). Unset: `<CONSUMER_GROUP_PREFIX>.config`, `.outcomes`,
   * `.idempotency`.
   */
  CONFIG_TOPIC: topicName.optional(),
  OUTCOMES_TOPIC: topicName.optional(),
  IDEMPOTENCY_TOPIC: topicName.optional(),
  /** How long ingest waits for Kafka's acknowledgement before answering 503. */
  INGEST_ACK_TIMEOUT_MS: int(100, 120_000).default(10_000),
  /** Seconds suggested to clients in Retry-After when Kafka cannot take an event. */
  INGEST_RETRY_AFTER_S: int(1, 3600).default(2),
  MAX_BODY_BYTES: int(1024, 64 * 1024 * 1024).default(256 * 1024),
  BATCH_MAX_RECORDS: int(1, 100_000).default(1000),
  BATCH_MAX_BYTES: int(1024, 64 * 1024 * 1024).default(1024 * 1024),
  BATCH_LINGER_MS: int(0, 1000).default(2),
  IDEMPOTENCY_TTL_HOURS: int(1, 24 * 30).default(24),
  /** Attempt rows, and ledger rows of delivered or dead events, older than this are deleted. */
  RETENTION_DAYS: int(1, 3650).default(30),
  RETENTION_CHECK_MINUTES: int(1, 24 * 60).default(60),
  /** Delivery consumers' fetch: the broker answers once this much is there, or after the wait. */
  DELIVERY_FETCH_MIN_BYTES: int(1, 1024 * 1024).default(1),
  DELIVERY_FETCH_MAX_WAIT_MS: int(10, 10_000).default(500),
  /** How often each destination's finished progress is committed to its consumer group. */
  DELIVERY_COMMIT_MS: int(100, 10_000).default(5000),
  /**
   * How often every destination's offsets are committed again, unchanged or not, so Kafka's
   * offsets.retention.minutes (7 days by default) never deletes them. Keep it well below that retention.
   */
  DELIVERY_OFFSET_KEEPALIVE_MINUTES: int(1, 7 * 24 * 60).default(60),
  /**
   * Worker threads that each run a delivery engine (a member of the delivery group: the partitions are split
   * between them). 0, the default, runs one engine on the main thread beside ingest and the admin API: with
   * the shared reader one engine made every fan-out target on two cores at half the idle CPU and memory of
   * two threads (bench/README.md, "Fan-out").
   */
  DELIVERY_THREADS: int(0, 64).default(0),
});

export type Config = Omit<
  z.output<typeof EnvSchema>,
  "CONFIG_TOPIC" | "OUTCOMES_TOPIC" | "IDEMPOTENCY_TOPIC"
> & {
  CONFIG_TOPIC: string;
  OUTCOMES_TOPIC: string;
  IDEMPOTENCY_TOPIC: string;
  /** True when ADMIN_TOKEN was not set and one was generated for this run. */
  adminTokenGenerated: boolean;
  adminToken: string;
};

export class ConfigError extends Error {
  override name = "ConfigError";
}

/** Parses and validates the environment once; the only place in the gateway that reads process.env. */
export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  // An empty variable means "unset", as a shell user expects of `FOO= npm start`.
  const cleaned = Object.fromEntries(Object.entries(env).filter(([, v]) => v !== undefined && v !== ""));
  const parsed = EnvSchema.safeParse(cleaned);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join(".")}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join("\n")}`);
  }
  const adminToken = parsed.data.ADMIN_TOKEN ?? randomBytes(24).toString("base64url");
  const prefix = parsed.data.CONSUMER_GROUP_PREFIX;
  return {
    ...parsed.data,
    CONFIG_TOPIC: parsed.data.CONFIG_TOPIC ?? `${prefix}.config`,
    OUTCOMES_TOPIC: parsed.data.OUTCOMES_TOPIC ?? `${prefix}.outcomes`,
    IDEMPOTENCY_TOPIC: parsed.data.IDEMPOTENCY_TOPIC ?? `${prefix}.idempotency`,
    adminToken,
    adminTokenGenerated: parsed.data.ADMIN_TOKEN === undefined,
  };
}
