import { randomUUID } from "node:crypto";
import { createRoute, z } from "@hono/zod-openapi";
import { type Destination, getDestination } from "../store/destinations.ts";
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
import { notInFuture, replayView, Secret, Time } from "./destination-schemas.ts";
import { newSecret } from "./destinations.ts";
import { HttpProblem, invalidField } from "./problem.ts";
import { createRouter } from "./router.ts";

/** Hours a rotated-out secret keeps signing when the rotation does not say. */
export const DEFAULT_PREVIOUS_SECRET_TTL_HOURS = 24;

const RotateBody = z
  .strictObject({
    secret: Secret.optional().openapi({
      description: "The new secret; generated (32 random bytes) when absent.",
    }),
    previousSecretTtlHours: z
      .number()
      .min(0)
      .max(720)
      .optional()
      .openapi({
        description: `Hours the old secret keeps signing beside the new one (default ${DEFAULT_PREVIOUS_SECRET_TTL_HOURS}; 0 drops it at once).`,
      }),
  })
  .openapi("RotateSecret");

const RotatedSchema = z
  .object({
    id: z.string(),
    secret: z
      .string()
      .openapi({ description: "The new secret: every delivery is signed with it from now on." }),
    previousSecretExpiresAt: z.string().nullable().openapi({
      format: "date-time",
      description: "Until then deliveries also carry the old secret's signature (`v1,<new> v1,<old>`).",
    }),
  })
  .openapi("RotatedSecret");

