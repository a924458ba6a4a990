import { createHash, timingSafeEqual } from "node:crypto";
import type { OpenAPIHono } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { HttpProblem } from "./problem.ts";

/** Name of the bearer security scheme in the OpenAPI document; admin routes list it under `security`. */
export const ADMIN_SECURITY_SCHEME = "adminToken";

/** The `security` entry of every admin route. */
export const adminSecurity = [{ [ADMIN_SECURITY_SCHEME]: [] }];

/**
 * Path patterns of the admin API; app.ts puts `requireAdminToken` in front of each. Hono's trailing
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

/**
 * Middleware demanding `Authorization: Bearer <token>`. Both sides are hashed to SHA-256 before
 * timingSafeEqual, so neither the comparison's duration nor a length check reveals how much of a guess
 * was right, or how long the token is. The header is never logged.
 */
export function requireAdminToken(token: string): MiddlewareHandler {
  const expected = digest(token);
  return async (c, next) => {
    const header = c.req.header("authorization");
    if (header === undefined) {
      throw new HttpProblem(401, "Unauthorized", "this route needs Authorization: Bearer <ADMIN_TOKEN>", {
        headers: { "www-authenticate": 'Bearer realm="admin"' },
      });
    }
    const match = /^Bearer +(\S+) *$/i.exec(header);
    // Compare even when the header is malformed so a bad scheme costs the same as a bad token.
    const presented = digest(match?.[1] ?? "");
    if (!match || !timingSafeEqual(presented, expected)) {
      throw new HttpProblem(401, "Unauthorized", "the bearer token is not valid", {
        headers: { "www-authenticate": 'Bearer realm="admin", error="invalid_token"' },
      });
    }
    await next();
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
