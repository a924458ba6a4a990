import type { ConnectionOptions } from "node:tls";
import { Kafka, type KafkaConfig, type logCreator, logLevel, type SASLOptions } from "kafkajs";
import type { Logger } from "../log.ts";
import { stopRequestQueueSpin } from "./kafkajs-internals.ts";

// Before any client exists: kafkajs's request queues would otherwise each spin a 1 ms timer loop.
stopRequestQueueSpin();

const LEVELS: Record<number, "error" | "warn" | "info" | "debug"> = {
  [logLevel.ERROR]: "error",
  [logLevel.WARN]: "warn",
  [logLevel.INFO]: "info",
  [logLevel.DEBUG]: "debug",
};

/** Routes kafkajs's own logs into pino, under `component: "kafkajs"`. */
function pinoLogCreator(logger: Logger): logCreator {
  return () =>
    ({ level, log }) => {
      const { message, ...extra } = log;
      const method = LEVELS[level] ?? "info";
      logger[method === "error" ? "warn" : method]({ component: "kafkajs", ...extra }, message);
    };
}

/** TLS to the brokers. PEM text, not file names: Config reads and checks the files once, at start-up. */
export interface KafkaTls {
  /** CA certificate(s) the brokers' certificates must chain to; absent: Node's built-in CA list. */
  ca?: string;
  /** Client certificate (chain) and its unencrypted private key, for brokers that ask for one (mTLS). */
  cert?: string;
  key?: string;
  /** false accepts any broker certificate (no chain and no name check): for a throwaway set-up only. */
  rejectUnauthorized: boolean;
  /** false still checks the chain but not that the certificate names the broker's address. */
  checkHostname: boolean;
}

export type KafkaSaslMechanism = "plain" | "scram-sha-256" | "scram-sha-512";

export interface KafkaSasl {
  mechanism: KafkaSaslMechanism;
  username: string;
  password: string;
}

/**
 * How a client authenticates to the brokers and encrypts its traffic. Plain data (no functions), so the
 * Config that holds it can be handed to delivery threads as it is.
 */
export interface KafkaSecurity {
  tls?: KafkaTls;
  sasl?: KafkaSasl;
}

export interface KafkaClientOptions {
  brokers: string[];
  clientId: string;
  logger?: Logger;
  /** TLS and SASL; every client of a gateway gets the same (Config.kafkaSecurity). Absent: plaintext. */
  security?: KafkaSecurity;
  /** Overrides for tests and fault scenarios (timeouts, retry). */
  overrides?: Partial<KafkaConfig>;
}

/** Node TLS options of a KafkaTls (kafkajs passes them to tls.connect with the broker's host as servername). */
export function tlsOptions(tls: KafkaTls): ConnectionOptions {
  return {
    ...(tls.ca ? { ca: [tls.ca] } : {}),
    ...(tls.cert ? { cert: tls.cert } : {}),
    ...(tls.key ? { key: tls.key } : {}),
    rejectUnauthorized: tls.rejectUnauthorized,
    ...(tls.checkHostname ? {} : { checkServerIdentity: () => undefined }),
  };
}

function saslOptions(sasl: KafkaSasl): SASLOptions {
  return { mechanism: sasl.mechanism, username: sasl.username, password: sasl.password } as SASLOptions;
}

/** The security each client was built with, for describeKafkaError. */
const securityOf = new WeakMap<Kafka, KafkaSecurity>();

/** Builds the one kafkajs client a process uses; everything Kafka goes through src/kafka and src/ingest. */
export function createKafka(opts: KafkaClientOptions): Kafka {
  const { tls, sasl } = opts.security ?? {};
  const kafka = new Kafka({
    clientId: opts.clientId,
    brokers: opts.brokers,
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    ...(tls ? { ssl: tlsOptions(tls) } : {}),
    ...(sasl ? { sasl: saslOptions(sasl) } : {}),
    logLevel: opts.logger ? logLevel.WARN : logLevel.NOTHING,
    logCreator: opts.logger ? pinoLogCreator(opts.logger.child({ component: "kafkajs" })) : undefined,
    retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 5 },
    ...opts.overrides,
  });
  securityOf.set(kafka, opts.security ?? {});
  return kafka;
}

