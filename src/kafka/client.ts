import { Kafka, type KafkaConfig, type logCreator, logLevel } from "kafkajs";
import type { Logger } from "../log.ts";

// kafkajs 2.2.4 arms timers with negative durations in its request queue; Node >= 23 warns about each
// one (TimeoutNegativeWarning). The timers still fire at once, as kafkajs expects, so the warning is
// noise: drop that one kind and let every other warning through.
const originalEmitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const name = typeof warning === "object" ? warning.name : typeof rest[0] === "string" ? rest[0] : "";
  if (name === "TimeoutNegativeWarning") return;
  (originalEmitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

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

export interface KafkaClientOptions {
  brokers: string[];
  clientId: string;
  logger?: Logger;
  /** Overrides for tests and fault scenarios (timeouts, retry). */
  overrides?: Partial<KafkaConfig>;
}

/** Builds the one kafkajs client a process uses; everything Kafka goes through src/kafka and src/ingest. */
export function createKafka(opts: KafkaClientOptions): Kafka {
  return new Kafka({
    clientId: opts.clientId,
    brokers: opts.brokers,
    connectionTimeout: 3000,
    requestTimeout: 30_000,
    logLevel: opts.logger ? logLevel.WARN : logLevel.NOTHING,
    logCreator: opts.logger ? pinoLogCreator(opts.logger.child({ component: "kafkajs" })) : undefined,
    retry: { initialRetryTime: 100, maxRetryTime: 2000, retries: 5 },
    ...opts.overrides,
  });
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
