/**
 * Issue 14's figures: (A) the per-event cost of payload filters and event-type schema validation beside a
 * no-op baseline measured in the same run; (B) the rate limiter's accuracy — deliveries per second through
 * a real gateway against the set limit, over 60 s.
 *
 *   npm run bench:controls                      # both parts; a local broker unless KAFKA_BROKERS is set
 *   npm run bench:controls -- --seconds 20      # part B over 20 s
 *   npm run bench:controls -- --micro-only
 */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { parseArgs } from "node:util";
import pino from "pino";
import { loadConfig } from "../src/config.ts";
import { decodeEventRecord } from "../src/delivery/event-record.ts";
import { compileFilter } from "../src/delivery/filter.ts";
import { startGateway } from "../src/gateway.ts";
import { EventTypeCatalog } from "../src/ingest/event-types.ts";
import { type LocalKafka, startLocalKafka } from "../src/kafka/runner.ts";
import { fmt, sampleRecord } from "./harness.ts";

const { values: args } = parseArgs({
  options: {
    seconds: { type: "string", default: "60" },
    "micro-only": { type: "boolean", default: false },
  },
});

// ---- (A) per-event cost ----------------------------------------------------------------------------

const N = 200_000;
const ROUNDS = 5;

function perEventUs(fn: () => unknown): number {
  const samples: number[] = [];
  for (let r = 0; r < ROUNDS; r++) {
    const start = performance.now();
    for (let i = 0; i < N; i++) fn();
    samples.push(((performance.now() - start) * 1000) / N);
  }
  samples.sort((a, b) => a - b);
  return samples[Math.floor(ROUNDS / 2)] as number;
}

function micro(): Array<[string, number, string]> {
  const body = sampleRecord();
  const value = Buffer.from(body);
  const event = JSON.parse(body) as { type: string; payload: unknown };
  const noop = (_e: unknown) => true;
  const simple = compileFilter({ type: "order.created" });
  const typical = compileFilter({
    "payload.amount": { $gte: 100 },
    type: { $in: ["order.created", "order.paid"] },
  });
  const wide = compileFilter({
    $or: [
      { "payload.currency": { $in: ["EUR", "USD", "GBP"] }, "payload.amount": { $gt: 0, $lt: 100_000 } },
      { "payload.shipping.country": "DE" },
    ],
    userID: { $nin: ["blocked-1", "blocked-2"] },
    "payload.items": { $exists: true },
  });
  const allow = new EventTypeCatalog("allow");
  const catalog = new EventTypeCatalog("allow");
  catalog.apply("order.created", {
    name: "order.created",
    description: null,
    schema: {
      type: "object",
      required: ["orderId", "amount", "currency", "items"],
      properties: {
        orderId: { type: "string", minLength: 1 },
        amount: { type: "number", minimum: 0 },
        currency: { type: "string", enum: ["EUR", "USD", "GBP"] },
        shipping: { type: "object", properties: { country: { type: "string", minLength: 2, maxLength: 2 } } },
        items: {
          type: "array",
          items: {
            type: "object",
            required: ["sku", "qty"],
            properties: { sku: { type: "string" }, qty: { type: "integer", minimum: 1 } },
          },
        },
      },
    },
    createdAt: 0,
    updatedAt: 0,
  });
  const payload = event.payload;
  // The sample payload must pass the schema, or we would time the error path.
  const errors = catalog.check("order.created", payload);
  if (errors) throw new Error(`sample payload fails the bench schema: ${JSON.stringify(errors)}`);
  const cases: Array<[string, () => unknown, string]> = [
    [
      "decode a record (JSON.parse, done anyway by the reader)",
      () => decodeEventRecord(0, 0, null, value),
      "reference",
    ],
    ["no-op matcher (baseline)", () => noop(event), "baseline"],
    ['filter {"type": "order.created"}', () => simple(event), ""],
    ["filter: payload.amount $gte, type $in", () => typical(event), "the issue's example shape"],
    ["filter: $or of 2, $in, range, $nin, $exists", () => wide(event), ""],
    [
      "ingest: type not in the catalog (allow)",
      () => allow.check("order.created", payload),
      "one Map lookup",
    ],
    [
      "ingest: schema validation (Ajv, 5 properties, array of items)",
      () => catalog.check("order.created", payload),
      "",
    ],
  ];
  // Every case runs once untimed first, so none is timed while the JIT still compiles it.
  for (const [, fn] of cases) for (let i = 0; i < N / 4; i++) fn();
  const rows: Array<[string, number, string]> = cases.map(([name, fn, note]) => [name, perEventUs(fn), note]);
  return rows;
}

// ---- (B) rate limiter accuracy ---------------------------------------------------------------------

interface Counter {
  url: string;
  arrivals: Map<string, number[]>;
  close(): Promise<void>;
}

