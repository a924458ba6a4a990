import assert from "node:assert/strict";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { OpenAPIHono } from "@hono/zod-openapi";
import { loadConfig } from "../src/config.ts";
import type { DeliveryControl } from "../src/delivery/control.ts";
import type { AdminState } from "../src/http/admin-shared.ts";
import { createApp } from "../src/http/app.ts";
import { GroupCommitProducer } from "../src/ingest/producer.ts";
import { ensureTopics } from "../src/ingest/topics.ts";
import { KafkaUnavailableError } from "../src/kafka/sink.ts";
import { createLogger } from "../src/log.ts";
import { createMetrics } from "../src/metrics.ts";
import { SharedState, stateTopicSpecs, stateTopicsOf } from "../src/state/shared-state.ts";
import { openStore, type Store } from "../src/store/db.ts";
import type { Destination } from "../src/store/destinations.ts";
import { attempts, deliveries, destinations } from "../src/store/schema.ts";
import { createTestKafka, uniqueName } from "./helpers.ts";

/** The admin API over a real broker and SQLite file, shared by the admin-*.test.ts files. */

export const TOKEN = "test-admin-token-0123456789abcdef";

export type Call = { method: keyof DeliveryControl; arg: unknown; eventIds?: string[] | undefined };

/**
 * Our own DeliveryControl, recording what the routes ask of delivery. Not a mock of Kafka or the
 * database: the supervisor is tested on its own against the real broker; here the routes are.
 */
export class RecordingDelivery implements DeliveryControl {
  calls: Call[] = [];
  /** A method named here throws once with this error. */
  failures: Partial<Record<keyof DeliveryControl, Error>> = {};
  replayAllCount = 3;
  /** A method named here waits for this promise after recording its call. */
  gates: Partial<Record<keyof DeliveryControl, Promise<void>>> = {};

  async #maybeFail(method: keyof DeliveryControl): Promise<void> {
    await this.gates[method];
    const err = this.failures[method];
    if (err) {
      delete this.failures[method];
      throw err;
    }
  }
  async prepareDestination(destinationId: string) {
    this.calls.push({ method: "prepareDestination", arg: destinationId });
    await this.#maybeFail("prepareDestination");
  }
  async destinationAdded(destination: Destination) {
    this.calls.push({ method: "destinationAdded", arg: destination });
    await this.#maybeFail("destinationAdded");
  }
  async destinationChanged(destination: Destination) {
    this.calls.push({ method: "destinationChanged", arg: destination });
    await this.#maybeFail("destinationChanged");
  }
  /** A read, not a change: not recorded. */
  async lag(_destinationId: string) {
    return 7;
  }
  async destinationRemoved(destinationId: string) {
    this.calls.push({ method: "destinationRemoved", arg: destinationId });
    await this.#maybeFail("destinationRemoved");
  }
  async replay(destinationId: string, eventIds?: string[]) {
    this.calls.push({ method: "replay", arg: destinationId, eventIds });
    await this.#maybeFail("replay");
    return eventIds ? eventIds.length : this.replayAllCount;
  }
}

/** The destination a recorded call carried. */
export function destinationArg(call: Call | undefined): Destination {
  assert.ok(call, "delivery was called");
  return call.arg as Destination;
}

export interface Harness {
  app: OpenAPIHono;
  store: Store;
  delivery: RecordingDelivery;
  /** `refuse`: the admin writes fail as when Kafka cannot take them. */
  writes: { refuse: boolean };
  req(method: string, path: string, opts?: ReqOpts): Promise<Response>;
  /** Every row of every table the admin API may touch, to prove a refused request changed nothing. */
  snapshot(): string;
}

export interface ReqOpts {
  token?: string | null;
  body?: unknown;
  raw?: string;
  headers?: Record<string, string>;
}

/**
 * A fresh SQLite file, fresh shared-state topics on the test broker and the real app; all removed when the
 * test ends. The view applies what the routes write to Kafka and tells `delivery` as it tells the gateway's
 * coordinator.
 */
