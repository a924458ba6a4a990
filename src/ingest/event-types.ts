import type { ValidateFunction } from "ajv";
import { Ajv2020 } from "ajv/dist/2020.js";
import addFormatsModule from "ajv-formats";
import type { Db } from "../store/db.ts";
import { type EventType, listEventTypes } from "../store/event-types.ts";

// CommonJS: under Node's ESM loader the default import is module.exports, whose `default` is the plugin too.
const addFormats = addFormatsModule.default;

/** How unknown event types are treated at ingest (`UNKNOWN_EVENT_TYPES`). */
export type UnknownEventTypes = "allow" | "reject";

export interface SchemaError {
  /** Where in the event, e.g. `payload.amount` (prefixed with the event's place in a batch by the caller). */
  field: string;
  message: string;
}

/** Most schema errors reported for one event. */
const MAX_ERRORS = 20;

function newAjv() {
  const ajv = new Ajv2020({ allErrors: true, strict: true, validateSchema: true });
  addFormats(ajv);
  return ajv;
}

/**
 * Compiles a JSON Schema (2020-12) with Ajv; throws an Error naming what is wrong with it. Each type
 * gets its own Ajv instance, so two types may use the same `$id` and a replaced schema leaves nothing
 * behind.
 */
export function compileSchema(schema: unknown): ValidateFunction {
  if (!isSchemaShaped(schema)) throw new Error(NOT_A_SCHEMA);
  return newAjv().compile(schema as object);
}

/** Why a value that is neither an object nor a boolean cannot be a JSON Schema. */
export const NOT_A_SCHEMA = "must be a JSON Schema (an object or a boolean)";

/** A JSON Schema is an object (not an array) or a boolean; Ajv decides the rest. */
export function isSchemaShaped(v: unknown): boolean {
  return typeof v === "boolean" || (typeof v === "object" && v !== null && !Array.isArray(v));
}

function pathOf(instancePath: string): string {
  if (instancePath === "") return "payload";
  return `payload${instancePath
    .split("/")
    .slice(1)
    .map((s) => `.${s.replaceAll("~1", "/").replaceAll("~0", "~")}`)
    .join("")}`;
}

/**
 * The event-type catalog as ingest uses it: one compiled validator per registered type, kept in step with
 * the config topic by the state view (`apply`). A type that is not registered costs one Map lookup.
 */
export class EventTypeCatalog {
  #validators = new Map<string, ValidateFunction>();
  #unknown: UnknownEventTypes;

  constructor(unknown: UnknownEventTypes) {
    this.#unknown = unknown;
  }

  /** Compiles every type this replica's database holds (call before the view starts applying records). */
  load(db: Db): void {
    for (const row of listEventTypes(db)) this.apply(row.name, row);
  }

  /** A type was registered, changed (row) or deleted (null). */
  apply(name: string, row: EventType | null): void {
    if (row === null) {
      this.#validators.delete(name);
      return;
    }
    this.#validators.set(name, compileSchema(row.schema));
  }

  has(name: string): boolean {
    return this.#validators.has(name);
  }

  /**
   * Why an event of `type` with `payload` is refused, or undefined when it is accepted: a registered
   * type's schema errors, or the type itself when unknown types are refused.
   */
  check(type: string, payload: unknown): SchemaError[] | undefined {
    const validate = this.#validators.get(type);
    if (validate === undefined) {
      if (this.#unknown === "allow") return undefined;
      return [
        { field: "type", message: `"${type}" is not a registered event type (UNKNOWN_EVENT_TYPES=reject)` },
      ];
    }
    if (validate(payload)) return undefined;
    return (validate.errors ?? []).slice(0, MAX_ERRORS).map((e) => ({
      field: pathOf(e.instancePath),
      message:
        e.keyword === "additionalProperties"
          ? `${e.message}: "${(e.params as { additionalProperty?: string }).additionalProperty}"`
          : (e.message ?? "is invalid"),
    }));
  }
}
