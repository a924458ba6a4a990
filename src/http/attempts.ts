import { createRoute, z } from "@hono/zod-openapi";
import { type Attempt, listDestinationAttempts, listEventAttempts } from "../store/attempt-queries.ts";
import { getDestination } from "../store/destinations.ts";
import {
  type AdminDeps,
  DestinationIdParams,
  notFoundDestination,
  problemResponses,
  toIso,
} from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import { createRouter } from "./router.ts";

export const ATTEMPTS_PAGE_DEFAULT = 50;
export const ATTEMPTS_PAGE_MAX = 500;

const OUTCOMES = ["succeeded", "failed", "dead"] as const;

const AttemptSchema = z
  .object({
    eventId: z.string(),
    destinationId: z.string(),
    userID: z.string(),
    attemptNumber: z.number().int(),
    startedAt: z.string().openapi({ format: "date-time" }),
    durationMs: z.number().int(),
    statusCode: z.number().int().nullable(),
    error: z.string().nullable(),
    responseSnippet: z.string().nullable().openapi({ description: "At most 4 KiB of the response body." }),
    outcome: z.enum(OUTCOMES),
  })
  .openapi("Attempt");

type AttemptView = z.infer<typeof AttemptSchema>;

function attemptView(a: Attempt): AttemptView {
  return {
    eventId: a.eventId,
    destinationId: a.destinationId,
    userID: a.userId,
    attemptNumber: a.attemptNumber,
    startedAt: toIso(a.startedAt),
    durationMs: a.durationMs,
    statusCode: a.statusCode,
    error: a.error,
    responseSnippet: a.responseSnippet,
    // The column is free text; anything the worker never writes is reported as a failure.
    outcome: (OUTCOMES as readonly string[]).includes(a.outcome)
      ? (a.outcome as AttemptView["outcome"])
      : "failed",
  };
}

const AttemptsQuery = z.strictObject({
  outcome: z.enum(OUTCOMES).optional(),
  since: z.iso
    .datetime({ offset: true, message: "must be an ISO 8601 date-time, e.g. 2025-01-31T12:00:00Z" })
    .optional()
    .openapi({ description: "Only attempts started at or after this instant." }),
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(ATTEMPTS_PAGE_MAX)
    .default(ATTEMPTS_PAGE_DEFAULT)
    .openapi({ description: `Page size, default ${ATTEMPTS_PAGE_DEFAULT}, at most ${ATTEMPTS_PAGE_MAX}.` }),
  cursor: z
    .string()
    .regex(/^[1-9][0-9]{0,14}$/, "not a cursor this API returned")
    .optional()
    .openapi({
      description:
        "`nextCursor` of the previous page; pass the same filters with it. Opaque: its form may change.",
    }),
});

const eventAttemptsRoute = createRoute({
  method: "get",
  path: "/api/events/{id}/attempts",
  operationId: "listEventAttempts",
  tags: ["attempts"],
  summary: "Every delivery attempt of one event, at every destination, oldest first",
  security: adminSecurity,
  request: {
    params: z.object({
      id: z
        .string()
        .min(1)
        .max(200)
        .openapi({ param: { name: "id", in: "path" } }),
    }),
  },
  responses: {
    200: {
      description: "The attempts (empty when the event has none yet)",
      content: { "application/json": { schema: z.object({ attempts: z.array(AttemptSchema) }) } },
    },
    ...problemResponses(400, 401, 503),
  },
});

const destinationAttemptsRoute = createRoute({
  method: "get",
  path: "/api/destinations/{id}/attempts",
  operationId: "listDestinationAttempts",
  tags: ["attempts"],
  summary: "A destination's attempts, newest first, with cursor pagination",
  security: adminSecurity,
  request: { params: DestinationIdParams, query: AttemptsQuery },
  responses: {
    200: {
      description: "One page; `nextCursor` is null on the last page",
      content: {
        "application/json": {
          schema: z.object({ attempts: z.array(AttemptSchema), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...problemResponses(400, 401, 404, 503),
  },
});

export function attemptRoutes(deps: AdminDeps) {
  const { db } = deps.store;
  const router = createRouter();

  router.openapi(eventAttemptsRoute, (c) => {
    const { id } = c.req.valid("param");
    return c.json({ attempts: listEventAttempts(db, id).map(attemptView) }, 200);
  });

  router.openapi(destinationAttemptsRoute, (c) => {
    const { id } = c.req.valid("param");
    const q = c.req.valid("query");
    if (!getDestination(db, id)) throw notFoundDestination(id);
    const page = listDestinationAttempts(db, {
      destinationId: id,
      outcome: q.outcome,
      since: q.since === undefined ? undefined : Date.parse(q.since),
      // The cursor is the id of the last attempt listed: the page after it starts below it.
      beforeId: q.cursor === undefined ? undefined : Number(q.cursor),
      limit: q.limit,
    });
    const nextCursor = page.nextBeforeId === undefined ? null : String(page.nextBeforeId);
    return c.json({ attempts: page.attempts.map(attemptView), nextCursor }, 200);
  });

  return router;
}
