import type { ServerResponse } from "node:http";
import { z } from "@hono/zod-openapi";
import type { Context } from "hono";
import type { ContentfulStatusCode } from "hono/utils/http-status";

/** RFC 9457 problem document, as every error of the API answers (the OpenAPI component "Problem"). */
export const ProblemSchema = z
  .object({
    type: z.string(),
    title: z.string(),
    status: z.number().int(),
    detail: z.string(),
    instance: z.string(),
    errors: z.array(z.object({ field: z.string(), message: z.string() })).optional(),
  })
  .openapi("Problem");

/** A field that failed validation, as reported in a problem document's `errors`. */
export interface FieldError {
  field: string;
  message: string;
}

/** An RFC 9457 problem; thrown anywhere in a route, turned into `application/problem+json` by onError. */
export class HttpProblem extends Error {
  override name = "HttpProblem";
  readonly status: ContentfulStatusCode;
  readonly title: string;
  readonly detail: string;
  readonly errors: FieldError[] | undefined;
  readonly headers: Record<string, string>;

  constructor(
    status: ContentfulStatusCode,
    title: string,
    detail: string,
    extra: { errors?: FieldError[]; headers?: Record<string, string> } = {},
  ) {
    super(detail);
    this.status = status;
    this.title = title;
    this.detail = detail;
    this.errors = extra.errors;
    this.headers = extra.headers ?? {};
  }
}

/** The `type` URI of a problem: a stable slug per title, documented in README. */
function problemType(title: string): string {
  return `https://webhook-gateway.dev/problems/${title
    .toLowerCase()
    .replace(/[^a-z0-9]+/g, "-")
    .replace(/^-|-$/g, "")}`;
}

/**
 * The JSON text of a problem document. `instance` is the request path; it is left out only when the
 * request target could not be parsed at all (see server.ts).
 */
export function problemDocument(p: HttpProblem, instance: string | undefined): string {
  const body: Record<string, unknown> = {
    type: problemType(p.title),
    title: p.title,
    status: p.status,
    detail: p.detail,
  };
  if (instance !== undefined) body.instance = instance;
  if (p.errors) body.errors = p.errors;
  return JSON.stringify(body);
}

/** Writes a problem on Node's response: direct routes (ingest) and the refusals made before the app runs. */
export function sendProblem(res: ServerResponse, p: HttpProblem, instance: string | undefined): void {
  const body = problemDocument(p, instance);
  res.writeHead(p.status, {
    "content-type": "application/problem+json",
    "content-length": Buffer.byteLength(body),
    ...p.headers,
  });
  res.end(body);
}

export function problemResponse(c: Context, p: HttpProblem): Response {
  return new Response(problemDocument(p, c.req.path), {
    status: p.status,
    headers: { "content-type": "application/problem+json", ...p.headers },
  });
}

/** Maps a zod issue path to the dotted field name clients see (`events.3.userID`). */
export function fieldName(path: ReadonlyArray<PropertyKey>): string {
  return path.length === 0 ? "(body)" : path.map(String).join(".");
}

/**
 * The 400 problem of a failed zod validation, naming each field. An unknown key (strict objects) is named
 * as the field itself, not as its parent object.
 */
export function invalidRequest(issues: ReadonlyArray<z.core.$ZodIssue>): HttpProblem {
  const errors = issues.flatMap((i) =>
    i.code === "unrecognized_keys"
      ? i.keys.map((k) => ({ field: fieldName([...i.path, k]), message: `unknown field "${k}"` }))
      : [{ field: fieldName(i.path), message: i.message }],
  );
  const first = errors[0];
  return new HttpProblem(
    400,
    "Invalid request",
    first ? `${first.field}: ${first.message}` : "the request is not valid",
    { errors },
  );
}

/**
 * A 400 on one field for a rule its schema cannot state (a time in the future, a window that ends before it
 * starts, a JSON Schema Ajv refuses): the same `invalid-request` problem as a schema failure.
 */
export function invalidField(field: string, message: string): HttpProblem {
  return new HttpProblem(400, "Invalid request", `${field}: ${message}`, {
    errors: [{ field, message }],
  });
}
