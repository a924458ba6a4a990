import { createRoute, z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { EventTypeCatalog, SchemaError } from "../ingest/event-types.ts";
import {
  AcceptedBatchSchema,
  AcceptedEventSchema,
  EventBatchSchema,
  type EventInput,
  EventInputSchema,
  EventNotSerializableError,
} from "../ingest/events.ts";
import {
  type Accepted,
  IdempotencyKeyInFlightError,
  IdempotencyKeyReusedError,
  type IdempotencyRequest,
  type IngestService,
} from "../ingest/service.ts";
import { KafkaUnavailableError } from "../kafka/sink.ts";
import { activeTracer } from "../telemetry.ts";
import { bearerCheck } from "./auth.ts";
import { header, jsonBodyGuard, readJson } from "./body.ts";
import { HttpProblem, invalidRequest, ProblemSchema } from "./problem.ts";
import { createRouter } from "./router.ts";

export interface IngestDeps {
  service: IngestService;
  /** The event-type catalog: registered types' payloads are validated, unknown types allowed or refused. */
  eventTypes?: EventTypeCatalog;
  /** Empty: ingest is open. Otherwise `Authorization: Bearer <one of these>` is required. */
  apiKeys: string[];
  maxBodyBytes: number;
  /** Seconds clients are told to wait (Retry-After) when Kafka cannot take events. */
  retryAfterSeconds: number;
}

type IngestEnv = { Variables: { ingestScope: string } };

const problem = (description: string) => ({
  description,
  content: { "application/problem+json": { schema: ProblemSchema } },
});

const IngestHeadersSchema = z.object({
  "idempotency-key": z
    .string()
    .min(1)
    .max(255)
    .regex(/^[\x21-\x7e]+$/, "must be 1–255 visible ASCII characters")
    .optional()
    .openapi({
      description:
        "A repeat within the idempotency TTL (24 h by default) gets the original answer and writes nothing new.",
    }),
});

const errorResponses = {
  400: problem(
    "Malformed JSON, or a field is missing or invalid, or a payload fails its event type's JSON Schema, or " +
      "its `type` is not in the catalog under UNKNOWN_EVENT_TYPES=reject (`errors` names each, e.g. " +
      "`events.3.payload.amount`).",
  ),
  401: problem("Ingest API keys are configured and the request has none, or a wrong one."),
  409: problem("A request with the same Idempotency-Key is still in progress."),
  413: problem("The body is over the size limit."),
  415: problem("The body is not `application/json`."),
  422: problem("The Idempotency-Key was used before with a different body."),
  503: problem(
    "Kafka did not acknowledge the event(s) in time; nothing was accepted. Retry after `Retry-After`.",
  ),
};

/** zod's verdict as the 400 problem every route gives (`errors` naming each field). */
function validate<T extends z.ZodType>(schema: T, value: unknown): z.output<T> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  throw invalidRequest(result.error.issues);
}

/** A 400 naming every schema error of the events (`payload.x`, or `events.3.payload.x` in a batch). */
function checkTypes(catalog: EventTypeCatalog | undefined, events: EventInput[], batch: boolean): void {
  if (catalog === undefined) return;
  let errors: SchemaError[] | undefined;
  for (let i = 0; i < events.length; i++) {
    const event = events[i] as EventInput;
    const found = catalog.check(event.type, event.payload);
    if (found === undefined) continue;
    errors ??= [];
    for (const e of found) errors.push(batch ? { field: `events.${i}.${e.field}`, message: e.message } : e);
    if (errors.length >= 50) break;
  }
  if (errors === undefined) return;
  const first = errors[0] as SchemaError;
  throw new HttpProblem(400, "Invalid request", `${first.field}: ${first.message}`, { errors });
}

function idempotencyOf(c: Context<IngestEnv>): IdempotencyRequest | undefined {
  const raw = header(c, "idempotency-key");
  if (raw === undefined) return undefined;
  const key = validate(IngestHeadersSchema, { "idempotency-key": raw })["idempotency-key"];
  return key === undefined ? undefined : { key, scope: c.get("ingestScope") };
}

/** The client's W3C `traceparent`, read only when tracing is on (the ingest span continues its trace). */
function clientTraceparent(c: Context): string | undefined {
  return activeTracer() === undefined ? undefined : header(c, "traceparent");
}

function toProblem(err: unknown, retryAfterSeconds: number): unknown {
  if (err instanceof KafkaUnavailableError) {
    return new HttpProblem(
      503,
      "Kafka unavailable",
      `nothing was accepted: ${err.message}; retry after ${retryAfterSeconds} s`,
      { headers: { "retry-after": String(retryAfterSeconds) } },
    );
  }
  if (err instanceof IdempotencyKeyReusedError) {
    return new HttpProblem(422, "Idempotency key reused", err.message, {
      errors: [{ field: "Idempotency-Key", message: err.message }],
    });
  }
  if (err instanceof IdempotencyKeyInFlightError) {
    return new HttpProblem(409, "Idempotency key in use", err.message, { headers: { "retry-after": "1" } });
  }
  if (err instanceof EventNotSerializableError) {
    return new HttpProblem(400, "Invalid request", err.message, {
      errors: [{ field: "payload", message: err.message }],
    });
  }
  return err;
}

