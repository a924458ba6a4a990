import { Hono } from "hono";
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from "prom-client";
import { requireBearer } from "./auth.ts";

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
