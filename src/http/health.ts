import { Hono } from "hono";

export interface HealthDeps {
  /** Kafka reachable (bounded by its own deadline). */
  kafkaReady(): Promise<boolean>;
  /** Database open and answering. */
  storeReady(): boolean;
}

/** `/healthz`: the process is alive. `/readyz`: Kafka and the database can take work. */
export function healthRoutes(deps: HealthDeps): Hono {
  const app = new Hono();
  app.get("/healthz", (c) => c.json({ status: "ok" }));
  app.get("/readyz", async (c) => {
    const [kafka, database] = await Promise.all([deps.kafkaReady(), Promise.resolve(deps.storeReady())]);
    const ready = kafka && database;
    return c.json(
      {
        status: ready ? "ready" : "not ready",
        checks: { kafka: kafka ? "up" : "down", database: database ? "up" : "down" },
      },
      ready ? 200 : 503,
    );
  });
  return app;
}
