import { randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";
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

export { freePort } from "../src/kafka/runner.ts";

/** The fields of an attempt in the API, sorted: nothing more (no request headers, no secrets). */
export const ATTEMPT_FIELDS = [
  "attemptNumber",
  "destinationId",
  "durationMs",
  "error",
  "eventId",
  "outcome",
  "responseSnippet",
  "startedAt",
  "statusCode",
  "userID",
];

/** Polls `check` (sync or async) every `intervalMs` until it is true; throws naming `what` after `timeoutMs`. */
export async function waitUntil(
  check: () => boolean | Promise<boolean>,
  what: string,
  timeoutMs = 60_000,
  intervalMs = 100,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(intervalMs);
  }
}

/**
 * Runs every cleanup step even when earlier ones fail (a failed step must not leave brokers or gateways
 * running), then throws the first error. Steps that are undefined are skipped.
 */
export async function cleanUp(...steps: Array<(() => unknown) | undefined>): Promise<void> {
  const errors: unknown[] = [];
  for (const step of steps) {
    try {
      await step?.();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}