const rotateRoute = createRoute({
  method: "post",
  path: "/api/destinations/{id}/secret/rotate",
  tags: ["destinations"],
  summary: "Rotate a destination's signing secret, with a grace period for the old one",
  description:
    "From the answer on, every delivery is signed with the new secret and, for `previousSecretTtlHours`, " +
    "with the old one as well (two signatures in `webhook-signature`, each verifiable by the Standard " +
    "Webhooks libraries). A rotation during another's grace period drops the oldest secret.",
  security: adminSecurity,
  middleware: adminJsonBody({ optional: true }),
  request: {
    params: DestinationIdParams,
    body: { required: false, content: { "application/json": { schema: RotateBody } } },
  },
  responses: {
    200: { description: "The new secret", content: { "application/json": { schema: RotatedSchema } } },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const RecoverBody = z
  .strictObject({
    since: Time.openapi({
      description: "Re-send the events that died at this destination since then (not in the future).",
    }),
  })
  .openapi("Recover");

const ReplayBody = z
  .strictObject({
    from: Time.openapi({
      description: "Re-deliver every event accepted at or after this time (not in the future)…",
    }),
    to: Time.optional().openapi({
      description: "…and before this one (default: now; after `from`).",
    }),
  })
  .openapi("Replay");

const ReplayState = z
  .object({
    replay: z
      .object({
        from: z.string(),
        to: z.string().nullable(),
        requestedAt: z.string(),
        cancelled: z.boolean(),
      })
      .nullable(),
    lag: z.number().int().nullable().openapi({
      description: "Events not yet finished for the destination: the replay's progress (0 = done).",
    }),
  })
  .openapi("ReplayState");

const recoverRoute = createRoute({
  method: "post",
  path: "/api/destinations/{id}/recover",
  tags: ["destinations"],
  summary: "Re-send a destination's dead events since a time",
  description:
    "Every event that died at this destination at or after `since` gets a fresh attempt budget (events still " +
    "failing are being retried already). Answers how many.",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: {
    params: DestinationIdParams,
    body: { required: true, content: { "application/json": { schema: RecoverBody } } },
  },
  responses: {
    202: {
      description: "Queued",
      content: { "application/json": { schema: z.object({ recovered: z.number().int() }) } },
    },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const replayRoute = createRoute({
  method: "post",
  path: "/api/destinations/{id}/replay",
  tags: ["destinations"],
  summary: "Re-deliver every event the log still holds in a time window",
  description:
    "The destination's progress moves back to the first event accepted at or after `from` (Kafka's " +
    "offsets-for-times); events before `to` are delivered again even if delivered before, later ones as " +
    "usual. Per-user order is kept; live delivery to other destinations is not held; progress is `lag`; " +
    "DELETE cancels.",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: {
    params: DestinationIdParams,
    body: { required: true, content: { "application/json": { schema: ReplayBody } } },
  },
  responses: {
    202: { description: "Replay started", content: { "application/json": { schema: ReplayState } } },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const replayStateRoute = createRoute({
  method: "get",
  path: "/api/destinations/{id}/replay",
  tags: ["destinations"],
  summary: "The destination's last replay (or startFrom backfill) and its progress",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: {
    200: { description: "Replay state", content: { "application/json": { schema: ReplayState } } },
    ...problemResponses(401, 404),
  },
});

const cancelReplayRoute = createRoute({
  method: "delete",
  path: "/api/destinations/{id}/replay",
  tags: ["destinations"],
  summary: "Cancel a replay or backfill: progress jumps to where it was asked for",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: {
    202: { description: "Cancelled", content: { "application/json": { schema: ReplayState } } },
    ...problemResponses(401, 404, 409, 503),
  },
});

/** Per-destination operations beyond its settings: secret rotation, recover, replay. */
export function destinationControlRoutes(deps: AdminDeps) {
  const { db } = deps.store;
  const router = createRouter();

  router.openapi(rotateRoute, async (c) => {
    const { id } = c.req.valid("param");
    // An absent body is an empty one.
    const body: z.infer<typeof RotateBody> = c.req.valid("json") ?? {};
    const row = await oneAtATime(deps.store, id, async () => {
      const existing = getDestination(db, id);
      if (!existing) throw notFoundDestination(id);
      const secret = body.secret ?? newSecret();
      if (secret === existing.secret) {
        throw invalidField("secret", "is the current secret; a rotation needs a new one");
      }
      const now = Date.now();
      const ttlMs = (body.previousSecretTtlHours ?? DEFAULT_PREVIOUS_SECRET_TTL_HOURS) * 3_600_000;
      const updated: Destination = {
        ...existing,
        secret,
        previousSecret: ttlMs > 0 ? existing.secret : null,
        previousSecretExpiresAt: ttlMs > 0 ? now + ttlMs : null,
        updatedAt: now,
      };
      try {
        await deps.state.putDestination(updated);
      } catch (err) {
        deps.logger.warn({ err, destinationId: id }, "could not write a secret rotation to Kafka");
        throw deliveryUnavailable("Kafka could not take the rotation; the secret is unchanged");
      }
      return updated;
    });
    deps.logger.info({ destinationId: id }, "destination secret rotated");
    return c.json(
      {
        id,
        secret: row.secret,
        previousSecretExpiresAt: row.previousSecretExpiresAt ? toIso(row.previousSecretExpiresAt) : null,
      },
      200,
    );
  });

  router.openapi(recoverRoute, async (c) => {
    const { id } = c.req.valid("param");
    const since = notInFuture("since", c.req.valid("json").since);
    const recovered = await oneAtATime(deps.store, id, async () => {
      const existing = getDestination(db, id);
      if (!existing || existing.kind === "operational") throw notFoundDestination(id);
      try {
        return await deps.delivery.replay(id, undefined, since);
      } catch (err) {
        deps.logger.warn({ err, destinationId: id }, "could not mark dead events for recovery");
        throw deliveryUnavailable("Kafka could not take the recovery; nothing was queued");
      }
    });
    return c.json({ recovered }, 202);
  });

  const writeReplay = async (existing: Destination, replay: Destination["replay"]) => {
    const updated: Destination = { ...existing, replay, updatedAt: Date.now() };
    try {
      await deps.state.putDestination(updated);
    } catch (err) {
      deps.logger.warn({ err, destinationId: existing.id }, "could not write a replay to Kafka");
      throw deliveryUnavailable("Kafka could not take the replay; nothing changed");
    }
    return updated;
  };
  const stateOf = async (row: Destination) => ({
    replay: replayView(row),
    lag: await deps.delivery.lag(row.id).catch(() => null),
  });

  router.openapi(replayRoute, async (c) => {
    const { id } = c.req.valid("param");
    const { from, to } = c.req.valid("json");
    notInFuture("from", from);
    if (to !== undefined && to <= from) throw invalidField("to", "must be after from");
    const row = await oneAtATime(deps.store, id, async () => {
      const existing = getDestination(db, id);
      if (!existing || existing.kind === "operational") throw notFoundDestination(id);
      const now = Date.now();
      return writeReplay(existing, {
        id: randomUUID(),
        from,
        to: to ?? null,
        requestedAt: now,
        cancelled: false,
      });
    });
    deps.logger.info({ destinationId: id, from, to }, "destination replay started");
    return c.json(await stateOf(row), 202);
  });

  router.openapi(replayStateRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = getDestination(db, id);
    if (!row || row.kind === "operational") throw notFoundDestination(id);
    return c.json(await stateOf(row), 200);
  });

  router.openapi(cancelReplayRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await oneAtATime(deps.store, id, async () => {
      const existing = getDestination(db, id);
      if (!existing || existing.kind === "operational") throw notFoundDestination(id);
      if (!existing.replay || existing.replay.cancelled) {
        throw new HttpProblem(409, "Conflict", `destination ${id} has no replay to cancel`);
      }
      return writeReplay(existing, { ...existing.replay, cancelled: true });
    });
    deps.logger.info({ destinationId: id }, "destination replay cancelled");
    return c.json(await stateOf(row), 202);
  });

  return router;
}
