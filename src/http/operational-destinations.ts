import { createRoute, z } from "@hono/zod-openapi";
import { OPERATIONAL_TYPES } from "../delivery/operational.ts";
import { getDestination } from "../store/destinations.ts";
import {
  type AdminDeps,
  adminJsonBody,
  DestinationIdParams,
  notFoundDestination,
  problemResponses,
} from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import {
  CreateDestinationBody,
  DestinationSchema,
  destinationView,
  PatchDestinationBody,
} from "./destination-schemas.ts";
import {
  changeDestination,
  deleteDestinationOfKind,
  listOfKind,
  registerDestination,
} from "./destinations.ts";
import { createRouter } from "./router.ts";

const tags = ["operational webhooks"];
const json = { "application/json": { schema: DestinationSchema } };
const about =
  `Operator endpoints receive operational events (${OPERATIONAL_TYPES.join(", ")}), signed like any ` +
  "webhook, with their own retries; `eventTypes` picks some of them. They never receive user events, " +
  "and raise no operational events themselves.";

/** Operational destinations read the gateway's own events, so there is no history to backfill (`startFrom`). */
const CreateOperationalBody = CreateDestinationBody.omit({ startFrom: true }).openapi(
  "CreateOperationalDestination",
);

const createRouteDef = createRoute({
  method: "post",
  path: "/api/operational-destinations",
  tags,
  summary: "Register an operator endpoint for operational webhooks",
  description: about,
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: { body: { required: true, content: { "application/json": { schema: CreateOperationalBody } } } },
  responses: {
    201: { description: "The operational destination", content: json },
    ...problemResponses(400, 401, 413, 415, 503),
  },
});

const listRouteDef = createRoute({
  method: "get",
  path: "/api/operational-destinations",
  tags,
  summary: "List operational destinations, oldest first",
  security: adminSecurity,
  responses: {
    200: {
      description: "Every operational destination",
      content: { "application/json": { schema: z.object({ destinations: z.array(DestinationSchema) }) } },
    },
    ...problemResponses(401),
  },
});

const getRouteDef = createRoute({
  method: "get",
  path: "/api/operational-destinations/{id}",
  tags,
  summary: "Get an operational destination",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: {
    200: { description: "The operational destination", content: json },
    ...problemResponses(401, 404),
  },
});

const patchRouteDef = createRoute({
  method: "patch",
  path: "/api/operational-destinations/{id}",
  tags,
  summary: "Change an operational destination",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: {
    params: DestinationIdParams,
    body: { required: true, content: { "application/json": { schema: PatchDestinationBody } } },
  },
  responses: {
    200: { description: "The changed operational destination", content: json },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const deleteRouteDef = createRoute({
  method: "delete",
  path: "/api/operational-destinations/{id}",
  tags,
  summary: "Delete an operational destination",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: { 204: { description: "Deleted" }, ...problemResponses(401, 404, 503) },
});

/** /api/operational-destinations: destinations of kind "operational", through the same write path. */
export function operationalDestinationRoutes(deps: AdminDeps) {
  const router = createRouter();
  router.openapi(createRouteDef, async (c) => {
    const row = await registerDestination(deps, c.req.valid("json"), "operational");
    return c.json(destinationView(row), 201);
  });
  router.openapi(listRouteDef, (c) =>
    c.json({ destinations: listOfKind(deps, "operational").map(destinationView) }, 200),
  );
  router.openapi(getRouteDef, (c) => {
    const { id } = c.req.valid("param");
    const row = getDestination(deps.store.db, id);
    if (row?.kind !== "operational") throw notFoundDestination(id);
    return c.json(destinationView(row), 200);
  });
  router.openapi(patchRouteDef, async (c) => {
    const { id } = c.req.valid("param");
    const row = await changeDestination(deps, id, c.req.valid("json"), "operational");
    return c.json(destinationView(row), 200);
  });
  router.openapi(deleteRouteDef, async (c) => {
    const { id } = c.req.valid("param");
    await deleteDestinationOfKind(deps, id, "operational");
    return c.body(null, 204);
  });
  return router;
}
