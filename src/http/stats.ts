import { createRoute, z } from "@hono/zod-openapi";
import type { StoredEvent } from "../live/event-finder.ts";
import { listDestinations } from "../store/destinations.ts";
import {
  LATENCY_BOUNDS_MS,
  lastErrors,
  outcomeCountsSince,
  readStats,
  STATS_BUCKET_MS,
} from "../store/stats.ts";
import { type AdminDeps, problemResponses, toIso } from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import { HttpProblem, invalidField, ProblemSchema } from "./problem.ts";
import { createRouter } from "./router.ts";

/** Most buckets one GET /api/stats answers (range ÷ bucket). */
export const STATS_MAX_BUCKETS = 2_000;
const HOUR_MS = 3_600_000;

const isoTime = z.iso
  .datetime({ offset: true, message: "must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z" })
  .optional();

const StatsQuery = z.strictObject({
  from: isoTime.openapi({ description: "Start of the range (inclusive); default `to` minus one hour." }),
  to: isoTime.openapi({ description: "End of the range (exclusive); default now." }),
  bucket: z.coerce
    .number()
    .int()
    .min(STATS_BUCKET_MS / 1000)
    .max(86_400)
    .multipleOf(STATS_BUCKET_MS / 1000, `must be a multiple of ${STATS_BUCKET_MS / 1000}`)
    .default(60)
    .openapi({
      multipleOf: STATS_BUCKET_MS / 1000,
      description: `Bucket width in seconds, a multiple of ${STATS_BUCKET_MS / 1000} (default 60).`,
    }),
  topUsers: z.coerce.number().int().min(1).max(100).default(10).openapi({
    description: "How many of the heaviest users to list (default 10).",
  }),
});

const StatsSchema = z
  .object({
    from: z.string().openapi({ format: "date-time" }),
    to: z.string().openapi({ format: "date-time" }),
    bucketSeconds: z.number().int(),
    accepted: z
      .array(z.object({ bucket: z.string(), type: z.string(), count: z.number().int() }))
      .openapi({ description: "Events accepted per bucket and type (every replica's ingest)." }),
    deliveries: z
      .array(
        z.object({
          bucket: z.string(),
          destinationId: z.string(),
          outcome: z.enum(["succeeded", "failed", "dead"]),
          count: z.number().int(),
        }),
      )
      .openapi({ description: "Finished attempts per bucket, destination and outcome." }),
    latency: z
      .array(
        z.object({
          bucket: z.string(),
          count: z.number().int(),
          p50Ms: z.number().nullable(),
          p99Ms: z.number().nullable(),
        }),
      )
      .openapi({
        description:
          "Accept→receive latency of successful attempts (event accepted → receiver's 2xx), estimated " +
          `from a histogram with bins ending at ${LATENCY_BOUNDS_MS.join(", ")} ms (a percentile is its bin's upper bound).`,
      }),
    topUsers: z
      .array(z.object({ userID: z.string(), count: z.number().int() }))
      .openapi({ description: "Heaviest users by events accepted in the range." }),
  })
  .openapi("Stats");

const statsRoute = createRoute({
  method: "get",
  path: "/api/stats",
  tags: ["stats"],
  summary: "Time-bucketed counts and latency percentiles, from roll-ups",
  description:
    "Read from roll-up tables the state view keeps as it applies the outcomes topic (attempts, and the " +
    "once-a-second ingest counts every replica publishes there), not from the attempts table: every " +
    `replica answers the same. Buckets are aligned to multiples of the bucket width; the roll-ups are ${STATS_BUCKET_MS / 1000} s wide.`,
  security: adminSecurity,
  request: { query: StatsQuery },
  responses: {
    200: { description: "The figures", content: { "application/json": { schema: StatsSchema } } },
    ...problemResponses(400, 401, 503),
  },
});

const HealthSchema = z
  .object({
    destinations: z.array(
      z.object({
        id: z.string(),
        name: z.string().nullable(),
        url: z.string(),
        disabled: z.boolean(),
        disabledReason: z.string().nullable(),
        lastHour: z.object({
          succeeded: z.number().int(),
          failed: z.number().int(),
          dead: z.number().int(),
          successRate: z.number().nullable().openapi({
            description: "succeeded ÷ (succeeded + failed + dead) attempts; null without attempts.",
          }),
        }),
        lag: z.number().int().nullable().openapi({
          description:
            "Events not yet finished for it (the figure of delivery_lag_events); null when Kafka cannot say.",
        }),
        lastError: z
          .object({
            at: z.string().openapi({ format: "date-time" }),
            eventId: z.string(),
            statusCode: z.number().int().nullable(),
            error: z.string().nullable(),
          })
          .nullable(),
      }),
    ),
  })
  .openapi("DestinationHealth");

