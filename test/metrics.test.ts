import assert from "node:assert/strict";
import { rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, test } from "node:test";
import { Hono } from "hono";
import { loadConfig } from "../src/config.ts";
import { startGateway } from "../src/gateway.ts";
import { metricsRoutes } from "../src/http/metrics.ts";
import { HttpProblem, problemResponse } from "../src/http/problem.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics, deliveryObserver } from "../src/metrics.ts";
import { testBrokers, uniqueName } from "./helpers.ts";

/** The value of one sample line, e.g. `deliveries_total{destination="d1",outcome="dead"}`. */
function sample(text: string, series: string): number | undefined {
  const line = text.split("\n").find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

describe("createMetrics", () => {
  test("counters, histograms and gauges show up in the exposition text after use", async () => {
    const m = createMetrics();
    m.ingestEvents.inc({ outcome: "accepted" }, 3);
    m.ingestEvents.inc({ outcome: "refused" });
    m.ingestBatchSize.observe(40);
    m.ingestAckSeconds.observe(0.004);
    m.deliveries.inc({ destination: "d1", outcome: "delivered" });
    m.deliveryAttemptSeconds.observe({ destination: "d1" }, 0.02);
    m.deliveryLagSeconds.observe({ destination: "d1" }, 1.5);
    m.deadLetters.inc({ destination: "d1" });
    m.workerBufferedEvents.set({ destination: "d1" }, 7);

    const text = await m.registry.metrics();
    assert.equal(sample(text, 'ingest_events_total{outcome="accepted"}'), 3);
    assert.equal(sample(text, 'ingest_events_total{outcome="refused"}'), 1);
    assert.equal(sample(text, "ingest_batch_size_count"), 1);
    assert.equal(sample(text, "ingest_batch_size_sum"), 40);
    assert.equal(sample(text, 'ingest_batch_size_bucket{le="50"}'), 1);
    assert.equal(sample(text, 'ingest_batch_size_bucket{le="20"}'), 0);
    assert.equal(sample(text, "ingest_ack_seconds_count"), 1);
    assert.equal(sample(text, 'deliveries_total{destination="d1",outcome="delivered"}'), 1);
    assert.equal(sample(text, 'delivery_attempt_seconds_count{destination="d1"}'), 1);
    assert.equal(sample(text, 'delivery_lag_seconds_sum{destination="d1"}'), 1.5);
    assert.equal(sample(text, 'dead_letters_total{destination="d1"}'), 1);
    assert.equal(sample(text, 'worker_buffered_events{destination="d1"}'), 7);
    // Default process metrics are registered on the same, per-gateway registry.
    assert.match(text, /^process_cpu_user_seconds_total \d/m);
    assert.match(text, /^nodejs_heap_size_used_bytes \d/m);
  });

  test("each call has its own registry: two gateways in one process do not collide", async () => {
    const a = createMetrics();
    const b = createMetrics();
    a.ingestEvents.inc({ outcome: "accepted" }, 5);
    assert.equal(sample(await a.registry.metrics(), 'ingest_events_total{outcome="accepted"}'), 5);
    assert.equal(sample(await b.registry.metrics(), 'ingest_events_total{outcome="accepted"}'), undefined);
  });

  test("deliveryObserver feeds the delivery instruments; forgetDestination drops a destination's series", async () => {
    const m = createMetrics();
    const observe = deliveryObserver(m);
    const attempt = {
      statusCode: 500,
      durationMs: 250,
      error: null,
      responseSnippet: null,
      retryAfterMs: null,
    };
    observe.attempt("d2", { ...attempt, verdict: "retry" });
    observe.attempt("d2", { ...attempt, verdict: "success", statusCode: 200 });
    observe.finished("d2", "delivered", Date.now() - 2000);
    observe.finished("d2", "dead", Date.now());
    observe.buffered("d2", 12);
    observe.attempt("d3", { ...attempt, verdict: "gone", statusCode: 410 });

    let text = await m.registry.metrics();
    assert.equal(sample(text, 'delivery_attempts_total{destination="d2",result="retry"}'), 1);
    assert.equal(sample(text, 'delivery_attempts_total{destination="d2",result="success"}'), 1);
    assert.equal(sample(text, 'delivery_attempt_seconds_sum{destination="d2"}'), 0.5);
    assert.equal(sample(text, 'deliveries_total{destination="d2",outcome="delivered"}'), 1);
    assert.equal(sample(text, 'deliveries_total{destination="d2",outcome="dead"}'), 1);
    assert.equal(sample(text, 'dead_letters_total{destination="d2"}'), 1);
    assert.equal(sample(text, 'delivery_lag_seconds_count{destination="d2"}'), 1);
    assert.ok((sample(text, 'delivery_lag_seconds_sum{destination="d2"}') ?? 0) >= 2);
    assert.equal(sample(text, 'worker_buffered_events{destination="d2"}'), 12);

    m.forgetDestination("d2");
    text = await m.registry.metrics();
    assert.doesNotMatch(text, /destination="d2"/);
    assert.equal(sample(text, 'delivery_attempts_total{destination="d3",result="gone"}'), 1);
  });
});

describe("GET /metrics route", () => {
  function appWith(token?: string) {
    const m = createMetrics();
    const app = new Hono();
    app.route("/", metricsRoutes({ registry: m.registry, token }));
    app.onError((err, c) => {
      if (err instanceof HttpProblem) return problemResponse(c, err);
      throw err;
    });
    return { app, m };
  }

  test("open when no token is configured, in the Prometheus text format", async () => {
    const { app, m } = appWith();
    m.ingestEvents.inc({ outcome: "accepted" }, 2);
    const res = await app.request("/metrics");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    assert.equal(sample(await res.text(), 'ingest_events_total{outcome="accepted"}'), 2);
  });

  test("with a token, a scrape without the right bearer gets a 401 problem", async () => {
    const { app } = appWith("metrics-token-0123456789");
    for (const authorization of [undefined, "Bearer wrong-token-0123456789", "Basic abc", "Bearer"]) {
      const res = await app.request("/metrics", { headers: authorization ? { authorization } : {} });
      assert.equal(res.status, 401, String(authorization));
      assert.equal(res.headers.get("content-type"), "application/problem+json");
      assert.match(res.headers.get("www-authenticate") ?? "", /Bearer/);
      const problem = (await res.json()) as { status: number; detail: string };
      assert.equal(problem.status, 401);
    }
    const ok = await app.request("/metrics", {
      headers: { authorization: "Bearer metrics-token-0123456789" },
    });
    assert.equal(ok.status, 200);
    assert.match(await ok.text(), /ingest_events_total/);
  });
});

describe("gateway wiring", () => {
  test("a running gateway serves its own metrics on /metrics, guarded by METRICS_TOKEN when set", async () => {
    const dbPath = join(tmpdir(), `${uniqueName("metrics")}.db`);
    const token = "scrape-token-0123456789abcdef";
    const config = loadConfig({
      KAFKA_BROKERS: testBrokers().join(","),
      DB_PATH: dbPath,
      PORT: "0",
      HOST: "127.0.0.1",
      LOG_LEVEL: "silent",
      METRICS_TOKEN: token,
      EVENTS_TOPIC: uniqueName("metrics-events"),
      DEAD_LETTER_TOPIC: uniqueName("metrics-dlq"),
      CONSUMER_GROUP_PREFIX: uniqueName("metrics"),
    });
    const gateway = await startGateway(config, createLogger("silent"));
    try {
      const refused = await fetch(`${gateway.url}/metrics`);
      assert.equal(refused.status, 401);
      await refused.body?.cancel();

      gateway.metrics.ingestEvents.inc({ outcome: "refused" }, 4);
      const res = await fetch(`${gateway.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      assert.equal(res.status, 200);
      assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
      const text = await res.text();
      assert.equal(sample(text, 'ingest_events_total{outcome="refused"}'), 4);
      assert.match(text, /^process_resident_memory_bytes \d/m);
    } finally {
      await gateway.stop();
      for (const suffix of ["", "-wal", "-shm"]) rmSync(`${dbPath}${suffix}`, { force: true });
    }
  });
});
