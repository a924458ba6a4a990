import { IncomingMessage } from "node:http";
import type { Context, MiddlewareHandler } from "hono";
import { bodyLimit } from "hono/body-limit";
import { HttpProblem } from "./problem.ts";

/** Where a request's headers are read from: a route's context, or Node's request (direct routes). */
export type HeaderSource = Context | IncomingMessage;

/**
 * A request header, read from Node's already parsed IncomingMessage: the request itself on a direct route
 * (server.ts), or the one under the context when the app runs under @hono/node-server. `c.req.header()`
 * would make node-server build a WHATWG Headers object (and touching `c.req.raw.body` a web ReadableStream)
 * for every request: together several times the cost of the rest of the HTTP work on the ingest hot path.
 */
export function header(source: HeaderSource, name: string): string | undefined {
  const incoming =
    source instanceof IncomingMessage
      ? source
      : (source.env as { incoming?: IncomingMessage } | undefined)?.incoming;
  if (incoming) {
    const value = incoming.headers[name];
    return Array.isArray(value) ? value.join(", ") : value;
  }
  return (source as Context).req.header(name);
}

const JSON_MEDIA_TYPE = /^application\/(?:[\w.-]+\+)?json\s*(?:;.*)?$/i;

export interface JsonBodyOptions {
  /** Bodies over this many bytes are a 413 (decided on Content-Length before a byte is read). */
  maxBytes: number;
  /** A request without a body passes (e.g. "replay everything"); one with a body must still be JSON. */
  optional?: boolean;
}

/**
 * The checks in front of every JSON body of the admin API: a JSON content type (a form or text body is a
 * clear 415 instead of a confusing "url: required"), then the size cap (413) — both before the body is
 * read. Ingest's direct routes make the same checks in readJsonBody.
 */
export function jsonBody(opts: JsonBodyOptions): MiddlewareHandler[] {
  const { maxBytes } = opts;
  // Chunked bodies (no Content-Length) go through hono's bodyLimit, which counts them as they stream.
  const streaming = bodyLimit({
    maxSize: maxBytes,
    onError: () => {
      throw bodyTooLarge(maxBytes);
    },
  });
  const guard: MiddlewareHandler = (c, next) => {
    if (opts.optional && !hasBody(c)) {
      const type = header(c, "content-type");
      if (!type || !JSON_MEDIA_TYPE.test(type)) return next();
    }
    return checkJsonHead(c, maxBytes) ? next() : streaming(c, next);
  };
  return [guard];
}

/**
 * The 413 of a body over `maxBytes`. `connection: close`: left open, Node drains the unread (maybe huge)
 * body to reuse the connection and gives up after a while, so a client reusing the connection lost its
 * next request.
 */
function bodyTooLarge(maxBytes: number): HttpProblem {
  return new HttpProblem(413, "Payload too large", `the body is over the limit of ${maxBytes} bytes`, {
    headers: { connection: "close" },
  });
}

/** The 415 of a body that is not JSON (`type` is the request's Content-Type). */
function notJson(type: string | undefined): HttpProblem {
  return new HttpProblem(
    415,
    "Unsupported media type",
    `the body must be application/json, not ${type ? JSON.stringify(type) : "absent"}`,
    { headers: { accept: "application/json" } },
  );
}

/**
 * The refusals made before a byte of a JSON body is read: not JSON (415), or a Content-Length over the
 * limit (413). Returns whether the size is known (Content-Length without chunking): Node's parser holds
 * the body to it, so nothing needs counting while it is read.
 */
function checkJsonHead(source: HeaderSource, maxBytes: number): boolean {
  const type = header(source, "content-type");
  if (!type || !JSON_MEDIA_TYPE.test(type)) throw notJson(type);
  const length = header(source, "content-length");
  if (length === undefined || header(source, "transfer-encoding") !== undefined) return false;
  if (Number(length) > maxBytes) throw bodyTooLarge(maxBytes);
  return true;
}

function hasBody(c: Context): boolean {
  const length = header(c, "content-length");
  return header(c, "transfer-encoding") !== undefined || (length !== undefined && length !== "0");
}

/** The client went away before its body arrived: there is no one to answer. */
export class ClientGoneError extends Error {
  override name = "ClientGoneError";
}

const utf8 = new TextDecoder();

/**
 * A JSON body read straight from Node's request (a direct route, server.ts), with jsonBody's refusals: 415
 * and a declared size over `maxBytes` before a byte is read, a chunked body as soon as it passes
 * `maxBytes` (413), malformed JSON (400). Decoded like @hono/node-server's `req.json()` (UTF-8, a BOM
 * dropped). Rejects with ClientGoneError when the request ends early.
 */
export function readJsonBody(req: IncomingMessage, maxBytes: number): Promise<unknown> {
  const counted = !checkJsonHead(req, maxBytes);
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    const onData = (chunk: Buffer) => {
      size += chunk.length;
      if (counted && size > maxBytes) {
        req.off("data", onData);
        // Keep reading (and dropping) the rest until the 413 has gone and Node closes the connection.
        req.resume();
        reject(bodyTooLarge(maxBytes));
        return;
      }
      chunks.push(chunk);
    };
    req.on("data", onData);
    req.once("end", () => {
      if (counted && size > maxBytes) return;
      const text = utf8.decode(chunks.length === 1 ? chunks[0] : Buffer.concat(chunks, size));
      try {
        resolve(JSON.parse(text));
      } catch (err) {
        reject(
          new HttpProblem(
            400,
            "Malformed request",
            `Malformed JSON in request body: ${(err as Error).message}`,
          ),
        );
      }
    });
    req.once("close", () => {
      if (!req.complete) reject(new ClientGoneError("the request ended before its body was complete"));
    });
  });
}
