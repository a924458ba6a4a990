/**
 * node:test global setup: one local Kafka broker for the whole run, unless KAFKA_BROKERS points at one.
 * Test files (separate processes) inherit KAFKA_BROKERS from this process's environment.
 */
import { MissingToolError } from "../src/kafka/jars.ts";
import { type LocalKafka, startLocalKafka } from "../src/kafka/runner.ts";

let kafka: LocalKafka | undefined;

export async function globalSetup(): Promise<void> {
  if (process.env.KAFKA_BROKERS) return;
  const started = Date.now();
  try {
    kafka = await startLocalKafka({ log: (line) => process.stderr.write(`${line}\n`) });
  } catch (err) {
    if (!(err instanceof MissingToolError)) throw err;
    // No Java or Maven: one sentence saying what to install (or to set KAFKA_BROKERS), not a stack trace.
    process.stderr.write(`${err.message}\n`);
    process.exit(1);
  }
  process.env.KAFKA_BROKERS = kafka.brokers.join(",");
  process.stderr.write(`test broker ${process.env.KAFKA_BROKERS} up in ${Date.now() - started} ms\n`);
}

export async function globalTeardown(): Promise<void> {
  await kafka?.stop();
}
