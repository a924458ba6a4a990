import { z } from "@hono/zod-openapi";
import { filterErrors, filterJsonSchema } from "../delivery/filter.ts";
import type { Destination } from "../store/destinations.ts";
import { toIso } from "./admin-shared.ts";
import { invalidField } from "./problem.ts";

/** Defaults of the optional destination settings (README documents them). */
export const DESTINATION_DEFAULTS = {
  maxAttempts: 8,
  timeoutMs: 15_000,
  backoffBaseMs: 1_000,
  backoffMaxMs: 60_000,
  maxConcurrency: 64,
} as const;

/**
 * Headers a destination may not set: the gateway sets them itself (content-type, user-agent, the
 * Standard Webhooks trio), they describe the connection rather than the message (hop-by-hop), or undici
 * refuses them outright — a worker must never discover that at send time.
 */
const RESERVED_HEADERS = new Set([
  "host",
  "content-length",
  "content-type",
  "transfer-encoding",
  "connection",
  "keep-alive",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
  "expect",
  "user-agent",
]);

const HEADER_NAME = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,256}$/;
// Printable ASCII and tab: no CR/LF (header injection), no NUL, nothing undici would reject.
const HEADER_VALUE = /^[\t\x20-\x7e]{0,8192}$/;
const MAX_HEADERS = 64;

/** `host` as `[Hh][Oo][Ss][Tt]`: JSON Schema patterns have no case-insensitive flag. */
const anyCase = (word: string) =>
  word.replace(/[a-z]/g, (ch) => `[${ch.toUpperCase()}${ch}]`).replace(/-/g, "\\-");

/**
 * The header-name rule as one pattern, for the OpenAPI document (`propertyNames`): a token, and none of
 * the reserved names or webhook-* in any case. The zod check below says the same in words.
 */
const HEADER_NAME_PATTERN = `^(?!(?:${[...RESERVED_HEADERS].map(anyCase).join("|")})$)(?!${anyCase("webhook-")})[!#$%&'*+.^_\`|~0-9A-Za-z-]{1,256}$`;

const Headers = z
  // zod drops a "__proto__" key instead of assigning it, so the parsed record cannot carry a prototype.
  .record(z.string(), z.string())
  .superRefine((headers, ctx) => {
    const names = Object.keys(headers);
    if (names.length > MAX_HEADERS) {
      ctx.addIssue({ code: "custom", message: `at most ${MAX_HEADERS} headers` });
    }
    const seen = new Set<string>();
    for (const name of names) {
      const lower = name.toLowerCase();
      const refuse = (message: string) => ctx.addIssue({ code: "custom", path: [name], message });
      if (!HEADER_NAME.test(name)) refuse(`"${name}" is not a valid header name`);
      else if (RESERVED_HEADERS.has(lower) || lower.startsWith("webhook-")) {
        refuse(`header "${name}" is reserved: the gateway sets it or it cannot be forwarded`);
      } else if (seen.has(lower)) refuse(`header "${name}" is given twice (names are case-insensitive)`);
      else if (!HEADER_VALUE.test(headers[name] ?? "")) {
        refuse(`header "${name}" has a value that is not printable ASCII or is over 8192 characters`);
      }
      seen.add(lower);
    }
  })
  .openapi({
    description:
      "Extra request headers. Refused: host, content-length, content-type, transfer-encoding, connection, " +
      "keep-alive, proxy-connection, te, trailer, upgrade, expect, user-agent and every webhook-* header " +
      "(in any case), and a name given twice in different cases.",
    example: { authorization: "Bearer receiver-token" },
    maxProperties: MAX_HEADERS,
    // The 3.1 keyword for the names (the metadata type predates it; the generator copies it through).
    ...({ propertyNames: { type: "string", pattern: HEADER_NAME_PATTERN } } as object),
    additionalProperties: { type: "string", maxLength: 8192, pattern: "^[\\t\\x20-\\x7e]*$" },
  });

/**
 * `whsec_` + the canonical standard base64 of 24–64 bytes (padding optional), the Standard Webhooks
 * secret format, as one pattern: 8–20 groups of four characters and an optional 1- or 2-byte tail whose
 * unused bits are zero, or 21 groups (63 bytes) and an optional 1-byte tail.
 */
