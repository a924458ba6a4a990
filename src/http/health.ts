import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
import { Hono } from "hono";

export interface HealthDeps {
  /** Kafka reachable (bounded by its own deadline). */
  kafkaReady(): Promise<boolean>;
  /** Database open and answering. */
  storeReady(): boolean;
  /** This replica's view has caught up with the shared-state topics. */
  stateReady(): boolean;
}

/** `/healthz`: the process is alive. `/readyz`: Kafka and the database can take work and this replica's view of the shared state has caught up. */
export function healthRoutes(deps: HealthDeps): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const [kafka, database] = await Promise.all([deps.kafkaReady(), Promise.resolve(deps.storeReady())]);
    const state = deps.stateReady();
    const ready = kafka && database && state;
    return c.json(
      {
        status: ready ? "ready" : "not ready",
        checks: {
          kafka: kafka ? "up" : "down",
          database: database ? "up" : "down",
          state: state ? "caught up" : "rebuilding",
        },
      },
      ready ? 200 : 503,
    );
  });
  return app;
}

const ReadinessSchema = z
  .object({
    status: z.enum(["ready", "not ready"]),
    checks: z.object({
      kafka: z.enum(["up", "down"]),
      database: z.enum(["up", "down"]),
      state: z.enum(["caught up", "rebuilding"]),
    }),
  })
  .openapi("Readiness");

/** Documents /healthz and /readyz (served by the plain Hono app above) in the app's OpenAPI document. */
export function documentHealthRoutes(app: OpenAPIHono): void {
  app.openAPIRegistry.registerPath(
    createRoute({
      method: "get",
      path: "/healthz",
      operationId: "healthz",
      tags: ["operations"],
      summary: "Liveness: the process is alive",
      responses: {
        200: {
          description: "Alive",
          content: { "application/json": { schema: z.object({ status: z.literal("ok") }) } },
        },
      },
    }),
  );
  app.openAPIRegistry.registerPath(
    createRoute({
      method: "get",
      path: "/readyz",
      operationId: "readyz",
      tags: ["operations"],
      summary: "Readiness: Kafka and the database answer and the shared state is caught up",
      responses: {
        200: { description: "Ready", content: { "application/json": { schema: ReadinessSchema } } },
        503: {
          description: "Not ready; `checks` says what is not",
          content: { "application/json": { schema: ReadinessSchema } },
        },
      },
    }),
  );
}
