import { OpenAPIHono, type RouteConfig } from "@hono/zod-openapi";
import type { Env } from "hono";
import { invalidRequest } from "./problem.ts";

/**
 * The OpenAPIHono flavour every route module uses: validation failures become 400 problems. Its own
 * module so that the route files and app.ts (which mounts them) do not import each other.
 */
export function createRouter<E extends Env = Env>(): OpenAPIHono<E> {
  return new OpenAPIHono<E>({
    defaultHook: (result) => {
      if (!result.success) throw invalidRequest(result.error.issues);
    },
  });
}

/**
 * Documents the 400 that `createRouter`'s hook answers on every route with a validated input (path,
 * query, header or body) and that does not list it already: an id over its length limit is as much a 400
 * as a bad body field. Call once every route is mounted.
 */
export function documentValidationProblems(app: OpenAPIHono, problem400: RouteConfig["responses"]): void {
  for (const def of app.openAPIRegistry.definitions) {
    if (def.type !== "route") continue;
    const { request, responses } = def.route;
    const validated = request && (request.params || request.query || request.headers || request.body);
    if (!validated || responses[400]) continue;
    Object.assign(responses, problem400);
  }
}