async function receiver(): Promise<Counter> {
  const arrivals = new Map<string, number[]>();
  const server = createServer((req, res) => {
    const tag = new URL(req.url ?? "/", "http://x").searchParams.get("d") ?? "";
    req.resume();
    req.on("end", () => {
      const list = arrivals.get(tag) ?? [];
      arrivals.set(tag, list);
      list.push(performance.now());
      res.end("ok");
    });
  });
  await new Promise<void>((done) => server.listen(0, "127.0.0.1", done));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`,
    arrivals,
    close: () =>
      new Promise<void>((done) => {
        server.closeAllConnections();
        server.close(() => done());
      }),
  };
}

async function rateAccuracy(seconds: number): Promise<Array<[string, string, string, string, string]>> {
  let local: LocalKafka | undefined;
  let brokers = process.env.KAFKA_BROKERS;
  if (!brokers) {
    local = await startLocalKafka({});
    brokers = local.brokers.join(",");
  }
  const run = `controls-${Date.now().toString(36)}`;
  const token = "bench-admin-token-0123456789";
  const gw = await startGateway(
    loadConfig({
      PORT: "0",
      KAFKA_BROKERS: brokers,
      DB_PATH: join(tmpdir(), `${run}.db`),
      EVENTS_TOPIC: run,
      DEAD_LETTER_TOPIC: `${run}.dead`,
      CONSUMER_GROUP_PREFIX: run,
      TOPIC_PARTITIONS: "6",
      LOG_LEVEL: "silent",
      ADMIN_TOKEN: token,
      ALLOW_PRIVATE_DESTINATIONS: "true",
    }),
    pino({ level: "silent" }),
  );
  const rec = await receiver();
  try {
    await gw.kafkaReady;
    await gw.state.ready;
    const limits = [20, 100, 400];
    for (const limit of limits) {
      const res = await fetch(`${gw.url}/api/destinations`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: JSON.stringify({ url: `${rec.url}?d=${limit}`, rateLimitPerSecond: limit }),
      });
      if (res.status !== 201) throw new Error(`registration: ${res.status} ${await res.text()}`);
    }
    // More events than the fastest limit can take in the window, over many users.
    const total = Math.ceil(Math.max(...limits) * (seconds + 10));
    const body = { events: [] as Array<{ userID: string; type: string; payload: unknown }> };
    for (let sent = 0; sent < total; ) {
      body.events = [];
      for (let i = 0; i < 500 && sent < total; i++, sent++) {
        body.events.push({ userID: `user-${sent % 97}`, type: "order.created", payload: { n: sent } });
      }
      const res = await fetch(`${gw.url}/api/events`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: JSON.stringify(body),
      });
      if (res.status !== 202) throw new Error(`ingest: ${res.status}`);
    }
    const started = performance.now();
    await new Promise((done) => setTimeout(done, (seconds + 3) * 1000));
    const rows: Array<[string, string, string, string, string]> = [];
    for (const limit of limits) {
      const times = rec.arrivals.get(String(limit)) ?? [];
      // The window starts a second after the first arrival (the initial burst of `limit` tokens is spent).
      const first = (times[0] ?? started) + 1000;
      const end = first + seconds * 1000;
      const inWindow = times.filter((t) => t >= first && t < end);
      const perSecond = Array.from(
        { length: seconds },
        (_, s) => inWindow.filter((t) => t >= first + s * 1000 && t < first + (s + 1) * 1000).length,
      );
      const rate = inWindow.length / seconds;
      rows.push([
        String(limit),
        fmt(rate, 2),
        `${fmt((rate / limit) * 100, 1)} %`,
        `${Math.min(...perSecond)} – ${Math.max(...perSecond)}`,
        String(times.length),
      ]);
    }
    return rows;
  } finally {
    await rec.close();
    await gw.stop();
    await local?.stop();
  }
}

const rowsA = micro();
const base = rowsA[1]?.[1] ?? 0;
console.log(
  `\n(A) per-event cost, median of ${ROUNDS} rounds of ${N.toLocaleString("en-US")} (Node ${process.version})\n`,
);
console.log("| what | µs/event | over the no-op baseline (µs) | notes |");
console.log("| --- | ---: | ---: | --- |");
for (const [name, us, note] of rowsA)
  console.log(`| ${name} | ${fmt(us, 3)} | ${fmt(us - base, 3)} | ${note} |`);

if (!args["micro-only"]) {
  const seconds = Number(args.seconds);
  const rowsB = await rateAccuracy(seconds);
  console.log(`\n(B) rate limiter accuracy: deliveries per second over ${seconds} s, through the gateway\n`);
  console.log(
    "| rateLimitPerSecond | measured / s | of the limit | min – max in one second | deliveries in all |",
  );
  console.log("| ---: | ---: | ---: | --- | ---: |");
  for (const r of rowsB) console.log(`| ${r.join(" | ")} |`);
}
