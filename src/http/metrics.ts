import { createHash, timingSafeEqual } from "node:crypto";
import { Hono } from "hono";
import {
  AggregatorRegistry,
  type MetricObjectWithValues,
  type MetricValue,
  type Registry,
} from "prom-client";
import { HttpProblem } from "./problem.ts";

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

function digest(value: string): Buffer {
  return createHash("sha256").update(value, "utf8").digest();
}

/** `GET /metrics` in the Prometheus text exposition format. */
export function metricsRoutes(opts: MetricsRouteOptions): Hono {
  const app = new Hono();
  const expected = opts.token === undefined ? undefined : digest(opts.token);
  app.get("/metrics", async (c) => {
    if (expected) {
      const match = /^Bearer +(\S+) *$/i.exec(c.req.header("authorization") ?? "");
      // Hashing both sides makes the compare constant-time whatever the presented length.
      if (!match || !timingSafeEqual(digest(match[1] ?? ""), expected)) {
        throw new HttpProblem(401, "Unauthorized", "this route needs Authorization: Bearer <METRICS_TOKEN>", {
          headers: { "www-authenticate": 'Bearer realm="metrics"' },
        });
      }
    }
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
