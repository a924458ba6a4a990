import type { IncomingMessage } from "node:http";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HttpProblem } from "./problem.ts";

/**
 * A request header, read from Node's already parsed IncomingMessage when the app runs under
 * @hono/node-server. `c.req.header()` would make node-server build a WHATWG Headers object (and touching
 * `c.req.raw.body` a web ReadableStream) for every request: together several times the cost of the rest
 * of the HTTP work on the ingest hot path.
 */
export function header(c: Context, name: string): string | undefined {
  const incoming = (c.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming) {
    const value = incoming.headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  }
  return c.req.header(name);
}

const JSON_MEDIA_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;.*)?$/i;

export interface JsonBodyOptions {
  /** Bodies over this many bytes are a 413 (decided on Content-Length before a byte is read). */
  maxBytes: number;
  /** A request without a body passes (e.g. "replay everything"); one with a body must still be JSON. */
  optional?: boolean;
}

/**
 * The checks in front of every JSON body, ingest's and the admin API's: a JSON content type (a form or
 * text body is a clear 415 instead of a confusing "url: required"), then the size cap (413) — both before
 * the body is read. One synchronous middleware (no async frame of its own on the ingest hot path).
 */
export function jsonBody(opts: JsonBodyOptions): MiddlewareHandler[] {
  return [jsonBodyGuard(opts)];
}

/** jsonBody's checks as one middleware, for a route that adds its own checks in front (ingest's auth). */
export function jsonBodyGuard(opts: JsonBodyOptions): MiddlewareHandler {
  const { maxBytes } = opts;
  const tooLarge = () => {
    // `connection: close`: left open, Node drains the unread (maybe huge) body to reuse the connection
    // and gives up after a while, so a client reusing the connection lost its next request.
    throw new HttpProblem(413, "Payload too large", `the body is over the limit of ${maxBytes} bytes`, {
      headers: { connection: "close" },
    });
  };
  // Chunked bodies (no Content-Length) go through hono's bodyLimit, which counts them as they stream.
  const streaming = bodyLimit({ maxSize: maxBytes, onError: tooLarge });
  return (c, next) => {
    const type = header(c, "content-type");
    if (!type || !JSON_MEDIA_TYPE.test(type)) {
      if (opts.optional && !hasBody(c)) return next();
      throw new HttpProblem(
        415,
        "Unsupported media type",
        `the body must be application/json, not ${type ? JSON.stringify(type) : "absent"}`,
        { headers: { accept: "application/json" } },
      );
    }
    const length = header(c, "content-length");
    // Decided on Content-Length before reading a byte; Node's parser holds the body to that length.
    if (length !== undefined && header(c, "transfer-encoding") === undefined) {
      if (Number(length) > maxBytes) tooLarge();
      return next();
    }
    return streaming(c, next);
  };
}

function hasBody(c: Context): boolean {
  const length = header(c, "content-length");
  return header(c, "transfer-encoding") !== undefined || (length !== undefined && length !== "0");
}

/** The body as JSON; a syntax error is the client's (400), anything else (a reset connection) is not. */
export async function readJson(c: Context): Promise<unknown> {
  try {
    return await c.req.json();
  } catch (err) {
    if (err instanceof SyntaxError) {
      throw new HttpProblem(400, "Malformed request", `Malformed JSON in request body: ${err.message}`);
    }
    throw err;
  }
}
