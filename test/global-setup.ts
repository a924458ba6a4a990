/**
 * node:test global setup: one local Kafka broker for the whole run, unless KAFKA_BROKERS points at one.
 * Test files (separate processes) inherit KAFKA_BROKERS from this process's environment.
 */
import { type LocalKafka, startLocalKafka } from "../src/kafka/runner.ts";

let kafka: LocalKafka | undefined;

export async function globalSetup(): Promise<void> {
  if (process.env.KAFKA_BROKERS) return;
  const started = Date.now();
  kafka = await startLocalKafka({ log: (line) => process.stderr.write(`${line}\n`) });
  process.env.KAFKA_BROKERS = kafka.brokers.join(",");
  process.stderr.write(`test broker ${process.env.KAFKA_BROKERS} up in ${Date.now() - started} ms\n`);
}

export async function globalTeardown(): Promise<void> {
  await kafka?.stop();
}
