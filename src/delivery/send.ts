import type { KeyObject } from "node:crypto";
import type { Dispatcher } from "undici";
import { request } from "undici";
import { signWebhook } from "./sign.ts";

/** At most this much of a response body is read and stored; the rest is dropped unread. */
export const SNIPPET_BYTES = 4096;
export const USER_AGENT = "webhook-gateway/0.1 (+https://www.standardwebhooks.com/)";

/** What one HTTP attempt did, in the shape the attempts table records. */
export interface AttemptResult {
  /** "success": a 2xx. "gone": 410, stop for good. "retry": anything else. */
  verdict: "success" | "gone" | "retry";
  statusCode: number | null;
  durationMs: number;
  error: string | null;
  responseSnippet: string | null;
  /** The receiver's Retry-After (429/503), in ms, unclamped. */
  retryAfterMs: number | null;
}

export interface SendTarget {
  url: string;
  headers: Record<string, string>;
  timeoutMs: number;
  key: KeyObject;
  dispatcher: Dispatcher;
  /** Aborts the attempt from outside (the worker is stopping and its grace period ran out). */
  abort?: AbortSignal;
}

/** Parses Retry-After: delay-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | null {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return null;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim()) * 1000;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

/**
 * Reads at most SNIPPET_BYTES of a body, then drops the rest without reading it (a 50 MiB body costs 4 KiB).
 * A body that stalls past the deadline or breaks off yields what arrived and `failure` (the error).
 */
async function readSnippet(
  body: Dispatcher.ResponseData["body"],
): Promise<{ text: string; failed: boolean; failure: unknown }> {
  const chunks: Buffer[] = [];
  let size = 0;
  let failed = false;
  let failure: unknown;
  try {
    for await (const chunk of body as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size >= SNIPPET_BYTES) {
        body.destroy();
        break;
      }
    }
  } catch (err) {
    failed = true;
    failure = err;
  }
  const text = Buffer.concat(chunks, Math.min(size, SNIPPET_BYTES))
    .subarray(0, SNIPPET_BYTES)
    .toString("utf8");
  return { text, failed, failure };
}

function describe(err: unknown, timedOut: boolean, timeoutMs: number): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e?.code ?? e?.cause?.code;
  if (timedOut || code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT") {
    return `timed out after ${timeoutMs} ms`;
  }
  const message = e?.cause?.message ?? e?.message ?? String(err);
  return code ? `${code}: ${message}` : message;
}

/**
 * One signed POST of an event body. Never throws: every outcome, network errors and timeouts included,
 * comes back as an AttemptResult. The whole attempt (connect, headers, snippet) is bounded by timeoutMs.
 */
export async function sendWebhook(target: SendTarget, eventId: string, body: string): Promise<AttemptResult> {
  const started = performance.now();
  const timestamp = Math.floor(Date.now() / 1000);
  const controller = new AbortController();
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    controller.abort();
  }, target.timeoutMs);
  const onAbort = () => controller.abort();
  if (target.abort?.aborted) controller.abort();
  else target.abort?.addEventListener("abort", onAbort, { once: true });
  const elapsed = () => Math.round(performance.now() - started);
  try {
    const res = await request(target.url, {
      method: "POST",
      dispatcher: target.dispatcher,
      signal: controller.signal,
      // Our own timer (above) bounds the whole attempt and names the error; undici's timers are only a
      // backstop, set later so the two never race to describe the same timeout differently.
      headersTimeout: target.timeoutMs + 1000,
      bodyTimeout: target.timeoutMs + 1000,
      headers: {
        ...target.headers,
        "content-type": "application/json",
        "user-agent": USER_AGENT,
        "webhook-id": eventId,
        "webhook-timestamp": String(timestamp),
        "webhook-signature": signWebhook(target.key, eventId, timestamp, body),
      },
      body,
    });
    const snippet = await readSnippet(res.body);
    const status = res.statusCode;
    const base = { statusCode: status, durationMs: elapsed(), responseSnippet: snippet.text || null };
    if (status >= 200 && status < 300) {
      if (!snippet.failed) return { ...base, verdict: "success", error: null, retryAfterMs: null };
      // A 2xx whose body (its first 4 KiB or its end) does not arrive within the deadline — a slow drip —
      // or breaks off is no success; the row still keeps the status the receiver sent.
      const why = target.abort?.aborted
        ? "aborted: the worker is stopping"
        : describe(snippet.failure, timedOut, target.timeoutMs);
      return {
        ...base,
        verdict: "retry",
        error: `HTTP ${status}, then the body failed: ${why}`,
        retryAfterMs: null,
      };
    }
    if (status === 410)
      return {
        ...base,
        verdict: "gone",
        error: "410 Gone: the receiver asked us to stop",
        retryAfterMs: null,
      };
    const retryAfterMs =
      status === 429 || status === 503 ? parseRetryAfter(res.headers["retry-after"]) : null;
    const error =
      status >= 300 && status < 400
        ? `redirect ${status} to ${String(res.headers.location ?? "(no location)")} not followed`
        : `HTTP ${status}`;
    return { ...base, verdict: "retry", error, retryAfterMs };
  } catch (err) {
    return {
      verdict: "retry",
      statusCode: null,
      durationMs: elapsed(),
      error: target.abort?.aborted
        ? "aborted: the worker is stopping"
        : describe(err, timedOut, target.timeoutMs),
      responseSnippet: null,
      retryAfterMs: null,
    };
  } finally {
    clearTimeout(timer);
    target.abort?.removeEventListener("abort", onAbort);
  }
}
