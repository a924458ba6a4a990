import type { Options as RetryOptions } from "p-retry";
import type { AttemptResult } from "./send.ts";

/** The settings of a destination that decide retries. */
export interface RetryPolicy {
  maxAttempts: number;
  backoffBaseMs: number;
  backoffMaxMs: number;
}

/** An attempt's outcome carried through p-retry as an error; the worker reacts to its class. */
export abstract class AttemptError extends Error {
  readonly result: AttemptResult;
  constructor(result: AttemptResult, fallback: string) {
    super(result.error ?? fallback);
    this.result = result;
  }
}

/** The last allowed attempt failed: dead-letter the event. */
export class ExhaustedError extends AttemptError {
  override name = "ExhaustedError";
  constructor(result: AttemptResult) {
    super(result, "attempts exhausted");
  }
}

/** The receiver answered 410 Gone: dead-letter the event and disable the destination. */
export class GoneError extends AttemptError {
  override name = "GoneError";
  constructor(result: AttemptResult) {
    super(result, "410 Gone");
  }
}

/** A failed attempt that will be retried; the receiver's Retry-After rides along. */
export class RetryableDeliveryError extends AttemptError {
  override name = "RetryableDeliveryError";
  constructor(result: AttemptResult) {
    super(result, "delivery failed");
  }
}

/** The delivery was stopped (worker stopping, partition handed over): unfinished, redelivered later. */
export class StoppedError extends Error {
  override name = "StoppedError";
}

/**
 * The verdict on one attempt: nothing more to do (`success`), or the error that ends the event
 * (Gone/Exhausted) or asks for another attempt (Retryable). `attemptsSoFar` includes this attempt.
 * An attempt our own hard stop cut off (`cutByUs`) is not the receiver's failure: it never exhausts.
 */
export function verdictOf(
  result: AttemptResult,
  attemptsSoFar: number,
  policy: RetryPolicy,
  cutByUs = false,
): "success" | AttemptError {
  if (result.verdict === "success") return "success";
  if (result.verdict === "gone") return new GoneError(result);
  if (attemptsSoFar >= policy.maxAttempts && !cutByUs) return new ExhaustedError(result);
  return new RetryableDeliveryError(result);
}

/**
 * p-retry's options for a destination: exponential backoff with full jitter between base·2^(n-1) and twice
 * that, capped at backoffMaxMs. The budget is maxAttempts, checked by `verdictOf` (it may change via PATCH),
 * so p-retry itself retries forever. `policy` is read at each use: a PATCH applies to the next wait.
 */
export function backoffOptions(
  policy: () => RetryPolicy,
): Pick<RetryOptions, "retries" | "factor" | "minTimeout" | "maxTimeout" | "randomize"> {
  return {
    retries: Number.POSITIVE_INFINITY,
    factor: 2,
    minTimeout: policy().backoffBaseMs,
    maxTimeout: policy().backoffMaxMs,
    randomize: true,
  };
}

/**
 * How much longer than p-retry's own delay to wait before the next attempt: a 429/503 with Retry-After is
 * honoured, clamped to backoffMaxMs, when it asks for more than the backoff.
 */
export function retryAfterExtraMs(error: unknown, backoffDelayMs: number, policy: RetryPolicy): number {
  const wanted = error instanceof RetryableDeliveryError ? error.result.retryAfterMs : null;
  if (wanted === null) return 0;
  return Math.max(0, Math.min(wanted, policy.backoffMaxMs) - backoffDelayMs);
}
