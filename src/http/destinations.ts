import { randomBytes, randomUUID } from "node:crypto";
import { createRoute, z } from "@hono/zod-openapi";
import { checkDestinationUrl, UnsafeDestinationError } from "../delivery/ssrf.ts";
import {
  DELIVERY_CONTROL_DEFAULTS,
  type Destination,
  type DestinationPatch,
  getDestination,
  listDestinations,
} from "../store/destinations.ts";
import {
  type AdminDeps,
  adminJsonBody,
  DestinationIdParams,
  deliveryUnavailable,
  notFoundDestination,
  oneAtATime,
  problemResponses,
} from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import {
  CreateDestinationBody,
  DESTINATION_DEFAULTS,
  DestinationSchema,
  DestinationWithLagSchema,
  destinationView,
  FILTER_COMPONENT,
  notInFuture,
  PatchDestinationBody,
} from "./destination-schemas.ts";
import { invalidField } from "./problem.ts";
import { createRouter } from "./router.ts";

/** `dest_` + 16 random bytes in hex: unguessable, and a valid Kafka group-id suffix. */
export function newDestinationId(): string {
  return `dest_${randomBytes(16).toString("hex")}`;
}

/** A fresh Standard Webhooks secret: `whsec_` + base64 of 32 random bytes. */
export function newSecret(): string {
  return `whsec_${randomBytes(32).toString("base64")}`;
}

/** The SSRF guard's registration-time check; its refusal is the client's fault, a 400 on `url`. */
async function assertSafeUrl(url: string, allowPrivate: boolean): Promise<void> {
  try {
    await checkDestinationUrl(url, { allowPrivate });
  } catch (err) {
    if (err instanceof UnsafeDestinationError) throw invalidField("url", err.message);
    throw err;
  }
}

const json = { "application/json": { schema: DestinationSchema } };

/** OpenAPI links from a new destination's id to the operations behind it (stateful clients, fuzzers). */
const byNewId = (operationId: string) => ({ operationId, parameters: { id: "$response.body#/id" } });

const createDestination = createRoute({
  method: "post",
  path: "/api/destinations",
  operationId: "createDestination",
  tags: ["destinations"],
  summary: "Register a destination",
  description:
    "Every event accepted after the 201 is delivered to it: the new consumer group is pinned to the " +
    "events topic's end before the destination is stored.",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: { body: { required: true, content: { "application/json": { schema: CreateDestinationBody } } } },
  responses: {
    201: {
      description: "The destination, with its id and secret",
      content: json,
      links: {
        GetDestination: byNewId("getDestination"),
        UpdateDestination: byNewId("updateDestination"),
        DeleteDestination: byNewId("deleteDestination"),
        ListDestinationAttempts: byNewId("listDestinationAttempts"),
        ListDeadLetters: byNewId("listDeadLetters"),
        ReplayDeadLetters: byNewId("replayDeadLetters"),
      },
    },
    ...problemResponses(400, 401, 413, 415, 503),
  },
});

const listRoute = createRoute({
  method: "get",
  path: "/api/destinations",
  operationId: "listDestinations",
  tags: ["destinations"],
  summary: "List destinations, oldest first",
  security: adminSecurity,
  responses: {
    200: {
      description: "Every destination",
      content: { "application/json": { schema: z.object({ destinations: z.array(DestinationSchema) }) } },
    },
    ...problemResponses(401, 503),
  },
});

const getRoute = createRoute({
  method: "get",
  path: "/api/destinations/{id}",
  operationId: "getDestination",
  tags: ["destinations"],
  summary: "Get a destination",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: {
    200: {
      description: "The destination, with its lag",
      content: { "application/json": { schema: DestinationWithLagSchema } },
    },
    ...problemResponses(400, 401, 404, 503),
  },
});

