import { createRoute, z } from "@hono/zod-openapi";
import { type Destination, getDestination } from "../store/destinations.ts";
import {
  type AdminDeps,
  DestinationIdParams,
  deliveryUnavailable,
  jsonBody,
  notFoundDestination,
  oneAtATime,
  problemResponses,
  toIso,
} from "./admin-shared.ts";
import { createRouter } from "./app.ts";
import { adminSecurity } from "./auth.ts";
import { Secret } from "./destination-schemas.ts";
import { newSecret } from "./destinations.ts";
import { HttpProblem } from "./problem.ts";

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
  middleware: jsonBody({ optional: true }),
  request: {
    params: DestinationIdParams,
    body: { required: false, content: { "application/json": { schema: RotateBody } } },
  },
  responses: {
    200: { description: "The new secret", content: { "application/json": { schema: RotatedSchema } } },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

/** Per-destination operations beyond its settings: secret rotation. */
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
        throw new HttpProblem(400, "Invalid request", "secret: is the current secret", {
          errors: [{ field: "secret", message: "is the current secret" }],
        });
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

  return router;
}
