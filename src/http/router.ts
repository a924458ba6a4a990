import { OpenAPIHono } from "@hono/zod-openapi";
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