const patchRoute = createRoute({
  method: "patch",
  path: "/api/destinations/{id}",
  operationId: "updateDestination",
  tags: ["destinations"],
  summary: "Change a destination's settings, or disable/enable it",
  description: "The worker picks the change up without losing its position.",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: {
    params: DestinationIdParams,
    body: { required: true, content: { "application/json": { schema: PatchDestinationBody } } },
  },
  responses: {
    200: { description: "The changed destination", content: json },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const deleteRoute = createRoute({
  method: "delete",
  path: "/api/destinations/{id}",
  operationId: "deleteDestination",
  tags: ["destinations"],
  summary: "Delete a destination, stop its worker and delete its consumer group",
  security: adminSecurity,
  request: { params: DestinationIdParams },
  responses: { 204: { description: "Deleted" }, ...problemResponses(400, 401, 404, 503) },
});

type Kind = Destination["kind"];

/** A destination of this kind (webhook or operational); the other kind's routes answer 404 for it. */
function getOfKind(deps: AdminDeps, id: string, kind: Kind): Destination | undefined {
  const row = getDestination(deps.store.db, id);
  return row && (row.kind ?? "webhook") === kind ? row : undefined;
}

/** Registers a destination: its group pinned to the log's end, then the row written to Kafka. */
export async function registerDestination(
  deps: AdminDeps,
  body: z.infer<typeof CreateDestinationBody>,
  kind: Kind,
): Promise<Destination> {
  const backoffBaseMs = body.backoffBaseMs ?? DESTINATION_DEFAULTS.backoffBaseMs;
  const backoffMaxMs = body.backoffMaxMs ?? DESTINATION_DEFAULTS.backoffMaxMs;
  await assertSafeUrl(body.url, deps.config.ALLOW_PRIVATE_DESTINATIONS);

  const id = newDestinationId();
  // The group's offsets are pinned before the row exists: if Kafka cannot do it, nothing is stored and
  // the client retries; if it succeeds, no event accepted after our 201 can slip past the new worker.
  const fromMs =
    body.startFrom === undefined
      ? undefined
      : body.startFrom === "earliest"
        ? 0
        : notInFuture("startFrom", body.startFrom);
  try {
    await deps.delivery.prepareDestination(id, fromMs);
  } catch (err) {
    deps.logger.warn({ err, destinationId: id }, "could not prepare the consumer group of a new destination");
    throw deliveryUnavailable(
      "Kafka could not set up the destination's consumer group; nothing was registered",
    );
  }
  const now = Date.now();
  const row: Destination = {
    id,
    name: body.name ?? null,
    url: body.url,
    eventTypes: body.eventTypes ?? [],
    headers: body.headers ?? {},
    secret: body.secret ?? newSecret(),
    maxAttempts: body.maxAttempts ?? DESTINATION_DEFAULTS.maxAttempts,
    timeoutMs: body.timeoutMs ?? DESTINATION_DEFAULTS.timeoutMs,
    backoffBaseMs,
    backoffMaxMs,
    maxConcurrency: body.maxConcurrency ?? DESTINATION_DEFAULTS.maxConcurrency,
    ...DELIVERY_CONTROL_DEFAULTS,
    kind,
    filter: body.filter ?? null,
    rateLimitPerSecond: body.rateLimitPerSecond ?? null,
    rateLimitBurst: body.rateLimitBurst ?? null,
    autoDisableAfterHours:
      body.autoDisableAfterHours === undefined
        ? DELIVERY_CONTROL_DEFAULTS.autoDisableAfterHours
        : body.autoDisableAfterHours,
    autoDisableAfterDeadLetters: body.autoDisableAfterDeadLetters ?? null,
    // A backfill is a replay from `startFrom` up to the registration: cancellable the same way.
    replay:
      fromMs === undefined
        ? null
        : { id: randomUUID(), from: fromMs, to: null, requestedAt: now, cancelled: false },
    disabled: false,
    disabledReason: null,
    createdAt: now,
    updatedAt: now,
  };
  // Kafka first (the config topic): every replica's view applies it and starts its workers; this one
  // has by the time the write returns.
  try {
    await deps.state.putDestination(row);
  } catch (err) {
    deps.logger.warn({ err, destinationId: id }, "could not write a new destination to Kafka");
    throw deliveryUnavailable("Kafka could not take the destination; nothing was registered");
  }
  deps.logger.info({ destinationId: id, kind }, "destination registered");
  return getDestination(deps.store.db, id) ?? row;
}

/** Applies a PATCH body to a destination of this kind (404 for another kind). */
export async function changeDestination(
  deps: AdminDeps,
  id: string,
  body: z.infer<typeof PatchDestinationBody>,
  kind: Kind,
): Promise<Destination> {
  const row = await oneAtATime(deps.store, id, async () => {
    if (!getOfKind(deps, id, kind)) throw notFoundDestination(id);
    if (body.url !== undefined) await assertSafeUrl(body.url, deps.config.ALLOW_PRIVATE_DESTINATIONS);
    // Read and write with no await in between, so nothing changes the row in between.
    const existing = getOfKind(deps, id, kind);
    if (!existing) throw notFoundDestination(id);
    const updated: Destination = { ...existing, ...toPatch(existing, body), updatedAt: Date.now() };
    try {
      await deps.state.putDestination(updated);
    } catch (err) {
      deps.logger.warn({ err, destinationId: id }, "could not write a destination change to Kafka");
      throw deliveryUnavailable("Kafka could not take the change; nothing was changed");
    }
    if (updated.disabled !== existing.disabled) {
      await deps.delivery.announce?.(
        updated,
        updated.disabled ? "destination.disabled" : "destination.enabled",
      );
    }
    return getDestination(deps.store.db, id) ?? updated;
  });
  deps.logger.info({ destinationId: id, fields: Object.keys(body) }, "destination changed");
  return row;
}

/** Deletes a destination of this kind (404 for another kind). */
export async function deleteDestinationOfKind(deps: AdminDeps, id: string, kind: Kind): Promise<void> {
  await oneAtATime(deps.store, id, async () => {
    if (!getOfKind(deps, id, kind)) throw notFoundDestination(id);
    // A tombstone on the config topic: every replica's view deletes the row, stops its workers and
    // deletes the consumer group. If Kafka refuses, nothing changed and the client can retry.
    try {
      await deps.state.removeDestination(id);
    } catch (err) {
      deps.logger.warn({ err, destinationId: id }, "could not write a destination's deletion to Kafka");
      throw deliveryUnavailable("Kafka could not take the deletion; nothing was deleted");
    }
  });
  deps.logger.info({ destinationId: id }, "destination deleted");
}

/** Destinations of one kind, oldest first. */
export function listOfKind(deps: AdminDeps, kind: Kind): Destination[] {
  return listDestinations(deps.store.db).filter((d) => (d.kind ?? "webhook") === kind);
}

/** The /api/destinations resource. Every write goes store-then-delivery in the order DeliveryControl documents. */
export function destinationRoutes(deps: AdminDeps) {
  const router = createRouter();
  router.openAPIRegistry.registerComponent("schemas", "Filter", FILTER_COMPONENT);

  router.openapi(createDestination, async (c) => {
    const row = await registerDestination(deps, c.req.valid("json"), "webhook");
    return c.json(destinationView(row), 201);
  });

  router.openapi(listRoute, (c) =>
    c.json({ destinations: listOfKind(deps, "webhook").map(destinationView) }, 200),
  );

  router.openapi(getRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = getOfKind(deps, id, "webhook");
    if (!row) throw notFoundDestination(id);
    const lag = await deps.delivery.lag(id).catch(() => null);
    return c.json({ ...destinationView(row), lag }, 200);
  });

  router.openapi(patchRoute, async (c) => {
    const { id } = c.req.valid("param");
    const row = await changeDestination(deps, id, c.req.valid("json"), "webhook");
    return c.json(destinationView(row), 200);
  });

  router.openapi(deleteRoute, async (c) => {
    const { id } = c.req.valid("param");
    await deleteDestinationOfKind(deps, id, "webhook");
    return c.body(null, 204);
  });

  return router;
}

/** The columns a PATCH body changes; fields it leaves out keep their value. */
function toPatch(existing: Destination, body: z.infer<typeof PatchDestinationBody>): DestinationPatch {
  const patch: DestinationPatch = {};
  if (body.url !== undefined) patch.url = body.url;
  if (body.name !== undefined) patch.name = body.name;
  if (body.eventTypes !== undefined) patch.eventTypes = body.eventTypes;
  if (body.headers !== undefined) patch.headers = body.headers;
  if (body.secret !== undefined) patch.secret = body.secret;
  if (body.maxAttempts !== undefined) patch.maxAttempts = body.maxAttempts;
  if (body.timeoutMs !== undefined) patch.timeoutMs = body.timeoutMs;
  if (body.backoffBaseMs !== undefined) patch.backoffBaseMs = body.backoffBaseMs;
  if (body.backoffMaxMs !== undefined) patch.backoffMaxMs = body.backoffMaxMs;
  if (body.maxConcurrency !== undefined) patch.maxConcurrency = body.maxConcurrency;
  if (body.filter !== undefined) patch.filter = body.filter;
  if (body.rateLimitPerSecond !== undefined) patch.rateLimitPerSecond = body.rateLimitPerSecond;
  if (body.rateLimitBurst !== undefined) patch.rateLimitBurst = body.rateLimitBurst;
  if (body.autoDisableAfterHours !== undefined) patch.autoDisableAfterHours = body.autoDisableAfterHours;
  if (body.autoDisableAfterDeadLetters !== undefined) {
    patch.autoDisableAfterDeadLetters = body.autoDisableAfterDeadLetters;
  }
  if (body.disabled === false) {
    patch.disabled = false;
    patch.disabledReason = null;
    // Enabled again: the failing streak starts over (auto-disable counts from now).
    if (existing.disabled) patch.streakResetAt = Date.now();
  } else if (body.disabled === true && !existing.disabled) {
    // A destination the worker disabled (410 Gone) keeps the worker's reason.
    patch.disabled = true;
    patch.disabledReason = "disabled through the admin API";
  }
  return patch;
}
