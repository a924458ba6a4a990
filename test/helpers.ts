import { randomBytes } from "node:crypto";
import { createKafka } from "../src/kafka/client.ts";

/** Brokers of the run (global setup sets KAFKA_BROKERS). */
export function testBrokers(): string[] {
  const brokers = process.env.KAFKA_BROKERS;
  if (!brokers) throw new Error("KAFKA_BROKERS is not set: run tests through `npm test`");
  return brokers.split(",");
}

/** A name no other test uses: topics, group ids, database files. */
export function uniqueName(prefix: string): string {
  return `${prefix}-${Date.now().toString(36)}-${randomBytes(4).toString("hex")}`;
}

export function createTestKafka() {
  return createKafka({ brokers: testBrokers(), clientId: uniqueName("test") });
}
