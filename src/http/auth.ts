import { createHash, timingSafeEqual } from "node:crypto";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Env, MiddlewareHandler } from "hono";
import { type HeaderSource, header } from "./body.ts";
import { HttpProblem } from "./problem.ts";

/** Name of the bearer security scheme in the OpenAPI document; admin routes list it under `security`. */
export const ADMIN_SECURITY_SCHEME = "adminToken";

/** The `security` entry of every admin route. */
export const adminSecurity = [{ [ADMIN_SECURITY_SCHEME]: [] }];

/**
 * Path patterns of the admin API; app.ts puts the admin bearer check in front of each. Hono's trailing
 * wildcard also matches the bare prefix, so "/api/destinations/*" covers "/api/destinations" too.
 */
export const ADMIN_PATHS = [
  "/api/destinations/*",
  "/api/events/:id/attempts",
  "/api/event-types/*",
  "/api/operational-destinations/*",
] as const;

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

export interface BearerOptions {
  /** Accepted tokens; any one of them opens the route. */
  tokens: readonly string[];
  /** The `realm` of WWW-Authenticate (admin, ingest, metrics). */
  realm: string;
  /** What the 401's detail says the route needs, e.g. "Authorization: Bearer <ADMIN_TOKEN>". */
  needs: string;
}

/**
 * The one bearer-token check of the gateway (admin API, ingest API keys, /metrics): middleware demanding
 * `Authorization: Bearer <token>` (scheme case-insensitive, RFC 9110 §11.1). Both sides are hashed to
 * SHA-256 before timingSafeEqual, and every configured token is compared (no early exit), so neither the
 * comparison's duration nor a length check reveals how much of a guess was right, or how long a token is.
 * A malformed header is compared too, so a bad scheme costs the same as a bad token. Headers are never
 * logged.
 */
export function requireBearer<E extends Env = Env>(opts: BearerOptions): MiddlewareHandler<E> {
  const check = bearerCheck(opts);
  return (c, next) => {
    check(c);
    return next();
  };
}

/**
 * requireBearer's check as a plain function, for a route that runs it itself (ingest's direct routes):
 * throws the 401, or returns the presented token's SHA-256 digest (ingest scopes idempotency keys by it).
 */
export function bearerCheck(opts: BearerOptions): (source: HeaderSource) => Buffer {
  const expected = opts.tokens.map(digest);
  const challenge = `Bearer realm="${opts.realm}"`;
  return (source) => {
    const value = header(source, "authorization");
    if (value === undefined) {
      throw new HttpProblem(401, "Unauthorized", `this route needs ${opts.needs}`, {
        headers: { "www-authenticate": challenge },
      });
    }
    const match = /^Bearer +(\S+) *$/i.exec(value);
    const presented = digest(match?.[1] ?? "");
    let matched = false;
    for (const d of expected) if (timingSafeEqual(presented, d)) matched = true;
    if (!match || !matched) {
      throw new HttpProblem(
        401,
        "Unauthorized",
        `the bearer token is not valid; this route needs ${opts.needs}`,
        {
          headers: { "www-authenticate": `${challenge}, error="invalid_token"` },
        },
      );
    }
    return presented;
  };
}

/** Declares the bearer scheme in the app's OpenAPI document. */
export function registerAdminSecurityScheme(app: OpenAPIHono): void {
  app.openAPIRegistry.registerComponent("securitySchemes", ADMIN_SECURITY_SCHEME, {
    type: "http",
    scheme: "bearer",
    description: "The gateway's ADMIN_TOKEN (generated and printed once at start-up when unset).",
  });
}
