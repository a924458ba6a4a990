import type { KeyObject } from "node:crypto";
import type { IncomingHttpHeaders } from "node:http";
import type { Dispatcher } from "undici";
import { signWebhook } from "./sign.ts";

/** At most this much of a response body is stored. */
export const SNIPPET_BYTES = 4096;
/**
 * A body that says (content-length) it is at most this long is read to its end, so the keep-alive
 * connection is reused; a longer or unannounced one is cut off after the snippet, connection and all.
 */
export const DRAIN_BYTES = 64 * 1024;
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

/**
 * Where and how a destination's attempts go, derived once per destination (and again when it changes),
 * not per request: the URL split into origin and path, and the request headers that are the same on every
 * attempt as undici's flat `[name, value, …]` list.
 */
export interface SendTarget {
  origin: string;
  path: string;
  headers: string[];
  timeoutMs: number;
  key: KeyObject;
  /**
   * The secret a rotation replaced, signing beside `key` until `until` (Unix ms): receivers that still
   * hold the old secret verify the second signature of `webhook-signature`.
   */
  previous?: { key: KeyObject; until: number };
  dispatcher: Dispatcher;
  /** Attempts in flight, so a stopping worker can cut them off (see `abortAttempts`). */
  inFlight: Set<Attempt>;
}

export function sendTarget(
  destination: { url: string; headers: Record<string, string>; timeoutMs: number },
  key: KeyObject,
  dispatcher: Dispatcher,
  inFlight: Set<Attempt> = new Set(),
): SendTarget {
  const url = new URL(destination.url);
  // Reserved names (content-type, user-agent, webhook-*) are refused when a destination is saved.
  const headers: string[] = [];
  for (const [name, value] of Object.entries(destination.headers)) headers.push(name, value);
  headers.push("content-type", "application/json", "user-agent", USER_AGENT);
  return {
    origin: url.origin,
    path: url.search ? `${url.pathname}${url.search}` : url.pathname,
    headers,
    timeoutMs: destination.timeoutMs,
    key,
    dispatcher,
    inFlight,
  };
}

/** Parses Retry-After: delay-seconds or an HTTP-date. */
export function parseRetryAfter(value: string | string[] | undefined, now = Date.now()): number | null {
  const raw = Array.isArray(value) ? value[0] : value;
  if (!raw) return null;
  if (/^\d+$/.test(raw.trim())) return Number(raw.trim()) * 1000;
  const at = Date.parse(raw);
  return Number.isNaN(at) ? null : Math.max(0, at - now);
}

function describe(err: unknown, timeoutMs: number): string {
  const e = err as { code?: string; message?: string; cause?: { code?: string; message?: string } };
  const code = e?.code ?? e?.cause?.code;
  if (code === "UND_ERR_HEADERS_TIMEOUT" || code === "UND_ERR_BODY_TIMEOUT")
    return `timed out after ${timeoutMs} ms`;
  const message = e?.cause?.message ?? e?.message ?? String(err);
  return code ? `${code}: ${message}` : message;
}

/** Why we cut an attempt off ourselves; handed to undici so it drops the connection. */
class AttemptCut extends Error {
  override name = "AttemptCut";
}

/**
 * One HTTP attempt as an undici dispatch handler: the status, the headers and at most SNIPPET_BYTES of the
 * body, then one AttemptResult. No response stream, async iterator or AbortSignal per request — through
 * `request()` a signed POST cost 65 µs of CPU, this way 41 µs (bench/README.md) — and the whole
 * attempt (queueing for a connection, connect, headers, snippet) is bounded by one timer.
 */
export class Attempt implements Dispatcher.DispatchHandler {
  #target: SendTarget;
  #resolve: (result: AttemptResult) => void;
  #started = performance.now();
  #timer: NodeJS.Timeout;
  #controller: Dispatcher.DispatchController | null = null;
  /** Set when we cut the attempt off before undici handed us its controller. */
  #cutBeforeStart: AttemptCut | null = null;
  #done = false;
  #status = 0;
  #headers: IncomingHttpHeaders | null = null;
  #chunks: Buffer[] = [];
  #size = 0;
  #readToEnd = false;

  constructor(target: SendTarget, resolve: (result: AttemptResult) => void) {
    this.#target = target;
    this.#resolve = resolve;
    this.#timer = setTimeout(() => this.cut(`timed out after ${target.timeoutMs} ms`), target.timeoutMs);
    target.inFlight.add(this);
  }

