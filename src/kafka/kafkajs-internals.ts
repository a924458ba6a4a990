/**
 * The one door into kafkajs's private objects. KafkaLog (reads and offset writes kafkajs's public API lacks)
 * and the ingest's Produce path (src/ingest/wire-sender.ts) send single requests through a kafkajs Cluster
 * built by a `Kafka`'s own private factory, so they get its brokers, TLS, SASL, timeouts, version
 * negotiation and connections. Checked against kafkajs 2.2.4 (see node_modules/kafkajs/src); a kafkajs
 * without the factory fails at construction with a message naming the version found.
 */
import { createRequire } from "node:module";
import type { Kafka } from "kafkajs";

const require = createRequire(import.meta.url);

export const KAFKAJS_VERSION: string = (() => {
  try {
    return (require("kafkajs/package.json") as { version: string }).version;
  } catch {
    return "unknown";
  }
})();

const CREATE_CLUSTER = "private:Kafka:createCluster";

interface ClusterFactoryOptions {
  metadataMaxAge: number;
  allowAutoTopicCreation: boolean;
  maxInFlightRequests: number | null;
  instrumentationEmitter: null;
  isolationLevel: number;
}

/**
 * A kafkajs Cluster for exactly the client config of `kafka` (its brokers, ssl, sasl, timeouts, retry), typed
 * as the caller's own slice of it (`C`). `user` names the caller in the error when kafkajs lacks the factory.
 */
export function kafkajsCluster<C>(kafka: Kafka, user: string, isolationLevel: number): C {
  const symbol = Object.getOwnPropertySymbols(kafka).find((s) => s.description === CREATE_CLUSTER);
  const factory = symbol ? (kafka as unknown as Record<symbol, unknown>)[symbol] : undefined;
  if (typeof factory !== "function") {
    throw new Error(
      `${user} needs kafkajs's private cluster factory (Symbol '${CREATE_CLUSTER}'), which kafkajs ` +
        `${KAFKAJS_VERSION} does not have; it was written against kafkajs 2.2.4`,
    );
  }
  const options: ClusterFactoryOptions = {
    metadataMaxAge: 300_000,
    allowAutoTopicCreation: false,
    maxInFlightRequests: null,
    instrumentationEmitter: null,
    isolationLevel,
  };
  return (factory as (opts: ClusterFactoryOptions) => C)(options);
}

/** kafkajs error classes of a request that reached no usable broker or got no answer: worth trying again. */
export const KAFKAJS_CONNECTION_ERRORS: ReadonlySet<string> = new Set([
  "KafkaJSConnectionError",
  "KafkaJSConnectionClosedError",
  "KafkaJSBrokerNotFound",
  "KafkaJSRequestTimeoutError",
]);

interface KafkaErrorCode {
  type: string;
  code: number;
  retriable: boolean;
  message: string;
}

/** Kafka's protocol error codes as kafkajs lists them (name, whether a retry can succeed, description). */
export const KAFKA_ERROR_CODES: ReadonlyMap<number, KafkaErrorCode> = (() => {
  try {
    const { errorCodes } = require("kafkajs/src/protocol/error") as { errorCodes: KafkaErrorCode[] };
    return new Map(errorCodes.map((e) => [e.code, e]));
  } catch {
    return new Map();
  }
})();