export const SECRET_PATTERN = String.raw`^whsec_(?:(?:[A-Za-z0-9+/]{4}){8,20}(?:[A-Za-z0-9+/]{2}[AEIMQUYcgkosw048]=?|[A-Za-z0-9+/][AQgw](?:==)?)?|(?:[A-Za-z0-9+/]{4}){21}(?:[A-Za-z0-9+/][AQgw](?:==)?)?)$`;
const SECRET = new RegExp(SECRET_PATTERN);

export function isValidSecret(value: string): boolean {
  return SECRET.test(value);
}

function isHttpUrl(value: string): boolean {
  try {
    const u = new URL(value);
    return u.protocol === "http:" || u.protocol === "https:";
  } catch {
    return false;
  }
}

const MAX_URL = 2048;
/** Normalising can add two characters (a trailing "/", an IPv6 zero group); the input leaves room. */
const MAX_URL_INPUT = MAX_URL - 2;

const IPV4_OCTET = "(?:25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])";
const H16 = "[0-9A-Fa-f]{1,4}";
const IPV6 = [
  `(?:${H16}:){7}${H16}`,
  `(?:${H16}:){1,7}:`,
  `(?:${H16}:){1,6}:${H16}`,
  `(?:${H16}:){1,5}(?::${H16}){1,2}`,
  `(?:${H16}:){1,4}(?::${H16}){1,3}`,
  `(?:${H16}:){1,3}(?::${H16}){1,4}`,
  `(?:${H16}:){1,2}(?::${H16}){1,5}`,
  `${H16}:(?::${H16}){1,6}`,
  `:(?:(?::${H16}){1,7}|:)`,
].join("|");
const LABEL = "[A-Za-z0-9]+(?:-[A-Za-z0-9]+)*";
const PORT = "(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])";

/**
 * What a destination URL may be, as one pattern (the OpenAPI document carries it): http(s), a host that
 * is a DNS name (ASCII labels, the last one starting with a letter; no IDNs), an IPv4 address or a
 * bracketed IPv6 address, an optional port, then path, query and fragment in characters that need no
 * percent-encoding. No credentials (`user@`), no whitespace: what is stored is what was sent, bar case
 * and a trailing slash.
 */
export const URL_PATTERN =
  `^https?://(?:(?:${LABEL}\\.)*[A-Za-z](?:[A-Za-z0-9]*(?:-[A-Za-z0-9]+)*)?\\.?` +
  `|(?:${IPV4_OCTET}\\.){3}${IPV4_OCTET}|\\[(?:${IPV6})\\])` +
  `(?::${PORT})?(?:[/?#][A-Za-z0-9\\-._~!$&()*+,;=:@%/?#]*)?$`;
const URL_RE = new RegExp(URL_PATTERN);

/**
 * Stored in WHATWG-normalised form (`new URL(url).href`): what the SSRF guard checks and what the worker
 * dials are then the same string.
 */
const Url = z
  .string()
  .max(MAX_URL_INPUT, `must be at most ${MAX_URL_INPUT} characters`)
  .regex(
    URL_RE,
    "must be an absolute http:// or https:// URL: a DNS name, IPv4 or [IPv6] host, no credentials, no whitespace or characters that need percent-encoding",
  )
  .refine(isHttpUrl, "must be an absolute http:// or https:// URL")
  .transform((u) => new URL(u).href)
  .refine((href) => href.length <= MAX_URL, `must be at most ${MAX_URL} characters once normalised`)
  .openapi({ example: "https://receiver.example.com/webhooks" });
const Name = z.string().min(1).max(200);
const EventTypes = z
  .array(z.string().regex(/^[A-Za-z0-9._-]{1,128}$/, "must be 1–128 characters of [A-Za-z0-9._-]"))
  .max(100)
  .openapi({
    description: "Event types to deliver; empty or absent = every type.",
    example: ["order.created"],
  });
export const Secret = z
  .string()
  .regex(SECRET, "must be whsec_ followed by the base64 of 24–64 bytes")
  .openapi({
    description: "Signing secret: whsec_ + base64 of 24–64 bytes; generated (32 random bytes) when absent.",
    example: "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw",
  });
const int = (min: number, max: number) => z.number().int().min(min).max(max);