export async function harness(
  t: { after(fn: () => Promise<void> | void): void },
  env: Record<string, string> = {},
): Promise<Harness> {
  const dir = mkdtempSync(join(tmpdir(), "admin-api-"));
  const store = openStore(join(dir, "gateway.db"));
  const config = loadConfig({
    ADMIN_TOKEN: TOKEN,
    ALLOW_PRIVATE_DESTINATIONS: "true",
    LOG_LEVEL: "silent",
    CONSUMER_GROUP_PREFIX: uniqueName("admin"),
    ...env,
  });
  const kafka = createTestKafka();
  const admin = kafka.admin();
  await admin.connect();
  await ensureTopics(kafka, { topics: stateTopicSpecs(config), partitions: 1 });
  const sink = new GroupCommitProducer(kafka, {
    maxRecords: 100,
    maxBytes: 1024 * 1024,
    lingerMs: 0,
    ackTimeoutMs: 10_000,
    logger: createLogger("silent"),
  });
  sink.start();
  await sink.whenReady();
  const delivery = new RecordingDelivery();
  const state = new SharedState({
    kafka,
    store,
    sink,
    topics: stateTopicsOf(config),
    logger: createLogger("silent"),
    maxWaitMs: 100,
  });
  const writes = { refuse: false };
  state.start({
    destinationPut: (row, previous) =>
      previous ? delivery.destinationChanged(row) : delivery.destinationAdded(row),
    destinationRemoved: (id) => delivery.destinationRemoved(id),
    replaying: async () => {},
  });
  await state.ready;
  t.after(async () => {
    await state.stop();
    await sink.close();
    await admin.deleteTopics({ topics: Object.values(stateTopicsOf(config)) }).catch(() => {});
    await admin.disconnect();
    store.close();
    rmSync(dir, { recursive: true, force: true });
  });
  const adminState: AdminState = {
    isReady: () => state.isReady(),
    async putDestination(row) {
      if (writes.refuse) throw new KafkaUnavailableError("Kafka is not available");
      await state.putDestination(row);
    },
    async removeDestination(id) {
      if (writes.refuse) throw new KafkaUnavailableError("Kafka is not available");
      await state.removeDestination(id);
    },
  };
  const app = createApp({
    config,
    logger: createLogger("silent"),
    health: { kafkaReady: async () => true, storeReady: () => true, stateReady: () => state.isReady() },
    metrics: createMetrics(),
    store,
    delivery,
    state: adminState,
  });
  return {
    app,
    store,
    delivery,
    writes,
    req(method, path, opts = {}) {
      const headers: Record<string, string> = { ...opts.headers };
      const token = opts.token === undefined ? TOKEN : opts.token;
      if (token !== null) headers.authorization ??= `Bearer ${token}`;
      let body: string | undefined = opts.raw;
      if (opts.body !== undefined && method !== "GET" && method !== "HEAD") body = JSON.stringify(opts.body);
      if (body !== undefined) headers["content-type"] ??= "application/json";
      return Promise.resolve(app.request(path, { method, headers, body }));
    },
    snapshot() {
      const { db } = store;
      return JSON.stringify([
        db.select().from(destinations).orderBy(destinations.id).all(),
        db.select().from(attempts).orderBy(attempts.id).all(),
        db.select().from(deliveries).orderBy(deliveries.destinationId, deliveries.eventId).all(),
      ]);
    },
  };
}

// biome-ignore lint/suspicious/noExplicitAny: the tests read arbitrary JSON answers
export type Json = any;

export async function json(res: Response | Promise<Response>): Promise<Json> {
  return (await res).json();
}

export async function problem(
  res: Response,
  status: number,
): Promise<{ detail: string; errors?: { field: string }[] }> {
  const text = await res.text();
  assert.equal(res.status, status, `expected ${status}, got ${res.status}: ${text}`);
  assert.equal(res.headers.get("content-type"), "application/problem+json");
  const body = JSON.parse(text);
  assert.equal(body.status, status);
  assert.ok(body.type && body.title && body.detail, "a problem has type, title and detail");
  return body;
}

export async function create(
  h: Harness,
  body: Record<string, unknown> = {},
): Promise<Record<string, unknown>> {
  const res = await h.req("POST", "/api/destinations", { body: { url: "http://127.0.0.1:9/hook", ...body } });
  const text = await res.text();
  assert.equal(res.status, 201, text);
  return JSON.parse(text);
}

export function secretOfBytes(n: number): string {
  return `whsec_${Buffer.alloc(n, 7).toString("base64")}`;
}

/** Every admin route, with a path that exists once a destination `id` does. */
export function adminRoutes(id: string): [string, string][] {
  return [
    ["POST", "/api/destinations"],
    ["GET", "/api/destinations"],
    ["GET", `/api/destinations/${id}`],
    ["PATCH", `/api/destinations/${id}`],
    ["DELETE", `/api/destinations/${id}`],
    ["GET", "/api/events/evt-1/attempts"],
    ["GET", `/api/destinations/${id}/attempts`],
    ["GET", `/api/destinations/${id}/dead-letters`],
    ["POST", `/api/destinations/${id}/dead-letters/replay`],
  ];
}

export const T0 = Date.parse("2025-01-01T00:00:00Z");

/** 120 attempts at one destination (outcomes cycling, one a minute) and 5 at another. */
export function seedAttempts(h: Harness, destA: string, destB: string): void {
  const outcomes = ["failed", "failed", "succeeded", "dead"] as const;
  const rows = [];
  for (let i = 0; i < 120; i++) {
    rows.push({
      eventId: `evt-${Math.floor(i / 4)}`,
      destinationId: destA,
      userId: `user-${i % 7}`,
      attemptNumber: (i % 4) + 1,
      startedAt: T0 + i * 60_000,
      durationMs: 5 + i,
      statusCode: outcomes[i % 4] === "succeeded" ? 200 : 500,
      error: outcomes[i % 4] === "succeeded" ? null : "HTTP 500",
      responseSnippet: "ok",
      outcome: outcomes[i % 4] as string,
    });
  }
  for (let i = 0; i < 5; i++) {
    rows.push({
      eventId: "evt-0",
      destinationId: destB,
      userId: "user-0",
      attemptNumber: i + 1,
      startedAt: T0 + i,
      durationMs: 1,
      statusCode: null,
      error: "timeout",
      responseSnippet: null,
      outcome: "failed",
    });
  }
  h.store.db.insert(attempts).values(rows).run();
}

export async function allPages(
  h: Harness,
  base: string,
): Promise<{ pages: number[]; items: Record<string, unknown>[] }> {
  const pages: number[] = [];
  const items: Record<string, unknown>[] = [];
  let cursor: string | null = null;
  do {
    const sep = base.includes("?") ? "&" : "?";
    const url: string = cursor ? `${base}${sep}cursor=${encodeURIComponent(cursor)}` : base;
    const res = await h.req("GET", url);
    const text = await res.text();
    assert.equal(res.status, 200, text);
    const body = JSON.parse(text);
    const list = body.attempts ?? body.deadLetters;
    pages.push(list.length);
    items.push(...list);
    cursor = body.nextCursor;
    assert.ok(pages.length <= 1000, "pagination ends");
  } while (cursor !== null);
  return { pages, items };
}
