import type { IncomingMessage, ServerResponse } from "node:http";
import { RESPONSE_ALREADY_SENT } from "@hono/node-server/utils/response";
import { createRoute, type OpenAPIHono, z } from "@hono/zod-openapi";
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
  type IngestKind,
  type IngestService,
} from "../ingest/service.ts";
import { KafkaUnavailableError } from "../kafka/sink.ts";
import type { Logger } from "../log.ts";
import { activeTracer } from "../telemetry.ts";
import { bearerCheck } from "./auth.ts";
import { ClientGoneError, header, readJsonBody } from "./body.ts";
import { HttpProblem, invalidRequest, ProblemSchema, sendProblem } from "./problem.ts";
import { createRouter } from "./router.ts";
import type { DirectHandler } from "./server.ts";

export interface IngestDeps {
  service: IngestService;
  /** The event-type catalog: registered types' payloads are validated, unknown types allowed or refused. */
  eventTypes?: EventTypeCatalog;
  /** Empty: ingest is open. Otherwise `Authorization: Bearer <one of these>` is required. */
  apiKeys: string[];
  maxBodyBytes: number;
  /** Seconds clients are told to wait (Retry-After) when Kafka cannot take events. */
  retryAfterSeconds: number;
  /** For errors no route expected (500s). */
  logger: Logger;
}

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

function idempotencyOf(req: IncomingMessage, scope: string): IdempotencyRequest | undefined {
  const raw = header(req, "idempotency-key");
  if (raw === undefined) return undefined;
  const key = validate(IngestHeadersSchema, { "idempotency-key": raw })["idempotency-key"];
  return key === undefined ? undefined : { key, scope };
}

/** The client's W3C `traceparent`, read only when tracing is on (the ingest span continues its trace). */
function clientTraceparent(req: IncomingMessage): string | undefined {
  return activeTracer() === undefined ? undefined : header(req, "traceparent");
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

/** The answer of an accepted request: one event's, or a batch's. */
function acceptedBody(kind: IngestKind, events: EventInput[], accepted: Accepted): unknown {
  if (kind === "events") return { ids: accepted.ids, receivedAt: accepted.receivedAt };
  const event = events[0] as EventInput;
  return { id: accepted.ids[0], userID: event.userID, type: event.type, receivedAt: accepted.receivedAt };
}

export interface IngestHttp {
  /** The routes' OpenAPI documentation, and Hono handlers for requests only the app's router matches. */
  routes(): OpenAPIHono;
  /** `POST /api/singleEvent` and `POST /api/events`, served by serveApp ahead of the app (server.ts). */
  direct: ReadonlyMap<string, DirectHandler>;
}

/**
 * `POST /api/singleEvent` and `POST /api/events`: validate, produce with acks=all, answer 202.
 *
 * They are answered straight from Node's request (serveApp's direct routes), not through Hono: at the
 * highest rate Hono's routing, context and response conversion cost about 3.5 µs of the gateway's 30 per
 * event (bench/README.md, session 18). The checks and their order are those of every other route: the
 * cheapest refusals first — no key (401), wrong media type (415), size (413), all before the body is read —
 * then malformed JSON and invalid fields (400), the payload's event type (400), the Idempotency-Key
 * header (400); every refusal an `application/problem+json` document.
 */
export function ingestHttp(deps: IngestDeps): IngestHttp {
  const authorize: (req: IncomingMessage) => string =
    deps.apiKeys.length === 0
      ? () => "-"
      : (() => {
          const check = bearerCheck({
            tokens: deps.apiKeys,
            realm: "ingest",
            needs: "Authorization: Bearer <ingest API key>",
          });
          // Idempotency keys are scoped per API key, so two clients' keys cannot collide.
          return (req: IncomingMessage) => check(req).subarray(0, 12).toString("base64url");
        })();

  const serve =
    (kind: IngestKind): DirectHandler =>
    async (req, res, path) => {
      try {
        const scope = authorize(req);
        const body = await readJsonBody(req, deps.maxBodyBytes);
        const events =
          kind === "singleEvent"
            ? [validate(EventInputSchema, body)]
            : validate(EventBatchSchema, body).events;
        checkTypes(deps.eventTypes, events, kind === "events");
        const idempotency = idempotencyOf(req, scope);
        let accepted: Accepted;
        try {
          accepted = await deps.service.accept(kind, events, idempotency, clientTraceparent(req));
        } catch (err) {
          throw toProblem(err, deps.retryAfterSeconds);
        }
        const json = JSON.stringify(acceptedBody(kind, events, accepted));
        const headers: Record<string, string | number> = {
          "content-type": "application/json",
          "content-length": Buffer.byteLength(json),
        };
        if (accepted.replayed) headers["idempotent-replayed"] = "true";
        res.writeHead(202, headers);
        res.end(json);
      } catch (err) {
        if (err instanceof HttpProblem) return sendProblem(res, err, path);
        // Nobody is left to answer; nothing was accepted (the body never arrived whole).
        if (err instanceof ClientGoneError) return void res.destroy();
        deps.logger.error({ err, path, method: req.method }, "unhandled error in route");
        sendProblem(
          res,
          new HttpProblem(500, "Internal error", "the gateway failed to handle this request"),
          path,
        );
      }
    };

  const direct = new Map<string, DirectHandler>([
    ["POST /api/singleEvent", serve("singleEvent")],
    ["POST /api/events", serve("events")],
  ]);
  return { direct, routes: () => documentedRoutes(deps, direct) };
}

/**
 * The routes as the app's router sees them: documented from their zod schemas, and served by the direct
 * handlers when the app's router is the one that matched (a percent-encoded path, or the app served by
 * @hono/node-server's own `serve`).
 */
function documentedRoutes(deps: IngestDeps, direct: ReadonlyMap<string, DirectHandler>): OpenAPIHono {
  const app = createRouter();
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

  app.openAPIRegistry.registerPath(singleEvent);
  app.openAPIRegistry.registerPath(events);
  for (const route of [singleEvent, events]) {
    const handler = direct.get(`POST ${route.path}`) as DirectHandler;
    app.post(route.path, async (c) => {
      const { incoming, outgoing } = (c.env ?? {}) as {
        incoming?: IncomingMessage;
        outgoing?: ServerResponse;
      };
      if (!incoming || !outgoing) {
        throw new HttpProblem(500, "Internal error", "ingest is served only on Node's HTTP server");
      }
      await handler(incoming, outgoing, c.req.path);
      return RESPONSE_ALREADY_SENT;
    });
  }
  return app;
}
