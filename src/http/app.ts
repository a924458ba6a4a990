import type { OpenAPIHono } from "@hono/zod-openapi";
import type { Context } from "hono";
import { HTTPException } from "hono/http-exception";
import type { ContentfulStatusCode } from "hono/utils/http-status";
import type { Config } from "../config.ts";
import type { DeliveryControl } from "../delivery/control.ts";
import type { LiveBus } from "../live/bus.ts";
import type { StoredEvent } from "../live/event-finder.ts";
import type { Logger } from "../log.ts";
import type { Metrics } from "../metrics.ts";
import type { Store } from "../store/db.ts";
import { type AdminState, problemResponses, viewNotReady } from "./admin-shared.ts";
import { attemptRoutes } from "./attempts.ts";
import { ADMIN_PATHS, registerAdminSecurityScheme, requireBearer } from "./auth.ts";
import { consoleRoutes } from "./console.ts";
import { deadLetterRoutes } from "./dead-letters.ts";
import { destinationControlRoutes } from "./destination-controls.ts";
import { destinationRoutes } from "./destinations.ts";
import { type EventTypeDeps, eventTypeRoutes, eventTypesInOpenApi } from "./event-types.ts";
import { documentHealthRoutes, type HealthDeps, healthRoutes } from "./health.ts";
import type { IngestHttp } from "./ingest.ts";
import { liveRoutes } from "./live.ts";
import { documentMetricsRoute, type MetricsRouteOptions, metricsRoutes } from "./metrics.ts";
import { operationalDestinationRoutes } from "./operational-destinations.ts";
import { HttpProblem, problemResponse } from "./problem.ts";
import { createRouter, documentValidationProblems } from "./router.ts";
import { eventRoutes, statsRoutes } from "./stats.ts";

export interface AppDeps {
  config: Config;
  logger: Logger;
  health: HealthDeps;
  /** The gateway's Prometheus instruments (served on GET /metrics; ingest and workers increment them). */
  metrics: Metrics;
  /** Metrics kept on delivery threads, merged into GET /metrics at each scrape. */
  collectMetrics?: MetricsRouteOptions["collect"];
  store: Store;
  /** What the admin API asks of the delivery side (the coordinator). */
  delivery: DeliveryControl;
  /** Shared configuration (Kafka-held) and this replica's view of it. */
  state: AdminState;
  /** The event-type catalog's routes (/api/event-types); absent in apps built without it (some tests). */
  eventTypes?: Omit<EventTypeDeps, "store" | "logger">;
  /**
   * POST /api/singleEvent and /api/events (their documentation; serveApp answers them as direct routes);
   * absent in apps built without ingest (some tests).
   */
  ingest?: IngestHttp;
  /** The console's live tail (GET /api/live); absent in apps built without it (some tests). */
  live?: LiveBus;
  /** An accepted event's record from the events topic (GET /api/events/{id}); absent in some tests. */
  findEvent?: (id: string) => Promise<StoredEvent | undefined>;
}

/** Paths registered on the app, as regexes, so an unmatched request can be told 404 from 405. */
function allowedMethods(app: OpenAPIHono, path: string): string[] {
  const methods = new Set<string>();
  for (const route of app.routes) {
    if (route.method === "ALL") continue;
    const pattern = route.path
      .replace(/[.+?^${}()|[\]\\]/g, "\\$&")
      .replace(/:[A-Za-z0-9_]+/g, "[^/]+")
      .replace(/\*/g, ".*");
    if (new RegExp(`^${pattern}$`).test(path)) methods.add(route.method);
  }
  if (methods.has("GET")) methods.add("HEAD");
  return [...methods];
}

/** Builds the HTTP application; main.ts serves it, tests call `app.request()` or serve it on loopback. */
export function createApp(deps: AppDeps): OpenAPIHono {
  const app = createRouter();

  app.route("/", healthRoutes(deps.health));
  documentHealthRoutes(app);
  if (deps.ingest) app.route("/", deps.ingest.routes());
  app.route(
    "/",
    metricsRoutes({
      registry: deps.metrics.registry,
      collect: deps.collectMetrics,
      token: deps.config.METRICS_TOKEN,
    }),
  );
  documentMetricsRoute(app, deps.config.METRICS_TOKEN !== undefined);

  // The console (issue 13): its page and assets are public, everything it reads is an admin route.
  const consolePaths = ["/api/stats", "/api/destination-health", "/api/live", "/api/events/:id"] as const;
  app.route("/", consoleRoutes());

  // The admin token is checked before any admin route validates or reads its input.
  const adminAuth = requireBearer({
    tokens: [deps.config.adminToken],
    realm: "admin",
    needs: "Authorization: Bearer <ADMIN_TOKEN>",
  });
  for (const path of [...ADMIN_PATHS, ...consolePaths]) app.use(path, adminAuth);
  // A replica still reading the shared state answers 503, never a stale 404 or list.
  for (const path of [...ADMIN_PATHS, ...consolePaths]) {
    app.use(path, async (_c, next) => {
      if (!deps.state.isReady()) throw viewNotReady();
      await next();
    });
  }
  registerAdminSecurityScheme(app);
  app.route("/", destinationRoutes(deps));
  app.route("/", attemptRoutes(deps));
  app.route("/", deadLetterRoutes(deps));
  // Issue 14's delivery controls (secret rotation, event types, recover/replay) register in one place.
  app.route("/", destinationControlRoutes(deps));
  app.route("/", operationalDestinationRoutes(deps));
  if (deps.eventTypes) {
    app.route("/", eventTypeRoutes({ ...deps.eventTypes, store: deps.store, logger: deps.logger }));
    app.use("/openapi.json", eventTypesInOpenApi(deps.store));
  }
  app.route("/", statsRoutes(deps));
  if (deps.live) app.route("/", liveRoutes({ live: deps.live, registry: deps.metrics.registry }));
  if (deps.findEvent) app.route("/", eventRoutes(deps.findEvent));

  app.openAPIRegistry.registerPath({
    method: "get",
    path: "/openapi.json",
    operationId: "openapi",
    tags: ["operations"],
    summary: "This document",
    responses: {
      200: {
        description: "The OpenAPI 3.1 document of every route",
        content: { "application/json": { schema: { type: "object" } } },
      },
    },
  });
  documentValidationProblems(app, problemResponses(400));
  app.doc31("/openapi.json", {
    openapi: "3.1.0",
    info: {
      title: "Webhook gateway",
      version: "0.1.0",
      description: "Durable event ingest into Kafka and signed, retried webhook delivery per destination.",
    },
  });

  app.notFound((c) => {
    const allow = allowedMethods(app, c.req.path);
    if (allow.length > 0) {
      return problemResponse(
        c,
        new HttpProblem(405, "Method not allowed", `${c.req.method} is not allowed on ${c.req.path}`, {
          headers: { allow: allow.join(", ") },
        }),
      );
    }
    return problemResponse(
      c,
      new HttpProblem(404, "Not found", `no route for ${c.req.method} ${c.req.path}`),
    );
  });

  app.onError((err, c: Context) => {
    if (err instanceof HttpProblem) return problemResponse(c, err);
    if (err instanceof HTTPException) {
      const status = err.status as ContentfulStatusCode;
      const title =
        status === 400 ? "Malformed request" : status === 413 ? "Payload too large" : "Request refused";
      return problemResponse(c, new HttpProblem(status, title, err.message || title));
    }
    deps.logger.error({ err, path: c.req.path, method: c.req.method }, "unhandled error in route");
    return problemResponse(
      c,
      new HttpProblem(500, "Internal error", "the gateway failed to handle this request"),
    );
  });

  return app;
}
