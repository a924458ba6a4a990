/**
 * A destination's payload filter: a small JSON rule language over the delivered event
 * (`{"id","userID","type","timestamp","payload"}`), in the style of MongoDB queries.
 *
 *   {"payload.amount": {"$gte": 100}, "type": {"$in": ["order.created"]}}
 *
 * Keys are dotted paths into the event (all must match) or `$and` / `$or` with an array of filters. A value
 * is either a literal (deep equality) or an object of operators: `$eq`, `$ne`, `$in`, `$nin`, `$exists`,
 * `$gt`, `$gte`, `$lt`, `$lte`. A filter is checked once when it is saved (`filterErrors`) and compiled
 * once per worker (`compileFilter`): matching an event walks closures, no parsing.
 */

export type Filter = Record<string, unknown>;
export type FilterMatcher = (event: unknown) => boolean;

const MAX_DEPTH = 8;
const MAX_NODES = 200;
const COMPARISONS = new Set(["$gt", "$gte", "$lt", "$lte"]);
const OPERATORS = new Set(["$eq", "$ne", "$in", "$nin", "$exists", ...COMPARISONS]);
const PATH = /^[A-Za-z0-9_-]{1,128}(\.[A-Za-z0-9_-]{1,128}){0,15}$/;

/**
 * The filter language as a JSON Schema (2020-12), for the OpenAPI document. `self` is how the schema refers
 * to itself (`$and` / `$or` hold filters): `"#"` standalone, a component's `$ref` inside a document. It
 * says everything `filterErrors` checks except the totals (depth ${MAX_DEPTH}, ${MAX_NODES} conditions).
 */
export function filterJsonSchema(self: string): Record<string, unknown> {
  const number = { type: "number" };
  const values = { type: "array", maxItems: 1000 };
  const filters = { type: "array", minItems: 1, items: { $ref: self } };
  return {
    type: "object",
    maxProperties: MAX_NODES,
    propertyNames: { anyOf: [{ enum: ["$and", "$or"] }, { pattern: PATH.source }] },
    properties: { $and: filters, $or: filters },
    additionalProperties: {
      anyOf: [
        { not: { type: "object" } },
        { type: "object", propertyNames: { not: { pattern: "^\\$" } } },
        {
          type: "object",
          minProperties: 1,
          additionalProperties: false,
          properties: {
            $eq: {},
            $ne: {},
            $in: values,
            $nin: values,
            $exists: { type: "boolean" },
            $gt: number,
            $gte: number,
            $lt: number,
            $lte: number,
          },
        },
      ],
    },
  };
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

function isOperatorObject(v: unknown): v is Record<string, unknown> {
  if (!isPlainObject(v)) return false;
  const keys = Object.keys(v);
  return keys.length > 0 && keys.every((k) => k.startsWith("$"));
}

/** Where a filter is wrong, as `{field, message}` with field a path like `filter.payload.amount.$gte`. */
export interface FilterError {
  field: string;
  message: string;
}

/** Every problem of a filter (empty when it is valid). */
export function filterErrors(filter: unknown, field = "filter"): FilterError[] {
  const errors: FilterError[] = [];
  let nodes = 0;
  const walk = (f: unknown, at: string, depth: number) => {
    if (depth > MAX_DEPTH) {
      errors.push({ field: at, message: `nested deeper than ${MAX_DEPTH} levels` });
      return;
    }
    if (!isPlainObject(f)) {
      errors.push({ field: at, message: "must be an object of conditions" });
      return;
    }
    for (const [key, value] of Object.entries(f)) {
      if (++nodes > MAX_NODES) {
        errors.push({ field: at, message: `more than ${MAX_NODES} conditions` });
        return;
      }
      const here = `${at}.${key}`;
      if (key === "$and" || key === "$or") {
        if (!Array.isArray(value) || value.length === 0) {
          errors.push({ field: here, message: "must be a non-empty array of filters" });
          continue;
        }
        for (const [i, sub] of value.entries()) walk(sub, `${here}[${i}]`, depth + 1);
        continue;
      }
      if (key.startsWith("$")) {
        errors.push({ field: here, message: `unknown operator ${key} (only $and and $or at this level)` });
        continue;
      }
      if (!PATH.test(key)) {
        errors.push({ field: here, message: "must be a dotted path of [A-Za-z0-9_-] segments" });
        continue;
      }
      if (isOperatorObject(value)) {
        for (const [op, arg] of Object.entries(value)) {
          const opAt = `${here}.${op}`;
          if (!OPERATORS.has(op)) {
            errors.push({ field: opAt, message: `unknown operator ${op}` });
          } else if ((op === "$in" || op === "$nin") && (!Array.isArray(arg) || arg.length > 1000)) {
            errors.push({ field: opAt, message: "must be an array of at most 1000 values" });
          } else if (op === "$exists" && typeof arg !== "boolean") {
            errors.push({ field: opAt, message: "must be true or false" });
          } else if (COMPARISONS.has(op) && (typeof arg !== "number" || !Number.isFinite(arg))) {
            errors.push({ field: opAt, message: "must be a number" });
          }
        }
      } else if (isPlainObject(value) && Object.keys(value).some((k) => k.startsWith("$"))) {
        errors.push({ field: here, message: "cannot mix operators ($…) and plain keys in one object" });
      }
    }
  };
  walk(filter, field, 0);
  return errors;
}

function lookup(event: unknown, segments: string[]): unknown {
  let v: unknown = event;
  for (const s of segments) {
    if (typeof v !== "object" || v === null || !Object.hasOwn(v, s)) return undefined;
    v = (v as Record<string, unknown>)[s];
  }
  return v;
}

function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  if (Array.isArray(a) !== Array.isArray(b)) return false;
  if (Array.isArray(a) && Array.isArray(b)) {
    return a.length === b.length && a.every((x, i) => deepEqual(x, b[i]));
  }
  const ka = Object.keys(a);
  const kb = Object.keys(b);
  return (
    ka.length === kb.length &&
    ka.every(
      (k) =>
        Object.hasOwn(b, k) &&
        deepEqual((a as Record<string, unknown>)[k], (b as Record<string, unknown>)[k]),
    )
  );
}

