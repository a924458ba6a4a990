import { z } from "@hono/zod-openapi";
import type { MiddlewareHandler } from "hono";
import type { Config } from "../config.ts";
import type { DeliveryControl } from "../delivery/control.ts";
import type { Logger } from "../log.ts";
import type { Store } from "../store/db.ts";
import type { Destination } from "../store/destinations.ts";
import { jsonBody } from "./body.ts";
import { HttpProblem, invalidField, ProblemSchema } from "./problem.ts";

/** The shared configuration as the admin API writes it: Kafka first, answered once this replica's view has it. */
export interface AdminState {
  putDestination(row: Destination): Promise<void>;
  removeDestination(id: string): Promise<void>;
  /** False while this replica's view is still catching up with Kafka (admin routes answer 503). */
  isReady(): boolean;
}

/** What the admin routes need from the gateway. */
export interface AdminDeps {
  config: Config;
  logger: Logger;
  store: Store;
  delivery: DeliveryControl;
  state: AdminState;
}

/**
 * Admin request bodies are usually a few hundred bytes, but the largest the schemas allow (64 headers of
 * 8 KiB, JSON-escaped; 1000 replay ids) is about 1.1 MB: the cap is above that, so every schema-valid
 * body is read, and a bigger one is a 413 before a byte of it is parsed.
 */
export const ADMIN_MAX_BODY_BYTES = 2 * 1024 * 1024;

/** Seconds suggested in Retry-After when the delivery side (Kafka) cannot take an admin change. */
export const ADMIN_RETRY_AFTER_S = 5;

const DESCRIPTIONS: Record<number, string> = {
  400: "Invalid request (malformed JSON, a path or query parameter or a body field that fails its schema, or a rule the schema cannot state: a time in the future, a window that ends before it starts): the problem's `errors` name each field that failed",
  401: "Missing or wrong admin bearer token",
  404: "No such destination",
  409: "The request conflicts with the resource's current state (the detail says how)",
  413: "Request body over 2 MiB (larger than any valid body)",
  415: "The body is not application/json",
  503: "Kafka could not take the change (nothing was changed unless the detail says so), or this replica is still reading the shared state from Kafka; retry after Retry-After",
};

/** The OpenAPI `responses` entries of the problem statuses a route can answer. */
export function problemResponses(...statuses: number[]) {
  return Object.fromEntries(
    statuses.map((s) => [
      s,
      {
        description: DESCRIPTIONS[s] ?? "Problem",
        content: { "application/problem+json": { schema: ProblemSchema } },
      },
    ]),
  );
}

/** The admin API's JSON body checks (content type, then the 64 KiB cap); see body.ts. */
export function adminJsonBody(opts: { optional?: boolean } = {}): MiddlewareHandler[] {
  return jsonBody({ maxBytes: ADMIN_MAX_BODY_BYTES, optional: opts.optional });
}

/** A destination id path parameter (anything; unknown ids are 404). */
export const DestinationIdParams = z.object({
  id: z
    .string()
    .min(1)
    .max(200)
    .openapi({ param: { name: "id", in: "path" }, example: "dest_0195c1f4a3b07c3d9e8f1a2b3c4d5e6f" }),
});

export function notFoundDestination(id: string): HttpProblem {
  return new HttpProblem(404, "Not found", `no destination with id ${id}`);
}

/** The admin API on a replica whose view of the shared state is not caught up yet (never a stale 404). */
export function viewNotReady(): HttpProblem {
  return new HttpProblem(
    503,
    "Rebuilding",
    "this replica is still reading the shared state from Kafka; ask again shortly or ask another replica",
    { headers: { "retry-after": String(ADMIN_RETRY_AFTER_S) } },
  );
}

/** A 503 for a DeliveryControl call that failed; `detail` says what state things were left in. */
export function deliveryUnavailable(detail: string): HttpProblem {
  return new HttpProblem(503, "Delivery unavailable", detail, {
    headers: { "retry-after": String(ADMIN_RETRY_AFTER_S) },
  });
}

const chains = new WeakMap<Store, Map<string, Promise<void>>>();

/**
 * Runs the admin changes of one destination one after another (per database, in this process). Without
 * it a PATCH could restart the worker of a destination that a concurrent DELETE is stopping, or a replay
 * could mark rows of a destination being deleted.
 */
export async function oneAtATime<T>(store: Store, destinationId: string, fn: () => Promise<T>): Promise<T> {
  let perStore = chains.get(store);
  if (!perStore) {
    perStore = new Map();
    chains.set(store, perStore);
  }
  const run = (perStore.get(destinationId) ?? Promise.resolve()).then(fn);
  const settled = run.then(
    () => {},
    () => {},
  );
  perStore.set(destinationId, settled);
  try {
    return await run;
  } finally {
    if (perStore.get(destinationId) === settled) perStore.delete(destinationId);
  }
}

export function toIso(ms: number): string {
  return new Date(ms).toISOString();
}

/** Cursors are opaque to clients: base64url JSON, so their shape can change without an API change. */
export function encodeCursor(value: unknown): string {
  return Buffer.from(JSON.stringify(value), "utf8").toString("base64url");
}

/** Decodes a cursor made by `encodeCursor` and checks its shape; a tampered one is a 400 on `cursor`. */
export function decodeCursor<T>(cursor: string, schema: z.ZodType<T>): T {
  let raw: unknown;
  try {
    raw = JSON.parse(Buffer.from(cursor, "base64url").toString("utf8"));
  } catch {
    raw = undefined;
  }
  const parsed = schema.safeParse(raw);
  if (!parsed.success) {
    throw invalidField("cursor", "not a cursor this API returned");
  }
  return parsed.data;
}
