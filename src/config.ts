import { createPrivateKey, type KeyObject, randomBytes, X509Certificate } from "node:crypto";
import { readFileSync } from "node:fs";
import { z } from "zod";
import type { KafkaSaslMechanism, KafkaSecurity } from "./kafka/client.ts";

const bool = z
  .enum(["true", "false", "1", "0", "yes", "no"], { message: "must be true or false" })
  .transform((v) => v === "true" || v === "1" || v === "yes");
const int = (min: number, max: number) => z.coerce.number().int().min(min).max(max);
const topicName = z.string().regex(/^[A-Za-z0-9._-]{1,200}$/, "must be a Kafka topic name ([A-Za-z0-9._-])");

const EnvSchema = z.object({
  PORT: int(0, 65535).default(8080),
  HOST: z.string().min(1).default("127.0.0.1"),
  /**
   * Listen with SO_REUSEPORT, so that several gateway processes (replicas of one deployment, each with its
   * own DB_PATH) can share one port on one host and the kernel spreads connections over them (Linux 3.9+,
   * FreeBSD 12+; elsewhere the listen fails with a clear error). bench/README.md "Issue 16" has it measured.
   */
  HTTP_REUSE_PORT: bool.default(false),
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
  /** TLS to the brokers (their SSL or SASL_SSL listener). The files are read and checked at start-up. */
  KAFKA_SSL: bool.default(false),
  KAFKA_SSL_CA_FILE: z.string().optional(),
  KAFKA_SSL_CERT_FILE: z.string().optional(),
  KAFKA_SSL_KEY_FILE: z.string().optional(),
  /** false: any broker certificate is accepted (no chain, no name check). */
  KAFKA_SSL_REJECT_UNAUTHORIZED: bool.default(true),
  /** false: the chain is checked but not that the certificate names the address dialled. */
  KAFKA_SSL_CHECK_HOSTNAME: bool.default(true),
  KAFKA_SASL_MECHANISM: z
    .string()
    .transform((v) => v.toLowerCase())
    .pipe(
      z.enum(["plain", "scram-sha-256", "scram-sha-512"], {
        message: "must be plain, scram-sha-256 or scram-sha-512",
      }),
    )
    .optional(),
  KAFKA_SASL_USERNAME: z.string().optional(),
  KAFKA_SASL_PASSWORD: z.string().optional(),
  /** A file holding the password (a mounted secret); one trailing line break is ignored. */
  KAFKA_SASL_PASSWORD_FILE: z.string().optional(),
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
  /** Ingest of an event whose type is not in the event-type catalog: accepted (allow) or a 400 (reject). */
  UNKNOWN_EVENT_TYPES: z.enum(["allow", "reject"], { message: "must be allow or reject" }).default("allow"),
  /** When set, GET /metrics needs `Authorization: Bearer <METRICS_TOKEN>`; unset leaves it open. */
  METRICS_TOKEN: z.string().min(16, "must be at least 16 characters").optional(),
  /**
   * OpenTelemetry: when set, spans (ingest, delivery attempts) are exported by OTLP/HTTP (JSON) to
   * `<endpoint>/v1/traces`; unset, tracing is off and its SDK is never loaded.
   */
  OTEL_EXPORTER_OTLP_ENDPOINT: z
    .url({ protocol: /^https?$/, message: "must be an http:// or https:// URL" })
    .optional(),
  OTEL_SERVICE_NAME: z.string().min(1).max(200).default("webhook-gateway"),
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
  /**
   * 5, like the Java producer's linger.ms since Kafka 4.0 (KIP-1030) and librdkafka's: at a steady 5,000
   * events/s it halves the produce requests against 2 and cut the CPU per event by about a fifth, for
   * 2 ms more at the median (bench/README.md, session 17).
   */
  BATCH_LINGER_MS: int(0, 1000).default(5),
  /**
   * true: a batch leaves before its linger runs out once every open HTTP connection waits for an answer
   * from Kafka, since nobody else could add to it. A client that sends an event and waits for the answer
   * before the next gets it in under a millisecond instead of after the whole linger (1 connection: 2,370
   * against 167 events/s; 16: 11.5k against 2.5k; bench/README.md, session 19). false: batches wait out
   * the linger (fewer, bigger produce requests when few clients send one event at a time).
   */
  BATCH_SEND_EARLY: bool.default(true),
  /**
   * true: the group-commit producer (record encoding and sending) runs on a thread of its own beside the
   * HTTP thread; false, the default: on the HTTP thread, which cost less CPU per event in every run since
   * ingest encodes its own records, and won by half on one core. bench/README.md "Issue 16" has both.
   */
  INGEST_PRODUCER_THREAD: bool.default(false),
  /**
   * How ingest's producer writes to Kafka: `own` encodes record batches and Produce requests itself and
   * sends them over kafkajs's connections (src/ingest/wire-sender.ts); `kafkajs` uses kafkajs's idempotent
   * producer. Same promises either way; bench/README.md "Issue 16" has both measured.
   */
  INGEST_SENDER: z.enum(["own", "kafkajs"], { message: "must be own or kafkajs" }).default("own"),
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

type Env = z.output<typeof EnvSchema>;

/** The name of every environment variable the gateway reads (docs and deployment files are checked against it). */
export const SETTING_NAMES: readonly string[] = Object.keys(EnvSchema.shape);

export type Config = Omit<
  Env,
  "CONFIG_TOPIC" | "OUTCOMES_TOPIC" | "IDEMPOTENCY_TOPIC" | "KAFKA_SASL_PASSWORD"
> & {
  CONFIG_TOPIC: string;
  OUTCOMES_TOPIC: string;
  IDEMPOTENCY_TOPIC: string;
  /** True when ADMIN_TOKEN was not set and one was generated for this run. */
  adminTokenGenerated: boolean;
  adminToken: string;
  /**
   * TLS and SASL of every Kafka client the gateway builds, files already read (plain data: delivery
   * threads get it with the rest of the Config). Empty: plaintext, no authentication.
   */
  kafkaSecurity: KafkaSecurity;
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
  const issues: string[] = [];
  const kafkaSecurity = kafkaSecurityOf(parsed.data, (name, message) => issues.push(`  ${name}: ${message}`));
  if (issues.length > 0) throw new ConfigError(`invalid configuration:\n${issues.join("\n")}`);
  // The password lives in kafkaSecurity only, so nothing that prints the settings can show it.
  const { KAFKA_SASL_PASSWORD: _password, ...settings } = parsed.data;
  const adminToken = settings.ADMIN_TOKEN ?? randomBytes(24).toString("base64url");
  const prefix = settings.CONSUMER_GROUP_PREFIX;
  return {
    ...settings,
    CONFIG_TOPIC: settings.CONFIG_TOPIC ?? `${prefix}.config`,
    OUTCOMES_TOPIC: settings.OUTCOMES_TOPIC ?? `${prefix}.outcomes`,
    IDEMPOTENCY_TOPIC: settings.IDEMPOTENCY_TOPIC ?? `${prefix}.idempotency`,
    adminToken,
    adminTokenGenerated: settings.ADMIN_TOKEN === undefined,
    kafkaSecurity,
  };
}

type Report = (name: string, message: string) => void;

/** A file's text, or a report naming the setting and why it cannot be read (never its content). */
function readSettingFile(name: string, path: string, report: Report): string | undefined {
  try {
    return readFileSync(path, "utf8");
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why =
      code === "ENOENT"
        ? "no such file"
        : code === "EACCES"
          ? "permission denied"
          : code === "EISDIR"
            ? "is a folder, not a file"
            : (code ?? "unreadable");
    report(name, `cannot read ${path}: ${why}`);
    return undefined;
  }
}

const PEM_CERTIFICATE = /-----BEGIN CERTIFICATE-----[\s\S]+?-----END CERTIFICATE-----/g;

/** The certificates of a PEM file, or a report if it holds none or one that does not parse. */
function pemCertificates(name: string, path: string, text: string, report: Report): X509Certificate[] {
  const blocks = text.match(PEM_CERTIFICATE) ?? [];
  try {
    const certs = blocks.map((block) => new X509Certificate(block));
    if (certs.length > 0) return certs;
  } catch {
    // Reported below, without the file's content.
  }
  report(name, `${path} holds no PEM certificate (-----BEGIN CERTIFICATE-----)`);
  return [];
}

function pemPrivateKey(name: string, path: string, text: string, report: Report): KeyObject | undefined {
  // PKCS#8 "ENCRYPTED PRIVATE KEY" or an OpenSSL traditional key with "Proc-Type: 4,ENCRYPTED".
  if (/-----BEGIN ENCRYPTED PRIVATE KEY-----|Proc-Type: *4, *ENCRYPTED/.test(text)) {
    report(
      name,
      `${path} is an encrypted private key; give the gateway an unencrypted one (e.g. openssl pkey -in <file> -out <new file>) on a volume only it can read`,
    );
    return undefined;
  }
  try {
    return createPrivateKey(text);
  } catch {
    report(name, `${path} holds no PEM private key (-----BEGIN PRIVATE KEY-----)`);
    return undefined;
  }
}

/** Cross-checks the Kafka TLS and SASL settings and reads their files. */
function kafkaSecurityOf(env: Env, report: Report): KafkaSecurity {
  const security: KafkaSecurity = {};
  const tlsFiles = (["KAFKA_SSL_CA_FILE", "KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE"] as const).filter(
    (name) => env[name] !== undefined,
  );
  if (!env.KAFKA_SSL) {
    for (const name of tlsFiles)
      report(name, "is set but KAFKA_SSL is not true: set KAFKA_SSL=true to use TLS");
  } else {
    const read = (name: (typeof tlsFiles)[number]) => {
      const path = env[name];
      return path === undefined ? undefined : { path, text: readSettingFile(name, path, report) };
    };
    const ca = read("KAFKA_SSL_CA_FILE");
    const cert = read("KAFKA_SSL_CERT_FILE");
    const key = read("KAFKA_SSL_KEY_FILE");
    if (ca?.text !== undefined) pemCertificates("KAFKA_SSL_CA_FILE", ca.path, ca.text, report);
    if ((cert === undefined) !== (key === undefined)) {
      const [set, unset] = cert
        ? ["KAFKA_SSL_CERT_FILE", "KAFKA_SSL_KEY_FILE"]
        : ["KAFKA_SSL_KEY_FILE", "KAFKA_SSL_CERT_FILE"];
      report(unset, `is needed with ${set}: a client certificate goes with its private key`);
    }
    const chain =
      cert?.text !== undefined ? pemCertificates("KAFKA_SSL_CERT_FILE", cert.path, cert.text, report) : [];
    const privateKey =
      key?.text !== undefined ? pemPrivateKey("KAFKA_SSL_KEY_FILE", key.path, key.text, report) : undefined;
    if (chain[0] && privateKey && !chain[0].checkPrivateKey(privateKey)) {
      report("KAFKA_SSL_KEY_FILE", `${key?.path} is not the private key of the certificate in ${cert?.path}`);
    }
    security.tls = {
      ca: ca?.text,
      cert: cert?.text,
      key: key?.text,
      rejectUnauthorized: env.KAFKA_SSL_REJECT_UNAUTHORIZED,
      checkHostname: env.KAFKA_SSL_CHECK_HOSTNAME,
    };
  }

  const mechanism: KafkaSaslMechanism | undefined = env.KAFKA_SASL_MECHANISM;
  const saslSet = (
    ["KAFKA_SASL_USERNAME", "KAFKA_SASL_PASSWORD", "KAFKA_SASL_PASSWORD_FILE"] as const
  ).filter((name) => env[name] !== undefined);
  if (!mechanism) {
    for (const name of saslSet) {
      report(name, "is set but KAFKA_SASL_MECHANISM is not: set it to plain, scram-sha-256 or scram-sha-512");
    }
  } else {
    if (env.KAFKA_SASL_PASSWORD !== undefined && env.KAFKA_SASL_PASSWORD_FILE !== undefined) {
      report(
        "KAFKA_SASL_PASSWORD_FILE",
        "set either KAFKA_SASL_PASSWORD or KAFKA_SASL_PASSWORD_FILE, not both",
      );
    }
    let password = env.KAFKA_SASL_PASSWORD;
    if (env.KAFKA_SASL_PASSWORD_FILE !== undefined) {
      const text = readSettingFile("KAFKA_SASL_PASSWORD_FILE", env.KAFKA_SASL_PASSWORD_FILE, report);
      if (text !== undefined) {
        password = text.replace(/\r?\n$/, "");
        if (password === "") report("KAFKA_SASL_PASSWORD_FILE", `${env.KAFKA_SASL_PASSWORD_FILE} is empty`);
      }
    }
    if (env.KAFKA_SASL_USERNAME === undefined) {
      report("KAFKA_SASL_USERNAME", `is needed with KAFKA_SASL_MECHANISM=${mechanism}`);
    }
    if (env.KAFKA_SASL_PASSWORD === undefined && env.KAFKA_SASL_PASSWORD_FILE === undefined) {
      report(
        "KAFKA_SASL_PASSWORD",
        `is needed with KAFKA_SASL_MECHANISM=${mechanism} (or KAFKA_SASL_PASSWORD_FILE)`,
      );
    }
    if (env.KAFKA_SASL_USERNAME !== undefined && password) {
      security.sasl = { mechanism, username: env.KAFKA_SASL_USERNAME, password };
    }
  }

  if (!env.KAFKA_BROKERS && (env.KAFKA_SSL || mechanism)) {
    report(
      "KAFKA_BROKERS",
      "is needed with KAFKA_SSL or KAFKA_SASL_MECHANISM: the embedded local broker is plaintext (for a local TLS+SASL broker run `npm run kafka -- --secure` and use the settings it prints)",
    );
  }
  return security;
}