const FILTER_REF = "#/components/schemas/Filter";

/**
 * The OpenAPI component "Filter": the rule language as JSON Schema (recursive through `$and` / `$or`, so a
 * component of its own). Registered by `destinationRoutes`; the fields below refer to it.
 */
export const FILTER_COMPONENT = {
  ...filterJsonSchema(FILTER_REF),
  description:
    'Deliver only events this JSON rule matches (README "Payload filters"): dotted paths into the event ' +
    "(`type`, `userID`, `payload.…`) mapped to a value (equality) or operators $eq $ne $in $nin $exists " +
    "$gt $gte $lt $lte; $and / $or take arrays of filters; at most 8 levels and 200 conditions. An event " +
    "filtered out counts as finished.",
  example: { "payload.amount": { $gte: 100 }, type: { $in: ["order.created"] } },
};

/** A payload filter, checked whole: each bad part is its own issue with its path (`filter.payload.amount.$gte`). */
const FilterBody = z.record(z.string(), z.unknown()).superRefine((filter, ctx) => {
  for (const e of filterErrors(filter, "")) {
    ctx.addIssue({ code: "custom", path: e.field ? [e.field.slice(1)] : [], message: e.message });
  }
});

const settings = {
  eventTypes: EventTypes.optional(),
  headers: Headers.optional(),
  secret: Secret.optional(),
  maxAttempts: int(1, 50).optional().openapi({ description: "Default 8." }),
  timeoutMs: int(100, 30_000).optional().openapi({ description: "Default 15000." }),
  backoffBaseMs: int(1, 3_600_000).optional().openapi({ description: "Default 1000." }),
  backoffMaxMs: int(1, 3_600_000).optional().openapi({
    description: "Default 60000. Caps every wait: below backoffBaseMs, every retry waits backoffMaxMs.",
  }),
  maxConcurrency: int(1, 1000).optional().openapi({
    description:
      "Attempts in flight at once (default 64): a destination answering in R seconds gets at most maxConcurrency / R deliveries per second.",
  }),
  filter: FilterBody.nullable()
    .optional()
    .openapi({
      anyOf: [{ $ref: FILTER_REF }, { type: "null" }],
      description: "null (or absent) = no filter.",
    }),
  rateLimitPerSecond: z.number().min(0.01).max(100_000).nullable().optional().openapi({
    description:
      'Most attempts per second to this destination (token bucket; README "Rate limit"); null = none.',
  }),
  rateLimitBurst: int(1, 100_000).nullable().optional().openapi({
    description: "Tokens the bucket saves up; default ceil(rateLimitPerSecond).",
  }),
  autoDisableAfterHours: z.number().min(0.001).max(8760).nullable().optional().openapi({
    description:
      "Disable the destination once it has failed this many hours without a single success (default 120, like Svix); null = never.",
  }),
  autoDisableAfterDeadLetters: int(1, 1_000_000).nullable().optional().openapi({
    description: "Disable the destination after this many dead letters in a row; null (default) = never.",
  }),
};

/**
 * An ISO 8601 date-time with `Z` or an offset, as Unix ms. A time before 1970 is 0: no event is older, and
 * Kafka reads a negative timestamp as a special query. Whether it may lie in the future is the route's
 * business (`notInFuture`).
 */
export const Time = z
  .string()
  .regex(
    /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:\d{2})$/,
    "must be an ISO 8601 date-time with Z or an offset",
  )
  .transform((v, ctx) => {
    const ms = Date.parse(v);
    if (Number.isNaN(ms)) {
      ctx.addIssue({ code: "custom", message: "is not a valid date-time" });
      return z.NEVER;
    }
    return Math.max(0, ms);
  })
  .openapi({ type: "string", format: "date-time", example: "2026-01-01T00:00:00Z" });

/** A `Time` that must not be in the future: a 400 on `field` if it is. */
export function notInFuture(field: string, ms: number): number {
  if (ms > Date.now()) throw invalidField(field, "must not be in the future");
  return ms;
}

export const CreateDestinationBody = z
  .strictObject({
    url: Url,
    name: Name.optional(),
    ...settings,
    startFrom: z
      .union([z.literal("earliest"), Time])
      .optional()
      .openapi({
        description:
          'Backfill from history: "earliest" (the oldest event the log still holds) or an ISO date-time, not in the future; absent = only events accepted after the 201.',
      }),
  })
  .openapi("CreateDestination");