function operator(op: string, arg: unknown): (v: unknown) => boolean {
  switch (op) {
    case "$eq":
      return (v) => deepEqual(v, arg);
    case "$ne":
      return (v) => !deepEqual(v, arg);
    case "$in": {
      const list = arg as unknown[];
      return (v) => list.some((x) => deepEqual(v, x));
    }
    case "$nin": {
      const list = arg as unknown[];
      return (v) => !list.some((x) => deepEqual(v, x));
    }
    case "$exists":
      return arg ? (v) => v !== undefined : (v) => v === undefined;
    case "$gt":
      return (v) => typeof v === "number" && v > (arg as number);
    case "$gte":
      return (v) => typeof v === "number" && v >= (arg as number);
    case "$lt":
      return (v) => typeof v === "number" && v < (arg as number);
    case "$lte":
      return (v) => typeof v === "number" && v <= (arg as number);
    default:
      throw new Error(`unknown operator ${op}`);
  }
}

/** Compiles a filter that `filterErrors` accepted; throws on one it would refuse. */
export function compileFilter(filter: Filter): FilterMatcher {
  const errors = filterErrors(filter);
  if (errors.length > 0) throw new Error(`invalid filter: ${errors[0]?.field}: ${errors[0]?.message}`);
  return compile(filter);
}

function compile(filter: Filter): FilterMatcher {
  const parts: FilterMatcher[] = [];
  for (const [key, value] of Object.entries(filter)) {
    if (key === "$and") {
      const subs = (value as Filter[]).map(compile);
      parts.push((e) => subs.every((m) => m(e)));
    } else if (key === "$or") {
      const subs = (value as Filter[]).map(compile);
      parts.push((e) => subs.some((m) => m(e)));
    } else {
      const segments = key.split(".");
      if (isOperatorObject(value)) {
        const tests = Object.entries(value).map(([op, arg]) => operator(op, arg));
        parts.push((e) => {
          const v = lookup(e, segments);
          return tests.every((t) => t(v));
        });
      } else {
        parts.push((e) => deepEqual(lookup(e, segments), value));
      }
    }
  }
  if (parts.length === 1) return parts[0] as FilterMatcher;
  return (e) => parts.every((m) => m(e));
}