const healthRoute = createRoute({
  method: "get",
  path: "/api/destination-health",
  tags: ["stats"],
  summary: "Every destination's health: success rate over the last hour, lag, last error",
  security: adminSecurity,
  responses: {
    200: {
      description: "One entry per destination",
      content: { "application/json": { schema: HealthSchema } },
    },
    ...problemResponses(401, 503),
  },
});

export function statsRoutes(deps: AdminDeps) {
  const { db } = deps.store;
  const router = createRouter();

  router.openapi(statsRoute, (c) => {
    const q = c.req.valid("query");
    const bucketMs = q.bucket * 1000;
    const to = q.to === undefined ? Date.now() : Date.parse(q.to);
    const from = q.from === undefined ? to - HOUR_MS : Date.parse(q.from);
    if (from >= to) throw invalidField("from", "must be before to");
    // Whole buckets: the range widens to the bucket edges it falls in.
    const start = from - (from % bucketMs);
    const end = to % bucketMs === 0 ? to : to - (to % bucketMs) + bucketMs;
    if ((end - start) / bucketMs > STATS_MAX_BUCKETS) {
      throw invalidField("bucket", `range ÷ bucket must be at most ${STATS_MAX_BUCKETS}`);
    }
    const r = readStats(db, { from: start, to: end, bucketMs, topUsers: q.topUsers });
    return c.json(
      {
        from: toIso(start),
        to: toIso(end),
        bucketSeconds: q.bucket,
        accepted: r.accepted.map((a) => ({ ...a, bucket: toIso(a.bucket) })),
        deliveries: r.deliveries.map((d) => ({
          ...d,
          bucket: toIso(d.bucket),
          outcome: d.outcome as "succeeded" | "failed" | "dead",
        })),
        latency: r.latency.map((l) => ({
          bucket: toIso(l.bucket),
          count: l.count,
          p50Ms: l.p50,
          p99Ms: l.p99,
        })),
        topUsers: r.topUsers.map((u) => ({ userID: u.userId, count: u.count })),
      },
      200,
    );
  });

  router.openapi(healthRoute, async (c) => {
    const rows = listDestinations(db);
    const counts = new Map(outcomeCountsSince(db, Date.now() - HOUR_MS).map((r) => [r.destinationId, r]));
    const errors = new Map(lastErrors(db).map((e) => [e.destinationId, e]));
    const lags = await Promise.all(rows.map((d) => deps.delivery.lag(d.id).catch(() => null)));
    return c.json(
      {
        destinations: rows.map((d, i) => {
          const n = counts.get(d.id) ?? { succeeded: 0, failed: 0, dead: 0 };
          const total = n.succeeded + n.failed + n.dead;
          const e = errors.get(d.id);
          return {
            id: d.id,
            name: d.name,
            url: d.url,
            disabled: d.disabled,
            disabledReason: d.disabledReason,
            lastHour: {
              succeeded: n.succeeded,
              failed: n.failed,
              dead: n.dead,
              successRate: total === 0 ? null : n.succeeded / total,
            },
            lag: lags[i] ?? null,
            lastError: e
              ? { at: toIso(e.at), eventId: e.eventId, statusCode: e.statusCode, error: e.error }
              : null,
          };
        }),
      },
      200,
    );
  });
  return router;
}

const EventSchema = z
  .object({
    id: z.string(),
    userID: z.string(),
    type: z.string(),
    timestamp: z.string().openapi({ format: "date-time", description: "When the gateway accepted it." }),
    payload: z.unknown().openapi({ description: "The event's payload, as accepted." }),
  })
  .openapi("StoredEvent");

const eventRoute = createRoute({
  method: "get",
  path: "/api/events/{id}",
  tags: ["events"],
  summary: "An accepted event's body, read back from the events topic",
  description:
    "Found by its id (a UUIDv7: its time says where in the topic to look). 404 when it is not in the " +
    "topic (never accepted, or older than the topic's retention).",
  security: adminSecurity,
  request: { params: z.object({ id: z.string().min(1).max(256) }) },
  responses: {
    200: { description: "The event", content: { "application/json": { schema: EventSchema } } },
    ...problemResponses(401, 503),
    404: {
      description: "No such event in the events topic",
      content: { "application/problem+json": { schema: ProblemSchema } },
    },
  },
});

/** GET /api/events/{id}: the console's event page shows the body above the timeline. */
export function eventRoutes(find: (id: string) => Promise<StoredEvent | undefined>) {
  const router = createRouter();
  router.openapi(eventRoute, async (c) => {
    const { id } = c.req.valid("param");
    let event: StoredEvent | undefined;
    try {
      event = await find(id);
    } catch {
      throw new HttpProblem(503, "Service unavailable", "Kafka could not be read right now", {
        headers: { "retry-after": "5" },
      });
    }
    if (!event) throw new HttpProblem(404, "Not found", `no event ${id} in the events topic`);
    return c.json(event, 200);
  });
  return router;
}
