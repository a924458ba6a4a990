import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { Hono } from "hono";
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from "prom-client";
import { requireBearer } from "./auth.ts";
import { ProblemSchema } from "./problem.ts";

export interface MetricsRouteOptions {
  registry: Registry;
  /**
   * Metrics of other registries (the delivery threads'), as `getMetricsAsJSON()` arrays: merged with the
   * registry's by summing series of the same name and labels (each destination lives on one thread).
   */
  collect?: () => Promise<MetricObjectWithValues<MetricValue<string>>[][]>;
  /** When set, scrapes need `Authorization: Bearer <token>`; unset leaves /metrics open, as is usual. */
  token?: string;
}

/** `GET /metrics` in the Prometheus text exposition format. */
export function metricsRoutes(opts: MetricsRouteOptions): Hono {
  const app = new Hono();
  if (opts.token !== undefined) {
    app.use(
      "/metrics",
      requireBearer({
        tokens: [opts.token],
        realm: "metrics",
        needs: "Authorization: Bearer <METRICS_TOKEN>",
      }),
    );
  }
  app.get("/metrics", async (c) => {
    const body = opts.collect
      ? await AggregatorRegistry.aggregate([
          await opts.registry.getMetricsAsJSON(),
          ...(await opts.collect()),
        ]).metrics()
      : await opts.registry.metrics();
    return c.body(body, 200, { "content-type": opts.registry.contentType, "cache-control": "no-store" });
  });
  return app;
}

/** Documents GET /metrics (and its bearer scheme when METRICS_TOKEN is set) in the app's OpenAPI document. */
export function documentMetricsRoute(app: OpenAPIHono, guarded: boolean): void {
  if (guarded) {
    app.openAPIRegistry.registerComponent("securitySchemes", "metricsToken", {
      type: "http",
      scheme: "bearer",
      description: "The gateway's METRICS_TOKEN.",
    });
  }
  app.openAPIRegistry.registerPath(
    createRoute({
      method: "get",
      path: "/metrics",
      operationId: "metrics",
      tags: ["operations"],
      summary: "Prometheus metrics (text exposition format)",
      security: guarded ? [{ metricsToken: [] }] : [],
      responses: {
        200: { description: "The metrics", content: { "text/plain": { schema: z.string() } } },
        ...(guarded
          ? {
              401: {
                description: "METRICS_TOKEN is set and the request has no or a wrong bearer token",
                content: { "application/problem+json": { schema: ProblemSchema } },
              },
            }
          : {}),
      },
    }),
  );
}