  /** Ends the attempt now with `why` as its error, and drops its request or connection. */
  cut(why: string): void {
    if (this.#done) return;
    const reason = new AttemptCut(why);
    this.#finish(reason);
    if (this.#controller) this.#controller.abort(reason);
    else this.#cutBeforeStart = reason;
  }

  onRequestStart(controller: Dispatcher.DispatchController): void {
    this.#controller = controller;
    // A request queued for a connection may be dispatched in the same turn its deadline passed, before its
    // timer's callback ran (timers due in a later millisecond wait for the next timers phase): cut it here.
    if (!this.#cutBeforeStart && performance.now() - this.#started >= this.#target.timeoutMs) {
      this.cut(`timed out after ${this.#target.timeoutMs} ms`);
      return;
    }
    if (this.#cutBeforeStart) controller.abort(this.#cutBeforeStart);
  }

  onResponseStart(
    _controller: Dispatcher.DispatchController,
    statusCode: number,
    headers: IncomingHttpHeaders,
  ): void {
    // An interim 1xx (103 Early Hints, 102 Processing) is followed by the real answer: wait for that one.
    if (statusCode < 200) return;
    this.#status = statusCode;
    this.#headers = headers;
    const length = Number(headers["content-length"]);
    this.#readToEnd = Number.isInteger(length) && length <= DRAIN_BYTES;
  }

  onResponseData(controller: Dispatcher.DispatchController, chunk: Buffer): void {
    if (this.#done) return;
    if (this.#size < SNIPPET_BYTES) {
      this.#chunks.push(
        chunk.length <= SNIPPET_BYTES - this.#size ? chunk : chunk.subarray(0, SNIPPET_BYTES - this.#size),
      );
    }
    this.#size += chunk.length;
    if (this.#size >= SNIPPET_BYTES && !this.#readToEnd) {
      // A 50 MiB body costs 4 KiB: the attempt is decided, the rest is dropped with the connection.
      this.#finish(null);
      controller.abort(new AttemptCut("response snippet complete"));
    }
  }

  onResponseEnd(): void {
    this.#finish(null);
  }

  onResponseError(_controller: Dispatcher.DispatchController | null, err: Error): void {
    this.#finish(err);
  }

  #finish(failure: Error | null): void {
    if (this.#done) return;
    this.#done = true;
    clearTimeout(this.#timer);
    this.#target.inFlight.delete(this);
    const durationMs = Math.round(performance.now() - this.#started);
    const why =
      failure === null
        ? null
        : failure instanceof AttemptCut
          ? failure.message
          : describe(failure, this.#target.timeoutMs);
    const status = this.#status;
    if (status === 0) {
      this.#resolve({
        verdict: "retry",
        statusCode: null,
        durationMs,
        error: why,
        responseSnippet: null,
        retryAfterMs: null,
      });
      return;
    }
    const size = Math.min(this.#size, SNIPPET_BYTES);
    const responseSnippet = size > 0 ? Buffer.concat(this.#chunks, size).toString("utf8") : null;
    this.#chunks = [];
    const base = { statusCode: status, durationMs, responseSnippet };
    if (status >= 200 && status < 300) {
      // A 2xx whose body (its first 4 KiB or its end) does not arrive within the deadline — a slow drip —
      // or breaks off is no success; the row still keeps the status the receiver sent.
      this.#resolve(
        why === null
          ? { ...base, verdict: "success", error: null, retryAfterMs: null }
          : {
              ...base,
              verdict: "retry",
              error: `HTTP ${status}, then the body failed: ${why}`,
              retryAfterMs: null,
            },
      );
      return;
    }
    if (status === 410) {
      this.#resolve({
        ...base,
        verdict: "gone",
        error: "410 Gone: the receiver asked us to stop",
        retryAfterMs: null,
      });
      return;
    }
    const headers = this.#headers ?? {};
    const retryAfterMs = status === 429 || status === 503 ? parseRetryAfter(headers["retry-after"]) : null;
    const error =
      status >= 300 && status < 400
        ? `redirect ${status} to ${String(headers.location ?? "(no location)")} not followed`
        : `HTTP ${status}`;
    this.#resolve({ ...base, verdict: "retry", error, retryAfterMs });
  }
}

/** Cuts off every attempt in flight (a stopping worker whose grace period ran out). */
export function abortAttempts(inFlight: Set<Attempt>, why: string): void {
  for (const attempt of [...inFlight]) attempt.cut(why);
}

/** `v1,<new>`, or `v1,<new> v1,<old>` while a rotated-out secret is in its grace period. */
function signatures(target: SendTarget, eventId: string, timestamp: number, body: string): string {
  const current = signWebhook(target.key, eventId, timestamp, body);
  const previous = target.previous;
  if (previous === undefined || Date.now() >= previous.until) return current;
  return `${current} ${signWebhook(previous.key, eventId, timestamp, body)}`;
}

/**
 * One signed POST of an event body. Never rejects: every outcome, network errors and timeouts included,
 * comes back as an AttemptResult. The whole attempt (connect, headers, snippet) is bounded by timeoutMs.
 * `traceparent` (tracing on): the attempt span's W3C context, sent as the `traceparent` header.
 */
export function sendWebhook(
  target: SendTarget,
  eventId: string,
  body: string,
  traceparent?: string,
): Promise<AttemptResult> {
  return new Promise((resolve) => {
    const timestamp = Math.floor(Date.now() / 1000);
    const headers = target.headers.slice();
    headers.push(
      "webhook-id",
      eventId,
      "webhook-timestamp",
      String(timestamp),
      "webhook-signature",
      signatures(target, eventId, timestamp, body),
    );
    if (traceparent !== undefined) headers.push("traceparent", traceparent);
    const attempt = new Attempt(target, resolve);
    target.dispatcher.dispatch(
      {
        origin: target.origin,
        path: target.path,
        method: "POST",
        headers,
        body,
        // Our own timer bounds the whole attempt and names the error; undici's timers are only a backstop,
        // set later so the two never race to describe the same timeout differently.
        headersTimeout: target.timeoutMs + 1000,
        bodyTimeout: target.timeoutMs + 1000,
      },
      attempt,
    );
  });
}
