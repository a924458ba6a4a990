import { createRoute, z } from "@hono/zod-openapi";
import { type DeadLetter, listDeadLetters } from "../store/dead-letter-queries.ts";
import { getDestination } from "../store/destinations.ts";
import {
  type AdminDeps,
  adminJsonBody,
  DestinationIdParams,
  deliveryUnavailable,
  notFoundDestination,
  oneAtATime,
  problemResponses,
  toIso,
} from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import { createRouter } from "./router.ts";

export const DEAD_LETTERS_PAGE_DEFAULT = 100;
export const DEAD_LETTERS_PAGE_MAX = 1000;
export const REPLAY_MAX_EVENT_IDS = 1000;

const DeadLetterSchema = z
  .object({
    eventId: z.string(),
    userID: z.string(),
    attempts: z.number().int(),
    lastError: z.string().nullable(),
    deadAt: z.string().openapi({ format: "date-time" }),
  })
  .openapi("DeadLetter");

function deadLetterView(d: DeadLetter): z.infer<typeof DeadLetterSchema> {
  return {
    eventId: d.eventId,
    userID: d.userId,
    attempts: d.attempts,
    lastError: d.lastError,
    deadAt: toIso(d.deadAt),
  };
}

const DeadLettersQuery = z.strictObject({
  limit: z.coerce
    .number()
    .int()
    .min(1)
    .max(DEAD_LETTERS_PAGE_MAX)
    .default(DEAD_LETTERS_PAGE_DEFAULT)
    .openapi({
      description: `Page size, default ${DEAD_LETTERS_PAGE_DEFAULT}, at most ${DEAD_LETTERS_PAGE_MAX}.`,
    }),
  // `<deadAt ms>.<event id, base64url>`: every string of this form is a position in the (deadAt, eventId)
  // order, so the pattern is the whole rule.
  cursor: z
    .string()
    .max(1000)
    .regex(/^(?:0|[1-9][0-9]{0,14})\.[A-Za-z0-9_-]*$/, "not a cursor this API returned")
    .optional()
    .openapi({ description: "`nextCursor` of the previous page. Opaque: its form may change." }),
});

function decodeCursor(cursor: string): { deadAt: number; eventId: string } {
  const dot = cursor.indexOf(".");
  return {
    deadAt: Number(cursor.slice(0, dot)),
    eventId: Buffer.from(cursor.slice(dot + 1), "base64url").toString("utf8"),
  };
}

const ReplayBody = z
  .strictObject({
    eventIds: z
      .array(z.string().min(1).max(256))
      .min(1, "omit eventIds to replay every dead letter")
      .max(REPLAY_MAX_EVENT_IDS)
      .optional(),
  })
  .openapi("ReplayRequest");

const listRoute = createRoute({
  method: "get",
  path: "/api/destinations/{id}/dead-letters",
  operationId: "listDeadLetters",
  tags: ["dead letters"],
  summary: "Events that exhausted their attempts at this destination, oldest first",
  security: adminSecurity,
  request: { params: DestinationIdParams, query: DeadLettersQuery },
  responses: {
    200: {
      description: "One page; `nextCursor` is null on the last page",
      content: {
        "application/json": {
          schema: z.object({ deadLetters: z.array(DeadLetterSchema), nextCursor: z.string().nullable() }),
        },
      },
    },
    ...problemResponses(400, 401, 404, 503),
  },
});

const replayRoute = createRoute({
  method: "post",
  path: "/api/destinations/{id}/dead-letters/replay",
  operationId: "replayDeadLetters",
  tags: ["dead letters"],
  summary: "Deliver dead letters again with a fresh attempt budget",
  description: "All of them when the body (or `eventIds`) is absent; ids that are not dead here are ignored.",
  security: adminSecurity,
  middleware: adminJsonBody({ optional: true }),
  request: {
    params: DestinationIdParams,
    body: { required: false, content: { "application/json": { schema: ReplayBody } } },
  },
  responses: {
    202: {
      description: "How many events were queued for delivery",
      content: { "application/json": { schema: z.object({ replayed: z.number().int() }) } },
    },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

export function deadLetterRoutes(deps: AdminDeps) {
  const { db } = deps.store;
  const router = createRouter();

  router.openapi(listRoute, (c) => {
    const { id } = c.req.valid("param");
    const q = c.req.valid("query");
    if (!getDestination(db, id)) throw notFoundDestination(id);
    const after = q.cursor === undefined ? undefined : decodeCursor(q.cursor);
    const page = listDeadLetters(db, {
      destinationId: id,
      after,
      limit: q.limit,
    });
    const nextCursor = page.nextAfter
      ? `${page.nextAfter.deadAt}.${Buffer.from(page.nextAfter.eventId, "utf8").toString("base64url")}`
      : null;
    return c.json({ deadLetters: page.deadLetters.map(deadLetterView), nextCursor }, 200);
  });

  router.openapi(replayRoute, async (c) => {
    const { id } = c.req.valid("param");
    const { eventIds } = c.req.valid("json");
    const replayed = await oneAtATime(deps.store, id, async () => {
      if (!getDestination(db, id)) throw notFoundDestination(id);
      try {
        return await deps.delivery.replay(id, eventIds);
      } catch (err) {
        deps.logger.error({ err, destinationId: id }, "dead-letter replay failed");
        throw deliveryUnavailable(
          "the replay could not be queued; the dead letters it did not reach are still listed",
        );
      }
    });
    deps.logger.info({ destinationId: id, replayed }, "dead letters replayed");
    return c.json({ replayed }, 202);
  });

  return router;
}
