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