function replayHeader(c: Context, accepted: Accepted): void {
  if (accepted.replayed) c.header("idempotent-replayed", "true");
}

/** `POST /api/singleEvent` and `POST /api/events`: validate, produce with acks=all, answer 202. */
export function ingestRoutes(deps: IngestDeps) {
  const app = createRouter<IngestEnv>();
  // Cheapest refusals first: no key, then wrong media type, then size — all before the body is read, and
  // all synchronous (see `guarded` below for where they run).
  const authCheck: (c: Context<IngestEnv>) => void =
    deps.apiKeys.length === 0
      ? (c) => c.set("ingestScope", "-")
      : bearerCheck({
          tokens: deps.apiKeys,
          realm: "ingest",
          needs: "Authorization: Bearer <ingest API key>",
          // Idempotency keys are scoped per API key, so two clients' keys cannot collide.
          onMatch: (c, tokenDigest) =>
            c.set("ingestScope", tokenDigest.subarray(0, 12).toString("base64url")),
        });
  const bodyGuard = jsonBodyGuard({ maxBytes: deps.maxBodyBytes });
  // The checks run inside the route's one handler rather than as a middleware in front of it: hono calls
  // a route with a single handler directly, and composes one with several through a promise per step.
  // The body guard hands back what its `next` returns (hono's bodyLimit too): the handler's response.
  const guarded =
    (handler: (c: Context<IngestEnv>) => Promise<Response>) =>
    (c: Context<IngestEnv>): Promise<Response> => {
      authCheck(c);
      return bodyGuard(c, () => handler(c) as Promise<never>) as Promise<Response>;
    };
  const security = deps.apiKeys.length > 0 ? [{ IngestApiKey: [] }] : [];
  if (deps.apiKeys.length > 0) {
    app.openAPIRegistry.registerComponent("securitySchemes", "IngestApiKey", {
      type: "http",
      scheme: "bearer",
    });
  }

  const singleEvent = createRoute({
    method: "post",
    path: "/api/singleEvent",
    operationId: "ingestEvent",
    tags: ["ingest"],
    summary: "Accept one event",
    description:
      "Answers 202 once every in-sync Kafka replica holds the event (key = userID), 503 if Kafka cannot.",
    security,
    request: {
      headers: IngestHeadersSchema,
      body: { required: true, content: { "application/json": { schema: EventInputSchema } } },
    },
    responses: {
      202: {
        description: "Kafka holds the event.",
        content: { "application/json": { schema: AcceptedEventSchema } },
        links: {
          ListEventAttempts: { operationId: "listEventAttempts", parameters: { id: "$response.body#/id" } },
        },
      },
      ...errorResponses,
    },
  });

  const events = createRoute({
    method: "post",
    path: "/api/events",
    operationId: "ingestEvents",
    tags: ["ingest"],
    summary: "Accept a batch of events, all or nothing",
    description:
      "Answers 202 only when Kafka acknowledged every event. After a 503 some events may be in Kafka: retry with " +
      "the same Idempotency-Key and the same event ids are sent again, so deliveries are not duplicated.",
    security,
    request: {
      headers: IngestHeadersSchema,
      body: { required: true, content: { "application/json": { schema: EventBatchSchema } } },
    },
    responses: {
      202: {
        description: "Kafka holds every event.",
        content: { "application/json": { schema: AcceptedBatchSchema } },
      },
      ...errorResponses,
    },
  });

  // The routes are documented from their zod schemas, but served by plain handlers that validate with the
  // same schemas: zod-openapi's validators read headers through the WHATWG Headers object (see header()).
  app.openAPIRegistry.registerPath(singleEvent);
  app.openAPIRegistry.registerPath(events);

  app.post(
    singleEvent.path,
    guarded(async (c) => {
      const event = validate(EventInputSchema, await readJson(c));
      checkTypes(deps.eventTypes, [event], false);
      const idempotency = idempotencyOf(c);
      let accepted: Accepted;
      try {
        accepted = await deps.service.accept("singleEvent", [event], idempotency, clientTraceparent(c));
      } catch (err) {
        throw toProblem(err, deps.retryAfterSeconds);
      }
      replayHeader(c, accepted);
      return c.json(
        {
          id: accepted.ids[0] as string,
          userID: event.userID,
          type: event.type,
          receivedAt: accepted.receivedAt,
        },
        202,
      );
    }),
  );

  app.post(
    events.path,
    guarded(async (c) => {
      const body = validate(EventBatchSchema, await readJson(c));
      checkTypes(deps.eventTypes, body.events, true);
      const idempotency = idempotencyOf(c);
      let accepted: Accepted;
      try {
        accepted = await deps.service.accept("events", body.events, idempotency, clientTraceparent(c));
      } catch (err) {
        throw toProblem(err, deps.retryAfterSeconds);
      }
      replayHeader(c, accepted);
      return c.json({ ids: accepted.ids, receivedAt: accepted.receivedAt }, 202);
    }),
  );

  return app;
}
