import { createRoute, z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import { compileSchema, type EventTypeCatalog, isSchemaShaped, NOT_A_SCHEMA } from "../ingest/event-types.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import { type EventType, getEventType, listEventTypes } from "../store/event-types.ts";
import { adminJsonBody, deliveryUnavailable, oneAtATime, problemResponses, toIso } from "./admin-shared.ts";
import { adminSecurity } from "./auth.ts";
import { HttpProblem, invalidField } from "./problem.ts";
import { createRouter } from "./router.ts";

/** What the event-type routes need: the catalog's writes go to Kafka (config topic) like destinations. */
export interface EventTypeDeps {
  store: Store;
  logger: Logger;
  catalog: EventTypeCatalog;
  state: {
    putEventType(row: EventType): Promise<void>;
    removeEventType(name: string): Promise<void>;
  };
}

const Name = z
  .string()
  .regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1–128 characters of [A-Za-z0-9._-]")
  .openapi({ example: "order.created", description: "The `type` of the events it describes." });
const Description = z.string().max(2000);
const JsonSchema = z
  .unknown()
  .superRefine((v, ctx) => {
    if (v === undefined) ctx.addIssue({ code: "custom", message: "required (a JSON Schema 2020-12)" });
    else if (!isSchemaShaped(v)) ctx.addIssue({ code: "custom", message: NOT_A_SCHEMA });
  })
  .openapi({
    type: ["object", "boolean"],
    description:
      "JSON Schema (2020-12) of the events' `payload` (an object or a boolean), compiled once with Ajv: " +
      "one Ajv refuses (not a valid 2020-12 schema, an unknown keyword in strict mode) is a 400 with Ajv's reason.",
    example: {
      type: "object",
      required: ["orderId", "amount"],
      properties: { orderId: { type: "string" }, amount: { type: "number", minimum: 0 } },
    },
  });

const CreateBody = z
  .strictObject({ name: Name, description: Description.optional(), schema: JsonSchema })
  .openapi("CreateEventType");
const PatchBody = z
  .strictObject({ description: Description.nullable().optional(), schema: JsonSchema.optional() })
  .openapi("PatchEventType");

const EventTypeSchema = z
  .object({
    name: z.string(),
    description: z.string().nullable(),
    schema: z.unknown(),
    createdAt: z.string().openapi({ format: "date-time" }),
    updatedAt: z.string().openapi({ format: "date-time" }),
  })
  .openapi("EventType");

const NameParams = z.object({
  name: z
    .string()
    .min(1)
    .max(200)
    .openapi({ param: { name: "name", in: "path" }, example: "order.created" }),
});

function view(row: EventType) {
  return {
    name: row.name,
    description: row.description,
    schema: row.schema,
    createdAt: toIso(row.createdAt),
    updatedAt: toIso(row.updatedAt),
  };
}

function notFound(name: string): HttpProblem {
  return new HttpProblem(404, "Not found", `no event type named ${name}`);
}

/** A schema Ajv cannot compile (strict: an unknown keyword, usually a typo) is a 400 on `schema` with Ajv's reason. */
function assertCompiles(schema: unknown): void {
  try {
    compileSchema(schema);
  } catch (err) {
    throw invalidField("schema", (err as Error).message);
  }
}

const json = { "application/json": { schema: EventTypeSchema } };
const tags = ["event types"];

const createRouteDef = createRoute({
  method: "post",
  path: "/api/event-types",
  tags,
  summary: "Register an event type and the JSON Schema of its payload",
  description:
    "From the answer on, ingest of an event of this type validates its `payload` against the schema (a " +
    "400 lists the schema errors), on every replica.",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: { body: { required: true, content: { "application/json": { schema: CreateBody } } } },
  responses: {
    201: { description: "The event type", content: json },
    ...problemResponses(400, 401, 409, 413, 415, 503),
  },
});

const listRouteDef = createRoute({
  method: "get",
  path: "/api/event-types",
  tags,
  summary: "The event-type catalog, by name",
  security: adminSecurity,
  responses: {
    200: {
      description: "Every event type",
      content: { "application/json": { schema: z.object({ eventTypes: z.array(EventTypeSchema) }) } },
    },
    ...problemResponses(401),
  },
});

const getRouteDef = createRoute({
  method: "get",
  path: "/api/event-types/{name}",
  tags,
  summary: "Get an event type",
  security: adminSecurity,
  request: { params: NameParams },
  responses: { 200: { description: "The event type", content: json }, ...problemResponses(401, 404) },
});

const patchRouteDef = createRoute({
  method: "patch",
  path: "/api/event-types/{name}",
  tags,
  summary: "Change an event type's description or schema",
  security: adminSecurity,
  middleware: adminJsonBody(),
  request: {
    params: NameParams,
    body: { required: true, content: { "application/json": { schema: PatchBody } } },
  },
  responses: {
    200: { description: "The changed event type", content: json },
    ...problemResponses(400, 401, 404, 413, 415, 503),
  },
});

const deleteRouteDef = createRoute({
  method: "delete",
  path: "/api/event-types/{name}",
  tags,
  summary: "Delete an event type (its events are then unknown: UNKNOWN_EVENT_TYPES decides)",
  security: adminSecurity,
  request: { params: NameParams },
  responses: { 204: { description: "Deleted" }, ...problemResponses(401, 404, 503) },
});

/** The /api/event-types resource. */
export function eventTypeRoutes(deps: EventTypeDeps) {
  const { db } = deps.store;
  const router = createRouter();
  const write = async (name: string, row: EventType | null) => {
    try {
      if (row) await deps.state.putEventType(row);
      else await deps.state.removeEventType(name);
    } catch (err) {
      deps.logger.warn({ err, eventType: name }, "could not write an event type to Kafka");
      throw deliveryUnavailable("Kafka could not take the change; nothing was changed");
    }
  };
  const lockKey = (name: string) => `event-type/${name}`;

  router.openapi(createRouteDef, async (c) => {
    const body = c.req.valid("json");
    assertCompiles(body.schema);
    const row = await oneAtATime(deps.store, lockKey(body.name), async () => {
      if (getEventType(db, body.name)) {
        throw new HttpProblem(409, "Conflict", `event type ${body.name} exists; PATCH it to change it`);
      }
      const now = Date.now();
      const row: EventType = {
        name: body.name,
        description: body.description ?? null,
        schema: body.schema,
        createdAt: now,
        updatedAt: now,
      };
      await write(body.name, row);
      return row;
    });
    deps.logger.info({ eventType: body.name }, "event type registered");
    return c.json(view(row), 201);
  });

  router.openapi(listRouteDef, (c) => c.json({ eventTypes: listEventTypes(db).map(view) }, 200));

  router.openapi(getRouteDef, (c) => {
    const { name } = c.req.valid("param");
    const row = getEventType(db, name);
    if (!row) throw notFound(name);
    return c.json(view(row), 200);
  });

  router.openapi(patchRouteDef, async (c) => {
    const { name } = c.req.valid("param");
    const body = c.req.valid("json");
    if (body.schema !== undefined) assertCompiles(body.schema);
    const row = await oneAtATime(deps.store, lockKey(name), async () => {
      const existing = getEventType(db, name);
      if (!existing) throw notFound(name);
      const updated: EventType = {
        ...existing,
        description: body.description === undefined ? existing.description : body.description,
        schema: body.schema === undefined ? existing.schema : body.schema,
        updatedAt: Date.now(),
      };
      await write(name, updated);
      return updated;
    });
    return c.json(view(row), 200);
  });

  router.openapi(deleteRouteDef, async (c) => {
    const { name } = c.req.valid("param");
    await oneAtATime(deps.store, lockKey(name), async () => {
      if (!getEventType(db, name)) throw notFound(name);
      await write(name, null);
    });
    return c.body(null, 204);
  });

  return router;
}

/**
 * Adds the catalog to the OpenAPI document as OpenAPI 3.1 `webhooks`: one entry per event type, its
 * request body the delivered event with `payload` described by the type's schema.
 */
export function eventTypesInOpenApi(store: Store): MiddlewareHandler {
  return async (c, next) => {
    await next();
    if (c.res.status !== 200) return;
    const doc = (await c.res.json()) as Record<string, unknown>;
    const webhooks: Record<string, unknown> = {};
    for (const row of listEventTypes(store.db)) {
      webhooks[row.name] = {
        post: {
          summary: `${row.name} event`,
          description: row.description ?? undefined,
          requestBody: {
            required: true,
            content: {
              "application/json": {
                schema: {
                  type: "object",
                  required: ["id", "userID", "type", "timestamp", "payload"],
                  properties: {
                    id: { type: "string" },
                    userID: { type: "string" },
                    type: { const: row.name },
                    timestamp: { type: "string", format: "date-time" },
                    payload: row.schema,
                  },
                },
              },
            },
          },
          responses: { "2XX": { description: "Delivered" } },
        },
      };
    }
    c.res = new Response(JSON.stringify({ ...doc, webhooks: { ...(doc.webhooks as object), ...webhooks } }), {
      status: 200,
      headers: { "content-type": "application/json" },
    });
  };
}
