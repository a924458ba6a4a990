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

/** The slice of kafkajs's RequestQueue (network/requestQueue/index.js) the fix below touches. */
interface RequestQueueInternals {
  pending: unknown[];
  throttledUntil: number;
  throttleCheckTimeoutId: NodeJS.Timeout | null;
  checkPendingRequests(): void;
  scheduleCheckPendingRequests(): void;
}

/** kafkajs's interval for re-checking queued requests (CHECK_PENDING_REQUESTS_INTERVAL). */
const CHECK_PENDING_MS = 10;

/**
 * Stops kafkajs 2.2.4's request queues from spinning. After every check of its queued requests a queue arms
 * a timer for the next check, also when nothing is queued, with a delay of `throttledUntil - Date.now()`:
 * `-1 - Date.now()` until a broker has throttled the connection, so Node fires it after 1 ms and the check
 * re-arms it. Every connection thus ran a 1 ms timer loop for as long as it lived (tulios/kafkajs#1556,
 * #1704; fixes proposed in #1667 and #1768, none released). An idle gateway woke about 1,700 times a
 * second and used 4–5 % of a core doing it (bench/README.md, session 13).
 *
 * The replacement arms the timer only when something waits for it: a queued request (checked again when a
 * throttle ends, else every 10 ms, as before) or a throttle still running. With nothing queued nothing is
 * lost: push() checks at once and arms the timer when it has to queue, and an answered or timed-out
 * request checks the queue again (fulfillRequest, the socket request's timeout). Idempotent.
 */
export function stopRequestQueueSpin(): void {
  let RequestQueue: { prototype: RequestQueueInternals };
  try {
    RequestQueue = require("kafkajs/src/network/requestQueue/index.js") as typeof RequestQueue;
  } catch (err) {
    throw new Error(
      `kafkajs ${KAFKAJS_VERSION} has no network/requestQueue module; the gateway was written against 2.2.4`,
      { cause: err },
    );
  }
  const proto = RequestQueue.prototype;
  if (
    typeof proto.scheduleCheckPendingRequests !== "function" ||
    typeof proto.checkPendingRequests !== "function"
  ) {
    throw new Error(
      `kafkajs ${KAFKAJS_VERSION}'s RequestQueue lacks scheduleCheckPendingRequests or checkPendingRequests; the gateway was written against 2.2.4`,
    );
  }
  proto.scheduleCheckPendingRequests = function scheduleCheckPendingRequests(this: RequestQueueInternals) {
    if (this.throttleCheckTimeoutId) return;
    const throttledFor = this.throttledUntil - Date.now();
    if (this.pending.length === 0 && throttledFor <= 0) return;
    const delay = throttledFor > 0 ? throttledFor : CHECK_PENDING_MS;
    this.throttleCheckTimeoutId = setTimeout(() => {
      this.throttleCheckTimeoutId = null;
      this.checkPendingRequests();
    }, delay);
  };
}