/** Node's codes for a certificate chain that does not lead to a trusted CA. */
const UNTRUSTED_CERTIFICATE = new Set([
  "UNABLE_TO_VERIFY_LEAF_SIGNATURE",
  "UNABLE_TO_GET_ISSUER_CERT",
  "UNABLE_TO_GET_ISSUER_CERT_LOCALLY",
  "SELF_SIGNED_CERT_IN_CHAIN",
  "DEPTH_ZERO_SELF_SIGNED_CERT",
  "CERT_SIGNATURE_FAILURE",
]);

/** TLS alerts of a server that refused the client's certificate, or wanted one and got none. */
const REFUSED_CLIENT_CERTIFICATE =
  /ALERT_(BAD_CERTIFICATE|CERTIFICATE_UNKNOWN|CERTIFICATE_REQUIRED|UNKNOWN_CA)|alert (bad certificate|certificate unknown|certificate required|unknown ca)/;

/**
 * An error of `kafka`'s, as one line for the log: its message and, when the refusal looks like it comes
 * from the TLS or SASL settings (an untrusted certificate, failed authentication, a broker that hangs up
 * on a client without TLS or SASL), which setting to look at. kafkajs's own messages ("Closed connection")
 * do not say.
 */
export function describeKafkaError(kafka: Kafka, err: unknown): string {
  const chain: Array<{ name?: string; message?: string; code?: string }> = [];
  for (let e = err as { cause?: unknown } | undefined; e && chain.length < 5; e = e.cause as typeof e) {
    chain.push(e as (typeof chain)[number]);
  }
  const message = (err instanceof Error ? err.message : String(err)).trim();
  const security = securityOf.get(kafka) ?? {};
  const has = (test: (e: (typeof chain)[number]) => boolean) => chain.some(test);
  let hint = "";
  if (has((e) => e.name === "KafkaJSSASLAuthenticationError")) {
    hint = "check KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD";
  } else if (has((e) => UNTRUSTED_CERTIFICATE.has(e.code ?? ""))) {
    hint =
      "the broker's certificate is not signed by a CA this client trusts: set KAFKA_SSL_CA_FILE to the CA that signed it";
  } else if (has((e) => REFUSED_CLIENT_CERTIFICATE.test(`${e.code ?? ""} ${e.message ?? ""}`))) {
    hint = security.tls?.cert
      ? "the broker refused this client's certificate: KAFKA_SSL_CERT_FILE must be signed by a CA the broker trusts"
      : "the broker wants a client certificate: set KAFKA_SSL_CERT_FILE and KAFKA_SSL_KEY_FILE";
  } else if (has((e) => e.code === "ERR_TLS_CERT_ALTNAME_INVALID")) {
    hint =
      "the broker's certificate does not name the address dialled: use a host name it lists in KAFKA_BROKERS (or KAFKA_SSL_CHECK_HOSTNAME=false)";
  } else if (
    security.tls &&
    has((e) => /before secure TLS connection was established/.test(e.message ?? ""))
  ) {
    hint =
      "the broker hung up during the TLS handshake: if its listener is PLAINTEXT or SASL_PLAINTEXT, unset KAFKA_SSL";
  } else if (has((e) => e.name === "KafkaJSConnectionClosedError")) {
    if (!security.tls) {
      hint =
        "the broker closed the connection before answering: if its listener is SSL or SASL_SSL, set KAFKA_SSL=true";
    } else if (!security.sasl) {
      hint =
        "the broker closed the connection before answering: if its listener is SASL_SSL, set KAFKA_SASL_MECHANISM, KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD";
    }
  }
  return hint ? `${message} (${hint})` : message;
}

/**
 * Readiness probe: one admin connection kept open and asked for the cluster's brokers, with a deadline
 * so a hung broker makes /readyz answer 503 instead of hanging.
 */
export function createKafkaProbe(kafka: Kafka) {
  const admin = kafka.admin({ retry: { retries: 0 } });
  let connected = false;
  return {
    async check(timeoutMs = 2000): Promise<boolean> {
      let timer: NodeJS.Timeout | undefined;
      const deadline = new Promise<false>((done) => {
        timer = setTimeout(() => done(false), timeoutMs);
      });
      const probe = (async () => {
        if (!connected) {
          await admin.connect();
          connected = true;
        }
        const { brokers } = await admin.describeCluster();
        return brokers.length > 0;
      })().catch(() => {
        connected = false;
        admin.disconnect().catch(() => {});
        return false;
      });
      try {
        return await Promise.race([probe, deadline]);
      } finally {
        clearTimeout(timer);
      }
    },
    async close(): Promise<void> {
      await admin.disconnect().catch(() => {});
    },
  };
}