export const PatchDestinationBody = z
  .strictObject({
    url: Url.optional(),
    name: Name.nullable().optional().openapi({ description: "null clears the name." }),
    ...settings,
    disabled: z.boolean().optional(),
  })
  .openapi("PatchDestination");

export const DestinationSchema = z
  .object({
    id: z.string().openapi({ example: "dest_0195c1f4a3b07c3d9e8f1a2b3c4d5e6f" }),
    name: z.string().nullable(),
    url: z.string(),
    eventTypes: z.array(z.string()),
    headers: z.record(z.string(), z.string()),
    secret: z.string(),
    previousSecretExpiresAt: z.string().nullable().openapi({
      format: "date-time",
      description:
        "While a rotated-out secret still signs beside `secret` (POST …/secret/rotate): when it stops; else null.",
    }),
    maxAttempts: z.number().int(),
    timeoutMs: z.number().int(),
    backoffBaseMs: z.number().int(),
    backoffMaxMs: z.number().int(),
    maxConcurrency: z.number().int(),
    filter: z
      .record(z.string(), z.unknown())
      .nullable()
      .openapi({ anyOf: [{ $ref: FILTER_REF }, { type: "null" }] }),
    rateLimitPerSecond: z.number().nullable(),
    rateLimitBurst: z.number().int().nullable(),
    autoDisableAfterHours: z.number().nullable(),
    autoDisableAfterDeadLetters: z.number().int().nullable(),
    replay: z
      .object({
        from: z.string().openapi({ format: "date-time" }),
        to: z.string().nullable().openapi({ format: "date-time" }),
        requestedAt: z.string().openapi({ format: "date-time" }),
        cancelled: z.boolean(),
      })
      .nullable()
      .openapi({ description: "The last replay or startFrom backfill (its progress: `lag`)." }),
    disabled: z.boolean(),
    disabledReason: z.string().nullable(),
    createdAt: z.string().openapi({ format: "date-time" }),
    updatedAt: z.string().openapi({ format: "date-time" }),
  })
  .openapi("Destination");

/** GET /api/destinations/{id}: the destination and its lag. */
export const DestinationWithLagSchema = DestinationSchema.extend({
  lag: z.number().int().nullable().openapi({
    description:
      "Events in the events topic not yet finished (delivered, dead-lettered or filtered out) for this destination; null when Kafka cannot say right now.",
  }),
}).openapi("DestinationWithLag");

export type DestinationView = z.infer<typeof DestinationSchema>;

export function replayView(d: Destination): DestinationView["replay"] {
  const r = d.replay;
  if (!r) return null;
  return {
    from: toIso(r.from),
    to: r.to === null ? null : toIso(r.to),
    requestedAt: toIso(r.requestedAt),
    cancelled: r.cancelled,
  };
}

export function destinationView(d: Destination): DestinationView {
  return {
    id: d.id,
    name: d.name,
    url: d.url,
    eventTypes: d.eventTypes,
    headers: d.headers,
    secret: d.secret,
    previousSecretExpiresAt:
      d.previousSecret && d.previousSecretExpiresAt && d.previousSecretExpiresAt > Date.now()
        ? toIso(d.previousSecretExpiresAt)
        : null,
    maxAttempts: d.maxAttempts,
    timeoutMs: d.timeoutMs,
    backoffBaseMs: d.backoffBaseMs,
    backoffMaxMs: d.backoffMaxMs,
    maxConcurrency: d.maxConcurrency,
    filter: d.filter ?? null,
    rateLimitPerSecond: d.rateLimitPerSecond ?? null,
    rateLimitBurst: d.rateLimitBurst ?? null,
    autoDisableAfterHours: d.autoDisableAfterHours === undefined ? 120 : d.autoDisableAfterHours,
    autoDisableAfterDeadLetters: d.autoDisableAfterDeadLetters ?? null,
    replay: replayView(d),
    disabled: d.disabled,
    disabledReason: d.disabledReason,
    createdAt: toIso(d.createdAt),
    updatedAt: toIso(d.updatedAt),
  };
}
